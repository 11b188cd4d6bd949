"""Continuous batching in the fast engine (infer/engine.py `Engine(max_rows=)`): more requests than
rows, finished rows refilled with waiting ones, against the engine without a cap.

A request's tokens are drawn with its own keys (infer/draw.py), so whatever row it decodes in and
whenever it is admitted, the capped call must return what the uncapped one returns: tokens and
lengths equal, log-probs within 1e-5, greedy and sampled, with per-row budgets (0 included) and a
stop id that end rows at different steps. Chunks of 3 steps and length buckets of 4 slots make the
rows of a refilled batch differ in age and the generated KV grow while they do.
"""
import jax
import numpy as np
import pytest

from granite_jax.infer import engine as E
from granite_jax.infer.engine import Engine
from granite_jax.infer.sampler import left_pad
from granite_jax.model.params import init_params
from tests.infer.test_sampler_fast import CFG, PROMPTS

G, N_NEW = 4, 14
PROMPTS6 = PROMPTS + [[3, 3, 8], [60, 1], [7, 8, 9, 10, 11]]
BUDGETS = np.random.default_rng(1).geometric(1 / 5, len(PROMPTS6) * G).clip(0, N_NEW).astype(np.int32)
BUDGETS[:3] = [0, N_NEW, N_NEW]


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


def _engine(**kw):
  return Engine(CFG, max_new_tokens=N_NEW, samples_per_prompt=G, chunk=3, length_bucket=4, **kw)


def _run(eng, params, temperature):
  padded, lens = left_pad(PROMPTS6)
  out = eng(params, padded, lens, jax.random.PRNGKey(5), temperature, 1.0, 0, BUDGETS)
  return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


@pytest.fixture(scope="module")
def stop(params):
  """A token common early in the greedy continuations: some rows stop on it."""
  full = _run(_engine(), params, 0.0)
  return int(np.bincount(full["tokens"][:, :4].ravel()).argmax())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("max_rows", [8, 2])  # 2 < G: one prompt's rows at first, then one by one
def test_refilled_rows_return_what_one_batch_returns(params, stop, temperature, max_rows):
  want = _run(_engine(stop_ids=(stop,)), params, temperature)
  assert len(set(want["lengths"])) > 4 and (want["lengths"] < BUDGETS).any()  # stops and budgets
  admitted, ages = [], []
  admit, chunk = E._admit, E._chunk

  def spy_admit(sp, state, prompt, logits, new_prompt, at, slot, req_R, *rest):
    admitted.extend(int(q) for q in np.asarray(req_R) if q >= 0)
    return admit(sp, state, prompt, logits, new_prompt, at, slot, req_R, *rest)

  def spy_chunk(sp, params, prompt, gen, state, *rest):
    live = ~np.asarray(state["done"])
    ages.append(len(set(np.asarray(state["t0"])[live])))  # rows that started at different steps
    return chunk(sp, params, prompt, gen, state, *rest)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(E, "_admit", spy_admit)
    mp.setattr(E, "_chunk", spy_chunk)
    got = _run(_engine(stop_ids=(stop,), max_rows=max_rows), params, temperature)
  first = max(1, max_rows // G) * G
  # Every request past the first batch with a budget was admitted once; budget-0 ones never.
  assert sorted(admitted) == [q for q in range(first, len(BUDGETS)) if BUDGETS[q] > 0]
  assert max(ages) > 1  # live rows of different ages decoded side by side
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_array_equal(got["lengths"], want["lengths"])
  np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-5)


def test_the_dry_run_lowers_the_refilled_chunk(params):
  pieces = _engine(max_rows=8).pieces(params, len(PROMPTS6), 16, 1.0, 1.0, 0)
  assert {"decode", "refill"} <= set(pieces)
  state = pieces["refill"].args[4]
  assert state["done"].shape == (8,) and state["t0"].shape == (8,)
  assert pieces["refill"].args[2]["k"][0].shape[0] == 8  # the prompt KV per row
  assert "refill" not in _engine().pieces(params, len(PROMPTS6), 16, 1.0, 1.0, 0)
  pieces["refill"].jitted.lower(*pieces["refill"].args).compile()


def test_max_rows_must_be_positive():
  with pytest.raises(ValueError, match="max_rows=0"):
    _engine(max_rows=0)
