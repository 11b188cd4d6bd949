"""RL prompt order: shuffled epochs over the prompt set, a pure function of (n, seed, step)."""
import collections

import numpy as np
import pytest
from ml_collections import ConfigDict

from granite_jax.rl.prompt_order import step_prompts
from granite_jax.rl.validate import check_reference


def _run(n, seed, steps, P, **kw):
  return np.concatenate([step_prompts(n, seed, s, P, **kw) for s in range(steps)])


@pytest.mark.parametrize("n, P", [(37, 8), (8, 8), (5, 8), (100, 1)])
def test_every_prompt_once_before_any_repeats(n, P):
  seq = _run(n, 3, steps=4 * n // P + 3, P=P)
  for e in range(len(seq) // n):
    assert sorted(seq[e * n:(e + 1) * n].tolist()) == list(range(n)), f"epoch {e}"
  # after k*n positions, every prompt was used exactly k times
  counts = collections.Counter(seq[: (len(seq) // n) * n].tolist())
  assert set(counts.values()) == {len(seq) // n}


def test_epochs_are_reshuffled_and_seeds_differ():
  a = _run(50, 0, steps=10, P=10)
  assert not np.array_equal(a[:50], a[50:])  # epoch 2 is a different order
  assert not np.array_equal(a[:50], np.arange(50))  # shuffled
  assert not np.array_equal(a, _run(50, 1, steps=10, P=10))


def test_resumed_run_sees_the_same_prompts():
  full = [step_prompts(45, 7, s, 8) for s in range(20)]
  resumed = [step_prompts(45, 7, s, 8) for s in range(11, 20)]  # fresh process, no state, from step 11
  for s, got in zip(range(11, 20), resumed):
    np.testing.assert_array_equal(got, full[s])


def test_report_scale_never_repeats_within_an_epoch():
  # 500 steps x 64 prompts over the 45,504 multi-domain prompts: 32,000 distinct prompts
  # (independent random draws would see 45,504 * (1 - e^(-32000/45504)) ~ 23,000 distinct ones).
  seen = np.concatenate([step_prompts(45_504, 0, s, 64) for s in range(500)])
  assert len(np.unique(seen)) == 32_000
  more = np.concatenate([seen] + [step_prompts(45_504, 0, s, 64) for s in range(500, 711)])
  assert len(np.unique(more)) == 45_504  # 711 steps x 64 >= 45,504: the whole set


def test_dynamic_sampling_extra_draws_are_epochs_too():
  n, P, D = 30, 6, 3
  extra = np.concatenate([step_prompts(n, 1, s, P, draw=d, max_draws_per_step=D)
                          for s in range(10) for d in (1, 2)])
  assert sorted(extra[:n].tolist()) == list(range(n))
  main = _run(n, 1, steps=10, P=P, max_draws_per_step=D)
  np.testing.assert_array_equal(main, _run(n, 1, steps=10, P=P))  # extra draws do not shift the main order
  with pytest.raises(ValueError, match="draw=3"):
    step_prompts(n, 1, 0, P, draw=3, max_draws_per_step=D)
  with pytest.raises(ValueError, match="n_prompts=0"):
    step_prompts(0, 1, 0, P)


def test_reference_must_be_given_at_real_sizes():
  c = ConfigDict(dict(preset="8b", init_from="/ckpt/rl_multidomain/ckpt", rl=dict(ref_from="")))
  with pytest.raises(ValueError, match=r"rl.ref_from is not set: at preset '8b'"):
    check_reference(c)
  c.rl.ref_from = "/ckpt/sft/ckpt"
  assert check_reference(c) == "/ckpt/sft/ckpt"
  tiny = ConfigDict(dict(preset="tiny", init_from="runs/sft/ckpt", rl=dict(ref_from="")))
  assert check_reference(tiny) == "runs/sft/ckpt"  # the tiny demo's first stage starts from SFT
