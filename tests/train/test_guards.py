"""Numerics guard policy: skip with a counter, stop on demand, stop after too many skips, spikes."""
import math

import pytest

from granite_jax.train.guards import Guard, NonFiniteError


def test_skip_counts_and_resets_on_a_good_step():
  g = Guard("skip", max_consecutive_skips=2)
  assert g.check(1, 2.0, 1.0, False) == {}
  ev = g.check(2, math.nan, math.nan, True)
  assert ev["skipped"] == 1 and ev["nonfinite"] == "loss" and ev["skipped_total"] == 1
  ev = g.check(3, 2.0, math.inf, True)
  assert ev["nonfinite"] == "grad_norm" and g.consecutive == 2
  g.check(4, 2.0, 1.0, False)
  assert g.consecutive == 0 and g.total_skipped == 2


def test_too_many_consecutive_skips_stop():
  g = Guard("skip", max_consecutive_skips=2)
  g.check(1, math.nan, 1.0, True)
  g.check(2, math.nan, 1.0, True)
  with pytest.raises(NonFiniteError, match="step 3: 3 consecutive non-finite steps"):
    g.check(3, math.nan, 1.0, True)


def test_stop_policy_names_step_and_quantity():
  with pytest.raises(NonFiniteError, match=r"step 7: non-finite grad_norm=inf"):
    Guard("stop").check(7, 1.5, math.inf, True)


def test_loss_spike_is_flagged_against_running_mean():
  g = Guard(spike_factor=2.0, ema_decay=0.5)
  for s in range(1, 5):
    assert "loss_spike" not in g.check(s, 1.0, 1.0, False)
  ev = g.check(5, 2.5, 1.0, False)
  assert ev["loss_spike"] == 1 and ev["loss_ema"] == pytest.approx(1.0)
  assert "loss_spike" not in g.check(6, 1.9, 1.0, False)  # ema moved to 1.75: 1.9 < 3.5
