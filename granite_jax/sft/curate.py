"""Curate an SFT chat dataset: `python -m granite_jax.sft.curate IN.jsonl OUT_DIR [flags]`.

  python -m granite_jax.sft.curate data.jsonl out/                      # rules + dedup only
  python -m granite_jax.sft.curate data.jsonl out/ --judge-url http://localhost:8000/v1 \
      --judge-model ibm-granite/granite-4.0-h-small --eval-texts evals.jsonl --tokenizer tok.json

Writes OUT_DIR/{accepted,borderline,rejected,audit}.jsonl and summary.json.
Without --tokenizer, lengths are whitespace word counts; `--tokenizer demo` is
the demo BPE. The API key, if the endpoint needs one, is read from the
environment variable named by --judge-api-key-env (default OPENAI_API_KEY).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from granite_jax.sft.curation.config import DIMENSIONS, OPTIONAL_DIMENSIONS, CurationConfig
from granite_jax.sft.curation.pipeline import run_curation


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, CurationConfig]:
  d = CurationConfig()
  p = argparse.ArgumentParser(prog="python -m granite_jax.sft.curate", description=__doc__.split("\n")[0])
  p.add_argument("input", help="input JSONL, one chat sample per line")
  p.add_argument("out_dir", help="output directory")
  p.add_argument("--max-tokens", type=int, default=d.max_tokens)
  p.add_argument("--no-truncate", action="store_true", help="reject over-long samples instead of "
                 "dropping trailing turns")
  p.add_argument("--tokenizer", default=None, help="tokenizer.json path, or 'demo' (default: "
                 "whitespace word counts)")
  p.add_argument("--cache-dir", default=d.cache_dir, help="demo tokenizer cache")
  p.add_argument("--min-assistant-chars", type=int, default=d.min_assistant_chars)
  p.add_argument("--eval-texts", default=d.eval_texts, help="leakage check: .jsonl with 'text' or "
                 "plain text, one eval text per line")
  p.add_argument("--leakage-n", type=int, default=d.leakage_n)
  p.add_argument("--leakage-threshold", type=float, default=d.leakage_threshold)
  p.add_argument("--dedup-threshold", type=float, default=d.dedup_near_threshold)
  p.add_argument("--dedup-num-perm", type=int, default=d.dedup_num_perm)
  p.add_argument("--dedup-shingle", type=int, default=d.dedup_shingle)
  p.add_argument("--judge", choices=("none", "openai"), default=None,
                 help="default: openai when --judge-url is given, else none")
  p.add_argument("--judge-url", default="", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
  p.add_argument("--judge-model", default="")
  p.add_argument("--judge-api-key-env", default=d.judge_api_key_env)
  p.add_argument("--judge-timeout", type=float, default=d.judge_timeout_s)
  p.add_argument("--judge-failure-bucket", choices=("borderline", "rejected"), default=d.judge_failure_bucket)
  p.add_argument("--weights", default="", help="JSON of dimension -> weight overrides, e.g. "
                 f"'{{\"correctness\": 0.4}}'; dimensions: {', '.join(DIMENSIONS + OPTIONAL_DIMENSIONS)}")
  p.add_argument("--accept-threshold", type=float, default=d.accept_threshold)
  p.add_argument("--borderline-threshold", type=float, default=d.borderline_threshold)
  p.add_argument("--max-retries", type=int, default=d.max_retries)
  p.add_argument("--concurrency", type=int, default=d.concurrency)
  p.add_argument("--chunk-size", type=int, default=d.chunk_size)
  a = p.parse_args(argv)
  weights = d.weights
  if a.weights:
    try:
      weights = {**weights, **json.loads(a.weights)}
    except (json.JSONDecodeError, TypeError) as e:
      p.error(f"--weights must be a JSON object: {e}")
  cfg = dataclasses.replace(
      d, max_tokens=a.max_tokens, truncate=not a.no_truncate, tokenizer=a.tokenizer,
      cache_dir=a.cache_dir, min_assistant_chars=a.min_assistant_chars, eval_texts=a.eval_texts,
      leakage_n=a.leakage_n, leakage_threshold=a.leakage_threshold,
      dedup_near_threshold=a.dedup_threshold, dedup_num_perm=a.dedup_num_perm,
      dedup_shingle=a.dedup_shingle, judge=a.judge or ("openai" if a.judge_url else "none"),
      judge_url=a.judge_url, judge_model=a.judge_model, judge_api_key_env=a.judge_api_key_env,
      judge_timeout_s=a.judge_timeout, judge_failure_bucket=a.judge_failure_bucket, weights=weights,
      accept_threshold=a.accept_threshold, borderline_threshold=a.borderline_threshold,
      max_retries=a.max_retries, concurrency=a.concurrency, chunk_size=a.chunk_size)
  try:
    cfg.validate()
  except ValueError as e:
    p.error(str(e))
  return a, cfg


def main(argv: list[str] | None = None) -> int:
  a, cfg = parse_args(argv)
  if os.path.isfile(a.input) and os.path.getsize(a.input) == 0:
    raise ValueError(f"{a.input}: empty file (no samples to curate)")
  s = run_curation(a.input, a.out_dir, cfg)
  b = s["buckets"]
  print(f"curated {s['samples']} samples from {a.input} in {s['total_seconds']:.1f}s "
        f"(tokenizer {s['tokenizer']}, judge {s['judge']})")
  print(f"  accepted {b['accepted']}  borderline {b['borderline']}  rejected {b['rejected']}")
  for reason, n in s["reasons"].items():
    print(f"  {reason:<24} {n}")
  print(f"  outputs in {a.out_dir}/ (accepted, borderline, rejected, audit .jsonl; summary.json)")
  return 0


if __name__ == "__main__":
  from granite_jax.cli import run_main
  sys.exit(run_main("granite_jax.sft.curate", main))
