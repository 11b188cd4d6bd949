"""Bounded rewards: hanging, memory-hungry and crashing rewards score the minimum within the limit,
are counted per domain, their worker is replaced and scoring goes on. User rewards by import path."""
import sys
import textwrap
import time

import numpy as np
import pytest

from granite_jax.rl.rewards import RewardDataError
from granite_jax.rl.rewards.math_answer import math_reward
from granite_jax.rl.rewards.scorer import build_rewards

TIMEOUT_S = 3.0

USER_MODULE = '''
import os, time

def exact(prompt, response, reference):
  if reference is None:
    from granite_jax.rl.rewards import RewardDataError
    raise RewardDataError("reference is None")
  return float(response.strip() == reference)

def length_ratio(prompts, responses, references):
  return [len(r) / len(ref) for r, ref in zip(responses, references)]
length_ratio.batched = True

def upper_count(prompts, responses, references):
  return [sum(c.isupper() for c in r) for r in responses]

def nasty(prompt, response, reference):
  if response == "sleep":
    time.sleep(10 ** 6)
  if response == "alloc":
    hog = []
    while True:
      hog.append(bytearray(50 * 2 ** 20))
  if response == "abort":
    os.abort()
  if response == "raise":
    raise KeyError("no")
  return 1.0
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
  d = tmp_path_factory.mktemp("user_rewards")
  (d / "my_rewards_mod.py").write_text(textwrap.dedent(USER_MODULE))
  sys.path.insert(0, str(d))
  yield "my_rewards_mod"
  sys.path.remove(str(d))


def rl_block(**kw):
  from configs import rl_math
  rl = rl_math.get_config("tiny").rl
  rl.reward_workers, rl.reward_timeout_s, rl.reward_memory_mb = 2, TIMEOUT_S, 1024
  for k, v in kw.items():
    rl[k] = v
  return rl


@pytest.fixture(scope="module")
def scorer(user_module):
  s = build_rewards(rl_block(
      reward_fns=f"exact={user_module}:exact,ratio={user_module}:length_ratio,"
                 f"upper={user_module}:upper_count@batched,nasty={user_module}:nasty",
      reward_weights="ratio=0.5", reward_min="nasty=-1"))
  yield s
  s.close()


HANGING = ["so \\boxed{10^{10^{10}}}", "so \\boxed{9**9**9**9}", "\\boxed{1000000!}",
           "\\boxed{2^{2^{2^{2^{2^{2}}}}}}"]


def test_math_never_builds_huge_numbers_and_keeps_equivalents():
  for r in HANGING:
    t = time.perf_counter()
    assert math_reward("q", r, "7") == 0.0
    assert time.perf_counter() - t < 2.0, r
  for r, gold in [("\\boxed{2^{10}}", "1024"), ("\\boxed{5!}", "120"), ("\\boxed{10^{3}}", "1000"),
                  ("\\boxed{2^{x}}", "2^x"), ("\\boxed{10^{10^{10}}}", "10^{10^{10}}"),
                  ("\\boxed{3^{-2}}", "1/9")]:
    assert math_reward("q", r, gold) == 1.0, (r, gold)


def test_user_functions_by_import_path(scorer):
  domains = ["exact", "exact", "ratio", "ratio", "upper", "upper", "math"]
  responses = ["yes", "no", "ab", "abcd", "ABc", "x", "\\boxed{4}"]
  refs = ["yes", "yes", "abcd", "abcd", None, None, "4"]
  r, m = scorer.score(["p"] * 7, responses, refs, domains)
  np.testing.assert_allclose(r, [1, 0, 0.25, 0.5, 2, 0, 1])  # ratio weighted by 0.5
  assert m["reward_failures"] == 0 and m["reward_failures/exact"] == 0


def test_hang_oom_abort_score_minimum_and_scoring_goes_on(scorer):
  responses = ["ok", "sleep", "alloc", "abort", "raise", "ok"]
  restarts = scorer.pool.restarts
  t = time.perf_counter()
  r, m = scorer.score(["p"] * 6, responses, [None] * 6, ["nasty"] * 6)
  took = time.perf_counter() - t
  np.testing.assert_array_equal(r, [1, -1, -1, -1, -1, 1])
  # The hang times out and the abort crashes; the allocation fails at the memory limit, or on a
  # heavily loaded machine may reach the time limit first (seen once with the suite at nice 19).
  assert m["reward_failures/nasty"] == 4 and m["reward_timeouts"] in (1, 2) and m["reward_crashes"] == 1
  assert took < 2 * TIMEOUT_S + 10  # two workers: the hang costs one limit, not forever
  assert scorer.pool.restarts - restarts >= 2  # the hung and the aborted worker were replaced
  r, m = scorer.score(["p"] * 3, ["yes", "\\boxed{9**9**9**9}", "\\boxed{10^{10^{10}}}"],
                      ["yes", "3", "3"], ["exact", "math", "math"])
  np.testing.assert_array_equal(r, [1, 0, 0])
  assert m["reward_failures"] == 0


def test_data_errors_and_unknown_domains_are_named(scorer, user_module):
  with pytest.raises(RewardDataError, match="prompts.jsonl:3"):
    scorer.score(["p", "p"], ["a", "b"], ["a", None], ["exact", "exact"],
                 records=["prompts.jsonl:2", "prompts.jsonl:3"])
  with pytest.raises(ValueError, match="'poetry'"):
    scorer.check_domains(["math", "poetry"])
  with pytest.raises(ValueError, match="no_such_mod"):
    build_rewards(rl_block(reward_fns="x=no_such_mod:f"))
  with pytest.raises(ValueError, match="has no function 'missing'"):
    build_rewards(rl_block(reward_fns=f"x={user_module}:missing"))


def test_config_maps_name_the_field():
  from granite_jax.rl.rewards.registry import parse_map, parse_urls, split_path
  assert parse_map("a=1, b=0.5", "rl.reward_weights", float) == {"a": 1.0, "b": 0.5}
  assert parse_urls("http://h:1/s?x=1") == ("http://h:1/s?x=1", {})
  assert parse_urls("code=http://h/a,math=https://h/b") == ("", {"code": "http://h/a", "math": "https://h/b"})
  assert split_path("pkg.mod:fn@batched") == ("pkg.mod", "fn", True)
  with pytest.raises(ValueError, match="rl.reward_weights: domain 'a'"):
    parse_map("a=heavy", "rl.reward_weights", float)
  with pytest.raises(ValueError, match="rl.reward_url.*'code'"):
    parse_urls("code=ftp://h")
  with pytest.raises(ValueError, match="package.module:function"):
    split_path("pkg.mod.fn")
