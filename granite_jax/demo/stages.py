"""The tiny demo pipeline's stages: each a `launch/run.py` command (the README's) and its target metric.

Every stage writes into WORKDIR/<name>/ (the run's own workdir) and, once it and its
before/after measurements are complete, WORKDIR/<name>/stage.json: a stage with that file is
skipped on a rerun; a stage without it is rerun, and `launch/run.py` resumes from the stage's
own checkpoint. Measurements are subprocesses too (`python -m granite_jax.eval`,
`python -m granite_jax.sft.evaluate`) or read the run's metrics.jsonl (RL, reward model); their
outputs are cached beside the run (eval_*.json) so a resumed pipeline does not redo them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from granite_jax.demo import periodic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The demo model: 2 layers, d=128 (~1M parameters with the 4096-token demo vocabulary). The
# shape at which in-context copying was measured to form on 2 CPU cores (issue 15). Attention
# logits scaled by 1/sqrt(head_dim) (attention_multiplier 0), not the tiny preset's 1/64: with
# head_dim 32 that is 11x larger logits, so the sharp attention copying needs is reachable (at
# 1/64 copying had not formed after 3,250 steps of copy-rich data).
MODEL = dict(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=512, attention_multiplier=0.0)
# Per stage: the copy warm-up reads only periodic documents (demo/periodic.py) through
# data.sources.cc_hq; pretraining and LCE the copy-rich mixtures, whose cc_hq holds the copy
# documents (data/demo_corpus.py). Keys are those of the stage config's own mixture (phase 2,
# phase 4), the rest set to 0.
_PHASE2_ZERO = dict(cc_hq=0, math=0, code=0, synthetic=0, technical=0, multilingual=0, domain=0)
MIXTURES = {
    "copy_warmup": dict(_PHASE2_ZERO, cc_hq=100),
    "pretrain": dict(_PHASE2_ZERO, cc_hq=80, math=10, code=10),
    "lce": dict(cc_hq=80, math=10, code=10, long_cot=0, code_instruct=0, lang_instruct=0),
}
SHORT, LONG = 256, 1024  # pretraining and LCE lengths (lce_32k tiny)
# The demo starts SFT from the LCE output, so SFT and every later stage run the LCE network
# (configs/lce_32k.py: RoPE theta 1e6 and its length at tiny); without these the model-chain
# check stops the stage, naming both fields (ckpt/model_config.py).
POST_LCE = {"model.rope_theta": 1e6, "model.max_seq_len": LONG}
AFTER_LCE = ("sft", "reward_model", "rl_multidomain", "rlhf", "rl_identity", "rl_math")


@dataclasses.dataclass
class Stage:
  name: str
  config: str                       # configs/<file>.py
  init_from: str = ""               # a previous stage's name ('' = fresh init)
  init_path: str = "ckpt"           # the path inside that stage's workdir
  ref_from: str = ""                # RL: the reference stage (SFT)
  reward_model: str = ""            # RLHF: the reward-model stage
  args: dict = dataclasses.field(default_factory=dict)
  quick_args: dict = dataclasses.field(default_factory=dict)
  metric: str = ""                  # what "before -> after" measures
  mixture: bool = False             # MIXTURES[name]
  periodic: bool = False            # data.sources.cc_hq: the periodic documents (demo/periodic.py)


# RL in the demo: the configs' tiny step counts (10-40) moved held-out figures by 0-6 points in
# 0.5-1.3 min per stage; the demo gives each stage 3-6x the steps and twice the tiny LR, and
# twice the held-out prompts (64: one prompt is 1.6 points, not 3). RLHF at half that LR: its
# per-token KL to SFT peaked at 1.13 at 2e-4 and 0.83 at 1e-4, with the reward-model score
# nearly the same (1.10 -> 2.76 and -> 2.69, measured from the same rl_multidomain checkpoint).
def _rl(steps: int, lr: float = 2e-4) -> dict:
  return {"train.steps": steps, "optim.peak_lr": lr, "ckpt.every_steps": 20, "rl.eval_prompts_n": 64}


def _quick_rl(n=8):
  return {"train.steps": 2, "rl.prompts_per_step": n, "rl.samples_per_prompt": 2, "rl.eval_prompts_n": n,
          "train.global_batch": 2 * n, "train.eval_every": 2, "ckpt.every_steps": 2}


_PRETRAIN = {"train.seq_len": SHORT, "train.global_batch": 16, "optim.schedule": "constant", "optim.peak_lr": 3e-3,
             "optim.warmup_steps": 20, "train.log_every": 100, "ckpt.every_steps": 250}
_QUICK_PRETRAIN = {"train.steps": 3, "train.eval_every": 3, "train.eval_batches": 1, "ckpt.every_steps": 3}

STAGES = [
    # Pretraining in two phases: a copy warm-up on periodic documents, where the induction
    # circuit formed between steps 600 and 750, then the copy-rich mixture, where alone it had not
    # formed in 3,000 steps (copy ratio 0.99; demo/periodic.py).
    Stage("copy_warmup", "phase2", mixture=True, periodic=True,
          metric="held-out loss on periodic documents; copy ratio inside 256 tokens",
          args=dict(_PRETRAIN, **{"train.steps": 1250, "train.eval_every": 250}), quick_args=_QUICK_PRETRAIN),
    Stage("pretrain", "phase2", init_from="copy_warmup", mixture=True,
          metric="held-out loss; copy ratio inside 256 tokens",
          args=dict(_PRETRAIN, **{"train.steps": 3000, "train.eval_every": 500}), quick_args=_QUICK_PRETRAIN),
    Stage("lce", "lce_32k", init_from="pretrain", mixture=True,
          metric="copy ratio past 256 tokens (before LCE -> after LCE + merge)",
          args={"train.steps": 300, "optim.peak_lr": 1e-3, "train.eval_every": 100, "ckpt.every_steps": 100},
          quick_args={"train.steps": 2, "train.eval_every": 2, "train.eval_batches": 1, "ckpt.every_steps": 2,
                      "train.global_batch": 2}),
    Stage("sft", "sft", init_from="lce", init_path="merged/ckpt", metric="held-out answer accuracy",
          args={"train.steps": 400, "optim.warmup_steps": 12},
          quick_args={"train.steps": 2, "train.eval_every": 2, "train.eval_batches": 1, "ckpt.every_steps": 2,
                      "optim.warmup_steps": 1}),
    Stage("reward_model", "reward_model", init_from="sft", metric="held-out pair accuracy",
          quick_args={"train.steps": 2, "train.eval_every": 2, "ckpt.every_steps": 2,
                      "reward_model.n_pairs": 32, "reward_model.n_eval_pairs": 16}),
    Stage("rl_multidomain", "rl_multidomain", init_from="sft", ref_from="sft",
          metric="held-out greedy accuracy", args=_rl(120), quick_args=_quick_rl()),
    Stage("rlhf", "rlhf", init_from="rl_multidomain", ref_from="sft", reward_model="reward_model",
          metric="held-out reward-model score", args=_rl(40, lr=1e-4), quick_args=_quick_rl()),
    Stage("rl_identity", "rl_identity", init_from="rlhf", ref_from="sft",
          metric="held-out identity/calibration reward", args=_rl(120), quick_args=_quick_rl()),
    # 200 steps: from the copy-capable model, held-out accuracy was 0.48 -> 0.67 at step 120 and
    # still rising (0.70 at 130, 0.80 at 140, 0.89 at 200).
    Stage("rl_math", "rl_math", init_from="rl_identity", ref_from="sft",
          metric="held-out greedy accuracy", args=_rl(200), quick_args=_quick_rl()),
]
NAMES = [s.name for s in STAGES]


def command(stage: Stage, workdir: str, quick: bool = False) -> list[str]:
  """The `launch/run.py` command of a stage (absolute paths: it runs from any directory)."""
  workdir = os.path.abspath(workdir)
  d = lambda name, sub="": os.path.join(workdir, name, sub) if sub else os.path.join(workdir, name)
  cmd = [sys.executable, os.path.join(ROOT, "launch", "run.py"),
         f"--config={os.path.join(ROOT, 'configs', stage.config + '.py')}",
         f"--workdir={d(stage.name)}", f"--config.data.cache_dir={os.path.join(workdir, 'cache')}"]
  if stage.init_from:
    cmd.append(f"--config.init_from={d(stage.init_from, stage.init_path)}")
  if stage.ref_from:
    cmd.append(f"--config.rl.ref_from={d(stage.ref_from, 'ckpt')}")
  if stage.reward_model:
    cmd.append(f"--config.rl.reward_model={d(stage.reward_model)}")
  over = {f"model.{k}": v for k, v in MODEL.items()}
  if stage.mixture:
    over.update({f"data.mixture.{k}": v for k, v in MIXTURES[stage.name].items()})
  if stage.periodic:
    src = periodic.paths(os.path.join(workdir, "cache"))
    over.update({"data.sources.cc_hq": src["train"], "data.eval_sources.cc_hq": src["eval"]})
  if stage.name in AFTER_LCE:
    over.update(POST_LCE)
  over.update(stage.args)
  if quick:
    over.update(stage.quick_args)
  cmd += [f"--config.{k}={v}" for k, v in over.items()]  # strings unquoted: no shell in between
  return cmd


def done_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, "stage.json")


def load_done(workdir: str, name: str) -> dict | None:
  p = done_path(workdir, name)
  if not os.path.exists(p):
    return None
  with open(p) as f:
    return json.load(f)


def save_done(workdir: str, name: str, record: dict) -> None:
  p = done_path(workdir, name)
  tmp = f"{p}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, p)  # written last, atomically: its presence means "stage complete"

