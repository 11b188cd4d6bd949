"""Supervised fine-tuning. Data curation lives in `curation/` (`python -m granite_jax.sft.curate`);
the chat data pipeline the trainer reads is `data/chat_pipeline.py`."""
