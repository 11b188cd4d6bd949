"""GB200 NVL72 layouts: `--config=configs/gb200.py:STAGE,PRESET,RACKS[,long]` (e.g. `phase2,8b,16`).

Wraps any recipe stage config (configs/<STAGE>.py: phases, LCE, SFT, reward model, RL) with the
multi-host mesh, jax.distributed and XLA settings for RACKS racks of 72 GPUs (18 trays x 4).
launch/slurm_gb200.sbatch uses it; `launch/run.py --config=configs/gb200.py:... --dry_run`
compiles the stage on its layout and prints its memory (docs/stages.md).

Why these meshes:
- Inside a rack all 72 GPUs share one NVLink domain (1.8 TB/s each); racks talk
  over InfiniBand (400 Gb/s per GPU, ~36x less). So everything that moves
  parameters or activations every layer (FSDP all-gathers/reduce-scatters,
  tensor and context parallel) stays in the rack (`ici` part), and only the
  data-parallel gradient all-reduce, once per step, crosses racks
  (`mesh.dcn_shape = (racks, 1, 1)`).
- 72 = 9 x 8, and every parameter dimension of the presets is a power of two,
  so parameters split at most 8 ways inside a rack: FSDP=8 (two trays).
- Pretraining (phases 1-4) uses the whole rack: the factor 9 is a data axis
  (still NVLink). The report gives no pretraining batch; ours (1024) becomes the
  next multiple of 72 x racks (1152 on 16 racks) and the banner says so.
- Every other stage keeps the report's batch exactly, so it runs on 16 of the 18
  trays (64 GPUs, data=8 x fsdp=8; sbatch --segment=16): SFT is the report's own
  16 nodes x 4 GB200 with 256 sequences per step; RL 64 prompts x 16 samples = 1024
  sequences, one per data rank per micro-batch (train.grad_accum = 1024 / 64), its rollout in
  tensor parallel over the 8 fsdp GPUs (ROLLOUT_AXES); the reward model 256 pairs. A layout that would change a stage's batch is refused with the
  rack counts that keep it.
- Long-context extension splits each sequence over `context` GPUs (configs/lce_32k.py
  REAL_CONTEXT) next to FSDP=8 on 64 GPUs per rack (30B at 512K: fsdp=2 x tensor=4 with
  sequence parallelism, see PRESET_ICI); `long` gives a pretraining phase the 512K layout (data=1 x fsdp=8 x context=8).
"""
import importlib
import math

from ml_collections import ConfigDict

from configs import base

GPUS_PER_RACK = 72
NODES_PER_RACK = 18  # trays of 4 GPUs
GPUS_PER_NODE = 4
# (data, fsdp, tensor[, context]) inside one rack, by stage kind.
ICI = {
    "pretrain": (9, 8, 1),
    "long": (1, 8, 1, 8),
    "lce_32k": (8, 8, 1, 1),
    "lce_128k": (2, 8, 1, 4),
    "lce_512k": (1, 8, 1, 8),
    "sft": (8, 8, 1),
    "reward_model": (8, 8, 1),
    "rl": (8, 8, 1),
}
LCE_ICI = ICI["long"]  # (kept for callers of the old name)
# Per-size exceptions, with the reason; the dry run (docs/stages.md) checks each.
PRESET_ICI = {
    # 30B at 512K: tensor=4 inside a tray with sequence parallelism (the residual stream between
    # layers, which remat saves, splits its length over context x tensor: sharding/rules.py
    # act_res_length) keeps one 64K-token shard of a sequence per GPU at XLA 120.4 GiB; data x fsdp
    # = 2 ranks take the 8 sequences in 4 micro-batches. Without sequence parallelism this layout was
    # 174.1 GiB and data=1 x fsdp=8 x context=8 182 GiB (XLA:CPU; ~96 GiB of either is the 64 layers'
    # saved inputs, bf16 plus the float32 copy XLA:CPU's bf16 normalization makes of the stack).
    ("lce_512k", "30b"): ((1, 2, 4, 8), 4),
    # 2 x 32K sequences per GPU at once: XLA 175.6 GiB for 30B; one per micro-batch.
    ("lce_32k", "30b"): ((8, 8, 1, 1), 2),
    # context=4 with 2 x 128K sequences per rank: XLA 279 GiB for 30B; context=8 (16K tokens of
    # one sequence per GPU) with 4 micro-batches.
    ("lce_128k", "30b"): ((1, 8, 1, 8), 4),
    # 4 x 16K sequences per GPU at once: XLA 175.6 GiB for 30B; one per micro-batch instead.
    ("sft", "30b"): ((8, 8, 1), 4),
    # 8 x 8K rows per GPU and no micro-batching in the reward-model step: XLA 168.5 GiB with
    # fsdp=8. 64 divides every 30B parameter dimension, so FSDP over all 64 GPUs (all NVLink)
    # cuts parameters, AdamW state and gradients 8x further.
    ("reward_model", "30b"): ((1, 64, 1), 1),
}
# 30B RL runs on the RL layout (data=8 x fsdp=8), like 3B and 8B. Its rollout once needed XLA
# 268 GiB per GPU there (the decode loop held the whole model gathered over fsdp) and 30B moved to
# data=2 x fsdp=8 x tensor=4 for memory alone; the rollout layout below (ROLLOUT_AXES) splits each
# layer 8 ways instead, so the train step keeps data x fsdp (no tensor-parallel all-reduces; the
# same FLOPs per GPU) and the decode reads 1/8 of the weights per GPU, not 1/4 (docs/planner.md).
RL_STAGES = ("rl_multidomain", "rlhf", "rl_identity", "rl_math")
# The RL rollout's layout (infer/sampler.py make_sampler(rollout_axes=...), rl.rollout_axes): before
# decoding, the weights move (one reshard, in bf16) from the train step's FSDP shards to tensor
# parallelism over these mesh axes: fsdp's 8 GPUs (two trays, NVLink) split every layer's heads,
# KV heads, MLP and the vocabulary 8 ways, the KV cache goes by KV heads (8 for 3B / 8B / 30B: one
# per GPU), the batch over data. Each decode step then reads 1/8 of the weights and of its data
# rank's cache per GPU; with the training layout XLA hoists every layer's all-gather out of the
# decode loop and holds the whole model on every GPU (8B: 88.9 GiB per GPU, docs/planner.md).
ROLLOUT_AXES = {"rl": ("fsdp", "tensor")}
# Stages that do not fit on their layout as the recipe stands, and what to change. The dry run
# (launch/run.py --dry_run) and docs/stages.md print this next to the memory that does not fit.
# Empty: every stage x size fits (docs/stages.md).
DOES_NOT_FIT: dict = {}


def stage_kind(c) -> str:
  if c.get("rl"):
    return "rl"
  if c.get("reward_model"):
    return "reward_model"
  if c.data.get("kind") == "sft":
    return "sft"
  if c.name in ICI:
    return c.name  # lce_32k / lce_128k / lce_512k
  return "pretrain"


def _racks_keeping(batch: int, dp_per_rack: int, limit: int = 64) -> list[int]:
  return [r for r in range(1, limit + 1) if batch % (dp_per_rack * r) == 0]


def apply(c, racks: int, long_context: bool = False):
  """Sets c.mesh / c.distributed / c.xla (and, for pretraining, the batch) for `racks` racks.

  Raises ValueError when the layout would change the batch of a stage whose batch is the
  report's (SFT, reward model, RL, LCE). Records the layout in `c.gb200` (printed at start).
  """
  if racks < 1:
    raise ValueError(f"configs/gb200.py: racks={racks} must be >= 1")
  kind = stage_kind(c)
  if long_context:
    if kind != "pretrain":
      raise ValueError(f"configs/gb200.py: `long` is for the pretraining phases; {c.name} has its own layout")
    kind = "long"
  ici = ICI[kind]
  if kind != "long" and (c.name, c.preset) in PRESET_ICI:
    ici, c.train.grad_accum = PRESET_ICI[(c.name, c.preset)]
  axes = ("data", "fsdp", "tensor", "context")[:len(ici)]
  c.mesh.axes = axes
  c.mesh.shape = (ici[0] * racks, *ici[1:])
  c.mesh.dcn_shape = (racks,) + (1,) * (len(ici) - 1)
  gpus_per_rack = math.prod(ici)
  c.distributed.per_process = "gpu"
  c.distributed.nodes_per_slice = gpus_per_rack // GPUS_PER_NODE  # trays per rack actually used
  c.xla.profile = "gb200"
  if len(ici) == 4 and ici[3] > 1:
    c.model.attention_impl = "allgather"
  dp_rack = ici[0] * ici[1]
  dp = dp_rack * racks
  batch, note = c.train.global_batch, ""
  if kind == "rl":
    if c.rl.prompts_per_step % dp:
      raise ValueError(
          f"configs/gb200.py: {c.name} draws rl.prompts_per_step={c.rl.prompts_per_step} prompts per step "
          f"and each of the {dp} data-parallel ranks of {racks} rack(s) needs whole prompts; racks that keep "
          f"the recipe's {c.rl.prompts_per_step} x {c.rl.samples_per_prompt}: "
          f"{_racks_keeping(c.rl.prompts_per_step, dp_rack)}")
    c.train.grad_accum = batch // dp  # one sequence per GPU per micro-batch
    c.rl.rollout_axes = ROLLOUT_AXES["rl"]
  if batch % (dp * c.train.grad_accum):
    if kind not in ("pretrain", "long"):
      keep = _racks_keeping(batch // c.train.grad_accum, dp_rack)
      raise ValueError(
          f"configs/gb200.py: {c.name} keeps the recipe's batch of {batch} sequences per step, which "
          f"{racks} rack(s) x {dp_rack} data-parallel GPUs (x grad_accum {c.train.grad_accum}) do not "
          f"divide; use RACKS in {keep} (or set --config.train.global_batch on purpose)")
    new = -(-batch // (dp * c.train.grad_accum)) * dp * c.train.grad_accum
    note = (f"train.global_batch {batch} -> {new} (a multiple of data x fsdp = {dp}; "
            f"{new * c.train.seq_len / 2**20:.2f}M tokens per step)")
    c.train.global_batch = new
  c.gb200 = ConfigDict(dict(stage=kind, racks=racks, gpus=gpus_per_rack * racks,
                            gpus_per_rack=gpus_per_rack, batch_note=note,
                            does_not_fit=DOES_NOT_FIT.get((c.name, c.preset), "")))
  return c


def describe(c) -> str:
  """One line for the start banner: GPUs, mesh and any change this layout made to the recipe."""
  g = c.get("gb200")
  if not g:
    return ""
  mesh = " x ".join(f"{a}={s}" for a, s in zip(c.mesh.axes, c.mesh.shape))
  out = (f"gb200 {g.racks} rack(s) x {g.gpus_per_rack} GPUs = {g.gpus} ({mesh}; "
         f"{g.gpus_per_rack // GPUS_PER_NODE} of {NODES_PER_RACK} trays per rack)")
  out += f" | CHANGED {g.batch_note}" if g.batch_note else " | recipe batch kept"
  axes = tuple((c.get("rl") or {}).get("rollout_axes", ()) or ())
  if axes:
    sizes = dict(zip(c.mesh.axes, c.mesh.shape))
    ways = math.prod(sizes.get(a, 1) for a in axes)
    rest = [a for a in ("data", "fsdp") if a in sizes and a not in axes]
    out += f" | rollout layout: {ways}-way tensor parallel over {' x '.join(axes)}, batch over {' x '.join(rest)}"
  return out


def get_config(arg: str | None = None):
  parts = (arg or "phase2,8b,1").split(",")
  if len(parts) not in (3, 4) or parts[3:] not in ([], ["long"]) or not parts[2].isdigit():
    raise ValueError(f"configs/gb200.py:{arg}: expected STAGE,PRESET,RACKS[,long]")
  stage, preset, racks = parts[:3]
  if preset not in ("3b", "8b", "30b"):
    raise ValueError(f"configs/gb200.py: preset {preset!r} is not one of ['30b', '3b', '8b']")
  try:
    module = importlib.import_module(f"configs.{stage}")
  except ModuleNotFoundError as e:
    raise ValueError(f"configs/gb200.py: no stage config configs/{stage}.py") from e
  c = module.get_config(preset)
  if base.is_tiny(c.preset):
    raise ValueError("configs/gb200.py is for the real sizes")
  return apply(c, int(racks), long_context=parts[3:] == ["long"])
