"""Tokenizer files of a Hugging Face folder: tokenizer.json + tokenizer_config.json.

Exported folders carry the Granite chat template, so `transformers`'
`apply_chat_template` renders exactly what `granite_jax.data.chat_template`
renders.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import tokenizers

from granite_jax.data.tokenizer import EOS, PAD

_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def resolve(tokenizer: Any) -> tuple[tokenizers.Tokenizer, str | None]:
  """(Tokenizer, folder holding its HF files or None) for a path, folder or Tokenizer."""
  if isinstance(tokenizer, tokenizers.Tokenizer):
    return tokenizer, None
  path = os.path.expanduser(str(tokenizer))
  folder = path if os.path.isdir(path) else None
  file = os.path.join(path, "tokenizer.json") if folder else path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"tokenizer {tokenizer!r}: no tokenizer.json there")
  return tokenizers.Tokenizer.from_file(file), folder


def token_ids(tok: tokenizers.Tokenizer) -> dict[str, int | None]:
  eos = tok.token_to_id(EOS)
  return dict(bos_token_id=eos, eos_token_id=eos, pad_token_id=tok.token_to_id(PAD))


def write(tokenizer: Any, out_dir: str, model_max_length: int) -> dict[str, int | None]:
  """Writes the tokenizer files into `out_dir`; returns the special token ids for config.json."""
  from granite_jax.data.chat_template import GRANITE_CHAT_TEMPLATE
  tok, folder = resolve(tokenizer)
  if folder and os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
    for name in _FILES:  # a released tokenizer: keep its own config and template
      if os.path.isfile(os.path.join(folder, name)):
        shutil.copyfile(os.path.join(folder, name), os.path.join(out_dir, name))
    return token_ids(tok)
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  specials = dict(bos_token=EOS, eos_token=EOS, pad_token=PAD)
  if tok.token_to_id("<|unk|>") is not None:
    specials["unk_token"] = "<|unk|>"
  missing = [t for t in (EOS, PAD) if tok.token_to_id(t) is None]
  if missing:
    raise ValueError(f"tokenizer lacks Granite special token(s) {missing}")
  config = dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=model_max_length,
                add_bos_token=False, clean_up_tokenization_spaces=False, padding_side="left",
                chat_template=GRANITE_CHAT_TEMPLATE, **specials)
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
    json.dump(specials, f, indent=2)
  return token_ids(tok)
