"""Tiny tokenizers, input files in every format and store comparisons for the token store tests."""
from __future__ import annotations

import gzip
import json
import os

import numpy as np

SPECIALS = ["<|pad|>", "<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<tool_call>", "</tool_call>",
            "<tools>", "</tools>", "<documents>", "</documents>"]
CORPUS = ["the quick brown fox jumps over the lazy dog", "zweites Dokument — über Größe", "日本語のテキスト 🙂",
          "def f(x):\n  return {\"a\": x}\n", "numbers 12345 67890 3.14159"] * 20
DOCS = ["first document", "", "zweites Dokument — ü", "code: {\"a\": 1}\n\tindented", "日本語 🙂",
        "a longer one " * 50, "last"]


def make_tokenizer(path: str, specials=SPECIALS, vocab_size: int = 400) -> str:
  """A byte-level BPE trained in milliseconds; specials first, so <|pad|> = 0, <|end_of_text|> = 1."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer=trainer)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tok.save(path)
  return path


def _jsonl(records) -> bytes:
  return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_input(path: str, docs: list, field: str = "text") -> str:
  """`docs` (texts, or conversations for chat: dicts) in the format the extension names."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  records = [d if isinstance(d, dict) else {field: d, "id": i} for i, d in enumerate(docs)]
  if path.endswith(".jsonl"):
    open(path, "wb").write(_jsonl(records))
  elif path.endswith(".jsonl.gz"):
    open(path, "wb").write(gzip.compress(_jsonl(records), mtime=0))
  elif path.endswith(".jsonl.zst"):
    import zstandard
    open(path, "wb").write(zstandard.ZstdCompressor().compress(_jsonl(records)))
  elif path.endswith(".parquet"):
    import pyarrow as pa
    import pyarrow.parquet as pq
    if isinstance(docs[0], dict):  # nested values as JSON strings, as ConversationSource reads them
      cols = {k: [json.dumps(d.get(k)) if d.get(k) is not None else None for d in docs]
              for k in ("messages", "tools", "documents")}
    else:
      cols = {field: docs, "id": list(range(len(docs)))}
    pq.write_table(pa.table(cols), path, row_group_size=3)
  elif path.endswith(".arrayrecord"):
    from granite_jax.data.records_io import write_arrayrecord
    write_arrayrecord(path, [json.dumps(r, ensure_ascii=False) for r in records])
  else:
    raise ValueError(path)
  return path


def expected_text_docs(tok, texts: list[str], eos: int) -> list[list[int]]:
  """The reference: each non-empty text's `tok.encode` ids, then EOS."""
  return [tok.encode(t).ids + [eos] for t in texts if t]


def store_docs(store, s: int, mask: bool = False) -> list[list[int]]:
  """Every document of shard s, read one by one."""
  ends = store.doc_ends(s)
  starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
  read = store.read_mask if mask else store.read
  return [read(s, a, b).tolist() for a, b in zip(starts, ends)]


def tree(root: str) -> dict[str, bytes]:
  """Every file under `root` (relative path -> bytes)."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      out[os.path.relpath(p, root)] = open(p, "rb").read()
  return out


def direct_store(root: str, shards: list[tuple], kind: str = "text") -> dict:
  """A store written straight from arrays: shards = [(tokens, lengths[, mask]), ...]; returns the manifest."""
  from granite_jax.data import store_io
  from granite_jax.data.store_writer import write_shard
  from granite_jax.data.tokenize import manifest_of
  kv = store_io.Kv(root)
  dones = []
  for s, (tokens, lengths, *mask) in enumerate(shards):
    name = store_io.shard_name(s)
    docs, n = write_shard(root, name, tokens, lengths, mask[0] if mask else None, kv=kv)
    dones.append({"shard": name, "source": f"/data/{name}.jsonl", "size": 0, "records": docs, "docs": docs,
                  "tokens": n, "skipped": 0})
  plan = {"format": store_io.FORMAT, "kind": kind, "text_field": "text" if kind == "text" else None,
          "tokenizer": {"fingerprint": "0123456789abcdef", "eos_id": 1, "pad_id": 0, "vocab_size": 50000,
                        "path": "/tok.json"}}
  manifest = manifest_of(plan, dones)
  kv.write_json(store_io.MANIFEST, manifest)
  return manifest
