"""The curation run: read JSONL in chunks -> rules -> global dedup -> judge -> bucket files + audit.

OUT_DIR gets accepted.jsonl (the fixed samples, ready for SFT), borderline.jsonl
and rejected.jsonl ({"id", "reasons", "sample" | "raw"} per line), audit.jsonl
(one line per input sample: id, line_index (0-based), bucket, reasons, every verdict, fixes)
and summary.json. Only samples that pass the rules reach dedup, so a broken
first copy never knocks out a good later one; only dedup survivors are judged.
"""
from __future__ import annotations

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from granite_jax.sft.curation.config import BUCKETS, CurationConfig
from granite_jax.sft.curation.dedup import Deduper
from granite_jax.sft.curation.judges import Judge, make_judge
from granite_jax.sft.curation.records import Record, parse_line
from granite_jax.sft.curation.rules import RuleStage
from granite_jax.sft.curation.verdict import decide


def _chunks(path: str, size: int) -> Iterator[list[Record]]:
  chunk = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for i, line in enumerate(f):
      if line.strip():
        chunk.append(parse_line(line.rstrip("\n"), i))
      if len(chunk) >= size:
        yield chunk
        chunk = []
  if chunk:
    yield chunk


def _apply_verdict(rec: Record, verdict, cfg: CurationConfig) -> None:
  bucket, reason, detail, score = decide(verdict, cfg)
  rec.verdicts["judge"] = dict(verdict.to_dict(), weighted_score=score, bucket=bucket)
  if bucket == "accepted":
    rec.bucket = "accepted"
  else:
    rec.fail("judge_decision", reason, detail, bucket=bucket)
    rec.verdicts["judge_decision"] = bucket


class Curator:
  """Holds the cross-chunk state (dedup index, judge pool); `run` curates one file."""

  def __init__(self, cfg: CurationConfig, judge: Judge | None = None, rules: RuleStage | None = None):
    self.cfg = cfg.validate()
    self.rules = rules or RuleStage(cfg)
    self.dedup = Deduper(cfg.dedup_near_threshold, cfg.dedup_num_perm, cfg.dedup_shingle)
    self.judge = judge if judge is not None else make_judge(cfg)
    self.seconds = collections.Counter()

  def process(self, records: list[Record], pool: ThreadPoolExecutor | None = None) -> None:
    t = time.perf_counter()
    for rec in records:
      self.rules(rec)
    t, self.seconds["rules"] = time.perf_counter(), self.seconds["rules"] + time.perf_counter() - t
    for rec in records:
      if rec.alive:
        dup = self.dedup.check((rec.id, rec.line), rec.sample)
        if dup is None:
          rec.verdicts["dedup"] = "pass"
        else:
          (twin_id, twin_line), kind = dup.pop("kept_twin"), dup["kind"]
          rec.fail("dedup", f"duplicate_{kind}", f"kept twin id={twin_id!r} (line {twin_line + 1})")
          rec.verdicts["dedup"] = dict(dup, kept_twin=twin_id, kept_twin_line_index=twin_line)
    t, self.seconds["dedup"] = time.perf_counter(), self.seconds["dedup"] + time.perf_counter() - t
    alive = [rec for rec in records if rec.alive]
    if self.judge is None:
      for rec in alive:
        rec.verdicts["judge"] = "skipped (judge=none)"
        rec.bucket = "accepted"
    else:
      verdicts = (pool.map if pool else map)(self.judge, [rec.sample for rec in alive])
      for rec, verdict in zip(alive, verdicts):
        _apply_verdict(rec, verdict, self.cfg)
    self.seconds["judge"] += time.perf_counter() - t

  def run(self, in_path: str, out_dir: str) -> dict:
    if not os.path.isfile(in_path):
      raise FileNotFoundError(f"input file {in_path!r} does not exist")
    os.makedirs(out_dir, exist_ok=True)
    counts, reasons, n = collections.Counter(), collections.Counter(), 0
    files = {name: open(os.path.join(out_dir, f"{name}.jsonl"), "w", encoding="utf-8")
             for name in BUCKETS + ("audit",)}
    start = time.perf_counter()
    try:
      with ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="judge") as pool:
        for records in _chunks(in_path, self.cfg.chunk_size):
          self.process(records, pool)
          for rec in records:
            n += 1
            counts[rec.bucket] += 1
            reasons.update(r.split(":")[0] for r in rec.reasons)
            files[rec.bucket].write(json.dumps(rec.output(), ensure_ascii=False) + "\n")
            files["audit"].write(json.dumps(rec.audit(), ensure_ascii=False, default=str) + "\n")
    finally:
      for f in files.values():
        f.close()
    rule_dedup_s = self.seconds["rules"] + self.seconds["dedup"]
    summary = dict(input=in_path, samples=n, buckets={b: counts[b] for b in BUCKETS},
                   reasons=dict(reasons.most_common()), seconds=dict(self.seconds),
                   total_seconds=round(time.perf_counter() - start, 3),
                   rule_dedup_samples_per_min=round(60 * n / rule_dedup_s) if rule_dedup_s else None,
                   tokenizer=self.rules.counter.name, judge=type(self.judge).__name__ if self.judge else "none",
                   config=self.cfg.to_dict())
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=str)
    return summary


def run_curation(in_path: str, out_dir: str, cfg: CurationConfig | None = None,
                 judge: Judge | None = None) -> dict:
  """Curates `in_path` into `out_dir`; returns the summary (also written to summary.json)."""
  return Curator(cfg or CurationConfig(), judge).run(in_path, out_dir)
