"""Reward-model scoring of a rollout batch (rl/rm_scorer.py): packed rows through the one sharded
program score what the old one-sequence-at-a-time scorer scored (its code is kept here as the
reference), on a 2 x 4 mesh with the parameters sharded; an imported Hugging Face reward model
renders prompt + response with its own chat template and scores what transformers scores."""
import json
import os

import jax
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from granite_jax.ckpt.manager import Checkpointer, restore_params
from granite_jax.data.chat_template import END_ROLE, EOT, START, render
from granite_jax.model import preset
from granite_jax.rl import reward_model as rm_lib
from granite_jax.rl import rm_scorer
from granite_jax.sharding.mesh import make_mesh

CFG = preset("tiny", vocab_size=72, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
WORDS = [f"w{i}" for i in range(2, 60)]
SEQ_LEN = 64


def word_tokenizer(specials=("<|pad|>", EOT, START, END_ROLE)) -> Tokenizer:
  words = WORDS + ["user", "assistant", "system"]
  vocab = {**{s: i for i, s in enumerate(specials)}, **{w: i + len(specials) for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.add_special_tokens(list(specials))
  return tok


def save_rm(path: str, seed: int = 0) -> dict:
  """A random reward model (random head too: a zero head scores everything 0) as a workdir."""
  params = rm_lib.init_rm_params(CFG, jax.random.PRNGKey(seed))
  params["head"] = {"w": jax.random.normal(jax.random.PRNGKey(seed + 1), (CFG.d_model,)), "b": np.float32(0.3)}
  ck = Checkpointer(os.path.join(path, "ckpt"), async_save=False)
  ck.save(0, {"params": params})
  ck.close()
  json.dump(CFG.to_dict(), open(os.path.join(path, "model_config.json"), "w"))
  json.dump({"train": {"seq_len": SEQ_LEN}}, open(os.path.join(path, "config.json"), "w"))
  return params


def one_at_a_time(workdir: str, tok):
  """The scorer before issue 27: restored whole on one device, one sequence per call, padded to
  the model's seq_len, prompt + response + <|end_of_text|> in the policy's tokenizer."""
  cfg, seq_len = rm_lib.read_rm_config(workdir)
  abstract = jax.eval_shape(lambda: rm_lib.init_rm_params(cfg, jax.random.PRNGKey(0)))
  params = restore_params(os.path.join(workdir, "ckpt"), abstract)
  fn = jax.jit(lambda p, t, s: rm_lib.rm_scores(p, t, s, cfg=cfg))

  def score(prompt: str, response: str) -> float:
    tokens, seg = rm_lib.pad_rows([tok.encode(prompt + response + EOT).ids], seq_len)
    return float(fn(params, tokens, seg)[0])
  return score


def rollouts(n: int, seed: int = 0):
  """Chat prompts and responses of 9 to 70 tokens in all: several pack to a row, a few exceed
  SEQ_LEN (their last SEQ_LEN tokens are scored)."""
  rng = np.random.default_rng(seed)
  words = lambda k: " ".join(rng.choice(WORDS, k))  # noqa: E731
  prompts = [render([{"role": "user", "content": words(rng.integers(1, 8))}], add_generation_prompt=True)
             for _ in range(n)]
  return prompts, [words(rng.integers(0, 56)) for _ in range(n)]


def test_pack_places_every_sequence_once_within_its_row():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 25, 200).tolist()
  rows = rm_scorer.pack(lengths, 24)
  assert sorted(i for r in rows for i in r) == list(range(200))
  assert all(sum(lengths[i] for i in r) <= 24 for r in rows)
  assert len(rows) <= 1.15 * sum(lengths) / 24 + 1  # far fewer rows than the 200 of one per row
  ids = [rng.integers(2, 60, n).tolist() for n in lengths]
  tokens, seg, pos, ends = rm_scorer.packed_rows(ids, rows, 24)
  for i, (r, e) in enumerate(ends):  # each sequence whole, its own segment, positions from 0
    n = lengths[i]
    np.testing.assert_array_equal(tokens[r, e - n + 1:e + 1], ids[i])
    np.testing.assert_array_equal(pos[r, e - n + 1:e + 1], np.arange(n))
    assert len(set(seg[r, e - n + 1:e + 1])) == 1 and seg[r, e] > 0
    assert e + 1 == 24 or seg[r, e + 1] != seg[r, e]


def test_chat_messages_inverts_the_granite_render():
  msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi\nthere"},
          {"role": "assistant", "content": "yes"}, {"role": "user", "content": "and?"}]
  assert rm_scorer.chat_messages(render(msgs, add_generation_prompt=True)) == msgs
  assert rm_scorer.chat_messages("plain text") == [{"role": "user", "content": "plain text"}]


def test_batched_sharded_scores_equal_one_at_a_time(tmp_path):
  wd = str(tmp_path)
  save_rm(wd)
  tok = word_tokenizer()
  mesh = make_mesh((2, 4, 1), ("data", "fsdp", "tensor"))
  scorer = rm_scorer.load(wd, tok, mesh=mesh, rows=8)
  shardings = rm_lib.rm_param_shardings(CFG, mesh)
  jax.tree.map(lambda p, s: p.sharding.is_equivalent_to(s, p.ndim) or pytest.fail(f"{p.sharding} != {s}"),
               scorer.params, shardings)
  assert any("fsdp" in s.spec for s in jax.tree.leaves(shardings["backbone"]))  # split, not whole
  prompts, responses = rollouts(32)
  got = scorer.score_batch(prompts, responses)
  ref = one_at_a_time(wd, tok)
  want = np.array([ref(p, r) for p, r in zip(prompts, responses)])
  assert np.ptp(want) > 0.1  # distinct scores: a wrong row, position or segment would show
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert 1 < scorer.stats["calls"] and scorer.stats["rows"] < 32  # packed, several calls of 8 rows
  assert scorer(prompts[3], responses[3]) == pytest.approx(want[3], rel=1e-4, abs=1e-5)
  # The run's RewardScorer: chat goes to the same scorer, the whole batch in one call.
  from configs import rlhf
  from granite_jax.rl.rewards.scorer import build_rewards
  c = rlhf.get_config("tiny")
  c.rl.reward_model, c.rl.reward_workers = wd, 0
  c.mesh.shape = (2, 4, 1)
  got, m = build_rewards(c, tok).score(prompts, responses, [None] * 32, ["chat"] * 32)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert m["reward_failures/chat"] == 0


def test_a_failing_reward_model_call_scores_the_minimum_and_is_counted():
  from granite_jax.rl.rewards.scorer import RewardScorer, Source
  boom = Source("local", batched=True, local=lambda p, r, ref: 1 / 0)
  nan = Source("local", batched=True, local=lambda p, r, ref: [1.0, float("nan")])
  got, m = RewardScorer({"chat": boom}).score(["a", "b"], ["x", "y"], [None, None], ["chat", "chat"])
  assert got.tolist() == [-10.0, -10.0] and m["reward_failures/chat"] == 2
  got, m = RewardScorer({"chat": nan}).score(["a", "b"], ["x", "y"], [None, None], ["chat", "chat"])
  assert got.tolist() == [1.0, -10.0] and m["reward_failures/chat"] == 1


TEMPLATE = ("{% for m in messages %}[ {{ m.role }} ] {{ m.content }} {% endfor %}"
            "{% if add_generation_prompt %}[ assistant ]{% endif %}{{ eos_token }}")


def hf_reward_model_with_template(path: str):
  """A random Llama classifier with a word-level tokenizer and a chat template of its own."""
  from tests.ckpt.hf_helpers import randomize_norms, torch, transformers
  specials = ("<unk>", "<pad>")
  words = WORDS + ["[", "]", "user", "assistant", "system", "eos"]
  vocab = {**{s: i for i, s in enumerate(specials)}, **{w: i + 2 for i, w in enumerate(words)}}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  cfg = transformers.LlamaConfig(
      vocab_size=len(vocab), hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=64, num_labels=1, pad_token_id=1, initializer_range=0.2,
      rope_parameters={"rope_type": "default", "rope_theta": 500.0}, tie_word_embeddings=False)
  torch.manual_seed(0)
  model = transformers.LlamaForSequenceClassification(cfg).float().eval()
  randomize_norms(model, 0)
  model.save_pretrained(path)
  tk.save(os.path.join(path, "tokenizer.json"))
  json.dump(dict(tokenizer_class="PreTrainedTokenizerFast", chat_template=TEMPLATE, eos_token="eos",
                 unk_token="<unk>", pad_token="<pad>"), open(os.path.join(path, "tokenizer_config.json"), "w"))
  return model


def test_imported_reward_model_scores_its_own_chat_template_as_transformers_does(tmp_path):
  from granite_jax.ckpt.hf_reward import import_reward_model
  from tests.ckpt.hf_helpers import torch, transformers
  hf, wd = str(tmp_path / "hf"), str(tmp_path / "rm")
  model = hf_reward_model_with_template(hf)
  import_reward_model(hf, wd, seq_len=48, progress=False)
  ht = transformers.AutoTokenizer.from_pretrained(hf)

  def hf_score(ids):
    with torch.no_grad():
      return float(model(input_ids=torch.tensor([ids])).logits[0, 0])

  rng = np.random.default_rng(1)
  convs = [[{"role": "user", "content": " ".join(rng.choice(WORDS, k))}] for k in (3, 7, 1, 12)]
  convs[1] = [{"role": "system", "content": "w5 w6"}] + convs[1]
  responses = [" ".join(rng.choice(WORDS, k)) for k in (4, 1, 9, 6)]
  prompts = [render(m, add_generation_prompt=True) for m in convs]  # what the policy was given
  auto = rm_scorer.load(wd, None).score_batch(prompts, responses)
  want = [hf_score(ht.apply_chat_template(m + [{"role": "assistant", "content": r}], tokenize=True,
                                          return_dict=False))
          for m, r in zip(convs, responses)]
  assert np.ptp(want) > 1e-3
  np.testing.assert_allclose(auto, want, rtol=1e-4, atol=1e-5)
  # "none": the policy-rendered text as is (its markers are unknown words to this tokenizer).
  plain = rm_scorer.load(wd, None, template="none").score_batch(prompts, responses)
  np.testing.assert_allclose(plain, [hf_score(ht(p + r)["input_ids"]) for p, r in zip(prompts, responses)],
                             rtol=1e-4, atol=1e-5)
  assert np.abs(plain - auto).max() > 1e-3
  with pytest.raises(ValueError, match="reward_model_template"):
    rm_scorer.load(wd, None, template="jinja")
