"""Building token stores: formats, fields, chat, bad records, tokenizer specs, crash + rerun, processes."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from granite_jax.data.chat_template import encode_chat
from granite_jax.data.store import TokenStore, build_store, store_exists
from granite_jax.data.tok_spec import load_tokenizer_spec
from granite_jax.data.tokenize import FAULT_KILL_SHARDS
from tests.data.store_helpers import DOCS, expected_text_docs, make_tokenizer, store_docs, tree, write_input

FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrayrecord"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return make_tokenizer(str(tmp_path_factory.mktemp("tok") / "tok.json"))


@pytest.fixture(scope="module")
def spec(tok_path):
  return load_tokenizer_spec(tok_path)


def _docs(i: int) -> list[str]:
  return [f"{d} #{i}" if d else d for d in DOCS]


def test_every_format_round_trips(tmp_path, spec):
  files = {fmt: write_input(str(tmp_path / "in" / f"f{i}.{fmt}"), _docs(i)) for i, fmt in enumerate(FORMATS)}
  manifest = build_store([str(tmp_path / "in")], str(tmp_path / "store"), spec)
  store = TokenStore(str(tmp_path / "store"))
  assert store.sources == sorted(files.values()) == [s["path"] for s in manifest["sources"]]
  assert store.kind == "text" and store.num_shards == len(FORMATS)
  assert store.tokenizer["fingerprint"] == spec.fingerprint and store.tokenizer["eos_id"] == 1
  for s, path in enumerate(store.sources):  # f0.jsonl < f1.jsonl.gz < ...: shard s is FORMATS[s]
    want = expected_text_docs(spec.tok, _docs(s), spec.eos_id)
    assert store_docs(store, s) == want, path
    ends = store.doc_ends(s)
    assert ends.dtype == np.int64 and ends[-1] == store.shard_tokens[s] and np.all(np.diff(ends) > 0)
    assert manifest["shards"][s]["docs"] == len(want) == len(DOCS) - 1  # the empty text is dropped
    assert manifest["sources"][s]["records"] == len(DOCS)
    assert manifest["sources"][s]["size"] == os.path.getsize(path)
  assert manifest["totals"]["tokens"] == store.num_tokens == sum(
      len(d) for i in range(len(FORMATS)) for d in expected_text_docs(spec.tok, _docs(i), spec.eos_id))
  assert store.num_docs == manifest["totals"]["docs"] == len(FORMATS) * (len(DOCS) - 1)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "arrayrecord"])
def test_custom_text_field(tmp_path, spec, fmt):
  write_input(str(tmp_path / "in" / f"a.{fmt}"), DOCS, field="body")
  manifest = build_store([str(tmp_path / "in" / f"a.{fmt}")], str(tmp_path / "store"), spec, text_field="body")
  assert manifest["text_field"] == "body"
  assert store_docs(TokenStore(str(tmp_path / "store")), 0) == expected_text_docs(spec.tok, DOCS, spec.eos_id)
  if fmt == "arrayrecord":
    return  # an ArrayRecord record without the field is text, taken verbatim (as file_readers reads it)
  with pytest.raises(ValueError, match="'text'"):  # the default field is not there
    build_store([str(tmp_path / "in" / f"a.{fmt}")], str(tmp_path / "store2"), spec)


CONVS = [
    {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello! 🙂"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}], "documents": [{"title": "d", "text": "four"}]},
    {"messages": [{"role": "user", "content": "weather?"},
                  {"role": "assistant", "content": "", "tool_calls": [{"name": "get", "arguments": {"q": 1}}]}],
     "tools": [{"name": "get", "description": "look it up"}]},
]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_chat_tokens_and_mask_equal_encode_chat(tmp_path, spec, fmt):
  write_input(str(tmp_path / "in" / f"c.{fmt}"), CONVS)
  manifest = build_store([str(tmp_path / "in")], str(tmp_path / "store"), spec, kind="chat")
  store = TokenStore(str(tmp_path / "store"))
  assert store.kind == manifest["kind"] == "chat"
  want = [encode_chat(spec.tok, c["messages"], c.get("tools"), c.get("documents")) for c in CONVS]
  assert store_docs(store, 0) == [ids.tolist() for ids, _ in want]
  assert store_docs(store, 0, mask=True) == [mask.astype(int).tolist() for _, mask in want]
  assert store.read_mask(0, 0, 5).dtype == np.uint8


def _bad_jsonl(path):
  lines = [json.dumps({"text": "good one"}), "{not json", json.dumps({"txt": "wrong field"}),
           json.dumps(["a list"]), json.dumps({"text": "good two"})]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "w").write("\n".join(lines) + "\n")
  return path


def test_bad_records_raise_naming_file_and_record(tmp_path, spec):
  path = _bad_jsonl(str(tmp_path / "in" / "bad.jsonl"))
  with pytest.raises(ValueError, match=rf"{path}: bad record 1: invalid JSON"):
    build_store([path], str(tmp_path / "store"), spec)
  assert not store_exists(str(tmp_path / "store"))


def test_bad_records_skipped_and_counted(tmp_path, spec):
  write_input(str(tmp_path / "in" / "a.jsonl"), DOCS)
  path = _bad_jsonl(str(tmp_path / "in" / "bad.jsonl"))
  (tmp_path / "in" / "c_empty.jsonl").write_text("")
  manifest = build_store([str(tmp_path / "in")], str(tmp_path / "store"), spec, on_bad_record="skip")
  assert [s["skipped"] for s in manifest["shards"]] == [0, 3, 0] and manifest["totals"]["skipped"] == 3
  assert manifest["shards"][2] == {"name": "00002", "source": str(tmp_path / "in" / "c_empty.jsonl"), "records": 0,
                                   "docs": 0, "tokens": 0, "skipped": 0}
  assert manifest["sources"][1] == {"path": path, "size": os.path.getsize(path), "records": 5}
  store = TokenStore(str(tmp_path / "store"))
  assert store_docs(store, 1) == expected_text_docs(spec.tok, ["good one", "good two"], spec.eos_id)
  assert store_docs(store, 2) == [] and store.read(2, 0, 0).shape == (0,)


def test_chat_bad_record(tmp_path, spec):
  path = write_input(str(tmp_path / "in" / "c.jsonl"), [CONVS[0], {"messages": []}, {"messages": [{"x": 1}]}])
  with pytest.raises(ValueError, match=rf"{path}: bad record 1: expected an object with a non-empty"):
    build_store([path], str(tmp_path / "store"), spec, kind="chat")
  m = build_store([path], str(tmp_path / "store2"), spec, kind="chat", on_bad_record="skip")
  assert m["shards"][0]["skipped"] == 2 and m["shards"][0]["docs"] == 1


def test_hf_tokenizer_folder_config_is_honoured(tmp_path):
  folder = tmp_path / "hf"
  make_tokenizer(str(folder / "tokenizer.json"), specials=["<unk>", "<s>", "</s>", "<pad>", "<|end_of_text|>"])
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": {"content": "</s>", "special": True}, "pad_token": "<pad>"}))
  spec = load_tokenizer_spec(str(folder))
  assert (spec.eos_id, spec.pad_id) == (2, 3)  # not <|end_of_text|> (4), though the vocab has it
  assert load_tokenizer_spec(str(folder / "tokenizer.json")).eos_id == 2  # the file, beside its config
  (folder / "tokenizer_config.json").write_text(json.dumps({}))
  (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<s>"}))
  assert (load_tokenizer_spec(str(folder)).eos_id, load_tokenizer_spec(str(folder)).pad_id) == (1, 3)  # <pad> by name
  assert load_tokenizer_spec(str(folder), eos_token="</s>", pad_token="<unk>").eos_id == 2
  with pytest.raises(ValueError, match="'<nope>'.*not in the tokenizer's vocabulary"):
    load_tokenizer_spec(str(folder), eos_token="<nope>")
  write_input(str(tmp_path / "in" / "a.jsonl"), DOCS)
  spec = load_tokenizer_spec(str(folder))
  build_store([str(tmp_path / "in")], str(tmp_path / "store"), spec)
  store = TokenStore(str(tmp_path / "store"))
  assert store.tokenizer["eos_id"] == 1 and all(d[-1] == 1 for d in store_docs(store, 0))


def test_bare_tokenizer_falls_back_to_known_names(tmp_path, spec):
  assert (spec.eos_id, spec.pad_id) == (1, 0)  # <|end_of_text|>, <|pad|>: the demo tokenizer's ids
  bare = make_tokenizer(str(tmp_path / "t.json"), specials=["<unk>", "</s>"])
  assert (load_tokenizer_spec(bare).eos_id, load_tokenizer_spec(bare).pad_id) == (1, 1)  # PAD = EOS
  none = make_tokenizer(str(tmp_path / "n.json"), specials=["<unk>"])
  with pytest.raises(ValueError, match="cannot tell the EOS token"):
    load_tokenizer_spec(none)


def test_fingerprint_is_canonical_and_mismatch_names_both(tmp_path, spec, tok_path):
  pretty = tmp_path / "pretty.json"
  pretty.write_text(json.dumps(json.load(open(tok_path)), indent=4))  # other bytes, same tokenizer
  assert load_tokenizer_spec(str(pretty)).fingerprint == spec.fingerprint
  other = load_tokenizer_spec(make_tokenizer(str(tmp_path / "o.json"), vocab_size=350))
  assert other.fingerprint != spec.fingerprint
  write_input(str(tmp_path / "in" / "a.jsonl"), DOCS)
  build_store([str(tmp_path / "in")], str(tmp_path / "store"), spec)
  store = TokenStore(str(tmp_path / "store"))
  store.check_tokenizer(spec.fingerprint, "the run's tokenizer")
  with pytest.raises(ValueError) as e:
    store.check_tokenizer(other.fingerprint, "the run's tokenizer")
  assert spec.fingerprint in str(e.value) and other.fingerprint in str(e.value) and store.path in str(e.value)
  with pytest.raises(ValueError, match=rf"already holds a token store of another build.*{other.fingerprint}"):
    build_store([str(tmp_path / "in")], str(tmp_path / "store"), other)


def _cli(args, env=None):
  return subprocess.run([sys.executable, "-m", "granite_jax.data.tokenize", *args], cwd=ROOT, text=True,
                        capture_output=True, env={**os.environ, **(env or {})}, timeout=120)


def _inputs(tmp_path, n=4):
  for i in range(n):
    write_input(str(tmp_path / "in" / f"part{i}.jsonl"), _docs(i) * (i + 1))
  return str(tmp_path / "in")


def test_killed_and_rerun_is_identical_and_processes_agree(tmp_path, spec, tok_path):
  inputs = _inputs(tmp_path)
  build_store([inputs], str(tmp_path / "ref"), spec)
  ref = tree(str(tmp_path / "ref"))
  args = [inputs, f"--out={tmp_path / 'crash'}", f"--tokenizer={tok_path}"]
  killed = _cli(args, {FAULT_KILL_SHARDS: "1"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  half = tree(str(tmp_path / "crash"))
  assert "manifest.json" not in half and "shards/00000/done.json" in half
  assert "shards/00001/tokens/zarr.json" in half and "shards/00001/done.json" not in half  # half written
  with pytest.raises(ValueError, match="manifest pending: 1 of 4 shards done"):
    TokenStore(str(tmp_path / "crash"))
  rerun = _cli(args)
  assert rerun.returncode == 0, rerun.stderr
  assert "1 of its 4 shards were already done" in rerun.stderr and "4 shards" in rerun.stdout
  assert tree(str(tmp_path / "crash")) == ref
  two = _cli([inputs, f"--out={tmp_path / 'two'}", f"--tokenizer={tok_path}", "--processes=2"])
  assert two.returncode == 0, two.stderr
  assert tree(str(tmp_path / "two")) == ref


def test_hosts_write_disjoint_shards_and_the_last_writes_the_manifest(tmp_path, spec):
  inputs = _inputs(tmp_path, 3)
  build_store([inputs], str(tmp_path / "ref"), spec)
  out = str(tmp_path / "hosts")
  assert build_store([inputs], out, spec, process_index=1, process_count=2) is None
  assert sorted(p for p in tree(out) if p.endswith("done.json")) == ["shards/00001/done.json"]
  with pytest.raises(ValueError, match="manifest pending: 1 of 3 shards done"):
    TokenStore(out)
  assert build_store([inputs], out, spec, process_index=0, process_count=2) is not None
  assert tree(out) == tree(str(tmp_path / "ref"))
  assert build_store([inputs], out, spec)["totals"]["shards"] == 3  # complete: nothing to do


def test_changed_source_is_retokenized(tmp_path, spec):
  inputs = _inputs(tmp_path, 2)
  out = str(tmp_path / "store")
  build_store([inputs], out, spec, process_index=0, process_count=2)  # shard 0 done, no manifest
  write_input(os.path.join(inputs, "part0.jsonl"), ["changed"])
  build_store([inputs], out, spec)
  assert store_docs(TokenStore(out), 0) == expected_text_docs(spec.tok, ["changed"], spec.eos_id)


def test_unreadable_inputs_name_the_path(tmp_path, spec):
  with pytest.raises(FileNotFoundError, match="nothing-here"):
    build_store([str(tmp_path / "nothing-here")], str(tmp_path / "store"), spec)
  (tmp_path / "x.txt").write_text("hi")
  with pytest.raises(ValueError, match="x.txt: unsupported file type"):
    build_store([str(tmp_path / "x.txt")], str(tmp_path / "store"), spec)


@pytest.mark.slow
def test_demo_tokenizer_resolves_eos_and_pad(demo_tokenizer_path):
  spec = load_tokenizer_spec(demo_tokenizer_path)  # a bare tokenizer.json, as the trainer passes it
  assert (spec.eos_id, spec.pad_id) == (1, 0)  # <|end_of_text|>, <|pad|>


def test_inputs_resolve_globs_directories_and_duplicates_once(tmp_path):
  from granite_jax.data.text_inputs import resolve_inputs
  a = write_input(str(tmp_path / "in" / "a.jsonl"), DOCS)
  b = write_input(str(tmp_path / "in" / "deep" / "b.parquet"), DOCS)
  (tmp_path / "in" / "notes.txt").write_text("ignored inside a directory")
  found = resolve_inputs([str(tmp_path / "in" / "**" / "*.parquet"), str(tmp_path / "in"), a])
  assert [(f.path, f.size) for f in found] == [(a, os.path.getsize(a)), (b, os.path.getsize(b))]
  with pytest.raises(FileNotFoundError, match="glob matches no"):
    resolve_inputs([str(tmp_path / "in" / "*.txt")])
