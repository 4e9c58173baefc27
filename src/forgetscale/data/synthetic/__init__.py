"""Seeded synthetic fine-tuning corpora for the embedded default study.

Two contrasting corpora mirror the paper's two datasets (Kalajdzievski 2024):

- ``news``: short articles about fictional events dated 2026, i.e. knowledge the
  base model cannot have. Every article retells one event of a fixed, seeded
  world (cities, mayors, companies, clubs, institutes...), so facts recur across
  articles and stay consistent (a city has one mayor, a club one coach), and a
  model can actually learn them. Wording, sentence choice and order vary.
- ``instruct``: chat tasks with exact, checkable answers, always answered as one
  line of working then ``Answer: ...``; a terse house style unlike the base
  model's chatty default, so fine-tuning visibly moves it.

Layout: :mod:`.common` (shared names and formatting), :mod:`.world` (the news world),
:mod:`.news`, :mod:`.instruct`; this module draws distinct examples and splits.

Pure Python (``random``, ``datetime``, ``json``), no I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from forgetscale.data.synthetic import instruct, news
from forgetscale.data.synthetic.common import Example

__all__ = ["GENERATORS", "Example", "generate", "splits"]

GENERATORS: dict[str, Callable[[int, random.Random], list[Example]]] = {
    "news": news.examples,
    "instruct": instruct.examples,
}


def _key(ex: Example) -> str:
    return ex["text"] if "text" in ex else json.dumps(ex["messages"])


def _distinct(name: str, n: int, rng: random.Random, exclude: set[str]) -> list[Example]:
    """``n`` examples with pairwise-distinct content, none of whose keys is in ``exclude``."""
    if name not in GENERATORS:
        raise ValueError(f"unknown synthetic dataset {name!r}; valid names: {', '.join(GENERATORS)}")
    if n < 0:
        raise ValueError(f"number of examples must be >= 0, got {n}")
    seen, out, tries = set(exclude), [], 0
    while len(out) < n:
        tries += 1
        if tries > 50:
            raise ValueError(f"synthetic dataset {name!r} cannot supply {n} distinct examples")
        for ex in GENERATORS[name](n - len(out), rng):
            if (k := _key(ex)) not in seen:
                seen.add(k)
                out.append(ex)
    return out


def generate(name: str, n: int, seed: int) -> list[Example]:
    """``n`` distinct examples of the synthetic dataset ``name``, fully determined by ``seed``.

    Args:
        name: ``"news"`` (``{"text"}`` articles) or ``"instruct"`` (``{"messages", "family"}``).
        n: number of examples.
        seed: the same seed gives the same list.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones) or negative ``n``.
    """
    return _distinct(name, n, random.Random(seed), set())


def splits(
    name: str, n_train: int, n_heldout: int, seed: int, order: int | None = None
) -> tuple[list[Example], list[Example]]:
    """Train and held-out examples of ``name`` with no example in both.

    The held-out set is drawn from its own stream, so it does not change with ``n_train`` or ``order``;
    train examples identical to a held-out one are skipped. ``order`` (a data order's ``train.seed``, for
    ``data.examples: per_order``) gives the training examples a stream of their own: a fresh sample of the
    generator, which shares with another order's only the rare example the generator repeats.

    Returns:
        ``(train, heldout)``, fully determined by ``seed`` (and ``order``).

    Example:
        >>> a, held_a = splits("news", 4, 2, 0, order=0)
        >>> b, held_b = splits("news", 4, 2, 0, order=1)
        >>> held_a == held_b, a == b
        (True, False)
    """
    heldout = _distinct(name, n_heldout, random.Random(f"{name}/{seed}/heldout"), set())
    stream = f"{name}/{seed}/train" + ("" if order is None else f"/{order}")
    train = _distinct(name, n_train, random.Random(stream), {_key(ex) for ex in heldout})
    return train, heldout
