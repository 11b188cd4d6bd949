"""Global dedup over the whole dataset in input order: the first occurrence is kept.

Exact: SHA-1 of the role-tagged message contents after casefolding and
whitespace collapsing. Near: MinHash LSH (datasketch) over word shingles of the
same text, with the candidate's Jaccard estimate checked against the
threshold. Tools and documents are left out of the key, so two different
questions about one shared document are not duplicates.
"""
from __future__ import annotations

import hashlib

from datasketch import MinHash, MinHashLSH

from granite_jax.sft.curation.leakage import words


def dedup_text(sample: dict) -> str:
  return "\n".join(f"{m['role']}: {' '.join(m['content'].casefold().split())}"
                   for m in sample["messages"])


class Deduper:
  def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5):
    self.threshold, self.num_perm, self.shingle = threshold, num_perm, shingle
    self.exact: dict[bytes, object] = {}
    # LSH only proposes candidates; the Jaccard check decides. Very high thresholds would leave
    # datasketch fewer than 2 bands, so candidates come from at most 0.9.
    self.lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
    self.sketches: dict[str, tuple[object, MinHash]] = {}  # LSH key -> (sample id, sketch)
    # One permutation table shared by all sketches (building it per MinHash is the slow part).
    self._proto = MinHash(num_perm=num_perm, seed=1)

  def _minhash(self, text: str) -> MinHash:
    ws = words(text)
    k = self.shingle
    grams = {" ".join(ws[i:i + k]) for i in range(max(1, len(ws) - k + 1))}
    m = MinHash(num_perm=self.num_perm, seed=1, permutations=self._proto.permutations,
                scheme=self._proto.scheme)
    m.update_batch([g.encode() for g in grams])
    return m

  def check(self, sample_id, sample: dict) -> dict | None:
    """None if new (and remembered); else {"kind", "kept_twin", "jaccard"} of the earlier copy."""
    text = dedup_text(sample)
    key = hashlib.sha1(text.encode()).digest()
    twin = self.exact.get(key)
    if twin is not None:
      return dict(kind="exact", kept_twin=twin, jaccard=1.0)
    self.exact[key] = sample_id
    m = self._minhash(text)
    best = None
    for cand in self.lsh.query(m):
      twin_id, twin_m = self.sketches[cand]
      j = float(m.jaccard(twin_m))
      if j >= self.threshold and (best is None or j > best[1]):
        best = (twin_id, j)
    if best is not None:
      return dict(kind="near", kept_twin=best[0], jaccard=round(best[1], 3))
    lsh_key = str(len(self.sketches))
    self.lsh.insert(lsh_key, m)
    self.sketches[lsh_key] = (sample_id, m)
    return None
