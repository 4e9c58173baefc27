"""Forgetting corpora: the base model's own responses (``self``), WikiText, or a text file.

``self`` answers a shipped, diverse prompt set by sampling from the base model
with a fixed seed (plain ancestral sampling, so the corpus is drawn from the very
distribution forgetting is measured against); the answers are cached on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from forgetscale import hub
from forgetscale.data.encode import Sequence, encode_example, text_blocks
from forgetscale.errors import UserError
from forgetscale.fsutil import atomic_write

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from forgetscale.config import ForgettingConfig


def shipped_prompts() -> list[str]:
    text = resources.files("forgetscale").joinpath("assets/prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_corpus(cfg: ForgettingConfig) -> None:
    """Validation before any model is loaded or anything written (``wikitext`` is fetched here, once).

    Raises:
        UserError: a missing/empty file; WikiText offline and not cached, or unreachable.
    """
    if cfg.corpus == "wikitext":
        _wikitext()
        return
    if cfg.corpus == "self":
        return
    if cfg.corpus.startswith("hf:"):
        if not cfg.corpus[3:].split(":")[0]:
            raise UserError(f"forgetting.corpus: {cfg.corpus!r} names no dataset (hf:NAME[:CONFIG[:SPLIT]])")
        return
    path = Path(cfg.corpus).expanduser()
    if not path.is_file():
        raise UserError(
            f"forgetting.corpus: {cfg.corpus!r} is not 'self', 'wikitext', hf:NAME[:CONFIG[:SPLIT]] "
            "or an existing text file"
        )
    if path.stat().st_size == 0:
        raise UserError(f"forgetting.corpus: {path} is empty")
    _read_text(path)  # not UTF-8 fails here, before a model loads


def build_corpus(
    cfg: ForgettingConfig,
    tok: PreTrainedTokenizerBase,
    model: PreTrainedModel | None,
    model_fingerprint: str,
    cache: Path,
) -> list[Sequence]:
    """Encode the forgetting corpus; ``self`` needs ``model`` unless its sample is cached.

    Raises:
        UserError: a corpus with no complete block / no scorable response.
    """
    check_corpus(cfg)
    if cfg.corpus == "self":
        responses = sample_self(cfg, tok, model, model_fingerprint, cache)
        examples = [
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in responses
        ]
        # no truncation: only the sampled response is scored and it is bounded by max_new_tokens
        seqs = [s for s in (encode_example(e, tok, 1 << 30) for e in examples) if s is not None]
        what = "self-sampled responses"
    else:
        if cfg.corpus == "wikitext":
            text = _wikitext()
        elif cfg.corpus.startswith("hf:"):
            text = hub_text(cfg.corpus[3:])
        else:
            text = Path(cfg.corpus).expanduser().read_text(encoding="utf-8")
        seqs = text_blocks(text, tok, cfg.seq_len)
        what = cfg.corpus
    if cfg.max_blocks is not None:
        seqs = seqs[: cfg.max_blocks]
    if not seqs:
        raise UserError(
            f"forgetting corpus {what}: shorter than one block of {cfg.seq_len} tokens; "
            "use a longer text or a smaller forgetting.seq_len"
        )
    return seqs


def sample_self(
    cfg: ForgettingConfig,
    tok: PreTrainedTokenizerBase,
    model: PreTrainedModel | None,
    model_fingerprint: str,
    cache: Path,
    prompts: list[str] | None = None,
) -> list[tuple[str, str]]:
    """(prompt, response) pairs sampled from the base model, cached by every input that matters.

    ``prompts`` default to the first ``cfg.n_prompts`` shipped ones (the ``self`` forgetting corpus);
    a replay source passes others (:func:`forgetscale.mitigation.replay_prompts`).
    """
    if prompts is None:
        prompts = shipped_prompts()[: cfg.n_prompts]
    key = hashlib.sha256(
        json.dumps(
            [model_fingerprint, prompts, cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size],
        ).encode()
    ).hexdigest()[:16]
    path = cache / "corpora" / f"self-{key}.jsonl"
    if path.is_file():
        cached = _read_sample(path, prompts)
        if cached is not None:
            return cached
        path.unlink(missing_ok=True)  # a damaged cache entry: sample again
    # The default study's corpus ships with the package under the same key: sampling on another CPU's
    # BLAS can draw other tokens once logits differ in the last bit, so shipping it makes the corpus, and
    # every number measured on it, identical on every machine (and saves the sampling time).
    shipped = resources.files("forgetscale").joinpath(f"assets/corpora/self-{key}.jsonl")
    if shipped.is_file():
        pairs = _read_sample(Path(str(shipped)), prompts)
        if pairs is not None:
            return pairs
    if model is None:
        raise RuntimeError("sampling the self corpus needs the base model")
    responses = _generate(model, tok, prompts, cfg)
    atomic_write(path, "".join(json.dumps({"prompt": p, "response": r}) + "\n"
                               for p, r in zip(prompts, responses, strict=True)))  # fmt: skip
    return list(zip(prompts, responses, strict=True))


def _read_sample(path: Path, prompts: list[str]) -> list[tuple[str, str]] | None:
    """The cached (prompt, response) pairs, or None when the file is damaged or not for ``prompts``."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        pairs = [(r["prompt"], r["response"]) for r in rows]
    except (OSError, ValueError, KeyError, TypeError):  # ValueError covers bad JSON and bad UTF-8
        return None
    if [p for p, _ in pairs] != prompts or not all(isinstance(r, str) for _, r in pairs):
        return None
    return pairs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"forgetting.corpus: {path} is not UTF-8 text (byte {e.start}); convert it, e.g. with iconv"
        ) from None
    except OSError as e:
        raise UserError(f"forgetting.corpus: cannot read {path} ({e.strerror or e})") from None


def _generate(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], cfg: ForgettingConfig
) -> list[str]:
    import torch

    torch.manual_seed(cfg.seed)
    old_side, tok.padding_side = tok.padding_side, "left"  # generation continues from the right edge
    out: list[str] = []
    try:
        for i in range(0, len(prompts), cfg.batch_size):
            chats = [
                tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in prompts[i : i + cfg.batch_size]
            ]
            enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                gen = model.generate(
                    **enc.to(next(model.parameters()).device),  # sampled where the model is
                    do_sample=True,
                    temperature=cfg.temperature,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=cfg.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = old_side
    return out


def hub_text(spec: str) -> str:
    """The ``text`` column of a hub dataset split, ``NAME[:CONFIG[:SPLIT]]`` (split ``test`` by default),
    documents joined by blank lines, for the text-corpus protocol."""
    import datasets

    from forgetscale.data.sources import hub_error

    name, config, split = (spec.split(":") + ["", ""])[:3]
    why = None
    try:
        with hub.reach() as why:  # an unreachable hub: the datasets cache only, no retries
            ds = datasets.load_dataset(name, config or None, split=split or "test")
    except Exception as e:  # the hub raises many kinds; each means "cannot use this corpus"
        what = f"forgetting corpus hf:{spec}"
        if why and (message := hub_error(e, what, name, config, split, "forgetting.corpus", why)):
            raise UserError(message) from None
        raise UserError(f"forgetting corpus hf:{spec}: cannot load it ({type(e).__name__}: {e})") from None
    if "text" not in ds.column_names:
        raise UserError(f"forgetting corpus hf:{spec}: no 'text' column (columns: {', '.join(ds.column_names)})")
    return "\n\n".join(t for t in ds["text"] if t)


WIKITEXT = ("Salesforce/wikitext", "wikitext-103-raw-v1", "test")
"""The paper's corpus: WikiText-103 test (byte-identical to WikiText-2 test)."""


@functools.lru_cache(maxsize=1)
def _wikitext() -> str:
    """WikiText-103 test from the hub (or, offline, from the ``datasets`` cache).

    Raises:
        UserError: offline and not cached, unreachable, or unreadable; the line says what to do.
    """
    import datasets

    from forgetscale.data.sources import hub_error

    repo, config, split = WIKITEXT
    why = None
    try:
        with hub.reach() as why:  # an unreachable hub: the datasets cache only, no retries
            ds = datasets.load_dataset(repo, config, split=split)
        return "".join(ds["text"])
    except Exception as e:
        message = hub_error(e, f"forgetting corpus 'wikitext' ({repo} {config}; forgetting.corpus)", repo, config,
                            split, "forgetting.corpus", why)  # fmt: skip
        if message is None:
            raise
        raise UserError(message) from None
