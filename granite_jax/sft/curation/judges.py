"""Pluggable LLM judges: `judge(sample) -> JudgeVerdict`.

`OpenAIJudge` posts to any OpenAI-compatible chat endpoint (a vLLM server, an
API) with the stdlib only; `ModelJudge` wraps a `generate_text(prompt) -> str`
callable, e.g. this project's sampler (`sampler_generate_text`). Both retry a
malformed reply or a transport error `max_retries` times, telling the model
what was wrong, and then return a failed verdict: a judge failure is never an
acceptance.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Callable, Protocol

from granite_jax.sft.curation.config import CurationConfig
from granite_jax.sft.curation.prompts import build_prompt, sample_type
from granite_jax.sft.curation.verdict import JudgeVerdict, MalformedReply, parse_reply


class Judge(Protocol):
  def __call__(self, sample: dict) -> JudgeVerdict: ...


class _RetryingJudge:
  """Shared retry loop; subclasses implement `_complete(messages) -> str`."""

  def __init__(self, dimensions: tuple[str, ...], max_retries: int):
    self.dimensions, self.max_retries = dimensions, max_retries

  def _complete(self, messages: list[dict]) -> str:
    raise NotImplementedError

  def __call__(self, sample: dict) -> JudgeVerdict:
    system, user = build_prompt(sample, self.dimensions)
    messages = [dict(role="system", content=system), dict(role="user", content=user)]
    errors = []
    for attempt in range(1, self.max_retries + 2):
      try:
        reply = self._complete(messages)
      except Exception as e:  # noqa: BLE001 - transport, bad envelope, generator crash: all retried
        errors.append(f"attempt {attempt}: request failed: {e}")
        continue
      try:
        scores, flags, rationale = parse_reply(reply, self.dimensions)
      except MalformedReply as e:
        errors.append(f"attempt {attempt}: malformed reply: {e}")
        messages = messages[:2] + [dict(role="assistant", content=reply), dict(
            role="user", content=f"Your reply was invalid ({e}). Reply with only the JSON object.")]
        continue
      return JudgeVerdict(ok=True, scores=scores, flags=flags, rationale=rationale, attempts=attempt,
                          sample_type=sample_type(sample))
    return JudgeVerdict(ok=False, attempts=self.max_retries + 1, error="; ".join(errors),
                        sample_type=sample_type(sample))


class OpenAIJudge(_RetryingJudge):
  """POST {url}/chat/completions (url like http://host:8000/v1, or the full endpoint)."""

  def __init__(self, url: str, model: str, dimensions: tuple[str, ...], *, max_retries: int = 2,
               api_key: str | None = None, timeout_s: float = 120.0, max_tokens: int = 512):
    super().__init__(dimensions, max_retries)
    url = url.rstrip("/")
    self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
    self.model, self.api_key, self.timeout_s, self.max_tokens = model, api_key, timeout_s, max_tokens

  def _complete(self, messages: list[dict]) -> str:
    body = json.dumps(dict(model=self.model, messages=messages, temperature=0.0,
                           max_tokens=self.max_tokens)).encode()
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
    try:
      with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
        payload = json.load(resp)
    except urllib.error.HTTPError as e:
      raise OSError(f"HTTP {e.code} from {self.url}: {e.read()[:200]!r}") from None
    content = payload["choices"][0]["message"]["content"]
    if not isinstance(content, str):
      raise TypeError(f"{self.url} returned non-string content {content!r}")
    return content


class ModelJudge(_RetryingJudge):
  """Any `generate_text(prompt: str) -> str`; the chat is flattened into one prompt string."""

  def __init__(self, generate_text: Callable[[str], str], dimensions: tuple[str, ...], *,
               max_retries: int = 2):
    super().__init__(dimensions, max_retries)
    self.generate_text = generate_text

  def _complete(self, messages: list[dict]) -> str:
    # The Granite chat format, written out here so the judge does not depend on template code.
    prompt = "".join(f"<|start_of_role|>{m['role']}<|end_of_role|>{m['content']}<|end_of_text|>\n"
                     for m in messages)
    return self.generate_text(prompt + "<|start_of_role|>assistant<|end_of_role|>")


def sampler_generate_text(params, model_cfg, tokenizer, max_new_tokens: int = 512):
  """A `generate_text` for ModelJudge on this project's model (greedy, stops at end of text)."""
  from granite_jax.data.tokenizer import EOS, special_token_id
  from granite_jax.infer import sampler

  eos = special_token_id(tokenizer, EOS)

  def generate_text(prompt: str) -> str:
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    out = sampler.generate(params, model_cfg, [ids], max_new_tokens, stop_ids=(eos,))
    n = int(out["lengths"][0])
    return tokenizer.decode([int(t) for t in out["tokens"][0][:n] if int(t) != eos])
  return generate_text


def make_judge(cfg: CurationConfig) -> Judge | None:
  """The judge the config names; None for "none". "model" needs code (see ModelJudge)."""
  if cfg.judge == "none":
    return None
  if cfg.judge == "openai":
    return OpenAIJudge(cfg.judge_url, cfg.judge_model, cfg.active_dimensions(),
                       max_retries=cfg.max_retries, api_key=os.environ.get(cfg.judge_api_key_env),
                       timeout_s=cfg.judge_timeout_s, max_tokens=cfg.judge_max_new_tokens)
  raise ValueError("curation config judge='model' needs a generate_text callable: build "
                   "ModelJudge(sampler_generate_text(params, model_cfg, tok), cfg.active_dimensions()) "
                   "and pass it as run_curation(..., judge=...)")
