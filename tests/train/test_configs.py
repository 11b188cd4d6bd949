"""Recipe configs encode the Granite 4.1 table; bad input fails with a message naming the field."""
import importlib

import jax
import pytest
from ml_collections import ConfigDict

from granite_jax.data.pipeline import mixture_weights
from granite_jax.model.config import ModelConfig
from granite_jax.train.loop import total_steps
from granite_jax.train.validate import validate

RECIPE = {  # DESIGN.md / report, percent
    "phase1": dict(cc=59, code=20, math=7, technical=10.5, multilingual=2, domain=1.5),
    "phase2": dict(math=35, code=30, cc_hq=12, synthetic=9, technical=10, multilingual=3, domain=1),
    "phase3": dict(cc_hq=16.67, math=16.67, code=16.67, synthetic=8.5, technical=12.5, multilingual=4.5,
                   long_cot=12.5, lang_instruct=7.5, code_instruct=4.5),
    "phase4": dict(cc_hq=40, code=20, math=20, long_cot=6, code_instruct=5, lang_instruct=9),
}
SCHEDULE = {"phase1": "power", "phase2": "power", "phase3": "exponential", "phase4": "linear_to_zero"}
TOKENS = {"phase1": 10e12, "phase2": 2e12, "phase3": 2e12, "phase4": 0.5e12}


def load(name, arg=None):
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", sorted(RECIPE))
def test_phase_configs_encode_the_recipe(name):
  c = load(name, "8b")
  total = sum(RECIPE[name].values())
  got = mixture_weights(c.data)
  assert set(got) == set(RECIPE[name])
  for d, w in RECIPE[name].items():
    assert got[d] == pytest.approx(w / total, abs=1e-9)
  assert c.optim.schedule == SCHEDULE[name]
  assert c.train.seq_len == 4096 and c.model.d_model == 4096 and c.model.n_layers == 40
  assert total_steps(c) == int(TOKENS[name] // (c.train.global_batch * c.train.seq_len))


def test_phase2_continues_phase1_power_curve():
  assert load("phase2", "8b").optim.tokens_offset == 10e12


@pytest.mark.parametrize("preset,shape", [
    ("3b", (2560, 40, 40, 64, 8, 8192)), ("8b", (4096, 40, 32, 128, 8, 12800)),
    ("30b", (4096, 64, 32, 128, 8, 32768))])
def test_presets_have_report_shapes(preset, shape):
  m = load("phase1", preset).model
  assert (m.d_model, m.n_layers, m.n_heads, m.head_dim, m.n_kv_heads, m.d_ff) == shape
  assert m.tie_embeddings


def test_unknown_preset_in_config_string():
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    load("phase2", "huge")


def _tiny(**overrides):
  c = load("phase2")
  for path, v in overrides.items():
    node = c
    *head, last = path.split(".")
    for h in head:
      node = node[h]
    node[last] = v
  return c


@pytest.mark.parametrize("overrides,message", [
    ({"mesh.shape": (3, 1, 1)}, r"mesh.shape=\(3, 1, 1\) does not divide the 8 available devices"),
    ({"mesh.shape": (-1, -1, 1)}, "at most one axis may be -1"),
    ({"train.global_batch": 6}, "train.global_batch=6 must be divisible by the data-parallel size"),
    ({"train.seq_len": 8192}, "sequence length 8192 exceeds model.max_seq_len=4096"),
    ({"model.attention_impl": "cudnn", "train.seq_len": 100}, "needs model.dtype bfloat16"),
    ({"model.attention_impl": "flash9"}, "model.attention_impl='flash9'"),
    ({"train.steps": 0}, "train.steps=0 must be an integer >= 1"),
    ({"init_from": "/nonexistent/ckpt"}, "init_from='/nonexistent/ckpt': no such checkpoint directory"),
    ({"mesh.shape": (1, 1, 8)}, "mesh tensor=8 must divide model.n_kv_heads=2"),
])
def test_bad_config_is_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    validate(_tiny(**overrides), jax.device_count())


@pytest.mark.parametrize("mixture,message", [
    (dict(math=-1.0, code=1.0), "data.mixture.math=-1.0 must be >= 0"),
    (dict(math=0.0, code=0.0), "all weights are zero"),
])
def test_bad_mixture_is_named(mixture, message):
  c = _tiny()
  c.data.mixture = ConfigDict(mixture)
  with pytest.raises(ValueError, match=message):
    mixture_weights(c.data)


# The model flows down the chain: a stage started from a checkpoint runs that checkpoint's network.
def _ckpt_with_model(tmp_path, model: dict, name="prev"):
  """A run's layout: WORKDIR/model_config.json beside WORKDIR/ckpt (what init_from names)."""
  import json
  work = tmp_path / name
  (work / "ckpt").mkdir(parents=True)
  (work / "model_config.json").write_text(json.dumps(model))
  return str(work / "ckpt")


def test_undeclared_model_change_against_init_from_is_named(tmp_path):
  c = _tiny()
  c.init_from = _ckpt_with_model(tmp_path, dict(c.model.to_dict(), rope_theta=1e7))
  with pytest.raises(ValueError, match=r"init_from=.* model.rope_theta=10000000.0 in the checkpoint "
                                       r"vs 10000.0 in the config"):
    validate(c, jax.device_count())


def test_declared_model_change_passes(tmp_path):
  c = _tiny()
  c.init_from = _ckpt_with_model(tmp_path, dict(c.model.to_dict(), rope_theta=1e3, max_seq_len=512))
  c.model_changes = "rope_theta,max_seq_len"
  assert validate(c, jax.device_count()).rope_theta == 1e4


def test_ref_from_must_hold_the_policy_network(tmp_path):
  c = load("rl_math")
  c.init_from = _ckpt_with_model(tmp_path, c.model.to_dict(), "policy")
  c.rl.ref_from = _ckpt_with_model(tmp_path, dict(c.model.to_dict(), d_ff=1024), "sft")
  with pytest.raises(ValueError, match=r"rl.ref_from=.* model.d_ff=1024 in the checkpoint vs 768"):
    validate(c, jax.device_count())


@pytest.mark.parametrize("stage,length", [("sft", 16_384), ("reward_model", 8192), ("rl_multidomain", 8192),
                                          ("rlhf", 8192), ("rl_identity", 8192), ("rl_math", 8192)])
@pytest.mark.parametrize("size,base_stage", [("3b", "lce_128k"), ("8b", "lce_512k"), ("30b", "lce_512k")])
def test_post_lce_stages_run_the_post_lce_network(tmp_path, stage, length, size, base_stage):
  from granite_jax.train.validate import check_model_chain
  c = load(stage, size)
  assert c.model.rope_theta == 1e7 and c.model.max_seq_len >= c.train.seq_len == length
  lce = load(base_stage, size)  # the merged checkpoint of the last LCE stage carries this model
  c.init_from = _ckpt_with_model(tmp_path, lce.model.to_dict())
  check_model_chain(c, ModelConfig.from_dict(c.model.to_dict()))  # no difference to declare
  c.init_from = _ckpt_with_model(tmp_path, load("phase4", size).model.to_dict(), "phase4")
  with pytest.raises(ValueError, match="model.max_seq_len=4096 in the checkpoint"):
    check_model_chain(c, ModelConfig.from_dict(c.model.to_dict()))


def test_lce_stages_declare_theta_and_length(tmp_path):
  from granite_jax.train.validate import check_model_chain
  c = load("lce_32k", "8b")
  c.init_from = _ckpt_with_model(tmp_path, load("phase4", "8b").model.to_dict())
  check_model_chain(c, ModelConfig.from_dict(c.model.to_dict()))
  c.model_changes = "rope_theta"
  with pytest.raises(ValueError, match="model.max_seq_len=4096 in the checkpoint vs 32768"):
    check_model_chain(c, ModelConfig.from_dict(c.model.to_dict()))


@pytest.mark.parametrize("layout", ["run", "hf_import"])
def test_model_config_is_found_where_runs_and_imports_write_it(tmp_path, layout):
  import json

  from granite_jax.ckpt.model_config import check_inherits
  model = load("phase2").model.to_dict()
  if layout == "run":  # WORKDIR/model_config.json beside WORKDIR/ckpt (also merged/ckpt)
    ckpt = _ckpt_with_model(tmp_path, dict(model, logits_scaling=2.0))
  else:  # `python -m granite_jax.ckpt.hf import HF_DIR CKPT_DIR`: CKPT_DIR/model_config.json
    ckpt = tmp_path / "imported"
    ckpt.mkdir()
    (ckpt / "model_config.json").write_text(json.dumps(dict(model, logits_scaling=2.0)))
  with pytest.raises(ValueError, match="model.logits_scaling=2.0 in the checkpoint vs 1.0 in the config"):
    check_inherits(str(ckpt), model)


def test_unknown_model_change_is_named(tmp_path):
  from granite_jax.ckpt.model_config import check_inherits
  with pytest.raises(ValueError, match=r"\['dtype'\] are not network fields"):
    check_inherits(str(tmp_path), {}, "rope_theta,dtype")
