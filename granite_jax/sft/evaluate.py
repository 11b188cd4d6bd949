"""Held-out checks of the demo SFT skills: answer format and correctness, by greedy decoding.

`python -m granite_jax.sft.evaluate CKPT_DIR [--n 60]` prints a table and JSON.
- arithmetic: format = reply matches "The answer is <int>."; correct = the sum;
- tool: format = one <tool_call> with a JSON object naming a known tool; correct = same call;
- instruction: format = one upper-case word; correct = the requested word.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from granite_jax.data.chat_template import EOT, encode_chat
from granite_jax.data.demo_chat import check, generate as demo_samples
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.infer.sampler import generate


def evaluate(params, model_cfg, tok, samples: list[dict[str, Any]], max_new_tokens: int = 48) -> dict:
  prompts = [encode_chat(tok, s["messages"][:-1], s.get("tools"), add_generation_prompt=True)[0].tolist()
             for s in samples]
  eot = tok.token_to_id(EOT)
  out = generate(params, model_cfg, prompts, max_new_tokens, temperature=0.0, stop_ids=(eot,))
  tokens, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
  per_kind: dict[str, list[tuple[bool, bool]]] = {}
  examples = []
  for s, row, n in zip(samples, tokens, lengths):
    text = tok.decode(row[:n].tolist(), skip_special_tokens=False).split(EOT)[0].strip()
    fmt, ok = check(s["kind"], text, s["answer"])
    per_kind.setdefault(s["kind"], []).append((fmt, ok))
    if len(examples) < 6:
      examples.append({"kind": s["kind"], "reply": text, "answer": s["answer"]})
  result = {k: {"n": len(v), "format": float(np.mean([f for f, _ in v])),
                "accuracy": float(np.mean([a for _, a in v]))} for k, v in sorted(per_kind.items())}
  allv = [x for v in per_kind.values() for x in v]
  result["all"] = {"n": len(allv), "format": float(np.mean([f for f, _ in allv])),
                   "accuracy": float(np.mean([a for _, a in allv]))}
  return {"metrics": result, "examples": examples}


def table(metrics: dict) -> str:
  lines = ["| kind | n | format compliance | accuracy |", "|---|---|---|---|"]
  for k, v in metrics.items():
    lines.append(f"| {k} | {v['n']} | {v['format']:.1%} | {v['accuracy']:.1%} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  from granite_jax.ckpt.manager import abstract_like, restore_params
  from granite_jax.ckpt.run_dir import ckpt_dir_of, model_config_for
  from granite_jax.model.params import init_params
  from granite_jax.sharding.mesh import make_mesh
  from granite_jax.train import state as state_lib

  p = argparse.ArgumentParser(prog="python -m granite_jax.sft.evaluate")
  p.add_argument("ckpt_dir", help="a tiny run's WORKDIR or WORKDIR/ckpt (model_config.json beside it)")
  p.add_argument("--n", type=int, default=60)
  p.add_argument("--cache-dir", default="")
  a = p.parse_args(argv)
  ckpt = ckpt_dir_of(a.ckpt_dir)
  cfg = model_config_for(ckpt)
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  params = restore_params(ckpt, abstract_like(abstract, state_lib.param_shardings(cfg, mesh)))
  tok = get_tokenizer(ConfigDict(dict(tokenizer="", cache_dir=a.cache_dir)))
  res = evaluate(params, cfg, tok, demo_samples(a.n, "eval", seed=1))
  print(table(res["metrics"]))
  for ex in res["examples"]:
    print(f"  [{ex['kind']}] {ex['reply']!r} (want {ex['answer']!r})")
  print(json.dumps(res["metrics"]))


if __name__ == "__main__":
  main()
