"""Global dedup: exact (normalized hash) and near (MinHash LSH), first occurrence kept."""
from granite_jax.sft.curation.dedup import Deduper

BASE = ("Photosynthesis turns light into chemical energy in plants. Chlorophyll absorbs red and blue "
        "light, water is split and oxygen released, and the Calvin cycle fixes carbon dioxide into "
        "sugars that the plant stores as starch or burns for energy during the night. The rate "
        "depends on light, temperature and carbon dioxide concentration.")


def s(user, answer):
  return dict(messages=[dict(role="user", content=user), dict(role="assistant", content=answer)])


def test_exact_duplicates_ignore_case_and_whitespace():
  d = Deduper()
  assert d.check("a", s("Hi there", "Hello!")) is None
  assert d.check("b", s("hi   THERE", "hello!")) == dict(kind="exact", kept_twin="a", jaccard=1.0)
  # Punctuation differs: not exact, but the word shingles match, so a near duplicate.
  assert d.check("c", s("Hi there", "Hello?"))["kind"] == "near"
  # Role matters: the same words in other roles are a different conversation.
  assert d.check("d", dict(messages=[dict(role="assistant", content="Hi there"),
                                     dict(role="user", content="Hello!")])) is None


def test_near_duplicates_keep_first_and_respect_threshold():
  d = Deduper(threshold=0.8)
  assert d.check("first", s("Explain photosynthesis.", BASE)) is None
  dup = d.check("second", s("Explain photosynthesis.", BASE.replace("concentration.", "levels.")))
  assert dup["kind"] == "near" and dup["kept_twin"] == "first" and dup["jaccard"] >= 0.8
  # A rewrite sharing only some phrases is not a duplicate.
  other = " ".join(BASE.split()[:20]) + " and then something completely different happens to the " \
          "leaves of trees in autumn when the days get shorter and the weather colder"
  assert d.check("third", s("Explain photosynthesis.", other)) is None
  strict = Deduper(threshold=0.99)
  strict.check("first", s("Explain photosynthesis.", BASE))
  assert strict.check("second", s("Explain photosynthesis.", BASE.replace("concentration.", "levels."))) is None


def test_duplicate_of_a_duplicate_points_at_the_kept_first():
  d = Deduper(threshold=0.8)
  d.check(0, s("q", BASE))
  assert d.check(1, s("q", BASE + " Indeed."))["kept_twin"] == 0
  assert d.check(2, s("q", BASE + " Indeed!"))["kept_twin"] == 0  # 1 was dropped, never indexed
