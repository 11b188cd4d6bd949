"""Base config every recipe stage overrides. `get_config("tiny" | "3b" | "8b" | "30b")`.

The `tiny` default runs anywhere on the built-in demo corpus. The real sizes
keep the same recipe and expect the user to point `data.sources.<domain>` at
token stores (or text: ArrayRecord, JSONL or Parquet) and `data.tokenizer` at a
tokenizer.json or Hugging Face tokenizer directory.
"""
from ml_collections import ConfigDict

from granite_jax.data.domains import DOMAINS
from granite_jax.model.config import PRESETS, preset
from granite_jax.optim import default_optim_config
from granite_jax.sharding import distributed, xla_profile

# Tokens per optimizer step for the real sizes: 1024 x 4096 = 4.19M tokens.
# The report does not give the pretraining batch; this is Granite 3/4's order of magnitude.
REAL_GLOBAL_BATCH = 1024
REAL_SEQ_LEN = 4096


def is_tiny(arg: str) -> bool:
  return arg == "tiny"


def get_config(arg: str | None = None) -> ConfigDict:
  arg = arg or "tiny"
  if arg not in PRESETS:
    raise ValueError(f"unknown model preset {arg!r} in the config string; choose one of {sorted(PRESETS)}")
  c = ConfigDict()
  c.name = "base"
  c.preset = arg
  c.model = ConfigDict(preset(arg).to_dict())  # every field, so each is overridable
  c.model.remat_policy = "nothing_saveable"
  # Real sizes: cross-entropy 1024 positions at a time, never the full [B, T, 100K] float32 logits.
  c.model.loss_chunk = 0 if is_tiny(arg) else 1024
  c.model.attention_impl = "xla" if is_tiny(arg) else "cudnn"

  c.data = ConfigDict()
  c.data.mixture = ConfigDict({"cc": 1.0})
  # "" means the built-in demo corpus for that domain (fine for `tiny`, not for real runs).
  c.data.sources = ConfigDict({d: "" for d in DOMAINS})
  c.data.eval_sources = ConfigDict({d: "" for d in DOMAINS})  # held-out data for real sources
  # A source is a token store (`python -m granite_jax.data.tokenize`, local, s3:// or gs://) or text
  # (JSONL(.gz/.zst), Parquet, ArrayRecord files, dirs, globs), tokenized into a store in the cache once.
  c.data.tokenizer = ""        # tokenizer.json or a Hugging Face tokenizer dir; "" = demo BPE tokenizer
  c.data.eos_token = ""        # "" = from the tokenizer's own config (tokenizer_config.json)
  c.data.pad_token = ""
  c.data.text_field = "text"   # the JSON field / Parquet column of text sources
  c.data.cache_dir = ""        # demo corpus, tokenizer and text-source stores; "" = ~/.cache/granite_jax
  c.data.on_bad_record = "raise"  # or "skip"
  c.data.seed = -1             # the data order's seed; -1 = from train.seed and the stage name (per phase)
  c.data.kind = "pretrain"     # or "sft" (chat conversations, configs/sft.py)

  c.train = ConfigDict()
  c.train.seq_len = 256 if is_tiny(arg) else REAL_SEQ_LEN
  c.train.global_batch = 8 if is_tiny(arg) else REAL_GLOBAL_BATCH
  c.train.grad_accum = 1       # micro-batches per step (inside the jitted step)
  c.train.steps = 120          # tiny; real stages derive steps from train.tokens
  c.train.tokens = 0.0         # token budget; when > 0, steps = tokens / (global_batch * seq_len)
  c.train.seed = 0
  c.train.log_every = 10
  c.train.eval_every = 40
  c.train.eval_batches = 4
  c.train.on_nonfinite = "skip"  # or "stop"
  c.train.max_consecutive_skips = 5  # more non-finite steps in a row stop the run
  c.train.peak_flops = 0.0     # per-device peak FLOP/s for the logged MFU; 0 = by device kind (granite_jax/flops.py)
  c.train.loss_spike_factor = 3.0  # log a spike when loss > factor x its running mean (0 = off)
  c.train.deterministic_gpu = False  # --xla_gpu_deterministic_ops: bitwise-repeatable GPU runs, slower
  c.train.straggler_every = 50  # multi-process: every N steps name the slowest host (0 = off; a tiny all-gather)

  c.optim = default_optim_config()
  if is_tiny(arg):
    # The power curve meets the 1e-3 peak at ~45K tokens and decays to ~5e-4 by step 120.
    c.optim.peak_lr, c.optim.power_a = 1e-3, 0.3
  else:
    # Meets the 3e-4 peak at 10B tokens and falls as tokens^-0.51 to ~9e-6 at 10T (end of phase 1).
    # (The power-scheduler paper's muP setting folds the batch size into `a`.)
    c.optim.peak_lr, c.optim.power_a = 3e-4, 38.0

  c.mesh = ConfigDict()
  c.mesh.shape = (-1, 1, 1)    # -1 fills with the remaining devices
  c.mesh.axes = ("data", "fsdp", "tensor")
  # Across NVLink domains (racks): one size per axis dividing mesh.shape; () = one flat mesh.
  # See configs/meshes.py for the GB200 NVL72 layouts.
  c.mesh.dcn_shape = ()
  c.distributed = distributed.default_config()  # jax.distributed.initialize (SLURM / explicit)
  c.xla = xla_profile.default_config()          # named XLA/GPU flag profile, applied before JAX starts

  c.ckpt = ConfigDict()
  c.ckpt.every_steps = 50
  c.ckpt.max_to_keep = 3
  c.ckpt.async_save = True
  c.ckpt.verify_checksums = True  # record + check a checksum of every checkpoint file (False: sizes only)

  c.profile = profile_config()

  c.merge = merge_config()
  c.init_from = ""  # checkpoint directory of the previous stage: params only, fresh optimizer
  # The network (shapes, multipliers, RoPE, max length) comes from init_from's model_config.json;
  # fields this stage changes on purpose are listed here, "a,b" (granite_jax/ckpt/model_config.py).
  c.model_changes = ""
  return c


def merge_config(enabled: bool = False, weight: float = 0.5) -> ConfigDict:
  """End-of-stage model merge: `weight` x this stage's result + (1 - weight) x `init_from`."""
  return ConfigDict(dict(enabled=enabled, weight=weight))


def profile_config() -> ConfigDict:
  """Where the time goes (granite_jax/train/timing.py, profiling.py)."""
  c = ConfigDict()
  c.steps = ""            # XLA trace of steps "START:END" (END exclusive; "5:8,100:103"), "" = none
  c.processes = "all"     # which processes trace: "all" or "0,3"
  c.request_steps = 5     # steps traced per request: `echo N > WORKDIR/profile/request` or SIGUSR1
  c.perfetto = True       # also write perfetto_trace.json.gz next to the TensorBoard .xplane.pb
  c.timing = True         # step-time breakdown, device memory, stragglers, timeline.jsonl (goodput)
  return c
