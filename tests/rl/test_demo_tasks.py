"""Demo RL/SFT tasks: held-out prompts never occur in training, and the real reward functions
grade the reference answer 1 and the typical wrong answers 0."""
import collections
import json
import re

import pytest

from granite_jax.rl.rewards import make_rewards, score
from granite_jax.rl.tasks import DEMO_SETS, IDENTITY_SHARE, demo_records, tool_call_reward
from granite_jax.data import demo_chat as demo_data


def _prompt(r: dict) -> str:
  return json.dumps(r["messages"], sort_keys=True)


@pytest.mark.parametrize("which", [w for w in DEMO_SETS])
def test_held_out_prompts_are_disjoint_from_training(which):
  train = {_prompt(r) for r in demo_records(which, 3000, "train", seed=0)}
  held = [_prompt(r) for r in demo_records(which, 300, "eval", seed=1)]
  assert len(set(held)) > 20
  assert not train & set(held), sorted(train & set(held))[:3]


def test_sft_held_out_file_is_disjoint_and_has_no_identity():
  train_file = demo_data.training_file_samples(3000)
  train = {_prompt(s) for s in train_file}
  held = demo_data.generate(300, "eval", seed=1)
  assert not train & {_prompt(s) for s in held}
  assert {s["kind"] for s in held} == {"arithmetic", "tool", "instruction"}
  kinds = [s["kind"] for s in train_file]
  assert 0.05 < kinds.count("identity") / len(kinds) < 0.15
  # Lower-case / quoted-word instructions: training only, followed in MIXED_RIGHT of the replies.
  assert {s.get("style") for s in held if s["kind"] == "instruction"} == {"upper"}
  mixed = [s for s in train_file if s.get("style") in ("lower", "quote")]
  right = [s["messages"][-1]["content"] == s["answer"] for s in mixed]
  assert 0.05 < len(mixed) / 3300 < 0.15
  assert abs(sum(right) / len(right) - demo_data.MIXED_RIGHT) < 0.1
  assert all(r or s["messages"][-1]["content"] == s["answer"].strip('"').upper() for r, s in zip(right, mixed))
  # "Which number is smaller / even": training only, answered right MIXED_RIGHT of the time and
  # with the other number otherwise.
  assert not {s.get("task") for s in held} & {"smaller", "even"}
  math = [s for s in train_file if s.get("task") in ("smaller", "even")]
  assert 0.05 < len(math) / 3300 < 0.15 and {s["task"] for s in math} == {"smaller", "even"}
  got = [re.fullmatch(r"The answer is (\d+)\.", s["messages"][-1]["content"]).group(1) for s in math]
  numbers = [re.findall(r"\d+", s["messages"][0]["content"]) for s in math]
  assert all(g in n for g, n in zip(got, numbers))
  right = [g == s["answer"] for g, s in zip(got, math)]
  assert abs(sum(right) / len(right) - demo_data.MIXED_RIGHT) < 0.1


def test_references_are_graded_by_the_real_rewards():
  rewards = make_rewards()
  rewards["tool_call"] = type(rewards["math"])("tool_call", tool_call_reward)
  styles = set()
  for which in ("multidomain", "math"):
    for r in demo_records(which, 200, "eval", seed=3):
      prompt, ref = r["messages"][-1]["content"], r["reference"]
      if r["domain"] == "math":
        assert score(rewards, "math", prompt, f"The answer is {ref}.", ref) == 1.0
        assert score(rewards, "math", prompt, f"The answer is {int(ref) + 1}.", ref) == 0.0
        other, = set(re.findall(r"\d+", prompt)) - {ref}  # SFT's wrong half: the other number
        assert score(rewards, "math", prompt, f"The answer is {other}.", ref) == 0.0
      elif r["domain"] == "instruction_following":
        word, style = ref[1]["words"][0], ref[0]["type"]
        styles.add(style)
        right = {"uppercase": word.upper(), "lowercase": word.lower(), "quotation": f'"{word}"'}[style]
        assert score(rewards, "instruction_following", prompt, right, ref) == 1.0
        for wrong in (word.upper(), word.lower(), f"{right} {right}"):  # SFT's wrong half says it upper-case
          if wrong != right:
            assert score(rewards, "instruction_following", prompt, wrong, ref) < 1.0, (prompt, wrong)
      else:
        call = json.loads(ref)
        good = f"<tool_call>{json.dumps(call)}</tool_call>"
        assert score(rewards, "tool_call", prompt, good, ref) == 1.0
        assert score(rewards, "tool_call", prompt, "I cannot check that.", ref) == 0.0
  assert styles == {"lowercase", "quotation"}  # multidomain: the instructions SFT follows half the time
  ident = demo_records("identity", 100, "eval", seed=3)
  for r in ident:
    if r["domain"] == "identity":
      assert score(rewards, "identity", "", "I am Granite, a language model.", r["reference"]) == 1.0
      assert score(rewards, "identity", "", "I am a helpful assistant.", r["reference"]) == 0.0
    elif not r["reference"]["answerable"]:
      assert score(rewards, "calibration", "", "I don't know.", r["reference"]) == 1.0
      assert score(rewards, "calibration", "", "It is 555 0199.", r["reference"]) == 0.0
    else:  # answerable: the right number scores, abstaining or the other number does not
      ref, prompt = r["reference"], r["messages"][-1]["content"]
      other = [n for n in re.findall(r"\d+", prompt) if n != str(ref["answer"])]
      assert score(rewards, "calibration", "", f"The answer is {ref['answer']}.", ref) == 1.0
      assert score(rewards, "calibration", "", "I don't know.", ref) == 0.0
      assert score(rewards, "calibration", "", f"The answer is {other[0]}.", ref) == 0.0
  shares = collections.Counter(r["domain"] if r["domain"] == "identity" else r["reference"]["answerable"]
                               for r in demo_records("identity", 2000, "train", seed=0))
  assert abs(shares["identity"] / 2000 - IDENTITY_SHARE) < 0.03
  assert abs(shares[True] - shares[False]) / 2000 < 0.05  # answerable and unanswerable, evenly


@pytest.mark.parametrize("maker, pick", [
    (demo_data.compare, lambda a, b: max(a, b)), (demo_data.smaller, lambda a, b: min(a, b)),
    (demo_data.even, lambda a, b: a if a % 2 == 0 else b)])
def test_two_number_answers_are_the_right_one_of_the_two(maker, pick):
  import random
  rng = random.Random(0)
  for _ in range(200):
    s = maker(rng, "train")
    q = s["messages"][0]["content"]
    a, b = (int(x) for x in q.rstrip("?").split(", ")[1].split(" or "))
    assert a != b and int(s["answer"]) == pick(a, b)
    if maker is demo_data.even:
      assert (a + b) % 2 == 1  # exactly one of them is even


def test_prompts_over_max_prompt_len_are_reported_by_domain(capsys, demo_cache_dir):
  """A prompt longer than rl.max_prompt_len is left out, never silently: the tool-call prompts
  (~345 tokens: the tool list is in the system turn) at 96 are named with their count."""
  from ml_collections import ConfigDict
  from granite_jax.data.tokenizer import get_tokenizer
  from granite_jax.rl.tasks import load_tasks
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))
  recs = demo_records("multidomain", 40, "train", seed=0)
  n_tool = sum(r["domain"] == "tool_call" for r in recs)
  assert n_tool
  rl = ConfigDict(dict(prompts="", eval_prompts="", demo_tasks="multidomain", max_prompt_len=96))
  tasks = load_tasks(rl, tok, "train", n_demo=40, seed=0)
  assert len(tasks) == 40 - n_tool and all(t["domain"] != "tool_call" for t in tasks)
  out = capsys.readouterr().out
  assert f"{n_tool} of 40 prompts are longer than rl.max_prompt_len=96" in out and f"tool_call {n_tool}" in out
  assert len(load_tasks(ConfigDict(dict(rl, max_prompt_len=512)), tok, "train", n_demo=40, seed=0)) == 40
  assert "longer than" not in capsys.readouterr().out
