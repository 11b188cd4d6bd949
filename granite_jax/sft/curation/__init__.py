"""SFT data curation: deterministic rules, global dedup, LLM-as-judge, full audit trail.

Entry point: `python -m granite_jax.sft.curate IN.jsonl OUT_DIR` (see curate.py),
or `run_curation(in_path, out_dir, CurationConfig(...), judge=...)` from Python.
"""
from granite_jax.sft.curation.config import CurationConfig
from granite_jax.sft.curation.judges import ModelJudge, OpenAIJudge, sampler_generate_text
from granite_jax.sft.curation.pipeline import Curator, run_curation
from granite_jax.sft.curation.verdict import JudgeVerdict

__all__ = ["CurationConfig", "Curator", "JudgeVerdict", "ModelJudge", "OpenAIJudge", "run_curation",
           "sampler_generate_text"]
