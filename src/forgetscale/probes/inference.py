"""One model on one probe: what it answers, item by item.

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

:func:`swapped_adapters` serves every run's adapter from one copy of the base
weights and gives the base model back untouched. Torch is imported inside the
functions, so importing this module does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.compat import cache_kwargs, output_cache
from forgetscale.errors import UserError
from forgetscale.probes import scoring
from forgetscale.probes.sets import KnowledgeItem, ProbeItem, ReasoningItem, SafetyItem

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["PROBES", "option_logliks", "run_probe", "swapped_adapters"]

PROBES: dict[str, tuple[str, ...]] = {
    "knowledge": ("knowledge",),
    "reasoning": ("reasoning_loglik", "reasoning_gen"),
    "safety": ("safety",),
}
"""Probe kind (a shipped set, ``probes.kinds``) -> the probes run on it."""

_ARC_CONTEXT = "Question: {question}\nAnswer:"  # lm-evaluation-harness' arc_challenge doc_to_text


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
