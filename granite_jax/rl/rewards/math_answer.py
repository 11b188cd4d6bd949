"""Math: extract the final answer and test equivalence with the reference (string, number, sympy).

Reference: the gold answer as a string (LaTeX allowed, e.g. "\\frac{1}{2}").
Reward 1.0 when equivalent, else 0.0.
Answers are parsed without evaluation and rejected (not equivalent) when they would build a huge
number: `10^{10^{10}}` or `9**9**9**9` would take sympy minutes and gigabytes to evaluate, so
exponents, factorial-like arguments and the digits of numeric powers are bounded first.
"""
from __future__ import annotations

import math
import re

from granite_jax.rl.rewards.base import RewardDataError, boxed, final_answer

_MAX_EXPR = 200  # longer strings are not handed to the sympy parser
_MAX_DIGITS = 10_000   # a numeric power may have at most this many decimal digits
_MAX_SYM_EXP = 100     # |exponent| of a power with symbols (simplify may expand it)
_MAX_FACT_ARG = 1000   # factorial(n), gamma(n), binomial(n, k), ... arguments
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def extract_answer(response: str) -> str | None:
  """\\boxed{..}, else 'answer is ..', else the last number; None when nothing is found."""
  b = boxed(response)
  if b is not None:
    return b
  if re.search(r"answer\s*(?:is|:)", response, re.IGNORECASE):
    return final_answer(response)
  nums = _NUMBER_RE.findall(response)
  return nums[-1] if nums else None


def normalize(s: str) -> str:
  s = s.strip().strip("$").strip()
  s = re.sub(r"\\text\{([^{}]*)\}|\\mathrm\{([^{}]*)\}", lambda m: m.group(1) or m.group(2) or "", s)
  for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""),
               ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""),
               ("\\%", ""), ("%", ""), ("\\$", "")):
    s = s.replace(a, b)
  s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 3" -> "3"
  s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # 1,000 -> 1000
  s = re.sub(r"\s+", "", s).rstrip(".")
  return s


def _latex_to_sympy(s: str) -> str:
  prev = None
  while prev != s:
    prev = s
    s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
    s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
  for a, b in (("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi"), ("^", "**"), ("{", "("),
               ("}", ")"), ("\\", "")):
    s = s.replace(a, b)
  return s


class _TooBig(ValueError):
  """The answer would evaluate to an astronomically large number."""


def _magnitude(e) -> float:
  """|value| of a checked (bounded) numeric subtree, as a float (inf when it overflows a float)."""
  import sympy
  try:
    return abs(complex(sympy.N(e, 15)))
  except (TypeError, ValueError, OverflowError):
    return math.inf


def check_bounded(e) -> None:
  """Raises _TooBig when evaluating the unevaluated expression `e` would build a huge number."""
  import sympy
  for arg in e.args:  # children first: a parent's bound reads their (bounded) values
    check_bounded(arg)
  if isinstance(e, sympy.Pow):
    base, exp = e.args
    if exp.free_symbols:  # 2^x: nothing numeric is built
      return
    x = _magnitude(exp)
    if base.free_symbols:
      if x > _MAX_SYM_EXP:
        raise _TooBig(f"exponent {exp} of a symbolic power")
      return
    b = _magnitude(base)
    if x > 1e6 or (b > 1 and x * math.log10(b) > _MAX_DIGITS):
      raise _TooBig(f"power {base}^{exp} has too many digits")
  elif isinstance(e, sympy.Function) and type(e).__name__ in _FACTORIAL_LIKE:
    if any(a.free_symbols for a in e.args):
      return
    if any(_magnitude(a) > _MAX_FACT_ARG for a in e.args):
      raise _TooBig(f"{type(e).__name__} of a large argument: {e}")


_FACTORIAL_LIKE = {"factorial", "factorial2", "subfactorial", "gamma", "loggamma", "binomial",
                   "RisingFactorial", "FallingFactorial", "fibonacci", "lucas", "catalan", "bell",
                   "bernoulli", "euler", "harmonic", "primorial", "prime", "tribonacci", "partition"}


def _parse(s: str):
  """Unevaluated parse, bounds checked, then evaluated."""
  from sympy.parsing.sympy_parser import (
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
  )
  tr = standard_transformations + (implicit_multiplication_application,)
  code = _latex_to_sympy(s)
  names = _guarded_namespace()  # factorial(10**6) evaluates even in an unevaluated parse
  check_bounded(parse_expr(code, transformations=tr, global_dict=names, evaluate=False))
  return parse_expr(code, transformations=tr, global_dict=names, evaluate=True)


_NAMESPACE: dict = {}


def _guarded_namespace() -> dict:
  """sympy's names, with factorial-like functions refusing large numeric arguments."""
  if not _NAMESPACE:
    import sympy
    exec("from sympy import *", _NAMESPACE)  # what parse_expr uses by default  # noqa: S102

    def guard(f):
      def g(*args, **kw):
        for a in args:
          a = sympy.sympify(a)
          if a.is_number and _magnitude(a) > _MAX_FACT_ARG:
            raise _TooBig(f"{f.__name__} of a large argument: {a}")
        return f(*args, **kw)
      return g
    for name in _FACTORIAL_LIKE:
      if name in _NAMESPACE:
        _NAMESPACE[name] = guard(_NAMESPACE[name])
  return _NAMESPACE


def _sympy_equal(a: str, b: str) -> bool:
  import sympy
  if max(len(a), len(b)) > _MAX_EXPR or "__" in a + b:
    return False
  ea, eb = _parse(a), _parse(b)
  diff = sympy.simplify(ea - eb)
  if diff == 0:
    return True
  try:
    return abs(complex(sympy.N(diff))) < 1e-6 * max(1.0, abs(complex(sympy.N(eb))))
  except TypeError:  # symbolic leftovers
    return False


def equivalent(pred: str, gold: str) -> bool:
  p, g = normalize(pred), normalize(gold)
  if p == g:
    return True
  if "," in g or "," in p:  # tuples / lists of answers: element-wise, in order
    ps, gs = p.strip("()[]{}").split(","), g.strip("()[]{}").split(",")
    return len(ps) == len(gs) and all(equivalent(x, y) for x, y in zip(ps, gs))
  try:
    return _sympy_equal(p, g)
  except Exception:  # noqa: BLE001 -- unparsable prediction: not equivalent
    return False


def math_reward(prompt: str, response: str, reference) -> float:
  if not isinstance(reference, (str, int, float)) or str(reference).strip() == "":
    raise RewardDataError(f"math reward: reference must be a non-empty answer, got {reference!r}")
  pred = extract_answer(response)
  return float(pred is not None and equivalent(pred, str(reference)))
