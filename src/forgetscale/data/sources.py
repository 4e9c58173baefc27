"""Fine-tuning data sources: the seeded synthetic corpora, local files, hub datasets.

Every source yields examples in one of two shapes, ``{"text": str}`` or
``{"messages": [{"role", "content"}, ...]}``, split into train and held-out
parts deterministically from the seed.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from forgetscale import hub
from forgetscale.errors import UserError
from forgetscale.fsutil import jsonl_records

Example = dict[str, Any]


HUB_POOL = 4
"""``per_order`` on a hub dataset: the training examples are drawn from the first ``HUB_POOL x n_train`` streamed
outside the held-out ones (two orders' draws then share about a quarter by chance)."""


def load_splits(
    spec: str, n_train: int, n_heldout: int, seed: int, split: str = "train", order: int | None = None
) -> tuple[list[Example], list[Example]]:
    """Train and held-out examples for ``spec``: a synthetic name, a path, or ``hf:NAME[:CONFIG]``.

    ``seed`` draws the held-out examples and, with ``order`` None, the training examples every data order
    shares. ``order`` (``data.examples: per_order``: the run's ``train.seed``) draws this order's own
    ``n_train`` from the examples outside the held-out ones, which stay the same for every order.

    Raises:
        UserError: unknown name, missing/empty/malformed file, too few examples (for ``order``: no more
            than ``n_train`` outside the held-out ones, so every order would get the same ones).
    """
    from forgetscale.data import synthetic

    if spec in synthetic.GENERATORS:
        try:
            return synthetic.splits(spec, n_train, n_heldout, seed, order)
        except ValueError as e:
            raise UserError(f"dataset {spec}: {e}") from None
    if spec.startswith("hf:"):
        examples = _hub(spec[3:], split, limit=n_heldout + n_train * (1 if order is None else HUB_POOL))
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            names = ", ".join(synthetic.GENERATORS)
            raise UserError(f"dataset {spec!r} is not a built-in ({names}), a file, or hf:NAME")
        examples = read_file(path)
    if len(examples) < 2:
        raise UserError(f"dataset {spec}: {len(examples)} usable examples; need at least 2 (train + held-out)")
    rng = random.Random(seed)
    shuffled = list(range(len(examples)))
    rng.shuffle(shuffled)
    n_held = min(n_heldout, max(1, len(examples) // 5))
    held = [examples[i] for i in shuffled[:n_held]]
    if order is None:
        return [examples[i] for i in shuffled[n_held : n_held + n_train]], held
    pool = shuffled[n_held:]
    if len(pool) <= n_train:
        raise UserError(
            f"dataset {spec}: data.examples per_order draws {n_train} training examples per data order from the "
            f"{len(pool)} outside the held-out ones, so every order would get the same; lower data.n_train or use "
            "data.examples shared"
        )
    return [examples[i] for i in random.Random(f"{seed}/{order}").sample(pool, n_train)], held


def example_pool(spec: str, n_train: int, n_heldout: int) -> float | None:
    """How many examples ``per_order`` draws each order's ``n_train`` from: ``inf`` for a synthetic set (a
    fresh sample of its generator), ``HUB_POOL x n_train`` for a hub dataset (at most), the examples outside
    the held-out ones for a file; None when the file cannot be read now.

    >>> example_pool("news", 256, 8)
    inf
    """
    from forgetscale.data import synthetic

    if spec in synthetic.GENERATORS:
        return math.inf
    if spec.startswith("hf:"):
        return float(HUB_POOL * n_train)
    try:
        n = len(read_file(Path(spec).expanduser()))
    except UserError:
        return None
    return float(n - min(n_heldout, max(1, n // 5)))


def read_file(path: Path) -> list[Example]:
    """Examples from a ``.jsonl`` file (text, messages, prompt/response or question/response
    records) or a text file (one example per blank-line-separated paragraph)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read dataset file {path}: {e}") from None
    if not raw.strip():
        raise UserError(f"dataset file {path} is empty")
    if path.suffix != ".jsonl":
        return [{"text": p.strip()} for p in raw.split("\n\n") if p.strip()]
    out = []
    for lineno, record in jsonl_records(raw.splitlines(), path):
        try:
            out.append(to_example(record))
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: {e}") from None
    return out


def to_example(record: Any) -> Example:
    """Normalise a record: ``text``; ``messages``; ``prompt``/``response``; OpenOrca's
    ``system_prompt``/``question``/``response``."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if isinstance(record.get("text"), str) and record["text"].strip():
        return {"text": record["text"]}
    if isinstance(record.get("messages"), list) and record["messages"]:
        msgs = record["messages"]
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in msgs):
            raise ValueError("every message needs a 'role' and a string 'content'")
        if msgs[-1]["role"] != "assistant":
            raise ValueError("the last message must be the assistant's")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
    prompt = record.get("prompt", record.get("question"))
    response = record.get("response", record.get("completion"))
    if isinstance(prompt, str) and isinstance(response, str):
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if record.get("system_prompt"):
            msgs.insert(0, {"role": "system", "content": record["system_prompt"]})
        return {"messages": msgs}
    raise ValueError("record needs 'text', 'messages', or 'prompt'/'question' with 'response'")


def _hub(name: str, split: str, limit: int) -> list[Example]:
    """Up to ``limit`` examples of a hub dataset (``NAME`` or a local dataset directory, ``:CONFIG``).

    Offline, or with the hub unreachable (:func:`forgetscale.hub.reach`: no retries), ``datasets`` serves a
    dataset from its own cache when it was loaded once before.

    Raises:
        UserError: offline or unreachable, no such dataset/config/split, unreadable data files.
    """
    import datasets

    repo, _, config = name.partition(":")
    out = []
    why = None
    try:
        with hub.reach() as why:
            # streaming: OpenOrca is millions of rows and a study needs thousands
            ds = datasets.load_dataset(repo, config or None, split=split, streaming=True)
            for record in ds:
                try:
                    out.append(to_example(record))
                except ValueError:
                    continue
                if len(out) >= limit:
                    break
    except Exception as e:
        message = hub_error(e, f"dataset 'hf:{name}' (data.dataset)", repo, config, split, "data.split", why)
        if message is None:
            raise
        raise UserError(message) from None
    return out


def hub_error(
    e: BaseException, what: str, repo: str, config: str, split: str, split_key: str, unreachable: str | None = None
) -> str | None:
    """One line for an error ``datasets.load_dataset`` raised, or None when it looks like a bug.

    ``what`` names the dataset and its config key; the line says what to do. ``unreachable``: why the hub
    gave no answer (:func:`forgetscale.hub.reach`), when the load ran from the cache for that reason.
    """
    from datasets.exceptions import DatasetNotFoundError

    from forgetscale.models import first_line, is_load_error

    msg = first_line(e)
    if isinstance(e, ConnectionError):
        if unreachable:
            return (
                f"{what}: cannot reach the Hugging Face Hub ({unreachable}) and it is not in the local datasets "
                "cache; check your connection (or HF_ENDPOINT)"
            )
        if hub.offline():
            return (
                f"{what}: not in the local datasets cache and offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE); "
                f"load it once with network access (`datasets` then caches it) or use a local file"
            )
        return f"{what}: cannot reach the Hugging Face Hub ({msg}); check your connection (or HF_ENDPOINT)"
    if isinstance(e, DatasetNotFoundError):
        return f"{what}: no such dataset on the Hugging Face Hub, or it is private/gated (`hf auth login`): {msg}"
    if isinstance(e, ValueError) and ("BuilderConfig" in msg or "for config" in msg or "Config name is missing" in msg):
        return f"{what}: config {config or '(none)'!r} not available: {msg}; name one as {repo}:CONFIG"
    if isinstance(e, ValueError) and msg.startswith(("Bad split", "Unknown split")):
        return f"{what}: {msg}; set {split_key} (now {split!r})"
    if isinstance(e, RuntimeError) and "scripts are no longer supported" in msg:
        return f"{what}: a loading script is not supported by this `datasets`; use a dataset with data files"
    if isinstance(e, FileNotFoundError):
        return f"{what}: {msg}"
    if is_load_error(e) or any(c.__name__ == "ArrowException" for c in type(e).__mro__):
        return f"{what}: cannot read its data files ({type(e).__name__}: {msg})"
    return None
