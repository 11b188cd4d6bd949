import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from granite_jax.data.records_io import write_arrayrecord
from granite_jax.data.sources import open_text_source, resolve_files, text_dataset

DOCS = ["first document", "zweites Dokument — ü", "", "code: {\"a\": 1}\n\tindented", "日本語 🙂", "last"]


def _write_jsonl(path, docs, newline_at_end=True):
  body = "\n".join(json.dumps({"text": d, "id": i}, ensure_ascii=False) for i, d in enumerate(docs))
  path.write_text(body + ("\n" if newline_at_end else ""), encoding="utf-8")
  return str(path)


def _read_all(path, **kw):
  src = open_text_source(str(path), **kw)
  return [src[i] for i in range(len(src))]


@pytest.mark.parametrize("newline_at_end", [True, False])
def test_jsonl_round_trip(tmp_path, newline_at_end):
  path = _write_jsonl(tmp_path / "d.jsonl", DOCS, newline_at_end)
  assert _read_all(path) == DOCS


def test_arrayrecord_round_trip_text_and_json_records(tmp_path):
  path = write_arrayrecord(str(tmp_path / "d.arrayrecord"), DOCS)
  assert _read_all(path) == DOCS
  as_json = [json.dumps({"text": d}) for d in DOCS]
  path2 = write_arrayrecord(str(tmp_path / "j.array_record"), as_json)
  assert _read_all(path2) == DOCS


def test_parquet_round_trip_across_row_groups(tmp_path):
  path = str(tmp_path / "d.parquet")
  pq.write_table(pa.table({"text": DOCS * 3, "n": list(range(18))}), path, row_group_size=4)
  assert _read_all(path) == DOCS * 3
  # Random access order must not matter (row-group cache).
  src = open_text_source(path)
  assert [src[i] for i in (17, 0, 9, 4)] == [(DOCS * 3)[i] for i in (17, 0, 9, 4)]


def test_directory_and_glob_concatenate_sorted_files(tmp_path):
  _write_jsonl(tmp_path / "b.jsonl", ["b0", "b1"])
  write_arrayrecord(str(tmp_path / "a.arrayrecord"), ["a0"])
  (tmp_path / "sub").mkdir()
  pq.write_table(pa.table({"text": ["c0"]}), str(tmp_path / "sub" / "c.parquet"))
  (tmp_path / "notes.txt").write_text("ignored")
  assert _read_all(tmp_path) == ["a0", "b0", "b1", "c0"]
  assert _read_all(tmp_path / "*.jsonl") == ["b0", "b1"]
  assert list(text_dataset(str(tmp_path / "**" / "*.parquet"))) == ["c0"]


def test_missing_path_error_names_it(tmp_path):
  missing = tmp_path / "no_such_dir" / "*.jsonl"
  with pytest.raises(FileNotFoundError, match="no_such_dir"):
    resolve_files(str(missing))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty"):
    resolve_files(str(tmp_path / "empty"))
  bad_ext = tmp_path / "x.csv"
  bad_ext.write_text("a,b")
  with pytest.raises(ValueError, match="x.csv"):
    resolve_files(str(bad_ext))


def _malformed_jsonl(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "ok 0"}\n{"text": "ok 1"}\n{"text": broken\n{"no_text": 1}\n{"text": "ok 4"}\n')
  return str(path)


def test_malformed_jsonl_raises_with_file_and_line(tmp_path):
  src = open_text_source(_malformed_jsonl(tmp_path), on_bad_record="raise")
  assert src[1] == "ok 1"
  with pytest.raises(ValueError, match=r"bad\.jsonl: bad record 2: invalid JSON on line 3"):
    src[2]
  with pytest.raises(ValueError, match=r"bad\.jsonl: bad record 3: .*'text'"):
    src[3]


def test_malformed_jsonl_skipped(tmp_path):
  from granite_jax.data import sources

  path = _malformed_jsonl(tmp_path)
  ds = text_dataset(path, on_bad_record="skip")
  before = sources.skipped_records()
  assert list(ds.filter(bool)) == ["ok 0", "ok 1", "ok 4"]
  assert sources.skipped_records() - before == 2  # counted for the training metrics
  sources.reset_skipped_records()
  assert sources.skipped_records() == 0


def test_bad_arrayrecord_and_parquet_records(tmp_path):
  ar = write_arrayrecord(str(tmp_path / "bad.arrayrecord"), [b"fine", b"\xff\xfe not utf8"])
  with pytest.raises(ValueError, match=r"bad\.arrayrecord: bad record 1: not valid UTF-8"):
    open_text_source(ar)[1]
  assert _read_all(ar, on_bad_record="skip") == ["fine", ""]
  pqt = str(tmp_path / "nulls.parquet")
  pq.write_table(pa.table({"text": ["x", None]}), pqt)
  with pytest.raises(ValueError, match=r"nulls\.parquet: bad record 1"):
    open_text_source(pqt)[1]
  nocol = str(tmp_path / "nocol.parquet")
  pq.write_table(pa.table({"body": ["x"]}), nocol)
  with pytest.raises(ValueError, match=r"nocol\.parquet.*'text' column"):
    open_text_source(nocol)


def test_invalid_on_bad_record(tmp_path):
  with pytest.raises(ValueError, match="on_bad_record"):
    open_text_source(_malformed_jsonl(tmp_path), on_bad_record="ignore")
