"""Torch-free helpers of the checkpoint tests: our model's logits on random tokens (hf_helpers.py
re-exports them next to the transformers models; tests that need no torch import them from here,
so they run where torch is not installed)."""
import jax
import numpy as np

from granite_jax.model import Granite


def tokens(B=2, T=11, vocab=61, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (B, T)).astype(np.int64)


def our_logits(cfg, params, toks):
  params = jax.tree.map(np.asarray, params)
  return np.asarray(Granite(cfg).apply({"params": params}, toks.astype(np.int32)))


def rel_err(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())
