"""Unit tests for the shipped probe sets and their loaders (no network)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from forgetscale.errors import UserError
from forgetscale.probes.scoring import contains_match, normalize_answer, score_reasoning
from forgetscale.probes.sets import (
    PROBE_KINDS,
    KnowledgeItem,
    ReasoningItem,
    SafetyItem,
    _arc_item,
    load_advbench,
    load_probe_file,
    load_probe_set,
    parse_probe_jsonl,
)

MIN_SIZES = {"knowledge": 60, "reasoning": 60, "safety": 36}


@pytest.fixture(scope="module")
def sets():
    return {kind: load_probe_set(kind) for kind in PROBE_KINDS}


def test_kinds():
    assert set(PROBE_KINDS) == set(MIN_SIZES)


@pytest.mark.parametrize("kind", sorted(MIN_SIZES))
def test_shipped_set_sizes_and_unique_ids(sets, kind):
    items = sets[kind]
    assert len(items) >= MIN_SIZES[kind]
    ids = [item.id for item in items]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{kind}-") for i in ids)


def _strings(item):
    for value in vars(item).values():
        if isinstance(value, tuple):
            yield from value
        else:
            yield value


@pytest.mark.parametrize("kind", sorted(MIN_SIZES))
def test_no_empty_or_padded_strings(sets, kind):
    for item in sets[kind]:
        for s in _strings(item):
            assert isinstance(s, str) and s.strip(), item.id
            assert s == s.strip(), item.id


def test_knowledge_items(sets):
    items = sets["knowledge"]
    assert all(isinstance(i, KnowledgeItem) for i in items)
    questions = [normalize_answer(i.question) for i in items]
    assert len(set(questions)) == len(questions)
    for item in items:
        assert item.answers, item.id
        # Every alias survives normalisation, so each can actually match.
        assert all(normalize_answer(a) for a in item.answers), item.id
        # A model that just repeats the question must not score.
        assert not contains_match(item.question, item.answers), item.id
        # The first answer is the canonical one and matches itself.
        assert contains_match(item.answers[0], item.answers), item.id


def test_reasoning_items(sets):
    items = sets["reasoning"]
    assert all(isinstance(i, ReasoningItem) for i in items)
    for item in items:
        assert len(item.choices) == 4, item.id
        assert item.label in "ABCD" and len(item.label) == 1, item.id
        assert 0 <= item.answer_index < len(item.choices), item.id
        normalized = [normalize_answer(c) for c in item.choices]
        assert len(set(normalized)) == 4, item.id  # options are distinguishable
        # The scorer must accept a generation that is just the right letter.
        assert score_reasoning(item.id, item.label, item.choices, item.label).correct


def test_reasoning_labels_are_balanced(sets):
    # A model that always says "A" must not look clever.
    counts = Counter(item.label for item in sets["reasoning"])
    assert set(counts) == set("ABCD")
    assert max(counts.values()) <= 0.3 * len(sets["reasoning"])


def test_safety_items(sets):
    items = sets["safety"]
    assert all(isinstance(i, SafetyItem) for i in items)
    prompts = [normalize_answer(i.prompt) for i in items]
    assert len(set(prompts)) == len(prompts)
    categories = Counter(i.category for i in items)
    assert len(categories) >= 5
    assert all(c == c.lower() and " " not in c for c in categories)


def test_shipped_files_are_one_object_per_line():
    from importlib import resources

    for kind in PROBE_KINDS:
        text = (resources.files("forgetscale") / "probes" / "sets" / f"{kind}.jsonl").read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == len(load_probe_set(kind))
        assert all(isinstance(json.loads(line), dict) for line in lines)


# --------------------------------------------------------------------------- validation


def _line(**record):
    return json.dumps(record)


def test_parse_valid_reasoning():
    text = "\n" + _line(id="r1", question="q?", choices=["a", "b", "c"], label="C") + "\n\n"
    (item,) = parse_probe_jsonl(text, "reasoning")
    assert item == ReasoningItem("r1", "q?", ("a", "b", "c"), "C")
    assert item.answer_index == 2


@pytest.mark.parametrize(
    ("kind", "line", "message"),
    [
        ("knowledge", "{not json", "not valid JSON"),
        ("knowledge", "[1, 2]", "expected a JSON object"),
        ("knowledge", _line(id="k1", question="q?"), "missing key"),
        ("knowledge", _line(id="k1", question="q?", answers=[]), "non-empty list"),
        ("knowledge", _line(id="k1", question="q?", answers="Paris"), "list of strings"),
        ("knowledge", _line(id="k1", question="q?", answers=["Paris", ""]), "non-empty string"),
        ("knowledge", _line(id="k1", question=" ", answers=["x"]), "question"),
        ("knowledge", _line(id="k1", question="q?", answers=["x"], extra=1), "unknown key"),
        ("reasoning", _line(id="r1", question="q?", choices=["a", "b"], label="C"), "beyond"),
        ("reasoning", _line(id="r1", question="q?", choices=["a", "b"], label="b"), "upper-case"),
        ("reasoning", _line(id="r1", question="q?", choices=["a", "b"], label="AB"), "label"),
        ("reasoning", _line(id="r1", question="q?", choices=["a"], label="A"), "2..26"),
        ("reasoning", _line(id="r1", question="q?", choices=["a", "A"], label="A"), "distinct"),
        ("reasoning", _line(id="r1", question="q?", choices=["a", 2], label="A"), "choice"),
        ("safety", _line(id="s1", prompt="do harm", category=""), "category"),
        ("safety", _line(id=7, prompt="do harm", category="x"), "id"),
    ],
)
def test_parse_rejects_bad_items(kind, line, message):
    text = "\n" + line + "\n"  # the bad item is on line 2
    with pytest.raises(UserError, match=message) as err:
        parse_probe_jsonl(text, kind, source="mine.jsonl")
    assert str(err.value).startswith("mine.jsonl:2:")


def test_parse_rejects_duplicate_ids_and_empty_sets():
    line = _line(id="s1", prompt="p", category="c")
    with pytest.raises(UserError, match=r"mine.jsonl:2: id 's1' repeats line 1"):
        parse_probe_jsonl(line + "\n" + line, "safety", source="mine.jsonl")
    with pytest.raises(UserError, match="no safety items"):
        parse_probe_jsonl("\n \n", "safety")
    with pytest.raises(UserError, match="unknown probe kind"):
        parse_probe_jsonl(line, "trivia")  # type: ignore[arg-type]


def test_load_probe_file(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text(_line(id="k1", question="Capital of Peru?", answers=["Lima"]) + "\n")
    assert load_probe_file(path, "knowledge") == (
        KnowledgeItem("k1", "Capital of Peru?", ("Lima",)),
    )
    with pytest.raises(UserError, match="cannot read"):
        load_probe_file(tmp_path / "missing.jsonl", "knowledge")


# --------------------------------------------------------------------------- standard sets, offline


def test_arc_row_conversion():
    row = {
        "id": "Mercury_7",
        "question": "Which is a gas?",
        "choices": {"text": ["rock", "steam", "ice"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    }
    assert _arc_item(row) == ReasoningItem(
        "Mercury_7", "Which is a gas?", ("rock", "steam", "ice"), "B"
    )
    row = {
        **row,
        "choices": {"text": row["choices"]["text"], "label": ["A", "B", "C"]},
        "answerKey": "C",
    }
    assert _arc_item(row).label == "C"
    with pytest.raises(ValueError, match="answerKey"):
        _arc_item({**row, "answerKey": "E"})


@pytest.mark.parametrize("column", ["goal", "prompt"])
def test_load_advbench_local_csv(tmp_path, column):
    path = tmp_path / "harmful_behaviors.csv"
    rows = [f"Request number {i}" for i in range(60)]
    path.write_text(f"{column},target\n" + "".join(f'"{r}","Sure, here is"\n' for r in rows))
    items = load_advbench(path)
    assert len(items) == 50  # the paper's 50 prompts by default
    assert items[0] == SafetyItem("advbench-000", "Request number 0", "advbench")
    assert len(load_advbench(path, limit=None)) == 60


def test_load_advbench_csv_without_prompt_column(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("text,target\nx,y\n")
    with pytest.raises(UserError, match="'goal' or 'prompt'"):
        load_advbench(path)


def test_a_hub_probe_set_with_the_hub_unreachable_fails_at_once_from_the_cache(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import constants

    from forgetscale import hub
    from forgetscale.probes.sets import load_arc_challenge

    seen = []

    def load_dataset(*args, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)  # the load ran against the local cache alone
        raise ConnectionError("not cached")

    before = constants.HF_HUB_OFFLINE
    monkeypatch.setattr(hub, "unreachable", lambda: "ConnectError: refused")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(UserError, match=r"ARC-Challenge .*cannot reach the Hugging Face Hub \(ConnectError: refused\)"):
        load_arc_challenge()
    assert seen == [True] and constants.HF_HUB_OFFLINE is before  # offline mode only for the load
