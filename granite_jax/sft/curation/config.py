"""Curation settings: one flat dataclass, validated up front with the field named.

Token counting (`tokenizer`): None counts whitespace-separated words (fast, no
files needed, a rough lower bound on real token counts); "demo" uses this
project's demo BPE (trained on the demo corpus on first use); any other value
is a tokenizer.json path (e.g. Granite's).

The default length limit is the SFT sequence (`SFT_SEQ_LEN`, configs/sft.py's
train.seq_len at 3b/8b/30b) in tokens of the given tokenizer: curate with the
SFT run's tokenizer (`--tokenizer /data/granite/tokenizer.json`) and what is
kept fits an SFT row, so the SFT pipeline truncates nothing.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

DIMENSIONS = ("instruction_following", "correctness", "completeness", "conciseness",
              "naturalness", "calibration")
OPTIONAL_DIMENSIONS = ("critical_thinking",)
HARD_REJECT_FLAGS = ("hallucination", "false_premise_accepted", "incorrect_computation",
                     "ungrounded_rag_answer")
JUDGE_KINDS = ("none", "openai", "model")
BUCKETS = ("accepted", "borderline", "rejected")
SFT_SEQ_LEN = 16_384  # configs/sft.py train.seq_len at the real sizes (a test keeps them equal)


def default_weights() -> dict[str, float]:
  # Correctness and instruction following dominate; critical thinking is off (0) unless asked for.
  return dict(instruction_following=0.25, correctness=0.25, completeness=0.15, conciseness=0.1,
              naturalness=0.1, calibration=0.15, critical_thinking=0.0)


@dataclasses.dataclass
class CurationConfig:
  # Rule stage.
  max_tokens: int = SFT_SEQ_LEN  # in tokens of `tokenizer`
  truncate: bool = True  # drop trailing turns to fit max_tokens (else reject as too_long)
  tokenizer: str | None = None
  cache_dir: str = ""  # demo tokenizer cache ("" = ~/.cache/granite_jax)
  min_assistant_chars: int = 1
  leakage_n: int = 8
  leakage_threshold: float = 0.5  # fraction of an eval text's n-grams found in one sample
  eval_texts: str = ""  # .jsonl ({"text": ...} per line) or plain text, one eval text per line
  # Dedup stage.
  dedup_near_threshold: float = 0.8  # estimated Jaccard of word shingles
  dedup_num_perm: int = 128
  dedup_shingle: int = 5
  # Judge stage.
  judge: str = "none"
  judge_url: str = ""
  judge_model: str = ""
  judge_api_key_env: str = "OPENAI_API_KEY"
  judge_timeout_s: float = 120.0
  judge_max_new_tokens: int = 512
  judge_failure_bucket: str = "borderline"  # never accepted; a person looks at it
  weights: dict[str, float] = dataclasses.field(default_factory=default_weights)
  accept_threshold: float = 7.0  # weighted score on the 1..10 scale
  borderline_threshold: float = 5.0
  max_retries: int = 2  # extra attempts after a malformed reply or transport error
  concurrency: int = 8
  chunk_size: int = 2048  # samples read, checked and judged per batch (bounds memory)

  def validate(self) -> "CurationConfig":
    def bad(name: str, why: str) -> ValueError:
      return ValueError(f"curation config field {name}={getattr(self, name)!r}: {why}")
    for name in ("max_tokens", "leakage_n", "dedup_num_perm", "dedup_shingle", "concurrency",
                 "chunk_size", "judge_max_new_tokens"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        raise bad(name, "must be a positive integer")
    for name in ("min_assistant_chars", "max_retries"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        raise bad(name, "must be a non-negative integer")
    for name in ("leakage_threshold", "dedup_near_threshold"):
      if not 0.0 < getattr(self, name) <= 1.0:
        raise bad(name, "must be in (0, 1]")
    if self.judge not in JUDGE_KINDS:
      raise bad("judge", f"must be one of {JUDGE_KINDS}")
    if self.judge == "openai" and not (self.judge_url and self.judge_model):
      raise bad("judge", "needs judge_url and judge_model (--judge-url, --judge-model)")
    if self.judge_failure_bucket not in ("borderline", "rejected"):
      raise bad("judge_failure_bucket", "must be 'borderline' or 'rejected'")
    if not 1.0 <= self.borderline_threshold <= self.accept_threshold <= 10.0:
      raise bad("accept_threshold", f"need 1 <= borderline_threshold ({self.borderline_threshold}) "
                "<= accept_threshold <= 10")
    unknown = set(self.weights) - set(DIMENSIONS + OPTIONAL_DIMENSIONS)
    if unknown:
      raise bad("weights", f"unknown dimension(s) {sorted(unknown)}; known: "
                f"{DIMENSIONS + OPTIONAL_DIMENSIONS}")
    for dim, w in self.weights.items():
      if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise ValueError(f"curation config field weights.{dim}={w!r}: must be a finite number >= 0")
    if sum(self.weights.get(d, 0.0) for d in DIMENSIONS) <= 0:
      raise bad("weights", "the six core dimensions need a positive total weight")
    return self

  def active_dimensions(self) -> tuple[str, ...]:
    """The dimensions the judge must score: the six, plus critical thinking when weighted."""
    return DIMENSIONS + tuple(d for d in OPTIONAL_DIMENSIONS if self.weights.get(d, 0.0) > 0)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
