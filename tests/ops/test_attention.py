"""Every attention implementation against a NumPy reference on packed GQA batches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.ops.attention import attention, check_supported
from tests.reference import attention as np_attention

B, T, N, K, H = 2, 24, 8, 2, 16


def _packed_batch(seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, T, N, H)).astype(np.float32)
  k = rng.standard_normal((B, T, K, H)).astype(np.float32)
  v = rng.standard_normal((B, T, K, H)).astype(np.float32)
  seg = np.zeros((B, T), np.int32)
  seg[0, :10], seg[0, 10:20] = 1, 2           # two docs then padding
  seg[1, :7], seg[1, 7:15], seg[1, 15:] = 1, 2, 3
  return q, k, v, seg


def _reference(q, k, v, seg, scale):
  out = np.zeros_like(q, dtype=np.float64)
  causal = np.arange(T)[:, None] >= np.arange(T)[None]
  for b in range(B):
    mask = causal & (seg[b][:, None] == seg[b][None])
    out[b] = np_attention(q[b].astype(np.float64), k[b].astype(np.float64),
                          v[b].astype(np.float64), mask, scale)
  return out


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_packed_gqa_matches_numpy(impl):
  q, k, v, seg = _packed_batch()
  got = jax.jit(lambda *a: attention(*a, scale=0.3, segment_ids_BT=seg, impl=impl))(q, k, v)
  np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, seg, 0.3), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "jax"])
def test_unpacked_is_plain_causal(impl):
  q, k, v, _ = _packed_batch(1)
  got = attention(q, k, v, scale=0.25, impl=impl)
  np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, np.ones((B, T), np.int32), 0.25),
                             atol=2e-5, rtol=1e-5)


def test_gradients_agree_between_impls():
  q, k, v, seg = _packed_batch(2)
  def f(impl):
    return jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, scale=0.3, segment_ids_BT=seg,
                                                      impl=impl) ** 2), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(f("xla"), f("jax")):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_unsupported_configurations_are_named():
  with pytest.raises(ValueError, match="attention_impl='flash3'"):
    check_supported("flash3", seq_len=128, head_dim=64, dtype="float32", max_seq_len=4096)
  with pytest.raises(ValueError, match="exceeds model.max_seq_len=4096"):
    check_supported("xla", seq_len=8192, head_dim=64, dtype="float32", max_seq_len=4096)
  with pytest.raises(ValueError, match="multiple of 64"):
    check_supported("cudnn", seq_len=100, head_dim=64, dtype="bfloat16", max_seq_len=4096)
  with pytest.raises(ValueError, match="needs model.dtype bfloat16"):
    check_supported("cudnn", seq_len=128, head_dim=64, dtype="float32", max_seq_len=4096)
