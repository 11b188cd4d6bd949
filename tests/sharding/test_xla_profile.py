"""XLA profiles: applied to the environment once, never overriding a user's explicit flag."""
import pytest

from granite_jax.sharding import xla_profile


def cfg(**kw):
  c = xla_profile.default_config()
  c.update(kw)
  return c


def test_gb200_profile_sets_flags_and_env():
  env = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false"}
  applied = xla_profile.apply(cfg(profile="gb200", extra_flags="--xla_dump_to=/tmp/x"), env)
  flags = env["XLA_FLAGS"].split()
  assert flags[0] == "--xla_gpu_enable_latency_hiding_scheduler=false"  # the user's value wins
  assert flags.count("--xla_gpu_enable_latency_hiding_scheduler=true") == 0
  assert "--xla_gpu_enable_pipelined_all_gather=true" in flags and "--xla_dump_to=/tmp/x" in flags
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.95"
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95" in applied
  assert "profile gb200" in xla_profile.describe(cfg(profile="gb200"), applied)


def test_none_profile_changes_nothing_and_bad_name_is_named():
  env = {}
  assert xla_profile.apply(cfg(), env) == [] and env == {}
  with pytest.raises(ValueError, match="xla.profile"):
    xla_profile.apply(cfg(profile="gb300"), {})


@pytest.mark.parametrize("name", [p for p in xla_profile.PROFILES if p != "none"])
def test_every_profile_flag_is_known_to_this_xla(name):
  """XLA aborts at start on an unknown flag; GPU flags are parsed by the CPU build too."""
  import os
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  xla_profile.apply(cfg(profile=name), env)
  env["JAX_PLATFORMS"] = "cpu"
  r = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True,
                     text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
