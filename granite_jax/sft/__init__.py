"""Supervised fine-tuning. Data curation lives in `curation/` (`python -m granite_jax.sft.curate`)."""
