"""Released HF scalar reward models: imported into the reward-model format, they score as transformers
does (relative 1e-4) for a random Llama-style classifier saved with save_pretrained and a Granite-style
one (Granite multipliers), and load as rl.reward_model through the CLI and `load_scorer`."""
import json
import os

import jax
import numpy as np
import pytest

from tests.ckpt.hf_helpers import randomize_norms, rel_err, torch, transformers  # noqa: F401 -- skips


from granite_jax.ckpt.hf_cli import main as hf_main  # noqa: E402
from granite_jax.ckpt.hf_reward import load_reward_model  # noqa: E402
from granite_jax.rl.reward_model import pad_rows, rm_scores  # noqa: E402
from granite_jax.rl.rm_scorer import load as load_scorer  # noqa: E402

V, PAD = 61, 0


def llama_rm(path, seed=0):
  cfg = transformers.LlamaConfig(
      vocab_size=V, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, num_labels=1, pad_token_id=PAD,
      rope_parameters={"rope_type": "default", "rope_theta": 500.0}, initializer_range=0.2,
      tie_word_embeddings=False)
  torch.manual_seed(seed)
  model = transformers.LlamaForSequenceClassification(cfg).float().eval()
  randomize_norms(model, seed)
  model.save_pretrained(path)  # safetensors
  return model


def rows(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, V, n).tolist() for n in (5, 11, 8)]  # no pad id inside a row


def hf_scores(model, rs, T=12):
  ids, seg = pad_rows(rs, T, pad_id=PAD)
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                attention_mask=torch.from_numpy(seg.astype(np.int64)))
  return out.logits[:, 0].float().numpy()


def our_scores(cfg, params, rs, T=12):
  ids, seg = pad_rows(rs, T, pad_id=PAD)
  params = jax.tree.map(np.asarray, params)
  return np.asarray(rm_scores(params, ids, seg, cfg=cfg))


def test_llama_reward_model_parity(tmp_path):
  model = llama_rm(str(tmp_path / "hf"))
  cfg, params, _ = load_reward_model(str(tmp_path / "hf"))
  want = hf_scores(model, rows())
  got = our_scores(cfg, params, rows())
  assert np.ptp(want) > 1e-3  # distinct scores: a wrong token or position would show
  assert rel_err(got, want) < 1e-4, (got, want)


def test_granite_style_reward_model_parity(tmp_path):
  from safetensors.torch import save_file
  gcfg = transformers.GraniteConfig(
      vocab_size=V, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, embedding_multiplier=3.5,
      attention_multiplier=0.3, residual_multiplier=0.6, logits_scaling=2.5, initializer_range=0.2,
      rope_parameters={"rope_type": "default", "rope_theta": 500.0}, pad_token_id=PAD, num_labels=1)
  torch.manual_seed(1)
  backbone = transformers.GraniteModel(gcfg).float().eval()
  randomize_norms(backbone, 1)
  score = torch.nn.Linear(64, 1, bias=True)
  hf = str(tmp_path / "granite_rm")
  os.makedirs(hf)
  tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
  tensors.update({"score.weight": score.weight.data, "score.bias": score.bias.data})
  save_file(tensors, os.path.join(hf, "model.safetensors"))
  conf = dict(gcfg.to_dict(), architectures=["GraniteForSequenceClassification"])
  json.dump(conf, open(os.path.join(hf, "config.json"), "w"))
  rs = rows(1)
  ids, seg = pad_rows(rs, 12, pad_id=PAD)
  with torch.no_grad():
    h = backbone(input_ids=torch.from_numpy(ids.astype(np.int64)),
                 attention_mask=torch.from_numpy(seg.astype(np.int64))).last_hidden_state
    want = score(h[torch.arange(len(rs)), torch.tensor([len(r) - 1 for r in rs])])[:, 0].numpy()
  cfg, params, _ = load_reward_model(hf)
  assert rel_err(our_scores(cfg, params, rs), want) < 1e-4


def test_cli_import_and_load_scorer(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers
  hf = str(tmp_path / "hf")
  model = llama_rm(hf, seed=3)
  vocab = {"<pad>": PAD, **{f"w{i}": i for i in range(1, V)}}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  tk.save(os.path.join(hf, "tokenizer.json"))
  wd = str(tmp_path / "rm")
  hf_main(["import", hf, wd, "--seq-len", "16"])  # auto-detected from config.json architectures
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["seq_len"] == 16
  scorer = load_scorer(wd, tok=None)  # its own tokenizer.json
  prompt, response = "w3 w7 w9 ", "w12 w40"
  want = hf_scores(model, [[3, 7, 9, 12, 40]], T=16)[0]
  assert abs(scorer(prompt, response) - want) <= 1e-4 * abs(want)
  from configs import rlhf  # the RLHF stage's chat domain, scored through the run's RewardScorer
  from granite_jax.rl.rewards.scorer import build_rewards
  c = rlhf.get_config("tiny")
  c.rl.reward_model, c.rl.reward_workers = wd, 0
  got, m = build_rewards(c, tok=None).score([prompt], [response], [None], ["chat"])
  assert abs(got[0] - want) <= 1e-4 * abs(want) and m["reward_failures/chat"] == 0
  with pytest.raises(ValueError, match="num_labels=2"):  # the CLI wrapper (granite_jax.cli) prints it as one line
    cfg = json.load(open(os.path.join(hf, "config.json")))
    cfg["id2label"] = {"0": "a", "1": "b"}
    json.dump(cfg, open(os.path.join(hf, "config.json"), "w"))
    hf_main(["import", hf, str(tmp_path / "rm2")])
