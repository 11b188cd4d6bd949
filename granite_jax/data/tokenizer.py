"""Byte-level BPE tokenizer with Granite's special tokens.

`train_demo_tokenizer` trains a small vocabulary on the demo corpus so that
everything runs offline; real runs point `data.tokenizer` at Granite's
tokenizer.json instead. Special tokens come first in the vocabulary, so their
ids are stable (`<|pad|>` = 0, `<|end_of_text|>` = 1, ...).
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD = "<|pad|>"
EOS = "<|end_of_text|>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD, EOS, "<|start_of_role|>", "<|end_of_role|>",
    "<tool_call>", "</tool_call>", "<tools>", "</tools>", "<tool_response>", "</tool_response>",
    "<documents>", "</documents>", "<think>", "</think>",
)
DEMO_VOCAB_SIZE = 4096
_VERSION = "bpe_v1"
# Cap on training text: a few MB is plenty for a 4k vocab and keeps training ~seconds.
_MAX_TRAIN_CHARS = 8_000_000


def _texts(files: Iterable[str]) -> Iterator[str]:
  from granite_jax.data.sources import open_text_source  # lazy: sources imports grain
  budget = _MAX_TRAIN_CHARS
  for path in sorted(files):
    src = open_text_source(path, on_bad_record="skip")
    for i in range(len(src)):
      text = src[i]
      budget -= len(text)
      if budget < 0:
        return
      yield text


def _cache_key(files: Iterable[str], vocab_size: int) -> str:
  # Name + size identify the corpus files without hashing their content.
  desc = ";".join(f"{os.path.basename(f)}:{os.path.getsize(f)}" for f in sorted(files))
  return f"{_VERSION}_v{vocab_size}_{zlib.crc32(desc.encode()):08x}"


def train_demo_tokenizer(cache_dir: str, files: Iterable[str], vocab_size: int = 4096) -> str:
  """Trains (or reuses the cached) byte-level BPE on `files`; returns the tokenizer.json path."""
  files = sorted(files.values() if isinstance(files, dict) else files)
  if not files:
    raise ValueError("train_demo_tokenizer: `files` is empty")
  if vocab_size <= len(SPECIAL_TOKENS) + 256:
    raise ValueError(f"vocab_size={vocab_size} must exceed {len(SPECIAL_TOKENS) + 256} (specials + bytes)")
  path = os.path.join(os.path.expanduser(cache_dir), f"tokenizer_{_cache_key(files, vocab_size)}.json")
  if os.path.exists(path):
    return path
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=2, show_progress=False,
      special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_texts(files), trainer=trainer)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}"
  tok.save(tmp)
  os.replace(tmp, path)
  return path


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer file {path!r} does not exist (set data.tokenizer to a "
                            "tokenizer.json, or to \"\" for the demo tokenizer)")
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # noqa: BLE001 - re-raise with the file name
    raise ValueError(f"cannot load tokenizer file {path!r}: {e}") from e


def tokenizer_path(data_cfg: Any) -> str:
  """`data.tokenizer` (a tokenizer.json or a Hugging Face tokenizer directory), or the path of the
  demo BPE trained on the demo corpus when it is ""."""
  from granite_jax.data import config, demo_corpus  # lazy: config imports grain (via sources)
  path = config.field(data_cfg, "tokenizer") or ""
  if path:
    return os.path.expanduser(path)
  cache = config.cache_dir(data_cfg)
  files = demo_corpus.ensure_demo_corpus(cache, "train")
  return train_demo_tokenizer(cache, files, DEMO_VOCAB_SIZE)


def get_tokenizer(data_cfg: Any) -> tokenizers.Tokenizer:
  """`data.tokenizer`, or the demo BPE trained on the demo corpus when it is ""."""
  path = tokenizer_path(data_cfg)
  if os.path.isdir(path):  # a Hugging Face tokenizer directory
    path = os.path.join(path, "tokenizer.json")
  return load_tokenizer(path)


def special_token_id(tok: tokenizers.Tokenizer, name: str) -> int:
  """Id of special token `name` (e.g. "<|end_of_text|>"); raises if the vocab lacks it."""
  tid = tok.token_to_id(name)
  if tid is None:
    raise KeyError(f"tokenizer has no token {name!r}")
  return tid
