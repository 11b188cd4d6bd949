"""Rollout: overlong shaping vs its closed form, the train-layout batch, dynamic sampling, and
the sampler's, old and reference log-probs against a plain forward of each policy."""
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.infer.sampler import make_sampler
from granite_jax.model import Granite, preset
from granite_jax.model.params import init_params
from granite_jax.rl import rollout as R
from granite_jax.rl.packing import first_fit_decreasing, placements
from granite_jax.rl.rewards import make_rewards
from granite_jax.rl.rewards.identity import calibration_reward, identity_reward
from granite_jax.rl.step import response_logprobs
from granite_jax.rl.tasks import demo_records, encode_tasks, tool_call_reward

CFG = preset("tiny", vocab_size=4096, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
             init_std=0.3)


def rl_cfg(**kw):
  base = dict(prompts_per_step=2, samples_per_prompt=4, max_prompt_len=64, max_response_len=8,
              temperature=1.0, top_p=1.0, top_k=0, overlong_buffer=4, overlong_penalty=1.0,
              overlong_filter=False, dynamic_sampling=False, max_extra_batches=2, scale_by_std=True,
              kl_coef=0.05, correct_threshold=1.0)
  return ConfigDict(dict(base, **kw))


@pytest.fixture(scope="module")
def tok(demo_cache_dir):
  return get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))


@pytest.fixture(scope="module")
def tasks(tok):
  return encode_tasks(tok, demo_records("math", 16, "train"), 64)[0]


def test_overlong_penalty_closed_form():
  L = np.arange(0, 11)
  want = [0.0 if l <= 6 else -(l - 6) / 4 for l in L]  # max 10, buffer 4
  np.testing.assert_allclose(R.overlong_penalty(L, 10, 4), want, rtol=1e-6)
  np.testing.assert_allclose(R.overlong_penalty(L, 10, 0), 0.0)


def _fake_samples(tasks, raw, lengths, truncated, G):
  B = len(raw)
  return dict(tokens=np.arange(1, B * 8 + 1).reshape(B, 8).astype(np.int32) % 50 + 10,
              logprobs=-np.ones((B, 8), np.float32), lengths=np.asarray(lengths), raw=np.asarray(raw, np.float32),
              shaped=np.asarray(raw, np.float32), truncated=np.asarray(truncated), live=np.ones(B, bool),
              texts=[""] * B, tasks=[t for t in tasks for _ in range(G)])


def test_build_batch_layout_and_advantages(tasks):
  rl = rl_cfg()
  s = _fake_samples(tasks[:2], [1, 0, 0, 0, 1, 1, 1, 1], [3, 8, 1, 5, 2, 2, 2, 2], [0, 1, 0, 0, 0, 0, 0, 0], 4)
  b = R.build_batch(s, rl)
  p0 = len(tasks[0]["prompt_ids"])
  np.testing.assert_array_equal(b["tokens"][0, :p0], tasks[0]["prompt_ids"])
  np.testing.assert_array_equal(b["tokens"][0, p0:p0 + 3], s["tokens"][0, :3])
  assert b["segment_ids"][0].sum() == p0 + 3 and b["tokens"].shape == (8, 72)
  np.testing.assert_array_equal(np.nonzero(b["mask"][0])[0], np.arange(p0 - 1, p0 + 2))
  r = np.array([1, 0, 0, 0.])
  adv = b["advantages"]  # per token: the row's sequence's advantage on its tokens, 0 on padding
  np.testing.assert_allclose(adv[:4, 0], (r - r.mean()) / (r.std() + 1e-6), rtol=1e-5)
  np.testing.assert_array_equal(adv, adv[:, :1] * (b["segment_ids"] > 0))
  np.testing.assert_allclose(adv[4:], 0.0)  # all-equal group
  np.testing.assert_allclose(b["sampler_logp"][0], -b["mask"][0])  # the sampler's log-probs, where trained
  assert b["mask"][1].sum() == 8  # truncated but kept: overlong_filter is off
  assert R.build_batch(s, rl_cfg(overlong_filter=True))["mask"][1].sum() == 0


def test_dynamic_sampling_keeps_informative_groups(tasks, tok):
  calls = []

  def sample_fn(params, prompts, lengths, rng, *a):  # every sample scores 0
    calls.append(1)
    B = prompts.shape[0] * 4
    toks = np.zeros((B, 8), np.int32)
    return dict(tokens=toks, logprobs=np.zeros((B, 8), np.float32), lengths=np.full(B, 2, np.int32))

  rewards = make_rewards()
  draw = lambda n: tasks[:n]
  s, st = R.collect_groups(None, draw, sample_fn=sample_fn, tok=tok, rewards=rewards,
                           rl=rl_cfg(dynamic_sampling=True), rng=jax.random.PRNGKey(0))
  # Every group is all-zero: 1 + max_extra_batches generations, then fillers that train nothing.
  assert len(calls) == 3 and st["groups_kept"] == 0.0 and not s["live"].any()
  s, st = R.collect_groups(None, draw, sample_fn=sample_fn, tok=tok, rewards=rewards,
                           rl=rl_cfg(), rng=jax.random.PRNGKey(0))
  assert len(calls) == 4 and st["groups_kept"] == 1.0 and s["live"].all()


def _plain_logp(params, prompt_ids, response_ids):
  """log p(response[i] | prompt, response[:i]): one plain forward over the unpadded sequence (no
  cache, no batch layout), log-softmax in NumPy float64 -- shares no code with the sampler's
  decode loop or rollout's train-layout recomputation beyond the model itself."""
  seq = np.asarray(list(prompt_ids) + list(response_ids), np.int32)[None]
  logits_TV = np.asarray(Granite(CFG).apply({"params": params}, seq), np.float64)[0]
  top_T = logits_TV.max(-1, keepdims=True)
  logp_TV = logits_TV - top_T - np.log(np.exp(logits_TV - top_T).sum(-1, keepdims=True))
  P = len(prompt_ids)
  return np.array([logp_TV[P - 1 + i, t] for i, t in enumerate(response_ids)])


def test_sampler_old_and_ref_logprobs_match_a_plain_forward(tasks, tok):
  """On packed rows (several sequences a row): no log-prob attends across sequences."""
  policy, ref = init_params(CFG, jax.random.PRNGKey(1)), init_params(CFG, jax.random.PRNGKey(2))
  rl = rl_cfg(pack=True, ppo_epochs=2)  # ppo_epochs > 1: the old-log-prob pass runs
  sampler = make_sampler(CFG, max_new_tokens=8, stop_ids=(tok.token_to_id("<|end_of_text|>"),),
                         samples_per_prompt=4)
  drawn = {}

  def sample_fn(*args):  # the sampler's own output, before rollout turns it into a batch
    out = sampler(*args)
    drawn.update(jax.device_get(out))
    return out

  model = Granite(CFG)
  logp_fn = jax.jit(lambda p, b: response_logprobs(p, b, model)[0])
  batch, st = R.rollout(policy, ref, lambda n: tasks[:n], sample_fn=sample_fn, logp_fn=logp_fn, tok=tok,
                        rewards=make_rewards(), rl=rl, rng=jax.random.PRNGKey(0))
  G, rows, gaps = rl.samples_per_prompt, 0, []
  lengths = np.array([len(tasks[b // G]["prompt_ids"]) for b in range(len(drawn["lengths"]))]) + drawn["lengths"]
  T = rl.max_prompt_len + rl.max_response_len
  row_N, start_N = placements(first_fit_decreasing(lengths, T), lengths)
  assert len(batch["tokens"]) < len(lengths)  # packed: fewer rows than sequences
  for b, r in enumerate(drawn["lengths"]):
    if not r:
      continue
    prompt, resp = tasks[b // G]["prompt_ids"], drawn["tokens"][b, :r]
    want, want_ref = _plain_logp(policy, prompt, resp), _plain_logp(ref, prompt, resp)
    o = start_N[b] + len(prompt) - 1
    at = (row_N[b], slice(o, o + r))  # position t scores token t+1
    np.testing.assert_allclose(drawn["logprobs"][b, :r], want, atol=1e-4, err_msg="sampler")
    np.testing.assert_allclose(batch["sampler_logp"][at], want, atol=1e-4, err_msg="sampler_logp")
    np.testing.assert_allclose(batch["old_logp"][at], want, atol=1e-4, err_msg="old_logp")
    np.testing.assert_allclose(batch["ref_logp"][at], want_ref, atol=1e-4, err_msg="ref_logp")
    gaps.append(np.abs(want - want_ref).max())
    rows += 1
  assert rows >= 4 and min(gaps) > 1e-2  # the reference really is another policy
  for k in ("reward_mean", "reward_std", "accuracy", "response_len", "truncated_frac", "packed_rows"):
    assert k in st


def test_identity_calibration_and_tool_rewards():
  ref = {"name": "Granite", "forbidden": ["Claude"]}
  assert identity_reward("", "I am Granite, an IBM model.", ref) == 1.0
  assert identity_reward("", "I am granite-ish? No: Claude.", ref) == 0.0
  assert identity_reward("", "I am a model.", ref) == 0.0
  assert calibration_reward("", "I don't know.", {"answerable": False}) == 1.0
  assert calibration_reward("", "It is 555-1234.", {"answerable": False}) == 0.0
  assert calibration_reward("", "The answer is 7.", {"answerable": True, "answer": "7"}) == 1.0
  assert calibration_reward("", "I don't know, maybe 7.", {"answerable": True, "answer": "7"}) == 0.0
  call = '{"arguments": {"a": 1, "b": 2}, "name": "add"}'
  assert tool_call_reward("", f"<tool_call>\n{call}\n</tool_call>", call) == 1.0
  assert tool_call_reward("", '<tool_call>{"name": "add", "arguments": {}}</tool_call>', call) == 0.5
