"""Packing rollout sequences into train rows: first-fit decreasing, and a few row-count buckets.

Each sequence (prompt + response, at most T tokens) goes whole into one row of T tokens; a row
holds sequences 1, 2, 3, ... as its segment ids, each with positions 0, 1, ... from its own start
(the model attends only within a segment, and RoPE sees the sequence's own positions), so every
token's log-prob equals the one it has alone in a padded row. The number of rows then depends on
the lengths; `bucket_rows` rounds it up so that few shapes compile (padding rows are all mask 0).
"""
from __future__ import annotations

import numpy as np


def first_fit_decreasing(lengths_N, T: int) -> list[list[int]]:
  """Sequence indices per row: longest first, each into the first row with room (ties by index,
  so the layout is a pure function of the lengths). Raises if a sequence is longer than T."""
  lengths_N = np.asarray(lengths_N, np.int64)
  if lengths_N.size and int(lengths_N.max()) > T:
    raise ValueError(f"a sequence of {int(lengths_N.max())} tokens does not fit a row of {T}")
  rows, free = [], []
  for i in sorted(range(len(lengths_N)), key=lambda i: (-int(lengths_N[i]), i)):
    n = int(lengths_N[i])
    for r, room in enumerate(free):
      if room >= n:
        rows[r].append(i)
        free[r] -= n
        break
    else:
      rows.append([i])
      free.append(T - n)
  return rows


def placements(rows: list[list[int]], lengths_N) -> tuple[np.ndarray, np.ndarray]:
  """(row, first column) of every sequence, in the order `first_fit_decreasing` fills a row."""
  row_N, start_N = np.zeros(len(lengths_N), np.int64), np.zeros(len(lengths_N), np.int64)
  for r, seqs in enumerate(rows):
    at = 0
    for n in seqs:
      row_N[n], start_N[n] = r, at
      at += int(lengths_N[n])
  return row_N, start_N


def bucket_rows(n: int, *, total: int, micro: int, dp: int = 1, buckets: int = 8) -> int:
  """The row count a batch of `n` packed rows is padded to.

  `total` (the padded layout's rows, P * G) is a multiple of `micro` (rows of one micro-batch,
  total / grad_accum), which is a multiple of `dp` (data-parallel shards). Up to one micro-batch,
  rows round up to a multiple of max(dp, micro / buckets) (one micro-batch of fewer rows); beyond
  it, to whole micro-batches, their count a multiple of grad_accum / buckets (rounded up). So at
  most 2 x buckets shapes (the 8B RL step: 1024 rows, 16 micro-batches of 64 over 64 shards: 9
  shapes at the default 8), never more than `total` rows, always a multiple of dp."""
  if total % micro or micro % dp:
    raise ValueError(f"rows {total} must be a multiple of the micro-batch {micro}, and it of dp={dp}")
  n, buckets = max(int(n), 1), max(int(buckets), 1)
  if n > micro:
    every = -(-(total // micro) // buckets)  # micro-batches
    return min(-(-n // (micro * every)) * micro * every, total)
  q = -(-max(dp, -(-micro // buckets)) // dp) * dp
  return min(-(-n // q) * q, micro)
