"""Probe items: the shipped sets, user JSONL files, and standard hub sets.

Three kinds of probe, one JSONL file each under ``probes/sets/`` (one JSON
object per line, blank lines allowed):

- ``knowledge``: ``{"id", "question", "answers": [accepted strings, aliases]}``,
  closed-book questions scored by :func:`~forgetscale.probes.scoring.contains_match`;
- ``reasoning``: ``{"id", "question", "choices": [...], "label": "A".."Z"}``,
  multiple-choice items in the style of ARC;
- ``safety``: ``{"id", "prompt", "category"}``, harmful requests in the style
  of AdvBench; a good model refuses them.

The shipped sets were written for forgetscale (not copied from a dataset) and
sized for a 135M-parameter chat model. For the paper's numbers use the
standard sets: :func:`load_arc_challenge` and :func:`load_advbench` (these
need ``datasets`` and, for the hub, a network connection).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from forgetscale import hub
from forgetscale.errors import UserError
from forgetscale.fsutil import jsonl_records
from forgetscale.probes.scoring import LETTERS, index_to_letter, letter_to_index

__all__ = [
    "PROBE_KINDS",
    "KnowledgeItem",
    "ProbeItem",
    "ProbeKind",
    "ReasoningItem",
    "SafetyItem",
    "load_advbench",
    "load_arc_challenge",
    "load_probe_file",
    "load_probe_set",
    "parse_probe_jsonl",
]

ProbeKind = Literal["knowledge", "reasoning", "safety"]
PROBE_KINDS: tuple[str, ...] = get_args(ProbeKind)

ARC_DATASET = ("allenai/ai2_arc", "ARC-Challenge")
ADVBENCH_DATASET = "walledai/AdvBench"


def _require_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class KnowledgeItem:
    """A closed-book question; ``answers`` holds every accepted answer and alias."""

    id: str
    question: str
    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        _require_text(self.id, "id")
        _require_text(self.question, "question")
        if isinstance(self.answers, str) or not self.answers:
            raise ValueError("answers must be a non-empty list of strings")
        for a in self.answers:
            _require_text(a, "every answer")


@dataclass(frozen=True)
class ReasoningItem:
    """A multiple-choice question; ``label`` is the letter of the correct choice."""

    id: str
    question: str
    choices: tuple[str, ...]
    label: str

    def __post_init__(self) -> None:
        _require_text(self.id, "id")
        _require_text(self.question, "question")
        if isinstance(self.choices, str) or not 2 <= len(self.choices) <= len(LETTERS):
            raise ValueError(f"choices must be a list of 2..{len(LETTERS)} strings")
        for c in self.choices:
            _require_text(c, "every choice")
        if len({c.strip().lower() for c in self.choices}) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {list(self.choices)}")
        if not isinstance(self.label, str) or len(self.label) != 1 or self.label not in LETTERS:
            raise ValueError(f"label must be one upper-case letter, got {self.label!r}")
        if letter_to_index(self.label) >= len(self.choices):
            raise ValueError(f"label {self.label!r} is beyond the {len(self.choices)} choices")

    @property
    def answer_index(self) -> int:
        """0-based index of the correct choice."""
        return letter_to_index(self.label)


@dataclass(frozen=True)
class SafetyItem:
    """A harmful request the model should refuse; ``category`` groups similar requests."""

    id: str
    prompt: str
    category: str

    def __post_init__(self) -> None:
        _require_text(self.id, "id")
        _require_text(self.prompt, "prompt")
        _require_text(self.category, "category")


ProbeItem = KnowledgeItem | ReasoningItem | SafetyItem

_FIELDS: dict[str, tuple[type, frozenset[str]]] = {
    "knowledge": (KnowledgeItem, frozenset({"id", "question", "answers"})),
    "reasoning": (ReasoningItem, frozenset({"id", "question", "choices", "label"})),
    "safety": (SafetyItem, frozenset({"id", "prompt", "category"})),
}


def _check_kind(kind: str) -> None:
    if kind not in PROBE_KINDS:
        raise UserError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}")


def _item_from_record(kind: str, record: Mapping[str, Any]) -> ProbeItem:
    cls, fields = _FIELDS[kind]
    missing = sorted(fields - record.keys())
    unknown = sorted(record.keys() - fields)
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; {kind} items have {sorted(fields)}")
    values = dict(record)
    for key in ("answers", "choices"):
        if key in values:
            if not isinstance(values[key], list):
                raise ValueError(f"{key} must be a JSON list of strings")
            values[key] = tuple(values[key])
    return cls(**values)


def parse_probe_jsonl(
    text: str, kind: ProbeKind, source: str = "<string>"
) -> tuple[ProbeItem, ...]:
    """Parse and validate a probe set in JSONL form.

    Args:
        text: the file's contents, one JSON object per line (blank lines skipped).
        kind: "knowledge", "reasoning" or "safety".
        source: the file's name, for error messages.

    Returns:
        The items in file order.

    Raises:
        UserError: naming the source and line of the first bad item (bad JSON,
            missing or unknown key, empty string, label out of range) or of a
            repeated id, or when the set is empty.
    """
    _check_kind(kind)
    items: list[ProbeItem] = []
    seen: dict[str, int] = {}
    for lineno, record in jsonl_records(text.splitlines(), source):
        where = f"{source}:{lineno}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        try:
            item = _item_from_record(kind, record)
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}: bad {kind} item: {e}") from None
        if item.id in seen:
            raise UserError(f"{where}: id {item.id!r} repeats line {seen[item.id]}")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise UserError(f"{source}: no {kind} items found")
    return tuple(items)


def load_probe_set(kind: ProbeKind) -> tuple[ProbeItem, ...]:
    """Load one of the probe sets shipped with forgetscale.

    >>> len(load_probe_set("safety")) >= 36
    True
    """
    _check_kind(kind)
    resource = resources.files("forgetscale") / "probes" / "sets" / f"{kind}.jsonl"
    text = resource.read_text(encoding="utf-8")
    return parse_probe_jsonl(text, kind, source=f"forgetscale/probes/sets/{kind}.jsonl")


def load_probe_file(path: str | Path, kind: ProbeKind) -> tuple[ProbeItem, ...]:
    """Load a user's probe set from a JSONL file in the shipped format."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read probe file {path}: {e.strerror or e}") from None
    return parse_probe_jsonl(text, kind, source=str(path))


# --------------------------------------------------------------------------- standard sets


def _load_dataset(repo: str, config: str | None = None, *, split: str, what: str) -> Any:
    """A hub dataset split, loaded as :mod:`forgetscale.data.sources` loads one: with the hub unreachable
    (:func:`forgetscale.hub.reach`) from the local cache alone, at once and without retries; a failure is
    one line naming ``what`` (:func:`forgetscale.data.sources.hub_error`)."""
    try:
        import datasets
    except ImportError:
        raise UserError("loading a hub probe set needs `datasets`: pip install datasets") from None
    from forgetscale.data.sources import hub_error

    why = None
    try:
        with hub.reach() as why:
            return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # the hub raises many kinds; hub_error says which mean "cannot use this set"
        message = hub_error(e, what, repo, config or "", split, "its split", why)
        if message is None:
            raise
        raise UserError(message) from None


def _arc_item(row: Mapping[str, Any]) -> ReasoningItem:
    """One ARC row ({id, question, choices: {text, label}, answerKey}) as a ReasoningItem.

    ARC labels options "A".."E" or, for a few questions, "1".."5"; the answer
    is re-lettered by position so that every item uses A, B, C, ...
    """
    texts = list(row["choices"]["text"])
    labels = [str(x) for x in row["choices"]["label"]]
    key = str(row["answerKey"])
    if key not in labels:
        raise ValueError(f"ARC item {row['id']}: answerKey {key!r} not among labels {labels}")
    return ReasoningItem(
        id=str(row["id"]),
        question=row["question"],
        choices=tuple(texts),
        label=index_to_letter(labels.index(key)),
    )


def load_arc_challenge(split: str = "test", limit: int | None = None) -> tuple[ReasoningItem, ...]:
    """ARC-Challenge from the Hugging Face hub (``allenai/ai2_arc``), as reasoning items.

    The test split has 1,172 questions; the paper reports 54.1% -> 52.0%
    accuracy and 67.2% agreement on it for Llama-2-7b-chat tuned on OpenOrca.

    Args:
        split: "train", "validation" or "test".
        limit: keep the first ``limit`` items (None: all).
    """
    rows = _load_dataset(*ARC_DATASET, split=split, what=f"probe set ARC-Challenge ({ARC_DATASET[0]})")
    items = tuple(_arc_item(row) for row in rows)
    return items[:limit] if limit is not None else items


def _advbench_items(prompts: Iterable[str], limit: int | None) -> tuple[SafetyItem, ...]:
    items = tuple(
        SafetyItem(id=f"advbench-{i:03d}", prompt=p.strip(), category="advbench")
        for i, p in enumerate(prompts)
        if isinstance(p, str) and p.strip()
    )
    return items[:limit] if limit is not None else items


def load_advbench(
    source: str | Path = ADVBENCH_DATASET, limit: int | None = 50
) -> tuple[SafetyItem, ...]:
    """AdvBench harmful behaviours as safety items.

    Args:
        source: a local CSV file with a ``goal`` (the original
            ``harmful_behaviors.csv``) or ``prompt`` column, or a hub dataset id
            (default ``walledai/AdvBench``, column ``prompt``).
        limit: keep the first ``limit`` prompts; the paper used 50. None: all 520.
    """
    path = Path(source)
    if path.suffix.lower() == ".csv" or path.exists():
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                column = next(
                    (c for c in ("goal", "prompt") if c in (reader.fieldnames or [])), None
                )
                if column is None:
                    raise UserError(
                        f"{path}: AdvBench CSV needs a 'goal' or 'prompt' column, "
                        f"found {reader.fieldnames}"
                    )
                prompts = [row[column] for row in reader]
        except OSError as e:
            raise UserError(f"cannot read AdvBench file {path}: {e.strerror or e}") from None
    else:
        rows = _load_dataset(str(source), split="train", what=f"AdvBench probe set {str(source)!r}")
        column = next((c for c in ("prompt", "goal") if c in rows.column_names), None)
        if column is None:
            raise UserError(f"{source}: no 'prompt' or 'goal' column in {rows.column_names}")
        prompts = rows[column]
    items = _advbench_items(prompts, limit)
    if not items:
        raise UserError(f"{source}: no AdvBench prompts found")
    return items
