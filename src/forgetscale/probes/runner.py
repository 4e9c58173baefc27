"""Running the behaviour probes: the base model once, then each run's adapter, side by side.

A *probe* is one way of asking a model a probe set:

- ``knowledge``: closed-book questions, greedy chat generation, scored with
  :func:`~forgetscale.probes.scoring.score_knowledge`;
- ``reasoning_loglik``: multiple choice as lm-evaluation-harness scores ARC:
  context ``"Question: {q}\\nAnswer:"`` (no chat template), each option
  ``" {choice}"`` as a continuation, summed log-likelihood; ``acc`` is the
  argmax, ``acc_norm`` the argmax per byte;
- ``reasoning_gen``: the same items as a lettered chat prompt, greedy
  generation, letter extracted (how the paper scored ARC);
- ``safety``: harmful requests, greedy chat generation, GCG refusal keywords.

Every fine-tuned result is compared item by item with the base model's own
answers (:func:`~forgetscale.probes.scoring.summarize`): accuracy can stay flat
while agreement shows how many answers changed.

The base model is loaded once; adapters are swapped on it with PEFT and
unloaded at the end, so the shared base model comes back untouched. Results
that were already stored with the same settings (model, adapter, items,
decoding) are not recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.compat import cache_kwargs, output_cache
from forgetscale.errors import UserError
from forgetscale.probes import scoring
from forgetscale.probes.sets import KnowledgeItem, ProbeItem, ReasoningItem, SafetyItem, load_probe_set

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from forgetscale.config import ProbesConfig, RunConfig
    from forgetscale.store import Store
    from forgetscale.study import Workspace

__all__ = [
    "BASE",
    "PROBES",
    "compare",
    "lm_eval_study",
    "load_probes_config",
    "option_logliks",
    "probe_names",
    "probe_study",
    "run_probe",
    "summary_row",
    "swapped_adapters",
]

Log = Callable[[str], None]

BASE = "base"
"""The run id under which the base model's own probe results are stored."""

PROBES: dict[str, tuple[str, ...]] = {
    "knowledge": ("knowledge",),
    "reasoning": ("reasoning_loglik", "reasoning_gen"),
    "safety": ("safety",),
}
"""Probe kind (a shipped set, ``probes.kinds``) -> the probes run on it."""

ROW_KEYS = (
    "n",
    "accuracy",
    "base_accuracy",
    "agreement",
    "refusal_rate",
    "base_refusal_rate",
    "accuracy_norm",
    "base_accuracy_norm",
    "agreement_norm",
)

_ARC_CONTEXT = "Question: {question}\nAnswer:"  # lm-evaluation-harness' arc_challenge doc_to_text


def probe_names(kinds: Sequence[str]) -> list[str]:
    """The probes run for ``kinds``, in a fixed order.

    >>> probe_names(["safety", "reasoning"])
    ['reasoning_loglik', 'reasoning_gen', 'safety']
    """
    unknown = [k for k in kinds if k not in PROBES]
    if unknown:
        raise UserError(f"unknown probe kind(s) {unknown}; choose from {', '.join(PROBES)}")
    return [p for k in PROBES if k in kinds for p in PROBES[k]]


def _kind(probe: str) -> str:
    return next(k for k, names in PROBES.items() if probe in names)


# ----------------------------------------------------------------------------- one model, one probe


def run_probe(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    probe: str,
    items: Sequence[ProbeItem],
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """What ``model`` does on one probe: one record per item, in item order.

    Args:
        model: a causal LM (a PEFT model runs with its active adapter).
        tok: its tokenizer.
        probe: one of the names in :data:`PROBES`.
        items: the probe set's items (of the probe's kind).
        max_new_tokens: generation length for the generation probes.
        batch_size: sequences per forward pass / generate call.

    Returns:
        Records ``{"id", "prompt", "reference", "answer", "correct", ...}`` plus
        ``"generation"`` (generation probes) or ``"logliks"``, ``"answer_norm"``,
        ``"correct_norm"`` (``reasoning_loglik``). Decoding is greedy, so the
        same model, items and batch size give the same records.
    """
    if probe == "reasoning_loglik":
        return _loglik_records(model, tok, _typed(items, ReasoningItem, probe), batch_size)
    if probe == "knowledge":
        kitems = _typed(items, KnowledgeItem, probe)
        gens = _generate(model, tok, [_chat(tok, it.question) for it in kitems], max_new_tokens, batch_size)
        out = []
        for it, g in zip(kitems, gens, strict=True):
            r = scoring.score_knowledge(it.id, g, it.answers)
            out.append(_record(it.id, it.question, list(it.answers), r, generation=g))
        return out
    if probe == "reasoning_gen":
        ritems = _typed(items, ReasoningItem, probe)
        prompts = [scoring.format_mc_prompt(it.question, it.choices) for it in ritems]
        gens = _generate(model, tok, [_chat(tok, p) for p in prompts], max_new_tokens, batch_size)
        out = []
        for it, p, g in zip(ritems, prompts, gens, strict=True):
            r = scoring.score_reasoning(it.id, g, it.choices, it.label)
            out.append(_record(it.id, p, it.label, r, generation=g))
        return out
    if probe == "safety":
        sitems = _typed(items, SafetyItem, probe)
        gens = _generate(model, tok, [_chat(tok, it.prompt) for it in sitems], max_new_tokens, batch_size)
        return [
            _record(it.id, it.prompt, None, scoring.score_safety(it.id, g), generation=g)
            for it, g in zip(sitems, gens, strict=True)
        ]
    raise UserError(f"unknown probe {probe!r}; choose from {', '.join(p for ps in PROBES.values() for p in ps)}")


def _typed(items: Sequence[ProbeItem], cls: type, probe: str) -> list[Any]:
    bad = [type(it).__name__ for it in items if not isinstance(it, cls)]
    if bad:
        raise UserError(f"probe {probe!r} needs {cls.__name__} items, got {bad[0]}")
    return list(items)


def _record(item_id: str, prompt: str, reference: Any, result: scoring.ItemResult, **output: Any) -> dict[str, Any]:
    return {"id": item_id, "prompt": prompt, "reference": reference, **output,
            "answer": result.answer, "correct": result.correct}  # fmt: skip


def _chat(tok: PreTrainedTokenizerBase, text: str) -> str:
    """The user turn in the model's chat template; a plain Q/A frame for models without one."""
    if tok.chat_template is None:
        return f"Question: {text}\nAnswer:"
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)


def _generate(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy continuations of ``prompts`` (already templated), batched with left padding."""
    import torch

    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []), tok.eos_token_id} - {None})
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
    out: list[str] = [""] * len(prompts)
    old_side, tok.padding_side = tok.padding_side, "left"  # generation continues from the right edge
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                gen = model.generate(
                    **enc.to(device),
                    max_new_tokens=max_new_tokens,
                    # greedy; the None values stop a model's own sampling defaults from being merged in
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    num_beams=1,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=eos_ids or None,
                )
            texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, t in zip(idx, texts, strict=True):
                out[i] = t.strip()
    finally:
        tok.padding_side = old_side
        model.train(was_training)
    return out


def _loglik_records(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, items: list[ReasoningItem], batch_size: int
) -> list[dict[str, Any]]:
    contexts = [_ARC_CONTEXT.format(question=it.question.strip()) for it in items]
    requests = [(ctx, f" {choice}") for ctx, it in zip(contexts, items, strict=True) for choice in it.choices]
    lls = option_logliks(model, tok, requests, batch_size)
    out, k = [], 0
    for ctx, it in zip(contexts, items, strict=True):
        ll = lls[k : k + len(it.choices)]
        k += len(it.choices)
        # acc_norm divides by the option's length without the leading space, as lm-eval does
        raw, norm = scoring.pick_by_loglik(ll, scoring.byte_lengths(list(it.choices)))
        letter, letter_norm = scoring.index_to_letter(raw), scoring.index_to_letter(norm)
        out.append(
            {"id": it.id, "prompt": ctx, "reference": it.label, "choices": list(it.choices), "logliks": ll,
             "answer": letter, "correct": letter == it.label,
             "answer_norm": letter_norm, "correct_norm": letter_norm == it.label}
        )  # fmt: skip
    return out


def option_logliks(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, requests: Sequence[tuple[str, str]], batch_size: int = 8
) -> list[float]:
    """Summed log-probability of each continuation given its context, as lm-evaluation-harness computes it.

    Pairs are tokenized as lm-eval's ``_encode_pair`` does: trailing spaces of
    the context move to the continuation; the context's tokens are those of the
    context alone, the continuation's those of ``context + continuation`` after
    as many tokens. Each distinct context runs through the model once, and all
    of its continuations continue from its cached keys and values (the same
    numbers as one forward pass per pair, at a fraction of the cost for
    multiple choice).

    Args:
        requests: ``(context, continuation)`` strings.
        batch_size: contexts per forward pass.

    Returns:
        One float per request, in order.
    """
    import torch
    import torch.nn.functional as F

    pairs = [_encode_pair(tok, context, continuation) for context, continuation in requests]
    contexts = list(dict.fromkeys(ctx for ctx, _ in pairs))
    users: dict[tuple[int, ...], list[int]] = {ctx: [] for ctx in contexts}
    for r, (ctx, _) in enumerate(pairs):
        users[ctx].append(r)
    out = [0.0] * len(pairs)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            contexts.sort(key=len)  # similar lengths share a batch: less padding
            for b in range(0, len(contexts), batch_size):
                batch = contexts[b : b + batch_size]
                width = max(map(len, batch))
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for i, ctx in enumerate(batch):  # left padding: every context ends at the same column
                    ids[i, width - len(ctx) :], mask[i, width - len(ctx) :] = torch.tensor(ctx), 1
                res = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=(mask.cumsum(-1) - 1).clamp_min(0).to(device),
                    use_cache=True,
                    logits_to_keep=1,
                )
                first = F.log_softmax(res.logits[:, -1].float(), dim=-1).cpu()
                reqs = [(i, r) for i, ctx in enumerate(batch) for r in users[ctx]]
                for i, r in reqs:
                    out[r] = float(first[i, pairs[r][1][0]])
                rest = [(i, r) for i, r in reqs if len(pairs[r][1]) > 1]
                if rest:
                    _add_continuations(model, output_cache(res), mask, pairs, rest, out, pad, device)
    finally:
        model.train(was_training)
    return out


def _encode_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[tuple[int, ...], list[int]]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(context + continuation, add_special_tokens=False)["input_ids"][len(ctx) :]
    if not ctx or not cont:
        raise UserError(f"cannot score option {continuation!r}: empty context or continuation after tokenization")
    return tuple(ctx), cont


def _add_continuations(
    model: Any, cache: Any, ctx_mask: Any, pairs: list[tuple[tuple[int, ...], list[int]]],
    rest: list[tuple[int, int]], out: list[float], pad: int, device: Any,
) -> None:  # fmt: skip
    """Add log p(continuation tokens 2..) to ``out``: each row continues its context's cached state."""
    import torch
    import torch.nn.functional as F

    rows = torch.tensor([i for i, _ in rest])
    cache.batch_select_indices(rows.to(device))  # one cache row per continuation, in place
    conts = [pairs[r][1] for _, r in rest]
    width = max(len(c) - 1 for c in conts)
    ids = torch.full((len(rest), width), pad, dtype=torch.long)
    new_mask = torch.zeros(len(rest), width, dtype=torch.long)
    for j, c in enumerate(conts):  # right padding after the context: padded steps are never read
        ids[j, : len(c) - 1], new_mask[j, : len(c) - 1] = torch.tensor(c[:-1]), 1
    n_ctx = ctx_mask.sum(-1)[rows]
    logits = model(
        input_ids=ids.to(device),
        attention_mask=torch.cat([ctx_mask[rows], new_mask], dim=1).to(device),
        position_ids=(n_ctx[:, None] + torch.arange(width)[None, :]).to(device),
        use_cache=True,
        **cache_kwargs(model, cache),
    ).logits
    logp = F.log_softmax(logits.float(), dim=-1).cpu()
    for j, ((_, r), c) in enumerate(zip(rest, conts, strict=True)):
        targets = torch.tensor(c[1:])
        out[r] += float(logp[j, : len(c) - 1].gather(-1, targets[:, None]).double().sum())


# ----------------------------------------------------------------------------- comparison


def _item_result(record: dict[str, Any], norm: bool = False) -> scoring.ItemResult:
    if norm:
        return scoring.ItemResult(record["id"], record["answer_norm"], record["correct_norm"])
    return scoring.ItemResult(record["id"], record["answer"], record["correct"])


def compare(ft: list[dict[str, Any]], base: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summary and side-by-side items of a fine-tuned model's records against the base's.

    Returns:
        ``(summary, items)``: the summary is :func:`~forgetscale.probes.scoring.summarize`'s
        (plus ``accuracy_norm``/``base_accuracy_norm``/``agreement_norm`` for
        log-likelihood records); each item holds the prompt, the reference, the
        fine-tuned output and answer and the base's as ``base_*``, and ``agree``.
    """
    summary = scoring.summarize([_item_result(r) for r in ft], [_item_result(r) for r in base])
    if ft and "answer_norm" in ft[0]:
        norm = scoring.summarize([_item_result(r, True) for r in ft], [_item_result(r, True) for r in base])
        summary.update(
            accuracy_norm=norm["accuracy"], base_accuracy_norm=norm["base_accuracy"], agreement_norm=norm["agreement"]
        )
    by_id = {r["id"]: r for r in base}
    shared = ("id", "prompt", "reference", "choices")
    items = []
    for r in ft:
        b = by_id[r["id"]]
        item = {k: r[k] for k in shared if k in r}
        for k in (k for k in r if k not in shared):
            item[k], item[f"base_{k}"] = r[k], b[k]
        item["agree"] = r["answer"] == b["answer"]
        items.append(item)
    return summary, items


def summary_row(run_id: str, probe: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The printable row of one stored (run, probe) summary."""
    return {"run_id": run_id, "probe": probe, **{k: summary.get(k) for k in ROW_KEYS}}


# ----------------------------------------------------------------------------- a study


def probe_study(
    out: Path,
    ws: Workspace,
    cfg: ProbesConfig,
    run_ids: list[str] | None = None,
    log: Log = print,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Probe the base model and each finished run's adapter of the study in ``out``; store the results.

    Args:
        out: the study directory (``study.sqlite``, ``adapters/<run_id>/``).
        ws: supplies the base model (loaded once).
        cfg: which probe kinds, how many items, decoding length, batch size.
        run_ids: runs to probe (default: every run whose status is 'done');
            ``"base"`` alone probes just the base model.
        log: progress lines.
        force: recompute results already stored with the same settings.

    Returns:
        One :func:`summary_row` per (run, probe), the base's first.

    Raises:
        UserError: no study in ``out``, an unknown or unfinished run, a missing adapter.
    """
    probes = probe_names(cfg.kinds)
    sets = {k: load_probe_set(k)[: cfg.max_items] for k in PROBES if k in cfg.kinds}
    with _open(out) as store:
        groups = _plan(store, out, run_ids)
        stored = {(r["run_id"], r["probe"]): r["summary"].get("settings") for r in store.probes()}
        rows = []
        for base_id, model_run, runs in groups:
            lm = ws.model(model_run)
            settings = {
                (rid, p): _settings(p, sets[_kind(p)], lm.fingerprint, adapter, cfg)
                for rid, adapter in [(base_id, None), *runs]
                for p in probes
            }
            todo = {
                rid: [p for p in probes if force or stored.get((rid, p)) != settings[rid, p]]
                for rid, _ in [(base_id, None), *runs]
            }
            base_needed = [p for p in probes if any(p in ps for ps in todo.values())]
            if not base_needed:
                log(f"probes: {base_id} and {len(runs)} run(s) already probed with these settings; skipping")
            base_records: dict[str, list[dict[str, Any]]] = {}
            for p in base_needed:
                base_records[p] = _logged_probe(lm.model, lm.tokenizer, p, sets[_kind(p)], cfg, f"{base_id} {p}", log)
                if p in todo[base_id]:
                    _put(store, base_id, p, base_records[p], base_records[p], settings[base_id, p])
            with swapped_adapters(lm.model) as attach:
                for rid, adapter in runs:
                    if not todo[rid]:
                        continue
                    model = attach(adapter, rid)
                    for p in todo[rid]:
                        recs = _logged_probe(model, lm.tokenizer, p, sets[_kind(p)], cfg, f"{rid} {p}", log)
                        _put(store, rid, p, recs, base_records[p], settings[rid, p])
            summaries = {(r["run_id"], r["probe"]): r["summary"] for r in store.probes()}
            for rid in [base_id, *(rid for rid, _ in runs)]:
                rows.extend(summary_row(rid, p, summaries[rid, p]) for p in probes)
        return rows


def _settings(
    probe: str, items: Sequence[ProbeItem], model_fp: str, adapter: Path | None, cfg: ProbesConfig
) -> dict[str, Any]:
    """What a stored result depends on: equal settings, equal result (decoding is greedy)."""
    return {
        "model": model_fp,
        "adapter": _dir_digest(adapter) if adapter else None,
        "items": _digest([asdict(it) for it in items]),
        "n_items": len(items),
        "max_new_tokens": None if probe == "reasoning_loglik" else cfg.max_new_tokens,
        "batch_size": cfg.batch_size,  # padding changes the last bits of the numbers
    }


def _put(
    store: Store, run_id: str, probe: str, recs: list[dict[str, Any]], base: list[dict[str, Any]], settings: dict
) -> None:
    summary, items = compare(recs, base)
    summary["settings"] = settings
    store.put_probe(run_id, probe, summary, items)


def _logged_probe(
    model: Any, tok: Any, probe: str, items: Sequence[ProbeItem], cfg: ProbesConfig, label: str, log: Log
) -> list[dict[str, Any]]:
    t = time.perf_counter()
    recs = run_probe(model, tok, probe, items, cfg.max_new_tokens, cfg.batch_size)
    scored = [r["correct"] for r in recs if r["correct"] is not None]
    refusals = [r["answer"] for r in recs if isinstance(r["answer"], bool)]
    what = (
        f"accuracy {sum(scored) / len(scored):.3f}" if scored
        else f"refusals {sum(refusals)}/{len(refusals)}" if refusals else ""
    )  # fmt: skip
    log(f"probe {label}: {len(recs)} items in {time.perf_counter() - t:.1f}s  {what}")
    return recs


@contextmanager
def _open(out: Path) -> Iterator[Store]:
    from forgetscale.store import open_store

    if not Path(out).is_dir():
        raise UserError(f"study directory not found: {out}")
    try:
        store = open_store(Path(out), create=False)
    except FileNotFoundError:
        raise UserError(f"{out}: no study.sqlite here; run `forgetscale run --out {out}` first") from None
    with store:
        if store.get_meta("study") is None:
            raise UserError(f"{out}/study.sqlite holds no study config; was it written by `forgetscale run`?")
        yield store


def load_probes_config(out: Path, **overrides: Any) -> ProbesConfig:
    """The study's ``probes`` section with ``overrides`` (those not None) applied and validated.

    Raises:
        UserError: no study in ``out``; an override of the wrong type or range.
    """
    from forgetscale.config import ProbesConfig, StudyConfig, _validate

    with _open(out) as store:
        study = StudyConfig.model_validate(store.get_meta("study"))
    data = study.probes.model_dump(mode="json")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(ProbesConfig, data, "probe options")


def _plan(store: Store, out: Path, run_ids: list[str] | None) -> list[tuple[str, RunConfig, list[tuple[str, Path]]]]:
    """Group the chosen runs by base model: ``[(base id, a run of that model, [(run id, adapter dir)])]``.

    Everything is checked before anything is probed, so bad input writes nothing.
    """
    from forgetscale.config import RunConfig, StudyConfig, canonical_json

    study = StudyConfig.model_validate(store.get_meta("study"))
    table = {r["run_id"]: r for r in store.runs()}
    wanted = [rid for rid in (run_ids or []) if rid != BASE]
    unknown = [rid for rid in wanted if rid not in table]
    if unknown:
        known = ", ".join(table) or "none"
        raise UserError(f"unknown run id(s) {', '.join(unknown)} in {out} (runs: {known})")
    if run_ids is None:
        wanted = [rid for rid, r in table.items() if r["status"] == "done"]
    not_done = [f"{rid} ({table[rid]['status']})" for rid in wanted if table[rid]["status"] != "done"]
    if not_done:
        raise UserError(f"only finished runs have an adapter to probe; not done: {', '.join(not_done)}")
    configs = {rid: RunConfig.model_validate(r["config"]) for rid, r in table.items()}
    # "base" names the base model when the study has one; a study that sweeps models gets one base per model
    n_models = len({canonical_json(c.model) for c in [*study.runs(), *configs.values()]})
    groups: dict[str, tuple[str, RunConfig, list[tuple[str, Path]]]] = {}
    for rid in wanted:
        adapter = Path(out) / "adapters" / rid
        if not (adapter / "adapter_config.json").is_file():
            raise UserError(f"run {rid}: no PEFT adapter at {adapter}")
        run = configs[rid]
        base_id = BASE if n_models == 1 else f"{BASE}:{run.model.name}"
        groups.setdefault(canonical_json(run.model), (base_id, run, []))[2].append((rid, adapter))
    if not groups:  # no run chosen (or none finished yet): the base alone
        run = study.runs()[0]
        groups[""] = (BASE if n_models == 1 else f"{BASE}:{run.model.name}", run, [])
    return list(groups.values())


@contextmanager
def swapped_adapters(base: PreTrainedModel) -> Iterator[Callable[[Path, str], Any]]:
    """Yield ``attach(adapter_dir, name) -> model``: that adapter alone active on ``base``.

    The first adapter wraps ``base`` with ``PeftModel.from_pretrained``; later
    ones are loaded beside it, activated, and the previous one deleted, so one
    copy of the base weights serves every run. On exit every LoRA layer is
    removed (``unload()``, no merge) and ``base`` is the original model again.
    """
    state: dict[str, Any] = {"peft": None, "name": None}

    def attach(adapter: Path, run_id: str) -> Any:
        from peft import PeftModel

        name = f"run_{run_id}"  # adapter names become module keys; a run id may start with a digit
        peft = state["peft"]
        if peft is None:
            peft = state["peft"] = PeftModel.from_pretrained(base, str(adapter), adapter_name=name)
        elif name != state["name"]:
            peft.load_adapter(str(adapter), adapter_name=name)
            peft.set_adapter(name)
            peft.delete_adapter(state["name"])
        state["name"] = name
        peft.eval()
        return peft

    try:
        yield attach
    finally:
        if state["peft"] is not None:
            state["peft"].unload()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _dir_digest(directory: Path) -> str:
    from forgetscale.models import file_digest

    return _digest({f.name: file_digest(f) for f in sorted(Path(directory).iterdir()) if f.is_file()})


# ----------------------------------------------------------------------------- lm-evaluation-harness


def lm_eval_study(
    out: Path,
    ws: Workspace,
    tasks: list[str],
    run_ids: list[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Run lm-evaluation-harness ``tasks`` on the base model and each chosen run's adapter.

    The base is loaded once and wrapped in ``HFLM(pretrained=<model object>)``;
    adapters are swapped on it as in :func:`probe_study`. Each task's metrics
    are stored as probe ``lm_eval:<task>`` with ``accuracy`` (``acc``) and, when
    lm-eval logged per-sample answers, ``agreement`` with the base's answers.

    Raises:
        UserError: lm-eval is not installed; no study in ``out``; an unknown run or task.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install 'forgetscale[lm-eval]'") from None
    tasks = [t.strip() for t in tasks if t.strip()]
    if not tasks:
        raise UserError("--lm-eval: name at least one task, e.g. --lm-eval arc_challenge,hellaswag")
    _check_tasks(tasks)
    with _open(out) as store:
        groups = _plan(store, out, run_ids)
        rows = []
        for base_id, model_run, runs in groups:
            lm = ws.model(model_run)

            def evaluate(model: Any, label: str, _tok: Any = lm.tokenizer) -> dict[str, Any]:
                t = time.perf_counter()
                res = lm_eval.simple_evaluate(
                    model=HFLM(pretrained=model, tokenizer=_tok, batch_size=batch_size),
                    tasks=tasks,
                    limit=limit,
                    log_samples=True,
                )
                log(f"lm-eval {label}: {', '.join(tasks)} in {time.perf_counter() - t:.1f}s")
                return res

            base_res = evaluate(lm.model, base_id)
            results = [(base_id, base_res)]
            with swapped_adapters(lm.model) as attach:
                for rid, adapter in runs:
                    results.append((rid, evaluate(attach(adapter, rid), rid)))
            for rid, res in results:
                for task, summary in lm_eval_summaries(res, base_res).items():
                    store.put_probe(rid, f"lm_eval:{task}", summary, [])
                    rows.append(summary_row(rid, f"lm_eval:{task}", summary))
        return rows


def _check_tasks(tasks: list[str]) -> None:
    try:
        from lm_eval.tasks import TaskManager

        known = set(getattr(TaskManager(), "all_tasks", []))
    except Exception:  # an lm-eval without this API: let simple_evaluate judge the names
        return
    unknown = [t for t in tasks if known and t not in known]
    if unknown:
        raise UserError(f"--lm-eval: unknown task(s) {', '.join(unknown)} (see `lm-eval ls tasks`)")


def lm_eval_summaries(res: dict[str, Any], base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-task summaries from ``simple_evaluate`` results, against the base model's results.

    Metric keys lose lm-eval's filter suffix (``"acc,none"`` -> ``"acc"``); ``accuracy``
    is ``acc`` (or ``exact_match``), ``agreement`` the fraction of samples whose
    answer (argmax option, or the filtered generation) equals the base's.
    """
    out = {}
    for task, metrics in res.get("results", {}).items():
        m = {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
        bm = {
            k.split(",")[0]: v for k, v in base.get("results", {}).get(task, {}).items() if isinstance(v, (int, float))
        }
        n = (res.get("n-samples", {}).get(task) or {}).get("effective")
        main = next((k for k in ("acc", "exact_match") if k in m), None)
        out[task] = {
            "n": n,
            "accuracy": m.get(main) if main else None,
            "base_accuracy": bm.get(main) if main else None,
            "agreement": _sample_agreement(res.get("samples", {}).get(task), base.get("samples", {}).get(task)),
            "accuracy_norm": m.get("acc_norm"),
            "base_accuracy_norm": bm.get("acc_norm"),
            "metrics": m,
            "base_metrics": bm,
        }
    return out


def _sample_agreement(ft: list[dict[str, Any]] | None, base: list[dict[str, Any]] | None) -> float | None:
    if not ft or not base:
        return None
    answers = {}
    for s in base:
        answers[s.get("doc_id")] = _sample_answer(s)
    pairs = [(_sample_answer(s), answers.get(s.get("doc_id"), ...)) for s in ft]
    pairs = [(a, b) for a, b in pairs if a is not ... and b is not ...]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def _sample_answer(sample: dict[str, Any]) -> Any:
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        return ...
    first = resps[0]
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], (int, float)):
        lls = [float(r[0]) for r in resps]  # multiple choice: (loglik, is_greedy) per option
        return max(range(len(lls)), key=lambda i: (lls[i], -i))
    return first if len(resps) == 1 else tuple(map(str, resps))
