"""Token store layout and its TensorStore specs, for a local directory, `s3://` or `gs://` prefix.

  manifest.json                  written last: what the store holds (see tokenize.py)
  plan.json                      the build's inputs and settings, written first
  shards/00000/tokens            zarr3 int32 [tokens]: every document's tokens, back to back
  shards/00000/loss_mask         zarr3 uint8 [tokens]: chat stores only
  shards/00000/doc_ends          zarr3 int64 [docs]: document i is tokens[doc_ends[i-1]:doc_ends[i]]
  shards/00000/done.json         the shard's stats, written after its arrays are committed

Token and mask arrays are uncompressed zarr3 "sharded" arrays: one object per
2^20 tokens (few objects), read in 2^16-token inner chunks through the
object's index (a random 4096-token row costs one or two 256 KiB range reads,
not a 4 MiB object), so random rows come at memory speed from a local store.
All store I/O, JSON included, goes through TensorStore kvstores: the same code
serves files (written atomically, by temp file + rename), S3 (endpoint and
credentials from the AWS_* environment) and GCS.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorstore as ts

FORMAT = "granite_jax.token_store.v1"
MANIFEST, PLAN, DONE = "manifest.json", "plan.json", "done.json"
FILE_TOKENS = 1 << 20  # tokens per stored object
READ_TOKENS = 1 << 16  # tokens per inner chunk: the unit one read fetches
DOC_CHUNK = 1 << 20
UNBOUNDED = 1 << 40  # a shard's shape while its length is unknown (shrunk when it is)
LAYOUT = {"file_tokens": FILE_TOKENS, "read_tokens": READ_TOKENS}
ARRAYS = {"tokens": "int32", "loss_mask": "uint8", "doc_ends": "int64"}


def shard_name(shard: int) -> str:
  return f"{shard:05d}"


def shard_key(name: str, leaf: str) -> str:
  return f"shards/{name}/{leaf}"


def kvstore_spec(path: str, key: str = "") -> dict[str, Any]:
  """TensorStore kvstore spec for `key` (a "directory" ending in "/", or a file) under a store path."""
  if path.startswith("s3://") or path.startswith("gs://"):
    bucket, _, prefix = path[5:].partition("/")
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    spec: dict[str, Any] = {"driver": "s3" if path.startswith("s3://") else "gcs", "bucket": bucket,
                            "path": prefix + key}
    if path.startswith("s3://"):
      endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
      region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
      if endpoint:
        spec["endpoint"] = endpoint
      if region:
        spec["aws_region"] = region
      if os.environ.get("AWS_ACCESS_KEY_ID"):  # else the default chain (profile, instance role, ...)
        spec["aws_credentials"] = {"type": "environment"}
    return spec
  if "://" in path and not path.startswith("file://"):
    raise ValueError(f"{path}: unsupported store location (expected a local path, s3:// or gs://)")
  root = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
  return {"driver": "file", "path": os.path.join(root, key) if key else root + "/"}


def normalize(path: str) -> str:
  """The store path as recorded: absolute for local stores."""
  if path.startswith("s3://") or path.startswith("gs://"):
    return path.rstrip("/")
  return os.path.abspath(os.path.expanduser(path.removeprefix("file://")))


def array_spec(store: str, name: str, leaf: str, shape: int | None = None) -> dict[str, Any]:
  """zarr3 spec of one shard array; with `shape` it carries full metadata (create, or open without
  reading it: a store's arrays never change once written)."""
  dtype = ARRAYS[leaf]
  raw = [{"name": "bytes", "configuration": {"endian": "little"}}]
  if leaf == "doc_ends":  # read whole: one chunk unless huge (a chunk is allocated whole, so not larger)
    chunk = min(DOC_CHUNK, max(1, shape or 0))
    codecs = raw + [{"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
  else:
    chunk, codecs = FILE_TOKENS, [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [READ_TOKENS], "codecs": raw,
        "index_codecs": raw + [{"name": "crc32c"}], "index_location": "end"}}]
  spec: dict[str, Any] = {"driver": "zarr3", "kvstore": kvstore_spec(store, shard_key(name, leaf) + "/"),
                          "recheck_cached_data": False, "recheck_cached_metadata": False}
  if shape is not None:
    spec["metadata"] = {"shape": [shape], "data_type": dtype, "fill_value": 0,
                        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
                        "chunk_key_encoding": {"name": "default"}, "codecs": codecs}
  return spec


def json_bytes(obj: Any) -> bytes:
  """Deterministic JSON: whoever writes a file writes the same bytes."""
  return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


class Kv:
  """The store's root as a TensorStore kvstore: JSON files and key deletion."""

  def __init__(self, path: str):
    self.path = normalize(path)
    self.kv = ts.KvStore.open(kvstore_spec(path)).result()

  def read_json(self, key: str) -> Any | None:
    return self._decode(key, self.kv.read(key).result())

  def read_json_many(self, keys: list[str]) -> list[Any | None]:
    futures = [self.kv.read(k) for k in keys]  # concurrent: one round trip, not len(keys)
    return [self._decode(k, f.result()) for k, f in zip(keys, futures)]

  def _decode(self, key: str, result) -> Any | None:
    if result.state != "value":
      return None
    try:
      return json.loads(result.value)
    except ValueError as e:
      raise ValueError(f"{self.path}/{key}: not valid JSON: {e}") from None

  def write_json(self, key: str, obj: Any) -> None:
    self.kv.write(key, json_bytes(obj)).result()

  def delete_prefix(self, prefix: str) -> None:
    self.kv.delete_range(ts.KvStore.KeyRange(prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))).result()
