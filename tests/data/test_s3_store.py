"""Token stores on S3: inputs and store on a real S3 API server (moto_server on 127.0.0.1), read through
the real clients (s3fs for inputs, TensorStore's s3 kvstore for the store); nothing is mocked."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from granite_jax.data.store import TokenStore, build_store, store_exists
from granite_jax.data.tok_spec import load_tokenizer_spec
from granite_jax.data.text_inputs import resolve_inputs
from tests.s3_server import BUCKET, s3_server
from tests.data.store_helpers import DOCS, make_tokenizer, store_docs, write_input

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrayrecord"]


@pytest.fixture(scope="module")
def s3():
  """A moto S3 server for this module, and the AWS_* environment pointing at it."""
  with s3_server(BUCKET) as (client, _):
    yield client


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  return load_tokenizer_spec(make_tokenizer(str(tmp_path_factory.mktemp("tok") / "tok.json")))


def _upload(s3, local_dir: str, prefix: str) -> None:
  for d, _, files in os.walk(local_dir):
    for f in files:
      path = os.path.join(d, f)
      s3.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, local_dir)}")


def test_s3_inputs_to_s3_store_read_back_like_a_local_build(tmp_path, s3, spec):
  local_in = tmp_path / "in"
  for i, fmt in enumerate(FORMATS):
    write_input(str(local_in / ("sub" if i % 2 else "") / f"f{i}.{fmt}"), [f"{d} {i}" if d else d for d in DOCS])
  _upload(s3, str(local_in), "in")
  found = resolve_inputs([f"s3://{BUCKET}/in"])
  assert [f.path for f in found] == sorted(
      f"s3://{BUCKET}/in/{os.path.relpath(os.path.join(d, f), local_in)}" for d, _, fs in os.walk(local_in)
      for f in fs)
  assert [f.size for f in found] == [s3.head_object(Bucket=BUCKET, Key=f.path[len(f"s3://{BUCKET}/"):])
                                     ["ContentLength"] for f in found]
  assert [f.path for f in resolve_inputs([f"s3://{BUCKET}/in/sub/*.parquet"])] == \
      [f"s3://{BUCKET}/in/sub/f3.parquet"]

  local = build_store([str(local_in)], str(tmp_path / "local"), spec)
  url = f"s3://{BUCKET}/stores/text"
  assert not store_exists(url)
  run = subprocess.run([sys.executable, "-m", "granite_jax.data.tokenize", f"s3://{BUCKET}/in", f"--out={url}",
                        f"--tokenizer={spec.path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  assert store_exists(url)
  remote = TokenStore(url)
  assert remote.path == url and remote.sources == [f.path for f in found]
  assert remote.manifest["totals"] == local["totals"] and remote.manifest["shards"] != local["shards"]  # sources
  assert remote.shard_tokens.tolist() == TokenStore(str(tmp_path / "local")).shard_tokens.tolist()
  ref = TokenStore(str(tmp_path / "local"))
  for s in range(remote.num_shards):
    assert store_docs(remote, s) == store_docs(ref, s)
    assert remote.doc_ends(s).tolist() == ref.doc_ends(s).tolist()
    n = int(remote.shard_tokens[s])
    assert [r.tolist() for r in remote.read_ranges(s, [0, n // 2], [n // 3, n])] == \
        [ref.read(s, 0, n // 3).tolist(), ref.read(s, n // 2, n).tolist()]
  copy = pickle.loads(pickle.dumps(remote))
  assert copy.read(1, 0, 20).tolist() == ref.read(1, 0, 20).tolist()
  keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="stores/text/")["Contents"]}
  assert {"stores/text/manifest.json", "stores/text/shards/00000/done.json",
          "stores/text/shards/00004/tokens/zarr.json", "stores/text/shards/00004/doc_ends/zarr.json"} <= keys


def test_s3_chat_store_and_rerun(tmp_path, s3, spec):
  convs = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
           for i in range(5)]
  write_input(str(tmp_path / "in" / "c.jsonl"), convs)
  _upload(s3, str(tmp_path / "in"), "chat-in")
  url = f"s3://{BUCKET}/stores/chat"
  manifest = build_store([f"s3://{BUCKET}/chat-in"], url, spec, kind="chat")
  assert build_store([f"s3://{BUCKET}/chat-in"], url, spec, kind="chat") == manifest  # done: a no-op
  build_store([str(tmp_path / "in")], str(tmp_path / "local"), spec, kind="chat")
  remote, ref = TokenStore(url), TokenStore(str(tmp_path / "local"))
  assert store_docs(remote, 0) == store_docs(ref, 0)
  assert store_docs(remote, 0, mask=True) == store_docs(ref, 0, mask=True)
  assert np.any(remote.read_mask(0, 0, int(remote.shard_tokens[0])))
