"""A tokenizer plus what a token store must agree on: EOS, PAD, vocab size and a fingerprint.

`load_tokenizer_spec(path)` takes a tokenizer.json file or a Hugging Face
tokenizer folder. EOS and PAD come from the tokenizer's own configuration
(`eos_token` / `pad_token` in tokenizer_config.json, then special_tokens_map.json,
read from the folder, or from beside a file named tokenizer.json); a bare
tokenizer.json falls back to well-known names present in the vocabulary. The
fingerprint is the sha256 (first 16 hex) of the canonical tokenizer JSON, so a
store and a run can tell whether they tokenize alike whatever the file's path
or formatting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import tokenizers

EOS_NAMES = ("<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>")
PAD_NAMES = ("<|pad|>", "<pad>")
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")


@dataclasses.dataclass(frozen=True)
class TokSpec:
  tok: tokenizers.Tokenizer  # truncation and padding off: documents are stored whole
  eos_id: int
  pad_id: int
  fingerprint: str
  vocab_size: int
  path: str

  def as_dict(self) -> dict[str, Any]:
    """What a store's manifest records about its tokenizer."""
    return {"fingerprint": self.fingerprint, "eos_id": self.eos_id, "pad_id": self.pad_id,
            "vocab_size": self.vocab_size, "path": self.path}


def fingerprint(tok: tokenizers.Tokenizer) -> str:
  canonical = json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _token_name(value: Any) -> str | None:
  """tokenizer_config writes a special token as "name" or {"content": "name", ...}."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _configured(folder: str | None, key: str) -> tuple[str, str] | None:
  """(token name, file that names it) for `key` ("eos_token"), from the folder's config files."""
  for name in _CONFIG_FILES if folder else ():
    file = os.path.join(folder, name)
    if not os.path.isfile(file):
      continue
    try:
      with open(file, encoding="utf-8") as f:
        config = json.load(f)
    except ValueError as e:
      raise ValueError(f"{file}: not valid JSON: {e}") from None
    token = _token_name(config.get(key)) if isinstance(config, dict) else None
    if token:
      return token, file
  return None


def _resolve(tok: tokenizers.Tokenizer, what: str, override: str | None, configured: tuple[str, str] | None,
             names: tuple[str, ...], path: str) -> int | None:
  if override is not None or configured is not None:
    token, origin = (override, f"--{what}_token") if override is not None else configured
    tid = tok.token_to_id(token)
    if tid is None:
      raise ValueError(f"{path}: {what} token {token!r} (from {origin}) is not in the tokenizer's vocabulary")
    return tid
  return next((tok.token_to_id(n) for n in names if tok.token_to_id(n) is not None), None)


def load_tokenizer_spec(path: str, eos_token: str | None = None, pad_token: str | None = None) -> TokSpec:
  """The tokenizer at `path` (tokenizer.json or an HF tokenizer folder) with its EOS/PAD ids."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    folder, file = path, os.path.join(path, "tokenizer.json")
  else:
    folder, file = (os.path.dirname(path) if os.path.basename(path) == "tokenizer.json" else None), path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"tokenizer {path!r}: no such file (expected a tokenizer.json or a folder holding one)")
  try:
    tok = tokenizers.Tokenizer.from_file(file)
  except Exception as e:  # noqa: BLE001 - re-raise naming the file
    raise ValueError(f"cannot load tokenizer {file!r}: {e}") from e
  # Stored documents are whole; the reader splits them. A tokenizer.json that truncates
  # or pads would silently cut or fill them.
  tok.no_truncation()
  tok.no_padding()
  eos = _resolve(tok, "eos", eos_token, _configured(folder, "eos_token"), EOS_NAMES, path)
  if eos is None:
    raise ValueError(f"{path}: cannot tell the EOS token (no eos_token in tokenizer_config.json/"
                     f"special_tokens_map.json and none of {list(EOS_NAMES)} in the vocabulary); "
                     "pass --eos_token")
  pad = _resolve(tok, "pad", pad_token, _configured(folder, "pad_token"), PAD_NAMES, path)
  return TokSpec(tok=tok, eos_id=eos, pad_id=eos if pad is None else pad, fingerprint=fingerprint(tok),
                 vocab_size=tok.get_vocab_size(with_added_tokens=True), path=path)
