"""One input line as it moves through the stages, and everything the audit says about it.

A record starts in no bucket; the first stage that rejects it sets its bucket
and later stages skip it. Every verdict, score and fix is kept for audit.jsonl.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass
class Record:
  line: int  # 0-based line index in the input file
  id: Any
  sample: dict | None
  raw: str | None = None  # the line itself, kept only when it could not be parsed
  bucket: str | None = None
  reasons: list[str] = dataclasses.field(default_factory=list)
  verdicts: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage/rule -> verdict
  fixes: list[dict] = dataclasses.field(default_factory=list)

  @property
  def alive(self) -> bool:
    return self.bucket is None

  def fail(self, rule: str, reason: str, detail: str = "", bucket: str = "rejected") -> None:
    """Records a failed rule; the first failure decides the bucket, later ones add reasons."""
    self.verdicts[rule] = f"fail: {detail}" if detail else "fail"
    self.reasons.append(f"{reason}: {detail}" if detail else reason)
    if self.bucket is None or (self.bucket == "borderline" and bucket == "rejected"):
      self.bucket = bucket

  def audit(self) -> dict[str, Any]:
    return dict(id=self.id, line_index=self.line, bucket=self.bucket, reasons=self.reasons,
                verdicts=self.verdicts, fixes=self.fixes)

  def output(self) -> dict[str, Any]:
    """The bucket file's line: the (fixed) sample; non-accepted lines carry their reasons."""
    if self.bucket == "accepted":
      return self.sample
    body = {"sample": self.sample} if self.sample is not None else {"raw": self.raw}
    return {"id": self.id, "reasons": self.reasons, **body}


def parse_line(line: str, index: int) -> Record:
  """Parses one JSONL line; bad JSON or a missing message list is a rejected record, not an error."""
  try:
    sample = json.loads(line)
  except json.JSONDecodeError as e:
    rec = Record(line=index, id=index, sample=None, raw=line)
    rec.fail("parse", "malformed_json", f"line {index + 1}: {e.msg} at column {e.colno}")
    return rec
  if not isinstance(sample, dict):
    rec = Record(line=index, id=index, sample=None, raw=line)
    rec.fail("parse", "malformed_json", f"line {index + 1}: expected an object, got "
             f"{type(sample).__name__}")
    return rec
  if sample.get("id") is None:
    sample["id"] = index
  rec = Record(line=index, id=sample["id"], sample=sample)
  messages = sample.get("messages")
  if not isinstance(messages, list) or not messages:
    rec.sample, rec.raw = None, line
    rec.fail("parse", "missing_messages", f"line {index + 1}: field 'messages' must be a non-empty list")
    return rec
  rec.verdicts["parse"] = "pass"
  return rec
