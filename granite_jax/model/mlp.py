"""SwiGLU feed-forward block."""
from __future__ import annotations

import flax.linen as nn
import jax

from granite_jax.model.config import ModelConfig
from granite_jax.model.layers import dense


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD):
    c = self.cfg
    init = lambda std, axes: nn.with_logical_partitioning(nn.initializers.normal(std), axes)
    gate_DF = self.param("gate", init(c.init_std, ("embed", "mlp")), (c.d_model, c.d_ff), c.param_dtype)
    up_DF = self.param("up", init(c.init_std, ("embed", "mlp")), (c.d_model, c.d_ff), c.param_dtype)
    down_FD = self.param("down", init(c.init_std / (2 * c.n_layers) ** 0.5, ("mlp", "embed")),
                         (c.d_ff, c.d_model), c.param_dtype)
    g_BTF = dense(x_BTD, gate_DF.astype(c.dtype))
    u_BTF = dense(x_BTD, up_DF.astype(c.dtype))
    h_BTF = nn.with_logical_constraint(jax.nn.silu(g_BTF) * u_BTF, ("act_batch", "act_length", "act_mlp"))
    return dense(h_BTF, down_FD.astype(c.dtype))
