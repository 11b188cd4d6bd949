"""SFT schedule follows the data: train.steps=0 + train.epochs -> packed rows x epochs / batch,
exactly the batches the iterator yields; warmup 3% and the linear decay ends with the last step;
an explicit train.steps wins."""
import json
import os

import grain
import numpy as np
import pytest

from configs import sft as sft_config
from granite_jax.optim import make_optimizer
from granite_jax.data import chat_pipeline as sft_data
from granite_jax.data import chat_steps as sft_steps
from granite_jax.train.steps import total_steps

T, B = 96, 4


def _conversations(n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    words = " ".join(["word"] * int(rng.integers(2, 60)))
    answer = f"answer {i} " + words[:int(rng.integers(1, 80))]
    out.append({"messages": [{"role": "user", "content": f"question {i}: {words}"},
                             {"role": "assistant", "content": answer}]})
  return out


@pytest.fixture
def cfg(demo_cache_dir, tmp_path):
  path = tmp_path / "sft.jsonl"
  path.write_text("".join(json.dumps(c) + "\n" for c in _conversations(70, 0)))
  c = sft_config.get_config("tiny")
  c.data.cache_dir = demo_cache_dir
  c.data.sft.sources = str(path)
  c.train.seq_len, c.train.global_batch, c.train.steps, c.train.epochs = T, B, 0, 2
  return c


def _iterator_batches(c, epochs):
  it = sft_data.make_iterator(c.data, seq_len=T, batch_size=B, seed=c.train.seed, num_epochs=epochs)
  return sum(1 for _ in it)


def test_derived_steps_are_the_batches_the_iterator_yields(cfg):
  steps = total_steps(cfg)
  assert steps == _iterator_batches(cfg, 2)
  assert steps > 10
  cfg.train.epochs = 3
  assert total_steps(cfg) == _iterator_batches(cfg, 3)


@pytest.mark.parametrize("n, pi, pc, epochs, batch",
                         [(300, 0, 1, 3, 8), (257, 1, 4, 2, 20), (40, 2, 3, 1, 32)])
def test_replay_matches_grain_order_and_packing(n, pi, pc, epochs, batch):
  """The fast replay (grain's index permutation + first-fit on lengths) against grain itself."""
  lengths = np.random.default_rng(n).integers(0, 700, n).astype(np.int32)  # some 0 = filtered
  ds = grain.MapDataset.range(n)[pi::pc].shuffle(5).repeat(epochs)
  order = sft_steps.record_order(n, seed=5, epochs=epochs, process_index=pi, process_count=pc)
  np.testing.assert_array_equal(order, [ds[i] for i in range(len(ds))])
  zeros = lambda k: {"tokens": np.zeros(int(k), np.int32), "loss_mask": np.ones(int(k), np.int32)}
  packed = sft_data.packed_dataset(grain.MapDataset.source(lengths), seq_len=1024, batch_size=batch, seed=5,
                                   split="train", process_index=pi, process_count=pc, num_epochs=epochs,
                                   encode=zeros, keep=lambda ex: len(ex["tokens"]) > 0, pad_id=0)
  rows = sum(1 for _ in packed)
  assert sft_steps.first_fit_rows(lengths[order], seq_len=1024, num_bins=max(batch, 16)) == rows
  assert sft_steps.count_batches(lengths, seq_len=1024, batch_size=batch, seed=5, epochs=epochs,
                                 process_index=pi, process_count=pc) == rows // batch


def test_count_is_cached_by_sources_tokenizer_and_seq_len(cfg):
  lengths = sft_steps.record_lengths(cfg.data, T)
  cached = os.listdir(os.path.join(cfg.data.cache_dir, "sft_counts"))
  assert len(lengths) == 70 and (lengths > 0).all()
  np.testing.assert_array_equal(sft_steps.record_lengths(cfg.data, T), lengths)  # from the cache
  assert len(os.listdir(os.path.join(cfg.data.cache_dir, "sft_counts"))) == len(cached)
  shorter = sft_steps.record_lengths(cfg.data, 48)  # another seq_len: another entry, truncated lengths
  assert shorter.max() <= 48 and shorter.sum() < lengths.sum()
  with open(cfg.data.sft.sources, "a") as f:  # the data changed: recounted
    f.write(json.dumps(_conversations(1, 9)[0]) + "\n")
  assert len(sft_steps.record_lengths(cfg.data, T)) == 71


def test_explicit_steps_win_and_zero_without_epochs_is_an_error(cfg):
  cfg.train.steps = 7
  assert total_steps(cfg) == 7
  cfg.train.steps, cfg.train.epochs = 0, 0
  with pytest.raises(ValueError, match=r"train.steps=0: 0 derives the step count"):
    total_steps(cfg)
  cfg.train.epochs = 2
  assert total_steps(cfg, from_data=False) == 1000  # dry runs read no data


def test_warmup_is_3_percent_and_the_decay_ends_with_the_last_step(cfg):
  n = total_steps(cfg)
  _, sched = make_optimizer(cfg.optim, total_steps=n, tokens_per_step=B * T)
  w = max(1, round(0.03 * n))
  peak = cfg.optim.peak_lr
  assert float(sched(w)) == pytest.approx(peak) and float(sched(w - 1)) < peak
  # the last update (step n - 1) still learns; the schedule reaches 0 right after it
  assert float(sched(n - 1)) == pytest.approx(peak / (n - w), rel=1e-4)
  assert float(sched(n)) == 0.0


def test_report_config_derives_its_steps():
  c = sft_config.get_config("8b")
  assert c.train.steps == 0 and c.train.epochs == 3 and c.optim.warmup_fraction == 0.03
  assert sft_config.get_config("tiny").train.steps == 200  # tiny: explicit steps, unlimited epochs


def test_curation_default_length_limit_is_the_sft_sequence():
  from granite_jax.sft.curation.config import CurationConfig
  assert CurationConfig().max_tokens == sft_config.get_config("8b").train.seq_len == 16_384
