"""The demo pipeline's orchestration: stage commands are valid overrides of their configs and chain
the stages' outputs; finished stages are skipped on a rerun; the report is written from stage.json.
The end-to-end `--quick` run (2-3 steps per stage, every stage and measurement) is marked slow."""
import importlib
import json
import math
import os

import pytest

from granite_jax.demo import __main__ as demo_main
from granite_jax.ckpt.model_config import declared_fields, differences
from granite_jax.demo import stages as st
from granite_jax.optim.schedules import make_schedule


def _overrides(cmd):
  return dict(a[len("--config."):].split("=", 1) for a in cmd if a.startswith("--config."))


@pytest.mark.parametrize("quick", [False, True])
def test_every_override_names_a_config_field(tmp_path, quick):
  built = {}
  for s in st.STAGES:
    cmd = st.command(s, str(tmp_path), quick)
    c = importlib.import_module(f"configs.{s.config}").get_config("tiny").unlock()
    for key, value in _overrides(cmd).items():
      *path, last = key.split(".")
      node = c
      for part in path:
        assert part in node, f"{s.name}: --config.{key} is not a field of configs/{s.config}.py"
        node = node[part]
      assert last in node, f"{s.name}: --config.{key} is not a field of configs/{s.config}.py"
      node[last] = type(node[last])(value) if not isinstance(node[last], str) else value
    # The schedule the run will build (warmup vs steps, names): fails here, not minutes into a run.
    make_schedule(c.optim, total_steps=c.train.steps, tokens_per_step=c.train.global_batch * c.train.seq_len)
    built[s.name] = c
  # Each stage runs the network of the stage it starts from, unless it declares the change (LCE):
  # the model-chain check that launch/run.py applies (ckpt/model_config.py).
  for s in st.STAGES:
    for parent in (s.init_from, s.ref_from):
      if parent:
        diff = differences(built[parent].model.to_dict(), built[s.name].model.to_dict(),
                           declared_fields(built[s.name].get("model_changes", "")))
        assert not diff, f"{s.name} vs {parent}: {diff}"


def test_commands_chain_the_stages(tmp_path):
  wd = str(tmp_path)
  cmds = {s.name: _overrides(st.command(s, wd)) for s in st.STAGES}
  assert "init_from" not in cmds["copy_warmup"]
  assert cmds["pretrain"]["init_from"] == os.path.join(wd, "copy_warmup", "ckpt")
  # The warm-up reads the periodic documents (train and held out) and nothing else; pretraining
  # reads the demo corpus.
  src = st.periodic.paths(os.path.join(wd, "cache"))
  assert (cmds["copy_warmup"]["data.sources.cc_hq"], cmds["copy_warmup"]["data.eval_sources.cc_hq"]) == (
      src["train"], src["eval"])
  assert [k for k, v in cmds["copy_warmup"].items() if k.startswith("data.mixture.") and v != "0"] == [
      "data.mixture.cc_hq"]
  assert not any(k.startswith("data.sources") for k in cmds["pretrain"])
  assert cmds["lce"]["init_from"] == os.path.join(wd, "pretrain", "ckpt")
  assert cmds["sft"]["init_from"] == os.path.join(wd, "lce", "merged", "ckpt")
  assert cmds["rlhf"]["rl.reward_model"] == os.path.join(wd, "reward_model")
  for name in ("rl_multidomain", "rlhf", "rl_identity", "rl_math"):
    assert cmds[name]["rl.ref_from"] == os.path.join(wd, "sft", "ckpt")
  chain = ["sft", "rl_multidomain", "rlhf", "rl_identity"]
  for prev, name in zip(chain, chain[1:] + ["rl_math"]):
    assert cmds[name]["init_from"] == os.path.join(wd, prev, "ckpt")
  for name, o in cmds.items():  # one model shape and one data cache for the whole pipeline
    assert o["model.d_model"] == str(st.MODEL["d_model"]) and o["data.cache_dir"] == os.path.join(wd, "cache")


def test_finished_stages_are_skipped_and_reported(tmp_path, monkeypatch):
  wd = str(tmp_path)
  for i, name in enumerate(["pretrain", "lce"]):
    os.makedirs(os.path.join(wd, name))
    st.save_done(wd, name, dict(name=name, metric="m", before=1.0 + i, after=0.5, wall_s=60.0,
                                command="cmd", command_short="cmd", details={}))
  with open(os.path.join(wd, "pretrain", "metrics.jsonl"), "w") as f:
    f.write(json.dumps(dict(step=1, loss=8.0)) + "\n" + json.dumps(dict(step=2, loss=7.0, eval_loss=7.5)) + "\n")
  monkeypatch.setattr(demo_main, "run_stage", lambda *a, **k: pytest.fail("a finished stage was rerun"))
  rep = demo_main.main(["--workdir", wd, "--stages", "pretrain,lce"])
  assert [r["name"] for r in rep["stages"]] == ["pretrain", "lce"] and rep["total_wall_s"] == 120.0
  md = open(os.path.join(wd, "report.md")).read()
  assert "| lce | m | 2.000 | 0.500 | 1.0 min |" in md
  assert os.path.exists(os.path.join(wd, "plots", "pretrain", "loss.png"))
  assert os.path.exists(os.path.join(wd, "plots", "before_after.png"))
  with pytest.raises(SystemExit):
    demo_main.main(["--workdir", wd, "--stages", "pretrain,nope"])


def is_measure(x) -> bool:
  """A float that measured something: NaN or inf (a diverged run, an empty eval) is not one."""
  return isinstance(x, float) and math.isfinite(x)


@pytest.mark.slow
def test_quick_pipeline_runs_every_stage_and_resumes(tmp_path, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")  # the demo's commands run as a user's would: one CPU device
  wd = str(tmp_path / "demo")
  rep = demo_main.main(["--workdir", wd, "--quick"])
  assert [r["name"] for r in rep["stages"]] == st.NAMES
  for r in rep["stages"]:
    assert is_measure(r["before"]) and is_measure(r["after"]), r
    assert r["wall_s"] > 0 and "launch/run.py" in r["command"]
  lce = {r["name"]: r for r in rep["stages"]}["lce"]["details"]
  assert set(lce["before"]) >= {"copy_inside", "copy_past", "niah_copy_long", "niah_copy_short", "short_loss"}
  mtime = os.path.getmtime(st.done_path(wd, "rl_math"))
  rep2 = demo_main.main(["--workdir", wd, "--quick"])  # everything done: nothing reruns
  assert os.path.getmtime(st.done_path(wd, "rl_math")) == mtime and len(rep2["stages"]) == len(st.NAMES)


def test_targets_follow_the_issue_bars():
  from granite_jax.demo.report import targets
  rec = lambda name, b, a, **details: dict(name=name, before=b, after=a, details=details)
  good = [rec("pretrain", 5.0, 4.0, copy_inside=0.3),
          rec("lce", 1.2, 0.5, before=dict(copy_past=1.2, short_loss=4.0, niah_copy_short=0.5, niah_copy_long=0.1),
              after=dict(copy_past=0.5, short_loss=4.05, niah_copy_short=0.5, niah_copy_long=0.4)),
          rec("sft", 0.1, 0.5), rec("rl_multidomain", 0.3, 0.5), rec("rl_math", 0.2, 0.41),
          rec("rl_identity", 0.1, 0.4), rec("rlhf", 1.0, 1.5, max_kl=1.3, max_kl_10=0.6)]
  got = targets(good)
  assert len(got) == 10 and all(t["met"] for t in got), [t for t in got if not t["met"]]
  bad = [rec("pretrain", 5.0, 4.0, copy_inside=0.7),
         rec("lce", 0.8, 0.6, before=dict(copy_past=0.8, short_loss=4.0, niah_copy_short=0.5, niah_copy_long=0.3),
             after=dict(copy_past=0.6, short_loss=4.2, niah_copy_short=0.5, niah_copy_long=0.3)),
         rec("sft", 0.1, 0.15), rec("rl_multidomain", 0.3, 0.45), rec("rl_math", 0.2, 0.2),
         rec("rl_identity", 0.1, 0.3), rec("rlhf", 1.0, 1.5, max_kl=3.0, max_kl_10=1.2)]
  assert not any(t["met"] for t in targets(bad)), [t for t in targets(bad) if t["met"]]


def test_max_window_mean_against_numpy():
  import numpy as np
  from granite_jax.demo.measure import max_window_mean
  xs = list(np.random.default_rng(0).exponential(0.4, 40))
  want = np.convolve(xs, np.ones(10) / 10, mode="valid").max()
  assert max_window_mean(xs) == pytest.approx(want) and max_window_mean(xs) < max(xs)
  assert max_window_mean([0.5, 1.5]) == pytest.approx(1.0) and max_window_mean([]) is None


def test_publish_writes_the_reports_tables_between_the_markers(tmp_path):
  from granite_jax.demo import report
  wd = tmp_path / "run"
  (wd / "plots").mkdir(parents=True)
  (wd / "plots" / "before_after.png").write_bytes(b"png")
  recs = [dict(name="rl_math", metric="held-out greedy accuracy", before=0.25, after=0.5, wall_s=60.0,
               measure_s=6.0, command_short="x", details={})]
  report.write(str(wd), recs, quick=False)
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{report.START}\nold figures\n{report.END}\noutro\n")
  report.publish(str(wd), str(readme), str(tmp_path / "docs" / "demo"))
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "old figures" not in text
  assert "| rl_math | held-out greedy accuracy | 0.250 | 0.500 | 1.0 min | 0.1 min |" in text
  assert "| rl_math | held-out accuracy +0.20 | 0.25 -> 0.50 | yes |" in text
  assert (tmp_path / "docs" / "demo" / "plots" / "before_after.png").exists()
  assert (tmp_path / "docs" / "demo" / "report.json").exists()
  readme.write_text("no markers\n")
  with pytest.raises(ValueError, match="markers"):
    report.publish(str(wd), str(readme), str(tmp_path / "docs" / "demo"))
