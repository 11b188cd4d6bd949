"""Tokenize text or chat files once into a token store (layout: store_io.py) that any run reads.

  python -m granite_jax.data.tokenize INPUT... --out=STORE --tokenizer=TOK \
      [--kind=text|chat] [--text_field=text] [--processes=N] \
      [--process_index=i --process_count=n] [--on_bad_record=raise|skip] [--eos_token=T --pad_token=T]

INPUT: files, directories (recursive), globs, s3:// or gs:// prefixes of
JSONL(.gz/.zst), Parquet or ArrayRecord files (text_inputs.py). STORE: a local
directory, s3:// or gs:// prefix. TOK: tokenizer.json or an HF tokenizer folder
(tok_spec.py). Each input file becomes one shard, numbered by its position in
the sorted list of all input files. A text document is its tokens plus EOS
(empty texts are dropped); a chat document is the rendered conversation's
tokens and loss mask (chat_template.encode_chat), never truncated.

Processes: `--processes=N` runs N local workers; multi-host jobs give each
process `--process_index/--process_count` (default SLURM_PROCID/SLURM_NTASKS).
Worker w of W tokenizes shards w::W, so processes write disjoint shards. A shard
is committed by its done.json, written after its arrays; a rerun skips shards
whose done.json matches (source path and size, tokenizer, settings) and rewrites
the rest, so a killed job rerun gives the same files, byte for byte, as an
uninterrupted one. Whoever finishes and finds every shard done writes
manifest.json (same bytes whoever writes it); a process finishing earlier
exits 0 saying the manifest is pending.

Test hook (like train/faults.py): GRANITE_FAULT_TOKENIZE_KILL_SHARDS=K makes a
process SIGKILL itself after writing the arrays of its (K+1)-th shard, before
that shard's done.json: a crash that leaves K shards done and one half done.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

import numpy as np

from granite_jax.data import store_io
from granite_jax.data.chat_template import segments
from granite_jax.data.file_readers import BadRecord
from granite_jax.data.store_io import DONE, FORMAT, MANIFEST, PLAN, shard_key, shard_name
from granite_jax.data.store_writer import ShardWriter
from granite_jax.data.text_inputs import KINDS, InputFile, read_records, resolve_inputs
from granite_jax.data.tok_spec import TokSpec, load_tokenizer_spec

log = logging.getLogger("granite_jax.data.tokenize")
ON_BAD_RECORD = ("raise", "skip")
FAULT_KILL_SHARDS = "GRANITE_FAULT_TOKENIZE_KILL_SHARDS"
# One encode_batch call per this much text (or this many documents): big enough to keep the
# tokenizer's threads busy, small enough to bound memory whatever the documents' sizes.
BATCH_CHARS, BATCH_DOCS = 4 << 20, 2048


def plan(files: list[InputFile], tok: TokSpec, kind: str, text_field: str) -> dict[str, Any]:
  """What the build is: identical in every process of it."""
  return {"format": FORMAT, "kind": kind, "text_field": text_field if kind == "text" else None,
          "tokenizer": tok.as_dict(), "sources": [{"path": f.path, "size": f.size} for f in files]}


def _done_matches(done: dict | None, source: dict, plan_: dict) -> bool:
  return done is not None and done.get("format") == FORMAT and done.get("source") == source["path"] \
      and done.get("size") == source["size"] and done.get("kind") == plan_["kind"] \
      and done.get("text_field") == plan_["text_field"] \
      and done.get("tokenizer") == plan_["tokenizer"]["fingerprint"] \
      and done.get("eos_id") == plan_["tokenizer"]["eos_id"]


class _Encoder:
  """Batches of records -> (tokens, lengths, mask) for ShardWriter.add."""

  def __init__(self, tok: TokSpec, kind: str):
    self.tok, self.kind = tok, kind
    self._encode = getattr(tok.tok, "encode_batch_fast", tok.tok.encode_batch)  # ids only: no offsets

  def text(self, texts: list[str]):
    ids = [e.ids for e in self._encode(texts)]
    lengths = np.fromiter((len(x) + 1 for x in ids), np.int64, len(ids))
    eos = [self.tok.eos_id]
    tokens = np.fromiter(itertools.chain.from_iterable(x + eos for x in ids), np.int32, int(lengths.sum()))
    return tokens, lengths, None

  def chat(self, rendered: list[list[tuple[str, bool]]]):
    # encode_chat, batched: the whole text tokenized at once; a token is trainable when it
    # starts inside a trainable segment.
    texts = ["".join(t for t, _ in segs) for segs in rendered]
    encs = self.tok.tok.encode_batch(texts, add_special_tokens=False)
    tokens, masks = [], []
    for segs, text, enc in zip(rendered, texts, encs):
      char_mask = np.zeros(len(text) + 1, bool)
      pos = 0
      for t, trainable in segs:
        char_mask[pos:pos + len(t)] = trainable
        pos += len(t)
      if not enc.ids:
        continue  # nothing to train on, and a document is never empty
      starts = np.array([s for s, _ in enc.offsets], np.int64).reshape(-1)
      tokens.append(np.asarray(enc.ids, np.int32))
      masks.append(char_mask[starts].astype(np.uint8))
    lengths = np.array([len(t) for t in tokens], np.int64)
    if not tokens:
      return np.zeros(0, np.int32), lengths, np.zeros(0, np.uint8)
    return np.concatenate(tokens), lengths, np.concatenate(masks)


def _render(conv: dict) -> list[tuple[str, bool]]:
  try:
    return segments(conv["messages"], conv.get("tools"), conv.get("documents"))
  except (KeyError, TypeError, AttributeError, ValueError) as e:  # a malformed message or tool call
    raise BadRecord(f"cannot render the conversation: {type(e).__name__}: {e}") from None


def tokenize_shard(store: str, index: int, source: InputFile, tok: TokSpec, plan_: dict, on_bad_record: str,
                   kv: store_io.Kv, kill: bool = False) -> dict[str, Any]:
  """Tokenizes one input file into shard `index`; returns its done.json (written here, last)."""
  name, kind = shard_name(index), plan_["kind"]
  writer = ShardWriter(store, name, with_mask=kind == "chat", kv=kv)
  encoder = _Encoder(tok, kind)
  batch: list[Any] = []
  chars = records = skipped = 0

  def flush():
    nonlocal chars
    if batch:
      writer.add(*(encoder.text(batch) if kind == "text" else encoder.chat(batch)))
    batch.clear()
    chars = 0

  for i, value in enumerate(read_records(source.path, kind, plan_["text_field"] or "text")):
    records += 1
    if kind == "chat" and isinstance(value, dict):
      try:
        value = _render(value)
      except BadRecord as e:
        value = e
    if isinstance(value, BadRecord):
      if on_bad_record == "raise":
        raise ValueError(f"{source.path}: bad record {i}: {value} (pass --on_bad_record=skip to drop such "
                         "records)")
      skipped += 1
      continue
    if not value:
      continue  # an empty text or blank line: no document
    batch.append(value)
    chars += len(value) if kind == "text" else sum(len(t) for t, _ in value)
    if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
      flush()
  flush()
  docs, tokens = writer.finish()
  if kill:
    os.kill(os.getpid(), signal.SIGKILL)
  done = {"format": FORMAT, "shard": name, "source": source.path, "size": source.size, "kind": kind,
          "text_field": plan_["text_field"], "tokenizer": tok.fingerprint, "eos_id": tok.eos_id,
          "records": records, "docs": docs, "tokens": tokens, "skipped": skipped}
  kv.write_json(shard_key(name, DONE), done)
  return done


def _kill_after() -> int | None:
  raw = os.environ.get(FAULT_KILL_SHARDS, "").strip()
  if raw and not raw.isdigit():
    raise ValueError(f"{FAULT_KILL_SHARDS}={raw!r} must be a number of shards")
  return int(raw) if raw else None


def _tokenize_shards(store: str, files: list[InputFile], tok: TokSpec, plan_: dict, on_bad_record: str,
                     worker: int, workers: int) -> int:
  """This worker's shards (worker::workers) not yet done; returns how many it tokenized."""
  kv = store_io.Kv(store)
  mine = list(range(worker, len(files), workers))
  dones = kv.read_json_many([shard_key(shard_name(i), DONE) for i in mine])
  todo = [i for i, d in zip(mine, dones) if not _done_matches(d, plan_["sources"][i], plan_)]
  kill_after = _kill_after()
  for n, i in enumerate(todo):
    done = tokenize_shard(store, i, files[i], tok, plan_, on_bad_record, kv, kill=n == kill_after)
    log.info("shard %s: %d docs, %d tokens, %d records skipped (%s)", done["shard"], done["docs"],
             done["tokens"], done["skipped"], files[i].path)
  if len(todo) < len(mine):
    log.info("worker %d/%d: %d of its %d shards were already done", worker, workers, len(mine) - len(todo),
             len(mine))
  return len(todo)


def _worker(store, files, tok, plan_, on_bad_record, worker, workers, threads) -> int:
  # A spawned process: the tokenizer's thread pool starts at its first batch, so this sizes it.
  os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
  _log_progress()
  return _tokenize_shards(store, files, tok, plan_, on_bad_record, worker, workers)


def manifest_of(plan_: dict, dones: list[dict]) -> dict[str, Any]:
  shards = [{"name": d["shard"], "source": d["source"], "records": d["records"], "docs": d["docs"],
             "tokens": d["tokens"], "skipped": d["skipped"]} for d in dones]
  total = lambda k: sum(s[k] for s in shards)
  return {"format": plan_["format"], "kind": plan_["kind"], "text_field": plan_["text_field"],
          "tokenizer": plan_["tokenizer"],
          "sources": [{"path": d["source"], "size": d["size"], "records": d["records"]} for d in dones],
          "shards": shards,
          "totals": {"shards": len(shards), "records": total("records"), "docs": total("docs"),
                     "tokens": total("tokens"), "skipped": total("skipped")},
          "layout": dict(store_io.LAYOUT)}


def finalize(store: str, plan_: dict) -> dict | None:
  """Writes manifest.json once every shard is done; returns it, or None (pending)."""
  kv = store_io.Kv(store)
  n = len(plan_["sources"])
  dones = kv.read_json_many([shard_key(shard_name(i), DONE) for i in range(n)])
  done = sum(_done_matches(d, s, plan_) for d, s in zip(dones, plan_["sources"]))
  if done < n:
    log.info("%s: manifest pending: %d of %d shards done (the process that finishes last writes it)",
             kv.path, done, n)
    return None
  manifest = manifest_of(plan_, dones)
  kv.write_json(MANIFEST, manifest)
  return manifest


def _same_build(manifest: dict, plan_: dict) -> str | None:
  """Why an existing manifest is not this build's, or None."""
  for key in ("format", "kind", "text_field"):
    if manifest.get(key) != plan_[key]:
      return f"{key} {manifest.get(key)!r} != {plan_[key]!r}"
  for key in ("fingerprint", "eos_id", "pad_id"):
    if manifest.get("tokenizer", {}).get(key) != plan_["tokenizer"][key]:
      return f"tokenizer {key} {manifest.get('tokenizer', {}).get(key)!r} != {plan_['tokenizer'][key]!r}"
  have = [(s["path"], s["size"]) for s in manifest.get("sources", [])]
  if have != [(s["path"], s["size"]) for s in plan_["sources"]]:
    return f"its {len(have)} source files differ from the {len(plan_['sources'])} given"
  return None


def build_store(inputs: list[str], out: str, tok_spec: TokSpec, *, kind: str = "text", text_field: str = "text",
                on_bad_record: str = "raise", process_index: int = 0, process_count: int = 1,
                processes: int = 1) -> dict | None:
  """Tokenizes `inputs` into the store at `out` (this process's share of the shards).

  Returns the manifest once the store is complete (at once if it already was), or None while
  other processes still have shards to write. `processes` > 1 splits this process's share
  among that many local worker processes.
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} must be one of {KINDS}")
  if on_bad_record not in ON_BAD_RECORD:
    raise ValueError(f"on_bad_record={on_bad_record!r} must be one of {ON_BAD_RECORD}")
  if not 0 <= process_index < process_count or processes < 1:
    raise ValueError(f"process_index={process_index}, process_count={process_count}, processes={processes}: "
                     "need 0 <= process_index < process_count and processes >= 1")
  files = resolve_inputs(list(inputs))
  store = store_io.normalize(out)
  plan_ = plan(files, tok_spec, kind, text_field)
  kv = store_io.Kv(store)
  existing = kv.read_json(MANIFEST)
  if existing is not None:
    why = _same_build(existing, plan_)
    if why:
      raise ValueError(f"{store}: already holds a token store of another build ({why}); "
                       "choose another --out or delete it")
    return existing
  kv.write_json(PLAN, plan_)
  workers = process_count * processes
  if processes == 1:
    _tokenize_shards(store, files, tok_spec, plan_, on_bad_record, process_index, workers)
  else:
    threads = max(1, (os.cpu_count() or 1) // processes)
    ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads (JAX, TensorStore)
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
      jobs = [pool.submit(_worker, store, files, tok_spec, plan_, on_bad_record,
                          process_index * processes + i, workers, threads) for i in range(processes)]
      for job in jobs:
        job.result()
  return finalize(store, plan_)


def _log_progress() -> None:
  logging.basicConfig(level=logging.WARNING, format="%(message)s")  # not every library's INFO
  log.setLevel(logging.INFO)


def _env_int(name: str, default: int) -> int:
  raw = os.environ.get(name, "").strip()
  return int(raw) if raw.isdigit() else default


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="python -m granite_jax.data.tokenize", description=__doc__.split("\n")[0])
  p.add_argument("inputs", nargs="+", help="files, directories, globs, s3:// or gs:// prefixes")
  p.add_argument("--out", required=True, help="store: a directory, s3:// or gs:// prefix")
  p.add_argument("--tokenizer", required=True, help="tokenizer.json or a Hugging Face tokenizer folder")
  p.add_argument("--kind", choices=KINDS, default="text")
  p.add_argument("--text_field", default="text", help="JSON field / Parquet column of the text")
  p.add_argument("--processes", type=int, default=1,
                 help="local worker processes (one per core is fastest: each parses its own files)")
  p.add_argument("--process_index", type=int, default=_env_int("SLURM_PROCID", 0))
  p.add_argument("--process_count", type=int, default=_env_int("SLURM_NTASKS", 1))
  p.add_argument("--on_bad_record", choices=ON_BAD_RECORD, default="raise")
  p.add_argument("--eos_token", default=None, help="overrides the tokenizer's configured EOS token")
  p.add_argument("--pad_token", default=None, help="overrides the tokenizer's configured PAD token")
  args = p.parse_args(argv)
  _log_progress()
  tok = load_tokenizer_spec(args.tokenizer, args.eos_token, args.pad_token)
  manifest = build_store(args.inputs, args.out, tok, kind=args.kind, text_field=args.text_field,
                         on_bad_record=args.on_bad_record, process_index=args.process_index,
                         process_count=args.process_count, processes=args.processes)
  store = store_io.normalize(args.out)
  if manifest is None:
    print(f"{store}: this process's shards are done; manifest pending (written by the last process to finish)")
  else:
    t = manifest["totals"]
    print(f"{store}: {t['shards']} shards, {t['docs']} docs, {t['tokens']} tokens"
          f" ({t['skipped']} bad records skipped); tokenizer {manifest['tokenizer']['fingerprint']}")
  return 0


if __name__ == "__main__":
  from granite_jax.cli import run_main
  sys.exit(run_main("granite_jax.data.tokenize", main))
