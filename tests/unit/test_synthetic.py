"""The seeded synthetic corpora and the shipped prompt set."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import re
from importlib import resources

import pytest

from forgetscale.data import synthetic
from forgetscale.data.synthetic import instruct, world

NAMES = ("news", "instruct")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _keys(examples: list[dict]) -> set[str]:
    return {json.dumps(ex, sort_keys=True) for ex in examples}


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize("name", NAMES)
def test_generate_is_deterministic_distinct_and_seeded(name):
    a = synthetic.generate(name, 40, seed=1)
    assert len(a) == 40 and len(_keys(a)) == 40
    assert a == synthetic.generate(name, 40, seed=1)
    assert a != synthetic.generate(name, 40, seed=2)


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_and_deterministic(name):
    train, held = synthetic.splits(name, 300, 50, seed=3)
    assert (len(train), len(held)) == (300, 50)
    assert not _keys(train) & _keys(held)
    assert len(_keys(train)) == 300
    assert (train, held) == synthetic.splits(name, 300, 50, seed=3)
    other_train, other_held = synthetic.splits(name, 300, 50, seed=4)
    assert other_train != train and other_held != held


@pytest.mark.parametrize("name", NAMES)
def test_heldout_does_not_depend_on_train_size(name):
    assert synthetic.splits(name, 5, 20, seed=0)[1] == synthetic.splits(name, 80, 20, seed=0)[1]


def test_splits_skip_collisions_and_refuse_an_exhausted_source(monkeypatch):
    # a source with only 5 possible examples: collisions are certain
    monkeypatch.setitem(synthetic.GENERATORS, "tiny",
                        lambda n, rng: [{"text": str(rng.randrange(5))} for _ in range(n)])
    train, held = synthetic.splits("tiny", 3, 2, seed=0)
    assert sorted(ex["text"] for ex in train + held) == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="distinct"):
        synthetic.splits("tiny", 4, 2, seed=0)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown.*'wiki'.*news.*instruct|unknown.*instruct.*news"):
        synthetic.generate("wiki", 3, seed=0)
    with pytest.raises(ValueError, match="news"):
        synthetic.splits("wiki", 3, 3, seed=0)
    with pytest.raises(ValueError):
        synthetic.generate("news", -1, seed=0)


# --------------------------------------------------------------------------- news


def test_news_articles_are_2026_text_of_the_right_length():
    for ex in synthetic.generate("news", 300, seed=5):
        assert set(ex) == {"text"}
        text = ex["text"]
        assert 60 <= len(text.split()) <= 150, text
        assert "2026" in text and "{" not in text and "}" not in text, text
        headline, body = text.split("\n\n", 1)
        assert headline and body and not headline.endswith(".")


def test_news_entities_recur_across_articles():
    texts = [ex["text"] for ex in synthetic.generate("news", 100, seed=6)]
    cast = world.build()

    def mentions(names: list[str]) -> list[int]:
        return [sum(name in t for t in texts) for name in names]

    assert sum(k >= 3 for k in mentions([c["city"] for c in cast["cities"]])) >= 8
    assert sum(k >= 2 for k in mentions([c["mayor"] for c in cast["cities"]])) >= 4
    assert sum(k >= 2 for k in mentions([c["club"] for c in cast["clubs"]])) >= 4
    assert sum(k >= 1 for k in mentions([c["company"] for c in cast["companies"]])) >= 5
    kinds = collections.Counter(ev["kind"] for ev in cast["events"])
    assert len(kinds) >= 6 and min(kinds.values()) >= 5


def test_news_facts_are_consistent_across_articles():
    texts = [ex["text"] for ex in synthetic.generate("news", 400, seed=7)]
    name = r"([A-Z][a-z]+ [A-Z][a-z]+)"
    mayors: dict[str, set[str]] = collections.defaultdict(set)
    coaches: dict[str, set[str]] = collections.defaultdict(set)
    for t in texts:
        for person, city in re.findall(name + r", mayor of ([A-Z][a-z]+)", t):
            mayors[city].add(person)
        for person, city in re.findall(name + r" elected mayor of ([A-Z][a-z]+)", t):
            mayors[city].add(person)
        for city, person in re.findall(r"([A-Z][a-z]+) mayor " + name, t):
            mayors[city].add(person)
        for club, person in re.findall(name + r" coach " + name, t):
            coaches[club].add(person)
    assert len(mayors) >= 5 and len(coaches) >= 5
    assert all(len(v) == 1 for v in mayors.values()), mayors
    assert all(len(v) == 1 for v in coaches.values()), coaches


# --------------------------------------------------------------------------- instruct
# Each checker recomputes the answer from the question text alone.


def _arithmetic(q: str) -> str:
    a, b = map(int, re.findall(r"\d+", q))
    if q.startswith("Subtract"):
        a, b = b, a
    if any(w in q for w in ("×", "times", "Multiply", "product")):
        return str(a * b)
    if any(w in q for w in (" - ", "minus", "Subtract", "difference")):
        return str(a - b)
    assert any(w in q for w in ("+", "plus", "Add", "sum")), q
    return str(a + b)


def _percent(q: str) -> float:
    p, x = map(int, re.findall(r"\d+", q))
    return p * x / 100


_SIZES = {"kilometres": 1000, "metres": 1, "centimetres": 0.01, "feet": 0.3048, "inches": 0.0254,
          "kilograms": 1000, "grams": 1, "litres": 1000, "millilitres": 1, "weeks": 604800,
          "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_UNIT_RE = r"\b(degrees Celsius|degrees Fahrenheit|" + "|".join(_SIZES) + r")\b"


def _units(q: str) -> float:
    value, src = re.search(r"(-?\d+(?:\.\d+)?) " + _UNIT_RE, q).groups()
    (dst,) = set(re.findall(_UNIT_RE, q)) - {src}
    v = float(value)
    if src == "degrees Celsius":
        return v * 9 / 5 + 32
    if src == "degrees Fahrenheit":
        return (v - 32) * 5 / 9
    return v * _SIZES[src] / _SIZES[dst]


def _sorting(q: str) -> str:
    items = q.rsplit(": ", 1)[1].rstrip(".").split(", ")
    if not items[0].isdigit():
        return ", ".join(sorted(items))
    desc = any(w in q for w in ("largest to smallest", "descending", "highest to lowest"))
    return ", ".join(sorted(items, key=int, reverse=desc))


def _counting(q: str) -> str:
    if "vowels" in q:
        (word,) = re.findall(r"'(\w+)'", q)
        return str(sum(ch in "aeiou" for ch in word))
    if "the letter '" in q:
        letter, word = sorted(re.findall(r"'(\w+)'", q), key=len)
        return str(word.count(letter))
    return str(len(re.search(r'"([^"]+)"', q)[1].split()))


def _strings(q: str) -> str:
    t = re.search(r"'([^']+)'", q)[1]
    if "order of the words" in q or "opposite order" in q:
        return " ".join(reversed(t.split()))
    if "Reverse the string" in q or "backwards" in q or "reverse order" in q:
        return t[::-1]
    if "each word" in q or "title case" in q:
        return " ".join(w[:1].upper() + w[1:] for w in t.split())
    if "acronym" in q:
        return "".join(w[0] for w in t.split()).upper()
    assert "uppercase" in q or "capital letters" in q, q
    return t.upper()


_DATE_RE = r"\d{4}-\d{2}-\d{2}|\d{1,2} (?:" + "|".join(MONTHS) + r") \d{4}"


def _dates(q: str) -> str:
    found = re.findall(_DATE_RE, q)
    iso = "-" in found[0]

    def parse(s: str) -> dt.date:
        if iso:
            return dt.date.fromisoformat(s)
        d, m, y = s.split()
        return dt.date(int(y), MONTHS.index(m) + 1, int(d))

    def show(d: dt.date) -> str:
        return d.isoformat() if iso else f"{d.day} {MONTHS[d.month - 1]} {d.year}"

    dates = [parse(s) for s in found]
    if "week" in q:
        return WEEKDAYS[dates[0].weekday()]
    if "How many days" in q or "Count the days" in q:
        return str((dates[1] - dates[0]).days)
    k = dt.timedelta(days=int(re.search(r"(\d+) days", q)[1]))
    return show(dates[0] - k if ("before" in q or "Subtract" in q) else dates[0] + k)


def _records(q: str) -> str:
    blob = q[q.index("{") : q.rindex("}") + 1]
    record, rest = json.loads(blob), q.replace(blob, "")
    if "fields" in rest:
        return str(len(record))
    value = record[re.search(r'"(\w+)"', rest)[1]]
    return value if isinstance(value, str) else json.dumps(value)


def _ordering(q: str) -> str:
    more = {"older", "taller", "faster", "heavier"}
    above: set[tuple[str, str]] = set()
    for a, rel, b in re.findall(r"(\w+) is (\w+) than (\w+)", q):
        above.add((a, b) if rel in more else (b, a))
    people = {p for pair in above for p in pair}
    want_top = re.search(r"the (\w+)\?$", q)[1] in {"oldest", "tallest", "fastest", "heaviest"}
    side = 1 if want_top else 0  # the top is never below anyone, the bottom never above
    (answer,) = people - {pair[side] for pair in above}
    return answer


def _numbers(q: str) -> str:
    if "prime" in q:
        n = int(re.search(r"\d+", q)[0])
        return "Yes" if all(n % d for d in range(2, math.isqrt(n) + 1)) else "No"
    x, y = re.findall(r"\d+\.\d+", q)
    pick = max if ("larger" in q or "greater" in q) else min
    return pick(x, y, key=float)


CHECKERS = {"arithmetic": _arithmetic, "percent": _percent, "units": _units, "sorting": _sorting,
            "counting": _counting, "strings": _strings, "dates": _dates, "records": _records,
            "ordering": _ordering, "numbers": _numbers}


def test_instruct_shape_and_family_balance():
    examples = synthetic.generate("instruct", 100, seed=8)
    assert set(instruct.FAMILIES) == set(CHECKERS) and len(CHECKERS) >= 6
    assert collections.Counter(ex["family"] for ex in examples[:10]) == dict.fromkeys(CHECKERS, 1)
    for ex in examples:
        assert set(ex) == {"messages", "family"}
        assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]
        working, answer = ex["messages"][1]["content"].split("\n")
        assert working and answer.startswith("Answer: ") and answer != "Answer: "


def test_instruct_answers_are_correct():
    examples = synthetic.generate("instruct", 2000, seed=9)
    phrasings = collections.defaultdict(set)
    for ex in examples:
        question = ex["messages"][0]["content"]
        answer = ex["messages"][1]["content"].split("\nAnswer: ")[1]
        expected = CHECKERS[ex["family"]](question)
        if isinstance(expected, float):
            assert math.isclose(float(answer.split()[0]), expected, abs_tol=1e-9), ex
        else:
            assert answer == expected, ex
        phrasings[ex["family"]].add(re.sub(r"[\d'\"{].*", "", question)[:20])
    # every family asks in several ways
    assert all(len(v) >= 2 for v in phrasings.values()), phrasings


def test_checkers_catch_wrong_answers():
    assert _arithmetic("Subtract 3 from 10.") == "7"
    assert _units("How many metres are in 2.5 kilometres?") == 2500
    assert _dates("What day of the week is 1 January 2026?") == "Thursday"
    assert _ordering("Ana is taller than Bo. Cy is shorter than Bo. Who is the shortest?") == "Cy"
    assert _numbers("Which is larger, 3.9 or 3.11?") == "3.9"


# --------------------------------------------------------------------------- prompts


def _prompts() -> list[str]:
    text = resources.files("forgetscale").joinpath("assets/prompts.txt").read_text("utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text[:-1].split("\n")


def test_prompts_are_many_unique_and_clean():
    lines = _prompts()
    assert len(lines) >= 120
    assert all(line and line == line.strip() and len(line) <= 300 for line in lines)
    assert len({line.lower() for line in lines}) == len(lines)


_KINDS = {
    "code": r"\b(python|sql|javascript|function|git|api|loop|recursion)\b",
    "maths": r"\d",
    "write": r"^(write|invent|describe)\b",
    "food": r"\b(cook|recipe|rice|pasta|egg|dinner|lunch|sauce|baking|herbs)\b",
    "summary": r"\bsummar(y|i[sz]e)\b",
    "definition": r"^(define|what does)\b",
    "question": r"\?$",
}


@pytest.mark.parametrize("prefix", [16, 32])
def test_prompt_prefixes_are_diverse(prefix):
    lines = _prompts()
    for start in range(0, len(lines) - prefix + 1, prefix):
        block = lines[start : start + prefix]
        for kind, pattern in _KINDS.items():
            assert any(re.search(pattern, line, re.I) for line in block), (start, kind)
        first_words = collections.Counter(line.split()[0].lower() for line in block)
        assert len(first_words) >= prefix // 4 and first_words.most_common(1)[0][1] <= prefix // 2
