"""FLOPs per token against a hand count, and MFU."""
import pytest

from granite_jax import flops
from granite_jax.model import preset

# d=4, 2 layers, 2 query heads and 1 kv head of 3, d_ff=5, vocab 7.
CFG = preset("tiny", vocab_size=7, d_model=4, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=3, d_ff=5)


def test_matmul_params_hand_count():
  q, k, v, o = 4 * 2 * 3, 4 * 1 * 3, 4 * 1 * 3, 2 * 3 * 4  # 24 + 12 + 12 + 24 = 72
  mlp = 3 * 4 * 5                                          # gate, up, down = 60
  head = 4 * 7                                             # tied LM head = 28
  assert flops.matmul_params(CFG) == 2 * (q + k + v + o + mlp) + head == 292


def test_train_flops_per_token_hand_count():
  T = 10
  attn = 2 * 3 * (2 * 2 * T * (2 * 3))  # layers x fwd+bwd(3) x (QK^T + AV: 2 x 2*T*d_attn)
  assert flops.attention_flops_per_token(CFG, T) == attn == 1440
  assert flops.train_flops_per_token(CFG, T) == 6 * 292 + 1440


def test_matmul_params_matches_the_model_for_real_shapes():
  # num_params counts norms and the embedding once; matmul params count the head instead.
  c = preset("8b")
  norms = c.n_layers * 2 * c.d_model + c.d_model
  assert flops.matmul_params(c) == c.num_params() - norms
  assert flops.matmul_params(c) / 1e9 == pytest.approx(8.38, rel=1e-3)  # the "8B"


def test_mfu():
  assert flops.mfu(1000.0, 2e9, 4e12) == pytest.approx(0.5)
  assert flops.mfu(1000.0, 2e9, 0.0) is None
