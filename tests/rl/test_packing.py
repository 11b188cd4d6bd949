"""Packing rollout sequences into rows (pure NumPy): first-fit decreasing places every sequence
whole, the row buckets are few and shard evenly, and the packed batch keeps every token, mask,
advantage and sampler log-prob of the padded one, each sequence in its own segment with its own
positions."""
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.rl import rollout as R
from granite_jax.rl.packing import bucket_rows, first_fit_decreasing, placements


def test_first_fit_decreasing_places_every_sequence_once():
  rng = np.random.default_rng(0)
  for _ in range(50):
    T = int(rng.integers(8, 64))
    lengths = rng.integers(1, T + 1, int(rng.integers(1, 40)))
    rows = first_fit_decreasing(lengths, T)
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= T for r in rows)
    assert len(rows) >= -(-lengths.sum() // T)  # no better than the token count allows
    # First fit: no sequence would have fit in an earlier row when it was placed (so no row
    # after the first two is less than half full, the FFD guarantee used here loosely).
    assert sum(sum(lengths[i] for i in r) <= T // 2 for r in rows) <= 1
  with pytest.raises(ValueError, match="does not fit"):
    first_fit_decreasing([3, 9], 8)


def test_bucket_rows_few_shapes_sharded_evenly():
  total, micro, dp = 64, 16, 4  # grad_accum 4
  got = {bucket_rows(n, total=total, micro=micro, dp=dp, buckets=4) for n in range(1, total + 1)}
  assert got == {4, 8, 12, 16, 32, 48, 64}
  for n in range(1, total + 1):
    b = bucket_rows(n, total=total, micro=micro, dp=dp, buckets=4)
    assert n <= b <= total and b % dp == 0 and (b <= micro or b % micro == 0)
  # The 8B RL step's shape: 1024 rows, 16 micro-batches of 64 rows over 64 data shards.
  got = {bucket_rows(n, total=1024, micro=64, dp=64, buckets=8) for n in range(1, 1025)}
  assert got == {64 * k for k in (1, 2, 4, 6, 8, 10, 12, 14, 16)}
  assert bucket_rows(3, total=64, micro=64, dp=1, buckets=8) == 8
  assert bucket_rows(64, total=64, micro=64, dp=1, buckets=8) == 64
  with pytest.raises(ValueError):
    bucket_rows(3, total=64, micro=24, dp=1)


def _rl(**kw):
  base = dict(prompts_per_step=4, samples_per_prompt=4, max_prompt_len=12, max_response_len=10,
              overlong_filter=False, scale_by_std=True, pack=True, pack_buckets=8)
  return ConfigDict(dict(base, **kw))


def _samples(rl, seed=0):
  rng = np.random.default_rng(seed)
  P, G, N = rl.prompts_per_step, rl.samples_per_prompt, rl.prompts_per_step * rl.samples_per_prompt
  tasks = [dict(prompt_ids=list(rng.integers(10, 99, int(rng.integers(1, 7)))))  # short: rows hold 2+
           for _ in range(P)]
  lengths = rng.integers(0, rl.max_response_len + 1, N)
  lengths[3] = rl.max_response_len  # one truncated at the cap
  return dict(tokens=rng.integers(100, 200, (N, rl.max_response_len)).astype(np.int32),
              logprobs=-rng.uniform(0.1, 3, (N, rl.max_response_len)).astype(np.float32),
              lengths=lengths, shaped=rng.integers(0, 2, N).astype(np.float32),
              truncated=lengths == rl.max_response_len, live=np.arange(N) != 5,  # a filler group member
              tasks=[t for t in tasks for _ in range(G)], texts=[""] * N, raw=np.zeros(N, np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_packed_batch_keeps_every_token(seed):
  rl = _rl()
  s = _samples(rl, seed)
  pad, packed = R.build_batch(s, _rl(pack=False)), R.build_batch(s, rl, dp=2)
  T, N = rl.max_prompt_len + rl.max_response_len, len(s["lengths"])
  assert pad["tokens"].shape == (N, T) and packed["tokens"].shape[1] == T
  R_ = len(packed["tokens"])
  assert R_ < N and R_ % 2 == 0  # fewer rows, a multiple of the data-parallel size
  lengths = np.array([len(t["prompt_ids"]) for t in s["tasks"]]) + s["lengths"]
  row, start = placements(first_fit_decreasing(lengths, T), lengths)
  seen = np.zeros((R_, T), bool)
  for n in range(N):
    L, r, a = lengths[n], row[n], start[n]
    cols = slice(a, a + L)
    seg = packed["segment_ids"][r, cols]
    assert (seg == seg[0]).all() and seg[0] > 0
    assert not seen[r, cols].any()
    seen[r, cols] = True
    np.testing.assert_array_equal(packed["positions"][r, cols], np.arange(L))
    for k in ("tokens", "mask", "advantages", "sampler_logp"):
      np.testing.assert_array_equal(packed[k][r, cols], pad[k][n, :L], err_msg=k)
    assert pad["mask"][n, L:].sum() == 0 and pad["sampler_logp"][n, L:].sum() == 0
  # Nothing else: the slots of no sequence are padding (segment 0, mask 0, advantage 0).
  assert (packed["segment_ids"][~seen] == 0).all() and packed["mask"][~seen].sum() == 0
  assert packed["advantages"][~seen].sum() == 0
  for k in ("mask", "sampler_logp"):
    np.testing.assert_allclose(packed[k].sum(), pad[k].sum(), rtol=1e-6)
  assert packed["segment_ids"].max() > 1  # some row holds several sequences
