"""Damaged checkpoints (truncated, bit-flipped at the same size, missing a file) are detected at
restore by the per-process size + checksum manifests, named by step and path, set aside under
damaged/, and skipped for an older one; a failed save leaves the older steps intact."""
import importlib
import json
import os
import sys
import zlib

import jax
import numpy as np
import optax
import pytest

from granite_jax.ckpt import integrity
from granite_jax.ckpt.manager import CheckpointError, Checkpointer, abstract_like
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

CFG = preset("tiny", vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
TX = optax.adamw(1e-2)


@pytest.fixture
def saved(tmp_path):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  sh = state_lib.state_shardings(CFG, mesh, TX)
  init = state_lib.make_init_fn(CFG, TX, sh)
  d = str(tmp_path / "ckpt")
  ck = Checkpointer(d, max_to_keep=3)
  states = {}
  for step, seed in ((10, 1), (20, 2)):
    states[step] = init(jax.random.PRNGKey(seed))
    ck.save(step, states[step])
  ck.close()
  return d, states, abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), sh)


def _biggest_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
  return max(files, key=os.path.getsize)


def damage_file(victim: str, how: str) -> None:
  if how == "truncate":
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  elif how == "flip":  # one bit, same size: only the checksum can tell
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      b = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([b[0] ^ 0x10]))
  else:
    os.remove(victim)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_latest_falls_back_to_previous(saved, damage, capsys):
  d, states, abstract = saved
  victim = _biggest_file(os.path.join(d, "20"))
  damage_file(victim, damage)
  ck = Checkpointer(d)
  with pytest.raises(CheckpointError, match=r"step 20 .* damaged: (missing file|file) .*" + os.path.basename(victim)):
    ck.restore(20, abstract)
  step, state = ck.restore_latest_good(abstract)
  assert step == 10
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(states[10].params))
  assert "step 20" in capsys.readouterr().out
  # The damaged step is set aside, so training through step 20 again can save it anew.
  assert ck.all_steps() == [10] and os.path.isdir(os.path.join(d, "damaged", "20"))
  ck.save(20, states[20])
  ck.close()
  assert Checkpointer(d).restore_latest_good(abstract)[0] == 20  # a fresh manifest


def test_intact_checkpoint_verifies(saved):
  d, states, abstract = saved
  step, state = Checkpointer(d).restore_latest_good(abstract)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(states[20].params))


def test_step_without_manifest_is_restored_with_a_warning(saved, capsys):
  d, _, abstract = saved
  os.rename(integrity.manifest_dir(d, 20), os.path.join(d, "moved"))  # killed before recording it
  assert Checkpointer(d).restore_latest_good(abstract)[0] == 20
  out = capsys.readouterr().out
  assert "step 20" in out and "no integrity manifest" in out


def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli polynomial, reflected
    table.append(c)
  return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C in plain Python (slow, fine for KBs): a reference independent of google_crc32c."""
  c = 0xFFFFFFFF
  for b in data:
    c = _CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


REFERENCE = {"crc32": zlib.crc32, "crc32c": crc32c}  # whole file at once; the code reads in chunks


def test_reference_checksums_match_the_standard_check_values():
  assert zlib.crc32(b"123456789") == 0xCBF43926 and crc32c(b"123456789") == 0xE3069283


@pytest.fixture
def without_crc32c(monkeypatch):
  """integrity as imported where google_crc32c is not installed: zlib's crc32."""
  monkeypatch.setitem(sys.modules, "google_crc32c", None)
  importlib.reload(integrity)
  yield
  monkeypatch.undo()
  importlib.reload(integrity)


@pytest.mark.parametrize("installed", [True, False])  # False: the fallback, whatever this machine has
def test_manifest_records_size_and_checksum_per_process(saved, installed, request):
  d, _, _ = saved
  if not installed:
    request.getfixturevalue("without_crc32c")
    assert integrity.ALGO == "crc32"
    integrity.write_manifest(d, 20)
  path = integrity.manifest_path(d, 20, 0, 1)
  with open(path) as f:
    m = json.load(f)
  assert m["algo"] == integrity.ALGO and m["algo"] in REFERENCE
  step_dir = os.path.join(d, "20")
  on_disk = sorted(os.path.relpath(os.path.join(r, n), step_dir) for r, _, ns in os.walk(step_dir) for n in ns)
  assert sorted(m["files"]) == on_disk  # one process wrote everything
  for rel, (size, crc) in m["files"].items():
    data = open(os.path.join(step_dir, rel), "rb").read()
    assert size == len(data)
    assert crc == REFERENCE[m["algo"]](data), rel  # checked whichever algorithm is installed
  assert integrity.verify(d, 20) is None


def test_owner_splits_files_between_processes():
  assert integrity.owner("state/ocdbt.process_3/d/abc") == 3
  assert integrity.owner("data_iter/process_1-of-2.json") == 1
  assert integrity.owner("state/_METADATA") == 0


def test_checksums_off_records_sizes_only_and_misses_a_flip(saved):
  d, states, abstract = saved
  for step in (10, 20):  # re-record without checksums, as a run with ckpt.verify_checksums=False does
    integrity.write_manifest(d, step, checksums=False)
  damage_file(_biggest_file(os.path.join(d, "20")), "flip")
  ck = Checkpointer(d, verify_checksums=False)
  ck.check(20)  # the user chose to trust the storage: a same-size flip is not looked for
  assert integrity.verify(d, 20, checksums=True) is None  # nothing recorded to compare with


def test_failed_save_names_the_place_and_keeps_older_steps(saved, monkeypatch):
  d, states, abstract = saved
  monkeypatch.setenv("GRANITE_FAULT_SAVE_FAIL_STEP", "30")
  ck = Checkpointer(d, async_save=False)
  with pytest.raises(CheckpointError, match=f"saving checkpoint step 30 to {d} failed: .*No space left"):
    ck.save(30, states[20])
  ck.close()
  step, state = Checkpointer(d).restore_latest_good(abstract)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(states[20].params))


def test_init_from_a_damaged_checkpoint_is_refused(saved):
  from granite_jax.ckpt.manager import restore_params
  d, states, _ = saved
  victim = _biggest_file(os.path.join(d, "20"))
  damage_file(victim, "flip")
  abstract = jax.eval_shape(lambda: states[20].params)
  with pytest.raises(CheckpointError, match="step 20 .* damaged: file .*" + os.path.basename(victim)):
    restore_params(d, abstract)
