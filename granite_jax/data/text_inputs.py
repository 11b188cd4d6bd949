"""Input files of a token store build, local or remote, read front to back.

`resolve_inputs` turns paths, directories (searched recursively), globs and
`s3://` / `gs://` URLs into the sorted list of supported files with their
sizes; `read_records` streams one file's records as the text (kind "text") or
conversation (kind "chat") each holds, or a `BadRecord` saying why it holds
none, so the caller decides to raise (naming file + record index) or skip.
Remote files go through fsspec (s3fs/gcsfs); the endpoint and credentials
come from the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).

Formats: JSONL (also .jsonl.gz, .jsonl.zst), Parquet and ArrayRecord. A text
record is a JSON object's `text_field`, a Parquet column of that name, or an
ArrayRecord record that is UTF-8 text (or a JSON object with that field). A
chat record is {"messages": [...], "tools"?, "documents"?}.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from granite_jax.data.file_readers import BadRecord

FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".jsonl.zst": "jsonl", ".jsonl.zstd": "jsonl",
           ".parquet": "parquet", ".arrayrecord": "arrayrecord", ".array_record": "arrayrecord"}
KINDS = ("text", "chat")
_GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class InputFile:
  path: str  # absolute local path, or a full URL (s3://bucket/key)
  size: int


def file_format(path: str) -> str | None:
  name = path.lower()
  return next((fmt for ext, fmt in FORMATS.items() if name.endswith(ext)), None)


def is_remote(path: str) -> bool:
  return "://" in path and not path.startswith("file://")


def storage_options(url: str) -> dict[str, Any]:
  """fsspec options from the environment; s3fs does not read AWS_ENDPOINT_URL everywhere."""
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
  if url.startswith("s3://") and endpoint:
    return {"endpoint_url": endpoint}
  return {}


def filesystem(url: str):
  """(fsspec filesystem, path within it) for a local path or URL."""
  import fsspec
  if not is_remote(url):
    url = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
  return fsspec.core.url_to_fs(url, **storage_options(url))


def _name(fs, path: str, remote: bool) -> str:
  return fs.unstrip_protocol(path) if remote else path


def _resolve_one(spec: str) -> list[InputFile]:
  fs, root = filesystem(spec)
  remote = is_remote(spec)
  supported = lambda info: info.get("type") == "file" and file_format(info["name"]) is not None
  if any(c in root for c in _GLOB_CHARS):
    matches = list(fs.glob(root, detail=True).values())  # one listing, not a request per match
    if not matches:
      raise FileNotFoundError(f"{spec}: no such file, directory or glob match")
    infos = [i for m in matches
             for i in ([m] if m.get("type") == "file" else fs.find(m["name"], detail=True).values())]
    what = "glob matches no"
  elif fs.isfile(root):
    info = fs.info(root)
    if file_format(root) is None:
      raise ValueError(f"{spec}: unsupported file type; expected one of {sorted(FORMATS)}")
    return [InputFile(_name(fs, info["name"], remote), int(info["size"]))]
  elif fs.isdir(root):
    infos, what = list(fs.find(root, detail=True).values()), "directory holds no"
  else:
    raise FileNotFoundError(f"{spec}: no such file, directory or glob match")
  files = [InputFile(_name(fs, i["name"], remote), int(i["size"])) for i in infos if supported(i)]
  if not files:
    raise FileNotFoundError(f"{spec}: {what} {'/'.join(sorted(FORMATS))} files")
  return files


def resolve_inputs(inputs: list[str]) -> list[InputFile]:
  """Every supported file under `inputs`, sorted by path, each once."""
  if not inputs:
    raise ValueError("no inputs given")
  found = {f.path: f for spec in inputs for f in _resolve_one(spec)}
  return [found[p] for p in sorted(found)]


def text_of(value: Any, field: str) -> str:
  """The text of a parsed JSON record."""
  if not isinstance(value, dict):
    raise BadRecord(f"expected a JSON object, got {type(value).__name__}")
  text = value.get(field)
  if not isinstance(text, str):
    raise BadRecord(f"JSON object has no string {field!r} field (keys: {sorted(value)[:8]})")
  return text


def conversation_of(value: Any) -> dict:
  """A validated conversation (the checks of chat_pipeline.ConversationSource)."""
  if not isinstance(value, dict) or not isinstance(value.get("messages"), list) or not value["messages"]:
    raise BadRecord("expected an object with a non-empty 'messages' list")
  for m in value["messages"]:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
      raise BadRecord("every message needs a string 'role'")
    if not isinstance(m.get("content", ""), str):
      raise BadRecord(f"message content must be a string, got {type(m.get('content')).__name__}")
  return value


def _json(raw: bytes) -> Any:
  try:
    return json.loads(raw)
  except ValueError as e:
    raise BadRecord(f"invalid JSON: {e}") from None


def _utf8(raw: bytes) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadRecord(f"not valid UTF-8: {e}") from None


def _from_jsonl(raw: bytes, kind: str, field: str):
  if not raw.strip():
    return None  # blank line: no document
  value = _json(raw)
  return text_of(value, field) if kind == "text" else conversation_of(value)


def _from_arrayrecord(raw: bytes, kind: str, field: str):
  if kind == "chat":
    return conversation_of(_json(raw))
  text = _utf8(raw)
  if text.startswith("{"):  # a JSON object carrying the field is unwrapped; other text is verbatim
    try:
      value = json.loads(text)
    except ValueError:
      return text
    if isinstance(value, dict) and isinstance(value.get(field), str):
      return value[field]
  return text


def _from_parquet(value: Any, kind: str, field: str):
  if kind == "chat":
    value = dict(value)
    for k in ("messages", "tools", "documents"):  # JSON-string columns hold nested values
      if isinstance(value.get(k), str):
        value[k] = _json(value[k].encode())
    return conversation_of(value)
  if value is None:
    raise BadRecord(f"{field!r} is null")
  if isinstance(value, bytes):
    return _utf8(value)
  if not isinstance(value, str):
    raise BadRecord(f"{field!r} is {type(value).__name__}, not a string")
  return value


def _raw_jsonl(fs, path: str) -> Iterator[bytes]:
  with fs.open(path, "rb") as f:
    name = path.lower()
    if name.endswith(".gz"):
      lines = gzip.GzipFile(fileobj=f, mode="rb")
    elif name.endswith((".zst", ".zstd")):  # zstandard's reader reads, but does not iterate lines
      import zstandard
      lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f), 1 << 20)
    else:
      lines = f
    yield from lines


def _raw_parquet(fs, path: str, kind: str, field: str) -> Iterator[Any]:
  import pyarrow.parquet as pq
  with fs.open(path, "rb") as f:
    pf = pq.ParquetFile(f)
    names = pf.schema_arrow.names
    want = [field] if kind == "text" else [c for c in ("messages", "tools", "documents") if c in names]
    missing = [c for c in (want if kind == "text" else ["messages"]) if c not in names]
    if missing:
      raise ValueError(f"{fs.unstrip_protocol(path)}: Parquet file has no {missing[0]!r} column "
                       f"(columns: {names})")
    for batch in pf.iter_batches(batch_size=4096, columns=want):
      yield from (batch.column(0).to_pylist() if kind == "text" else batch.to_pylist())


def _raw_arrayrecord(fs, path: str, remote: bool) -> Iterator[bytes]:
  from array_record.python.array_record_module import ArrayRecordReader
  with tempfile.TemporaryDirectory() as tmp:
    local = path
    if remote:  # the ArrayRecord reader opens local files only
      local = os.path.join(tmp, "input.arrayrecord")
      fs.get(path, local)
    reader = ArrayRecordReader(local)
    try:
      n, step = reader.num_records(), 1024
      for start in range(0, n, step):
        yield from reader.read(start, min(start + step, n))
    finally:
      reader.close()


def read_records(path: str, kind: str = "text", field: str = "text") -> Iterator[Any]:
  """Each record of the file in order: its text (kind "text") or conversation (kind "chat"),
  None when it holds nothing (a blank JSONL line), or the `BadRecord` it raised."""
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} must be one of {KINDS}")
  fmt = file_format(path)
  fs, inner = filesystem(path)
  if fmt == "jsonl":
    raw, convert = _raw_jsonl(fs, inner), _from_jsonl
  elif fmt == "parquet":
    raw, convert = _raw_parquet(fs, inner, kind, field), _from_parquet
  elif fmt == "arrayrecord":
    raw, convert = _raw_arrayrecord(fs, inner, is_remote(path)), _from_arrayrecord
  else:
    raise ValueError(f"{path}: unsupported file type; expected one of {sorted(FORMATS)}")
  for value in raw:
    try:
      yield convert(value, kind, field)
    except BadRecord as e:
      yield e
