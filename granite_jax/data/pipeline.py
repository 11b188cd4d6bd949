"""A run's data: config -> token stores -> one global order (data/order.py) -> batches (batches.py).

`data.sources.<domain>` (and `eval_sources`, `sft.sources`) name a token store built by
`python -m granite_jax.data.tokenize`, or text (files, directories, globs; "" = the built-in demo
corpus). Text is tokenized into a store under `data.cache_dir/stores/` on first use, keyed by its
files, the tokenizer and the text field, so there is one read path and no run tokenizes twice.
Every store is opened (so checked: exists, complete, non-empty, same tokenizer as the run) when
the order is built, before the first step.

The data seed: `data.seed`, or (-1, the default) one derived from `train.seed` and the stage name,
so each phase sees its own order even when it reads another phase's stores.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from granite_jax.data import config
from granite_jax.data.config import mixture_weights, resolve_sources  # noqa: F401 - public API
from granite_jax.data.order import GlobalOrder, PackedRows, WindowRows, sub_seed
from granite_jax.data.sources import resolve_files

_STORE_KEY_VERSION = "store_v1"


def data_seed(c: Any) -> int:
  """`data.seed` when >= 0, else a seed of (train.seed, stage name): each phase its own order."""
  seed = int(c.data.get("seed", -1))
  return seed if seed >= 0 else sub_seed(int(c.train.seed), str(c.get("name", "")))


def run_tokenizer(data_cfg: Any):
  """The run's TokSpec (tokenizer, EOS/PAD ids, fingerprint): `data.tokenizer` or the demo BPE."""
  from granite_jax.data.tok_spec import load_tokenizer_spec
  from granite_jax.data.tokenizer import tokenizer_path
  return load_tokenizer_spec(tokenizer_path(data_cfg), eos_token=config.field(data_cfg, "eos_token") or None,
                             pad_token=config.field(data_cfg, "pad_token") or None)


def _is_remote(path: str) -> bool:
  return "://" in path


def _text_key(path: str, spec, kind: str, text_field: str, on_bad: str) -> str:
  files = [path] if _is_remote(path) else resolve_files(path)
  stats = [[f] if _is_remote(f) else [os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns]
           for f in files]
  blob = json.dumps([_STORE_KEY_VERSION, stats, spec.fingerprint, kind, text_field, on_bad])
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _build_shared(inputs: list[str], out: str, spec, **kw) -> None:
  """Every process tokenizes its share of the files; then all wait; then the manifest is written."""
  import jax
  from granite_jax.data.store import build_store, store_exists
  p, n = jax.process_index(), jax.process_count()
  build_store(inputs, out, spec, process_index=p, process_count=n, **kw)
  if n > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"granite_jax_store_{os.path.basename(out)}")
  if not store_exists(out):  # the last two finished at once, or the cache is not shared: finish it here
    build_store(inputs, out, spec, process_index=0, process_count=1, **kw)


def open_store(data_cfg: Any, path: str, what: str, spec, kind: str = "text"):
  """The TokenStore at `path`, or the cache store of the text at `path` (built on first use).
  Errors (unreadable, bad records, no tokens, another tokenizer) name `what`, the config field."""
  try:
    store = _open_store(data_cfg, path, what, spec, kind)
  except (ValueError, FileNotFoundError, OSError) as e:
    msg = str(e).replace("pass --on_bad_record=skip", "set data.on_bad_record='skip'")
    raise ValueError(msg if msg.startswith(f"{what}=") else f"{what}={path!r}: {msg}") from e
  if store.num_tokens == 0:
    files = ", ".join(store.sources[:5]) + (" ..." if len(store.sources) > 5 else "")
    raise ValueError(f"{what}={path!r}: no tokens (every record of {files} is empty or was skipped as bad)")
  return store


def _open_store(data_cfg: Any, path: str, what: str, spec, kind: str):
  from granite_jax.data import store_io
  from granite_jax.data.store import TokenStore, store_exists
  if not store_exists(path) and store_io.Kv(path).read_json(store_io.PLAN) is not None:
    TokenStore(path)  # a store still being built: says how far it got
  if not store_exists(path):
    text_field = config.field(data_cfg, "text_field") or "text"
    on_bad = config.on_bad_record(data_cfg)
    out = os.path.join(config.cache_dir(data_cfg), "stores",
                       f"{kind}_{_text_key(path, spec, kind, text_field, on_bad)}")
    if not store_exists(out):
      print(f"granite_jax: tokenizing {what}={path} once into {out}", flush=True)
      _build_shared([path], out, spec, kind=kind, text_field=text_field, on_bad_record=on_bad)
    path = out
  store = TokenStore(path)
  store.check_tokenizer(spec.fingerprint, "the run's tokenizer (data.tokenizer)")
  if store.kind != kind:
    raise ValueError(f"{what}={path!r} is a {store.kind!r} token store; this stage reads {kind!r} data")
  return store


def make_order(data_cfg: Any, *, seq_len: int, seed: int, split: str = "train") -> GlobalOrder:
  """The rows of the run (`split="train"`: shuffled by `seed`) or of its held-out set (in order)."""
  if split not in config.SPLITS:
    raise ValueError(f"split={split!r} must be one of {config.SPLITS}")
  spec = run_tokenizer(data_cfg)
  shuffle = split == "train"
  if config.field(data_cfg, "kind", "pretrain") == "sft":
    from granite_jax.data.chat_pipeline import sft_sources
    key = "sources" if split == "train" else "eval_sources"
    store = open_store(data_cfg, sft_sources(data_cfg, split), f"data.sft.{key}", spec, kind="chat")
    return GlobalOrder({"sft": PackedRows(store, seq_len, sub_seed(seed, "sft"), shuffle=shuffle)}, {"sft": 1.0})
  key = "sources" if split == "train" else "eval_sources"
  weights = mixture_weights(data_cfg)
  paths = resolve_sources(data_cfg, split)
  given = config.as_dict(config.field(data_cfg, key), f"data.{key}")
  rows = {}
  # The user's sources first: their errors come before any demo-corpus domain is tokenized.
  for domain in sorted(paths, key=lambda d: not given.get(d)):
    store = open_store(data_cfg, paths[domain], f"data.{key}.{domain}", spec)
    rows[domain] = WindowRows(store, seq_len, sub_seed(seed, domain), shuffle=shuffle)
  return GlobalOrder({d: rows[d] for d in paths}, weights)


def describe(order: GlobalOrder, steps: int, global_batch: int) -> str:
  """The banner's data line: each domain's share, tokens and the epochs this run takes of it."""
  ep = order.epochs(steps * global_batch)
  parts = []
  for name, src in zip(order.names, order.sources):
    share = order.mixture.quota_K[order.names.index(name)] / order.mixture.period
    tokens = getattr(src, "num_tokens", None) or int(src.doc_len.sum())
    parts.append(f"{name} {share:.1%} ({tokens:,} tokens, {ep[name]:.2f} epochs)")
  return ", ".join(parts)
