"""The deterministic rule stage: normalize (fix) -> schema -> length/truncation -> leakage.

Each step writes its verdict into the record; the first failure rejects it.
The same input always gives the same verdicts and fixes.
"""
from __future__ import annotations

from granite_jax.sft.curation import length as length_lib
from granite_jax.sft.curation.config import CurationConfig
from granite_jax.sft.curation.leakage import LeakageIndex, load_eval_texts
from granite_jax.sft.curation.normalize import normalize_sample
from granite_jax.sft.curation.records import Record
from granite_jax.sft.curation.schema import SchemaError, validate_sample


class RuleStage:
  def __init__(self, cfg: CurationConfig, counter: length_lib.TokenCounter | None = None,
               eval_texts: list[str] | None = None):
    self.cfg = cfg
    self.counter = counter or length_lib.TokenCounter(cfg.tokenizer, cfg.cache_dir)
    if eval_texts is None:
      eval_texts = load_eval_texts(cfg.eval_texts) if cfg.eval_texts else []
    self.leakage = LeakageIndex(eval_texts, cfg.leakage_n, cfg.leakage_threshold)

  def __call__(self, rec: Record) -> None:
    if not rec.alive:
      return
    sample = rec.sample
    try:
      # Normalize first so that schema checks (e.g. empty turns) see the fixed text.
      rec.fixes += normalize_sample(sample)
      rec.fixes += validate_sample(sample, self.cfg.min_assistant_chars)
    except SchemaError as e:
      rec.fail("schema", e.reason, e.detail)
      return
    rec.verdicts["normalize"] = "fixed" if rec.fixes else "pass"
    rec.verdicts["schema"] = "pass"
    self._length(rec)
    if rec.alive:
      self._leakage(rec)

  def _length(self, rec: Record) -> None:
    sample, max_tokens = rec.sample, self.cfg.max_tokens
    per_turn = length_lib.turn_tokens(sample, self.counter)
    total = sum(per_turn)
    rec.verdicts["tokens"] = total
    if total <= max_tokens:
      rec.verdicts["length"] = "pass"
      return
    keep = length_lib.fit_prefix(sample, per_turn, max_tokens) if self.cfg.truncate else 0
    if keep == 0:
      rec.fail("length", "too_long", f"{total} tokens > max_tokens={max_tokens} "
               f"({self.counter.name} count)" + (", no shorter prefix ends in an answer"
                                                 if self.cfg.truncate else ""))
      return
    dropped = len(sample["messages"]) - keep
    del sample["messages"][keep:]
    kept = sum(per_turn[:keep])
    rec.fixes.append(dict(fix="truncate", dropped_messages=dropped, tokens_before=total,
                          tokens_after=kept))
    rec.verdicts["length"] = f"truncated: {total} -> {kept} tokens"
    rec.verdicts["tokens"] = kept

  def _leakage(self, rec: Record) -> None:
    if not len(self.leakage):
      return
    text = "\n".join(m["content"] for m in rec.sample["messages"])
    score, k = self.leakage.score(text)
    if score >= self.cfg.leakage_threshold:
      rec.fail("leakage", "leakage", f"{score:.0%} of eval text #{k}'s {self.cfg.leakage_n}-grams "
               f"appear (threshold {self.cfg.leakage_threshold:.0%})")
    else:
      rec.verdicts["leakage"] = f"pass ({score:.2f})"
