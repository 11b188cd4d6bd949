"""Canonical data domains of the Granite 4.1 training recipe.

Mixture configs (``data.mixture``) and sources (``data.sources``) are keyed by
these names; the demo corpus provides one synthetic stand-in per domain.
"""

DOMAINS: tuple[str, ...] = (
    "cc",             # general web crawl
    "cc_hq",          # quality-filtered web crawl
    "code",           # source code
    "math",           # math text and problems
    "technical",      # technical / reference documentation
    "multilingual",   # non-English text
    "domain",         # domain-specific (finance, legal, medical, ...)
    "synthetic",      # synthetic textbook-style data
    "long_cot",       # long chain-of-thought reasoning traces
    "lang_instruct",  # natural-language instruction data
    "code_instruct",  # code instruction data
    "books",          # long-form documents
    "code_repos",     # repository-level (concatenated) code
)

LONG_DOMAINS: frozenset[str] = frozenset({"books", "code_repos"})


def check_domain(name: str, field: str = "domain") -> str:
  """Returns `name` if it is a canonical domain, else raises naming `field`."""
  if name not in DOMAINS:
    raise ValueError(f"{field}={name!r} is not a known domain; expected one of {', '.join(DOMAINS)}")
  return name
