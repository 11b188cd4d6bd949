"""Rewards per domain: right answers score 1, wrong ones 0, malformed output never raises."""
import math
import sqlite3

import pytest

from granite_jax.rl.rewards import Reward, RewardDataError, make_rewards, score
from granite_jax.rl.rewards.choice import choice_reward
from granite_jax.rl.rewards.icl import icl_reward
from granite_jax.rl.rewards.instruction import instruction_reward
from granite_jax.rl.rewards.math_answer import extract_answer, math_reward
from granite_jax.rl.rewards.structured import structured_reward
from granite_jax.rl.rewards.temporal import parse_date, temporal_reward
from granite_jax.rl.rewards.text2sql import _connect, run_query, text2sql_reward

GARBAGE = ["", "\\boxed{", "}}}{{{", "```json\n{bad", "\x00\xff" * 50, "SELECT * FROM nowhere",
           "(" * 500 + "1"]


@pytest.mark.parametrize("response,gold,want", [
    ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{\\dfrac{2}{4}}", "\\frac{1}{2}", 1.0),
    ("We get $x = 3$. The answer is 3.", "3", 1.0),
    ("total: 1,000 apples, so 1000", "1000", 1.0),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
    ("\\boxed{(2, 1)}", "(1,2)", 0.0),
    ("I don't know", "7", 0.0),
])
def test_math(response, gold, want):
  assert math_reward("q", response, gold) == want


def test_math_extraction_prefers_boxed_over_last_number():
  assert extract_answer("first 3, then \\boxed{\\frac{5}{2}} and 9") == "\\frac{5}{2}"
  assert extract_answer("the numbers 4 and 17") == "17"


@pytest.mark.parametrize("response,ref,want", [
    ("Reasoning... The answer is (C).", "C", 1.0),
    ("\\boxed{B}", "C", 0.0),
    ("Answer: b", "B", 1.0),
    ("It must be the mitochondria.", {"answer": "A", "choices": ["Mitochondria", "Nucleus"]}, 1.0),
    ("Therefore: answer is False", "false", 1.0),
    ("answer: true", "False", 0.0),
])
def test_choice(response, ref, want):
  assert choice_reward("q", response, ref) == want


def test_instruction_following_fraction_of_constraints():
  cons = [{"type": "word_count", "min": 5, "max": 12}, {"type": "keywords", "words": ["granite"]},
          {"type": "forbidden_words", "words": ["basalt"]}, {"type": "no_commas"},
          {"type": "bullet_count", "n": 2}, {"type": "ends_with", "text": "done."}]
  good = "Notes on granite:\n* it is hard\n* it is old\nAll done."
  assert instruction_reward("p", good, cons) == 1.0
  bad = "Granite, basalt and more words here to count.\n* one\nnot finished"
  assert instruction_reward("p", bad, cons) == pytest.approx(2 / 6)  # word count and keyword only
  assert instruction_reward("p", bad, {"constraints": cons, "all_or_nothing": True}) == 0.0
  assert instruction_reward("p", '{"a": 1}', [{"type": "json_format"}, {"type": "lowercase"}]) == 1.0
  assert instruction_reward("p", "Title <<Rocks>>\n\nPara two", [{"type": "title"},
                                                               {"type": "paragraph_count", "n": 2}]) == 1.0
  with pytest.raises(RewardDataError, match="unknown constraint"):
    instruction_reward("p", "x", [{"type": "rhymes"}])


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("response,want", [
    ('{"name": "Ada", "age": 36}', 1.0),
    ('Here you go:\n```json\n{"name": "Ada", "age": 36}\n```', 1.0),
    ('{"name": "Ada", "age": "36"}', 0.0),
    ('{"name": "Ada"}', 0.0),
    ('{"name": "Ada", "age": 36', 0.0),
])
def test_structured_output(response, want):
  assert structured_reward("p", response, SCHEMA) == want


def test_structured_output_expected_value_and_bad_schema():
  ref = {"schema": SCHEMA, "expected": {"name": "Ada", "age": 36}}
  assert structured_reward("p", '{"age": 36, "name": "Ada"}', ref) == 1.0
  assert structured_reward("p", '{"age": 37, "name": "Ada"}', ref) == 0.0
  with pytest.raises(RewardDataError, match="schema"):
    structured_reward("p", "{}", {"type": "no-such-type"})


DB_SCRIPT = """
CREATE TABLE emp(id INTEGER PRIMARY KEY, name TEXT, dept TEXT, salary REAL);
INSERT INTO emp VALUES (1,'ann','eng',120.0),(2,'bob','eng',100.0),(3,'cid','ops',90.0);
"""


@pytest.fixture(scope="module")
def db_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("sql") / "emp.sqlite"
  conn = sqlite3.connect(path)
  conn.executescript(DB_SCRIPT)
  conn.close()
  return str(path)


def test_text2sql_compares_result_sets(db_file):
  ref = {"db": db_file, "gold": "SELECT name FROM emp WHERE dept = 'eng'"}
  assert text2sql_reward("q", "```sql\nSELECT name FROM emp WHERE salary > 95;\n```", ref) == 1.0
  assert text2sql_reward("q", "SELECT name FROM emp WHERE dept='eng' ORDER BY id DESC", ref) == 1.0
  assert text2sql_reward("q", "SELECT name FROM emp", ref) == 0.0
  assert text2sql_reward("q", "SELECT nme FROM emp", ref) == 0.0  # error -> 0
  ordered = {"schema": DB_SCRIPT, "gold": "SELECT name FROM emp ORDER BY salary"}
  assert text2sql_reward("q", "SELECT name FROM emp ORDER BY salary", ordered) == 1.0
  assert text2sql_reward("q", "SELECT name FROM emp ORDER BY salary DESC", ordered) == 0.0


def test_text2sql_is_read_only_and_times_out(db_file):
  ref = {"db": db_file, "gold": "SELECT count(*) FROM emp"}
  for write in ("DELETE FROM emp", "SELECT 1; DROP TABLE emp", "WITH x AS (SELECT 1) DELETE FROM emp"):
    text2sql_reward("q", write, ref)
  assert text2sql_reward("q", "SELECT count(*) FROM emp", ref) == 1.0  # table intact, still 3 rows
  conn = _connect({"schema": DB_SCRIPT})
  for write in ("DELETE FROM emp", "ATTACH DATABASE ':memory:' AS o", "PRAGMA query_only = OFF"):
    with pytest.raises(sqlite3.DatabaseError):
      run_query(conn, write)
  assert run_query(conn, "SELECT count(*) FROM emp") == [(3,)]
  slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
          "SELECT count(*) FROM c")
  assert text2sql_reward("q", slow, {**ref, "timeout_s": 0.2}) == 0.0
  with pytest.raises(RewardDataError, match="gold"):
    text2sql_reward("q", "SELECT 1", {"db": db_file, "gold": "SELECT nope FROM emp"})


@pytest.mark.parametrize("response,ref,want", [
    ("The meeting is on March 4th, 2021.\nAnswer: March 4, 2021", "2021-03-04", 1.0),
    ("Answer: 4 March 2021", "2021-03-04", 1.0),
    ("Answer: 03/05/2021", "2021-03-04", 0.0),
    ("Answer: WWI, WWII, Moon landing", ["WWI", "WWII", "Moon landing"], 1.0),
    ("Answer: WWII -> WWI -> Moon landing", ["WWI", "WWII", "Moon landing"], 0.0),
    ("Answer: Tuesday", "tuesday", 1.0),
])
def test_temporal(response, ref, want):
  assert temporal_reward("q", response, ref) == want


def test_parse_date_formats():
  assert {parse_date(s) for s in ("2020-02-29", "Feb 29, 2020", "29 February 2020", "02/29/2020")} == {"2020-02-29"}
  assert parse_date("next week") is None


def test_icl_exact_match():
  assert icl_reward("p", "  NEG ", "NEG") == 1.0
  assert icl_reward("p", "Label: ...\nAnswer: POS", "POS") == 1.0
  assert icl_reward("p", "neg", "NEG") == 0.0


def test_chat_reward_model_hook():
  rewards = make_rewards(chat_model=lambda p, r: len(r) / 10, chat_min_reward=-1.0)
  assert score(rewards, "chat", "hi", "hello", None) == 0.5
  with_ref = make_rewards(chat_model=lambda p, r, ref: float(r == ref))
  assert score(with_ref, "chat", "hi", "x", "x") == 1.0
  failing = make_rewards(chat_model=lambda p, r: math.nan, chat_min_reward=-1.0)["chat"]
  assert failing("p", "r", None) == -1.0 and failing.failures == 1


REFS = {"math": "3", "science": "B", "logic": "yes", "instruction_following": [{"type": "keywords", "words": ["granite"]}],
        "structured_output": SCHEMA, "text2sql": {"schema": DB_SCRIPT, "gold": "SELECT 1"},
        "temporal": "2020-01-01", "icl": "POS"}


RIGHT = {"math": "\\boxed{3}", "science": "The answer is (B).", "logic": "answer: yes",
         "instruction_following": "granite", "structured_output": '{"name": "Ada", "age": 36}',
         "text2sql": "SELECT 1", "temporal": "2020-01-01", "icl": "POS"}


@pytest.mark.parametrize("domain", sorted(REFS))
def test_malformed_output_never_raises(domain):
  """Garbage text is still text: the checker itself must score it 0 without raising. Called raw,
  not through Reward (whose catching would turn any crash into the same 0.0); the right answer
  scores 1 (a checker that scores nothing would pass the rest)."""
  fn = make_rewards()[domain].fn
  assert fn("p", RIGHT[domain], REFS[domain]) == 1.0
  for g in GARBAGE:
    assert fn("p", g, REFS[domain]) == 0.0, repr(g)


@pytest.mark.parametrize("domain", sorted(REFS))
def test_wrapper_scores_what_the_checker_cannot_take_as_failures(domain):
  """Not text at all (None, an int): the checker may raise; the wrapper counts exactly those."""
  rewards = make_rewards()
  for g in GARBAGE + [None, 12345]:
    assert score(rewards, domain, "p", g, REFS[domain]) == 0.0
  assert rewards[domain].calls == len(GARBAGE) + 2
  assert rewards[domain].failures == 2  # the two non-strings; every garbage string scored cleanly


def test_reward_counts_failures_and_reraises_data_errors():
  boom = Reward("boom", lambda p, r, ref: 1 / 0, min_reward=-0.5)
  assert boom("p", "r", None) == -0.5 and boom("p", "r", None) == -0.5
  assert boom.failures == 2 and boom.calls == 2
  with pytest.raises(RewardDataError, match="domain"):
    score(make_rewards(), "poetry", "p", "r", None)
  with pytest.raises(RewardDataError, match="math"):
    score(make_rewards(), "math", "p", "r", "")
