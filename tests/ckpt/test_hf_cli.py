"""`python -m granite_jax.ckpt.hf import|export` against Orbax checkpoints like a training run's."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from granite_jax.ckpt import hf_cli, run_dir
from granite_jax.ckpt.hf import load_pretrained
from granite_jax.ckpt.manager import Checkpointer, restore_params
from granite_jax.model import preset
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib
from tests.ckpt.hf_helpers import hf_granite, hf_logits, our_logits, rel_err, tokens, transformers
from tests.data.test_chat_template import CONVERSATIONS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = preset("tiny", vocab_size=600, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
             embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=3.0)


def test_import_is_readable_by_restore_params(tmp_path):
  hf_granite(2, tie=True).save_pretrained(tmp_path / "hf")
  hf_cli.main(["import", str(tmp_path / "hf"), str(tmp_path / "ckpt")])
  cfg, params = load_pretrained(str(tmp_path / "hf"))
  saved = json.loads((tmp_path / "ckpt" / "model_config.json").read_text())
  assert saved == cfg.to_dict()
  abstract = jax.eval_shape(lambda: state_lib.init_params(cfg, jax.random.PRNGKey(0)))
  got = restore_params(str(tmp_path / "ckpt"), hf_cli._cpu_abstract(cfg))  # what init_from does
  assert jax.tree.structure(got) == jax.tree.structure(abstract)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), params)


def test_export_of_a_training_checkpoint(tmp_path, tok_file):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx = optax.adamw(1e-3)
  sh = state_lib.state_shardings(CFG, mesh, tx)
  state = state_lib.make_init_fn(CFG, tx, sh)(jax.random.PRNGKey(3))
  workdir = tmp_path / "run"
  ckpt = Checkpointer(str(workdir / "ckpt"))
  ckpt.save(7, state)
  ckpt.close()
  with pytest.raises(FileNotFoundError, match="model_config.json"):
    hf_cli.export_hf(str(workdir), str(tmp_path / "x"), progress=False)
  (workdir / "model_config.json").write_text(json.dumps(CFG.to_dict()))
  out = tmp_path / "hf"
  res = subprocess.run([sys.executable, "-m", "granite_jax.ckpt.hf", "export", str(workdir), str(out),
                        "--dtype", "float32", "--tokenizer", tok_file],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert res.returncode == 0, res.stderr
  params = jax.device_get(state.params)
  cfg, got = load_pretrained(str(out))
  jax.tree.map(np.testing.assert_array_equal, got, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
  toks = tokens(vocab=CFG.vocab_size)
  assert rel_err(hf_logits(model, toks), our_logits(CFG, params, toks)) <= 1e-4
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
  conv = CONVERSATIONS["tools"]
  from granite_jax.data.chat_template import render
  assert hf_tok.apply_chat_template(conv["messages"], tools=conv["tools"], tokenize=False) == render(**conv)
  assert hf_tok.eos_token == "<|end_of_text|>" and model.config.eos_token_id == 1


def test_model_config_flag_errors(tmp_path):
  with pytest.raises(ValueError, match="--model-config"):
    run_dir.model_config_for(str(tmp_path), model_config="{not json")
  assert run_dir.model_config_for(str(tmp_path), model_config='{"n_layers": 1}', preset="tiny").n_layers == 1


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  from granite_jax.data.tokenizer import SPECIAL_TOKENS
  t = tokenizers.Tokenizer(models.BPE())
  t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  t.decoder = decoders.ByteLevel()
  t.train_from_iterator([json.dumps(CONVERSATIONS)] * 10, trainers.BpeTrainer(
      vocab_size=CFG.vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
  t.save(path)
  return path
