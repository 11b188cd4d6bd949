"""Parameter init: the model's (unboxed) parameter pytree from a PRNG key."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from granite_jax.model.config import ModelConfig
from granite_jax.model.decoder import Granite


def init_params(cfg: ModelConfig, rng: jax.Array, seq_len: int = 8):
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return nn.unbox(Granite(cfg).init(rng, tokens)["params"])
