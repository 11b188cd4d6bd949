"""Safe text fixes: Unicode NFC, stray control characters, whitespace.

"Safe" means meaning-preserving: code indentation and single blank lines are
kept; only line-trailing whitespace, runs of 3+ newlines, leading/trailing
whitespace, CR line ends, NUL/escape-like control characters and invisible
BOM / zero-width-space characters change.
"""
from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b]")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> tuple[str, list[str]]:
  """Returns (fixed text, names of the fixes that changed something)."""
  changes = []
  if not text.isascii() and not unicodedata.is_normalized("NFC", text):
    text = unicodedata.normalize("NFC", text)
    changes.append("nfc")
  if "\r" in text:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    changes.append("crlf")
  new = _CONTROL.sub("", text)
  if new != text:
    text = new
    changes.append("control_chars")
  new = _BLANK_RUNS.sub("\n\n", _TRAILING_WS.sub("\n", text)).strip()
  if new != text:
    text = new
    changes.append("whitespace")
  return text, changes


def normalize_sample(sample: dict) -> list[dict]:
  """Fixes message contents and document texts in place; returns the fixes for the audit."""
  fixes = []
  for i, msg in enumerate(sample["messages"]):
    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
      msg["content"], changes = normalize_text(msg["content"])
      if changes:
        fixes.append(dict(fix="normalize", field=f"messages[{i}].content", changes=changes))
  for i, doc in enumerate(sample.get("documents") or ()):
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
      doc["text"], changes = normalize_text(doc["text"])
      if changes:
        fixes.append(dict(fix="normalize", field=f"documents[{i}].text", changes=changes))
  return fixes
