"""jax.distributed arguments from config and environment (no processes are started here)."""
import pytest

from granite_jax.sharding import distributed


def cfg(**kw):
  c = distributed.default_config()
  c.update(kw)
  return c


SLURM = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
         "SLURM_JOB_NODELIST": "gb[012-013,020],login1"}


def test_single_process_without_environment():
  assert distributed.plan(cfg(), env={}) is None
  assert distributed.plan(cfg(mode="off"), env=SLURM) is None


def test_slurm_one_process_per_gpu():
  p = distributed.plan(cfg(), env=SLURM)
  assert (p.coordinator_address, p.num_processes, p.process_id) == ("gb012:8476", 8, 5)
  assert p.local_device_ids == (1,) and p.source == "slurm" and p.slice_index is None


def test_slurm_one_process_per_tray_and_rack_from_node_index():
  p = distributed.plan(cfg(per_process="tray", nodes_per_slice=18), env=dict(SLURM, SLURM_NODEID="19"))
  assert p.local_device_ids == (0, 1, 2, 3)
  assert p.slice_index == 1  # nodes 18..35 are the second rack


def test_explicit_from_environment_and_slice_override():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
         "GRANITE_SLICE_INDEX": "2"}
  p = distributed.plan(cfg(), env=env)
  assert (p.coordinator_address, p.num_processes, p.process_id, p.slice_index) == ("10.0.0.1:1234", 4, 3, 2)
  assert distributed.plan(cfg(slice_index=0), env=env).slice_index == 0


@pytest.mark.parametrize("kw,env,field", [
    (dict(mode="maybe"), {}, "distributed.mode"),
    (dict(per_process="rack"), {}, "distributed.per_process"),
    (dict(mode="on"), {}, "distributed.mode"),
    (dict(coordinator_address="h:1"), {}, "distributed.num_processes"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {}, "distributed.process_id"),
])
def test_bad_settings_name_the_field(kw, env, field):
  with pytest.raises(ValueError, match=field):
    distributed.plan(cfg(**kw), env=env)


def test_first_host():
  assert distributed.first_host("gb[012-015,020],x1") == "gb012"
  assert distributed.first_host("node7") == "node7"
