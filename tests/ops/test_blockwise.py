"""Blockwise attention against the NumPy reference (forward) and impl="xla" (gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from granite_jax.ops.attention import attention, check_supported
from tests.reference import attention as np_attention

B, T, N, K, H = 2, 32, 4, 2, 8
SCALE = 0.3


def packed_batch(seed=0, T=T):
  """q, k, v and a packed layout: segments restart positions; padding (segment 0) at the end."""
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, T, N, H)).astype(np.float32)
  k = rng.standard_normal((B, T, K, H)).astype(np.float32)
  v = rng.standard_normal((B, T, K, H)).astype(np.float32)
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  for b, cuts in enumerate(([0, 11, 25], [0, 5, 9, 30])):
    for s, (lo, hi) in enumerate(zip(cuts, cuts[1:] + [T])):
      seg[b, lo:hi] = s + 1 if hi < T or b == 1 else 0
      pos[b, lo:hi] = np.arange(hi - lo)
  return q, k, v, seg, pos


def reference(q, k, v, seg, pos):
  out = np.zeros(q.shape, np.float64)
  for b in range(q.shape[0]):
    mask = (seg[b][:, None] == seg[b][None]) & (pos[b][:, None] >= pos[b][None])
    out[b] = np_attention(*(x[b].astype(np.float64) for x in (q, k, v)), mask, SCALE)
  return out


def loss_fn(impl, seg=None, pos=None, block=8):
  def f(q, k, v):
    o = attention(q, k, v, scale=SCALE, segment_ids_BT=seg, positions_BT=pos, impl=impl, block=block)
    return jnp.sum(jnp.sin(o))  # a non-trivial cotangent
  return jax.jit(jax.grad(f, argnums=(0, 1, 2)))


@pytest.mark.parametrize("packed", [True, False])
def test_forward_matches_numpy(packed):
  q, k, v, seg, pos = packed_batch()
  if not packed:
    seg, pos = np.ones((B, T), np.int32), np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))
  got = jax.jit(lambda *a: attention(*a, scale=SCALE, segment_ids_BT=seg, positions_BT=pos,
                                     impl="blockwise", block=8))(q, k, v)
  np.testing.assert_allclose(np.asarray(got), reference(q, k, v, seg, pos), atol=1e-5, rtol=1e-5)


def test_default_is_index_causal():
  """Without segments or positions: plain causal, like impl="xla" (block 12 does not divide 32)."""
  q, k, v, _, _ = packed_batch(1)
  got = attention(q, k, v, scale=SCALE, impl="blockwise", block=12)
  np.testing.assert_allclose(np.asarray(got), np.asarray(attention(q, k, v, scale=SCALE)),
                             atol=1e-5, rtol=1e-5)


def test_gradients_match_xla():
  q, k, v, seg, pos = packed_batch(2)
  got = loss_fn("blockwise", seg, pos)(q, k, v)
  want = loss_fn("xla", seg, None)(q, k, v)  # index-causal mask: the same mask for this layout
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_permuted_sequence_gives_permuted_output():
  """Position masking makes token order irrelevant: the basis of load balancing."""
  q, k, v, seg, pos = packed_batch(3)
  perm = np.random.default_rng(0).permutation(T)
  f = jax.jit(lambda q, k, v, seg, pos: attention(q, k, v, scale=SCALE, segment_ids_BT=seg,
                                                  positions_BT=pos, impl="blockwise", block=8))
  got = f(*(x[:, perm] for x in (q, k, v, seg, pos)))
  np.testing.assert_allclose(np.asarray(got), np.asarray(f(q, k, v, seg, pos))[:, perm], atol=1e-5)


def test_check_supported_block_and_context():
  check_supported("blockwise", seq_len=1024, head_dim=64, dtype="float32", max_seq_len=4096, block=256)
  with pytest.raises(ValueError, match="attention_block=300 must divide"):
    check_supported("blockwise", seq_len=1024, head_dim=64, dtype="float32", max_seq_len=4096, block=300)
  with pytest.raises(ValueError, match="divisible by 2 x mesh context = 8"):
    check_supported("ring", seq_len=1020, head_dim=64, dtype="float32", max_seq_len=4096, context=4)
