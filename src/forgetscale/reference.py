"""The base reference: the base model's predictions on a forgetting corpus, computed once and cached.

A :class:`BaseReference` holds what the metrics (:mod:`forgetscale.forgetting`) need of the base
model at every target position of the corpus, stored on disk and memory-mapped. It is computed
before any adapter exists (the base is never read through a model that training changed), and
cached under a key naming everything its numbers depend on (:func:`reference_key`), so that a
study, ``forgetscale forgetting`` and :class:`forgetscale.ForgettingCallback` each reuse a
reference any of them computed. A damaged cache entry is discarded and computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from forgetscale.data.encode import Sequence, fingerprint
from forgetscale.errors import UserError
from forgetscale.forward import METRIC_CHUNK, chunks, forward_batches, logprobs, lse_parts
from forgetscale.fsutil import publish_dir
from forgetscale.models import discard, tokenizer_fingerprint
from forgetscale.schema import METRIC_VERSION

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from forgetscale.config import RunConfig

log = logging.getLogger(__name__)

REFERENCE_MODES = ("hidden", "logits")
"""Exact reference storage: ``hidden`` (d floats per position, valid while the LM head is the base's)
or ``logits`` (V floats per position, valid for any fine-tune). Top-K is the lossy third option."""


@dataclass(frozen=True)
class BaseReference:
    """Base-model predictions at the target positions of ``sequences``, in corpus order.

    Row ``i`` of every array belongs to the ``i``-th target position when the
    sequences' target positions are listed in order. Three storage modes:

    - hidden (exact, the default): per position the base distribution's expected
      output embedding ``mu = W^T p_b`` (d floats, W the (V, d) LM head). The
      base log-probs are a function of the base's final hidden state ``h_b``
      through the head, ``p_b = softmax(W h_b)``, and every metric needs them only
      through ``sum_v p_b(v) z_v`` with ``z = W h`` the fine-tuned logits, which is
      ``mu . h``: so one dot product per position replaces a second projection
      onto the vocabulary, and d/V of the full-logit size is stored (576/49152
      for SmolLM2). Valid only while the evaluated model's LM head is the base's
      (``head_check`` guards it; :func:`measure` refuses a changed head);
    - logits (exact): the full (n, V) float32 log-probabilities, valid for any fine-tune;
    - top-K: per position the K largest base log-probabilities, their token ids,
      and the log of the remaining tail mass. KL between the coarse-grained
      distributions (K tokens + one tail bucket) is a lower bound on the true KL
      (data-processing inequality) and exact when K is the vocabulary size;
      entropy, top-1 and data loss stay exact. ~2 KB per position at K=256
      instead of V*4 bytes (196 KB for a 49k vocabulary).
    """

    sequences: tuple[Sequence, ...]
    entropy: np.ndarray
    """(n_targets,) float64 base entropy per position (always exact)."""
    top1: np.ndarray
    """(n_targets,) int64 argmax of the base distribution."""
    top1_p: np.ndarray | None = None
    """(n_targets,) float64 the base's probability of its top token (for Δp). Stored in every mode; derived
    on load from an older full-logit or top-K cache; None only where it cannot be known."""
    target_p: np.ndarray | None = None
    """(n_targets,) float64 the base's probability of the corpus' own next token (llama.cpp's Δp). Stored in every
    mode; derived on load from an older full-logit cache; None only where it cannot be known."""
    logp: np.ndarray | None = None
    """Exact mode: (n_targets, vocab) float32 log-probabilities, a read-only memmap."""
    topk_idx: np.ndarray | None = None
    """Top-K mode: (n_targets, K) int32 token ids of the K most likely tokens."""
    topk_logp: np.ndarray | None = None
    """Top-K mode: (n_targets, K) float32 their base log-probabilities."""
    tail_logp: np.ndarray | None = None
    """Top-K mode: (n_targets,) float64 log of the base mass outside the top K."""
    mean_emb: np.ndarray | None = None
    """Hidden mode: (n_targets, d) float32 ``W^T p_b`` per position, a read-only memmap."""
    head_check: np.ndarray | None = None
    """Hidden mode: (V,) float32 signature of the base LM head (:func:`head_signature`)."""
    identity: dict[str, Any] | None = None
    """What the reference was computed with (:func:`reference_identity`: the model's fingerprint, its dtype,
    the device, the metric version); None only for a reference built in memory by a test."""

    @property
    def n_tokens(self) -> int:
        return len(self.entropy)

    @property
    def top_k(self) -> int | None:
        return None if self.topk_idx is None else self.topk_idx.shape[1]

    @property
    def mode(self) -> str:
        """``hidden``, ``logits`` or ``top<K>``: what this reference stores."""
        if self.mean_emb is not None:
            return "hidden"
        return "logits" if self.logp is not None else f"top{self.top_k}"

    @classmethod
    def load(cls, directory: Path, sequences: tuple[Sequence, ...]) -> BaseReference:
        meta = dict(np.load(directory / "meta.npz"))
        for name, field in (("logp.npy", "logp"), ("mean_emb.npy", "mean_emb")):
            if (directory / name).is_file():
                meta[field] = np.load(directory / name, mmap_mode="r")
        if "top1_p" not in meta:  # a cache from before the top token's probability was stored
            if "logp" in meta:
                meta["top1_p"] = np.exp(meta["logp"][np.arange(len(meta["top1"])), meta["top1"]].astype(np.float64))
            elif "topk_logp" in meta:
                meta["top1_p"] = np.exp(meta["topk_logp"][:, 0].astype(np.float64))
        targets = target_ids(sequences)
        if "target_p" not in meta and "logp" in meta and len(targets) == len(meta["top1"]):  # older still
            meta["target_p"] = np.exp(meta["logp"][np.arange(len(targets)), targets].astype(np.float64))
        if (directory / IDENTITY_FILE).is_file():
            meta["identity"] = json.loads((directory / IDENTITY_FILE).read_text(encoding="utf-8"))
        ref = cls(sequences, **meta)
        if ref.n_tokens != sum(s.n_targets for s in sequences):
            raise RuntimeError(f"base reference {directory} does not match its corpus")
        return ref


def target_ids(sequences: tuple[Sequence, ...] | list[Sequence]) -> np.ndarray:
    """The corpus' own token at every target position, in corpus order (what ``forward_batches`` yields as targets).

    >>> target_ids([Sequence((5, 6, 7), (False, True, True)), Sequence((8, 9), (False, True))]).tolist()
    [6, 7, 9]
    """
    return np.array([i for s in sequences for i, m in zip(s.ids, s.mask, strict=True) if m], np.int64)


def compute_reference(
    model: PreTrainedModel,
    sequences: list[Sequence],
    batch_size: int,
    out: Path,
    top_k: int | None = None,
    mode: str = "logits",
) -> BaseReference:
    """Run the base model once over the corpus and write its predictions to ``out``.

    Args:
        mode: ``hidden`` or ``logits`` for an exact reference (ignored when ``top_k``
            is set below the vocabulary size). ``hidden`` falls back to ``logits``
            when the model's logits are not a bias-free linear function of its final
            hidden states (a soft-capped or scaled head); the result's ``mode`` says
            which. A bf16 or fp16 head is applied in fp32 to the final hidden state,
            here and in every evaluation against the reference (:func:`forward_batches`).

    Every mode is written batch by batch, so only one batch of logits is ever in memory.
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"reference mode {mode!r}: expected one of {REFERENCE_MODES}")
    n = sum(s.n_targets for s in sequences)
    vocab = _vocab_size(model)
    out.mkdir(parents=True, exist_ok=True)
    exact = top_k is None or top_k >= vocab
    if exact and mode == "hidden":
        try:
            return _compute_hidden_reference(model, sequences, batch_size, out, n)
        except _HiddenUnsupported:
            for f in out.iterdir():
                f.unlink()
    k = vocab if exact else int(top_k)
    meta = {"entropy": np.empty(n, np.float64), "top1": np.empty(n, np.int64), "top1_p": np.empty(n, np.float64),
            "target_p": np.empty(n, np.float64)}
    if exact:
        logp_mm = np.lib.format.open_memmap(out / "logp.npy", "w+", np.float32, (n, vocab))
    else:
        meta |= {
            "topk_idx": np.empty((n, k), np.int32),
            "topk_logp": np.empty((n, k), np.float32),
            "tail_logp": np.empty(n, np.float64),
        }
    for batch_rows, logits, batch_targets, _h in forward_batches(model, sequences, batch_size):
        for rows, z, targets in chunks(batch_rows, logits, batch_targets):
            logq = logprobs(z)
            meta["entropy"][rows] = (-(logq.exp() * logq).sum(-1)).numpy()
            meta["top1"][rows] = z.argmax(-1).numpy()
            meta["top1_p"][rows] = logq.max(-1).values.exp().numpy()  # as measure() reads p_ft(top1): exp(logq)
            meta["target_p"][rows] = logq.gather(-1, targets[:, None]).squeeze(-1).exp().numpy()  # likewise
            if exact:
                logp_mm[rows] = logq.float().numpy()
            else:
                vals, idx = logq.topk(k, dim=-1)
                meta["topk_idx"][rows] = idx.numpy()
                meta["topk_logp"][rows] = vals.float().numpy()
                meta["tail_logp"][rows] = log_tail_mass(logq, idx).numpy()
    if exact:
        logp_mm.flush()
        del logp_mm
    np.savez(out / "meta.npz", **meta)
    return BaseReference.load(out, tuple(sequences))


def mean_embedding(z: torch.Tensor, weight64: torch.Tensor) -> torch.Tensor:
    """``mu = W^T softmax(z)`` per row, (n, d) fp32 on the CPU: what a hidden reference stores.

    Normalised and accumulated over the whole vocabulary in float64 (``weight64`` is the LM
    head's weight in float64), then rounded once. In fp32 the accumulation over 49k entries
    left forget_kl, a small difference of ~20-nat terms, 1.2e-6 relative from the full-logit
    reference on SmolLM2; in float64, 3.3e-7 (measured on the bench's 64 sequences).
    """
    p = torch.softmax(z.double(), -1).to(weight64.device)
    return (p @ weight64).float().cpu()


class _HiddenUnsupported(Exception):
    """The model's logits are not ``W h`` for its LM head ``W`` and final hidden state ``h``."""


def _compute_hidden_reference(
    model: PreTrainedModel, sequences: list[Sequence], batch_size: int, out: Path, n: int
) -> BaseReference:
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise _HiddenUnsupported
    # A bf16 head's own logits carry ~0.4% rounding that would not cancel against mu . h: the head is
    # applied in fp32 to the final hidden state instead, here and in every evaluation (forward_batches).
    weight = head.weight.detach().float()
    if not _head_is_linear(model, sequences[0], weight):
        raise _HiddenUnsupported
    weight64 = weight.double()  # once per reference: 226 MB for SmolLM2's head
    d = weight.shape[1]
    meta = {
        "entropy": np.empty(n, np.float64),
        "top1": np.empty(n, np.int64),
        "top1_p": np.empty(n, np.float64),
        "target_p": np.empty(n, np.float64),
        "head_check": head_signature(model),
    }
    mu_mm = np.lib.format.open_memmap(out / "mean_emb.npy", "w+", np.float32, (n, d))
    for batch_rows, logits, batch_targets, hidden in forward_batches(model, sequences, batch_size, hidden=True):
        # the same chunks, in the same order, as measure() uses: at identity both see the same numbers
        for rows, z, h, targets in chunks(batch_rows, logits, hidden, batch_targets):
            mu = mean_embedding(z, weight64)
            mu_mm[rows] = mu.numpy()
            meta["entropy"][rows] = hidden_ce(mu, h, z).numpy()  # H_b is the CE of p_b against itself
            meta["top1"][rows] = z.argmax(-1).numpy()
            m, log_s = lse_parts(z)  # as measure() reads p_ft(top1) against a hidden reference: exp(z_top - lse)
            meta["top1_p"][rows] = (z.max(-1).values.double() - m - log_s).exp().numpy()
            # as measure() reads p_ft(target) against a hidden reference, operation for operation: exp(-(lse - z_t))
            meta["target_p"][rows] = (-(m + log_s - z.gather(-1, targets[:, None]).squeeze(-1).double())).exp().numpy()
    mu_mm.flush()
    del mu_mm
    np.savez(out / "meta.npz", **meta)
    return BaseReference.load(out, tuple(sequences))


def _head_is_linear(model: PreTrainedModel, seq: Sequence, weight: torch.Tensor) -> bool:
    """The hidden mode's premise, checked on real data: the model's logits are ``W h`` for its head ``W`` and
    final hidden state ``h`` (not soft-capped, scaled or biased), within the rounding of the head's dtype."""
    head = model.get_output_embeddings()
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ids = torch.tensor([seq.ids[:METRIC_CHUNK]], device=weight.device)
            logits = model(input_ids=ids).logits[0].float()
    finally:
        handle.remove()
        model.train(was_training)
    direct = F.linear(captured[-1][0].float(), weight)
    # fp32: summation order only; bf16/fp16: the logits are rounded to 8/11 significant bits once
    rtol = 1e-4 if head.weight.dtype == torch.float32 else 2.0 ** -6
    scale = float(logits.abs().max()) + 1e-30
    return bool(torch.allclose(direct, logits, rtol=rtol, atol=rtol * scale))


HEAD_SIGNATURE_SEED = 1234


def head_signature(model: PreTrainedModel) -> np.ndarray:
    """(V,) float32: the model's output layer applied to a fixed random vector.

    Calls the module itself, so a LoRA or ``modules_to_save`` copy of the head,
    a trained tied embedding or a merged adapter all show. Two heads that differ
    in any row give different signatures (a change orthogonal to a random vector
    has probability zero).
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output embeddings (LM head)")
    d = head.weight.shape[1] if hasattr(head, "weight") else model.config.hidden_size
    probe = torch.randn(1, d, generator=torch.Generator().manual_seed(HEAD_SIGNATURE_SEED))
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            param = next(head.parameters())
            return head(probe.to(param.device, param.dtype)).float().cpu().numpy()[0]
    finally:
        head.train(was_training)


def same_head(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two :func:`head_signature` values come from the same head.

    Tolerates matmul rounding on another device (1e-5 relative); a trained head
    moves it by far more (one Adam step at lr 1e-6 moves each entry ~5e-5), and a
    change below it would move the metrics by less than that relative amount.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 * np.abs(b) + 1e-6 * np.abs(b).max()))


def head_module_name(model: PreTrainedModel) -> str | None:
    """The short name (``lm_head``) of the model's output layer, as LoRA ``target_modules`` names it."""
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return name.rsplit(".", 1)[-1]
    return None


def hidden_ce(mu: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-position ``-sum_v p_b(v) log q(v)`` from ``mu = W^T p_b``, the evaluated model's final hidden
    state ``h`` and its logits ``z = W h``: ``logsumexp(z) - mu . h``, in float64.

    Written as ``(max z - mu . h) + log sum exp(z - max z)``: the two large terms (~20 nats
    each for a real LM) cancel before anything is rounded to their scale.
    """
    m, log_s = lse_parts(z)
    return (m - (mu.double() * h.double()).sum(-1)) + log_s


def log_tail_mass(logq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Log of the probability mass outside columns ``idx``, per row, summed over the tail itself.

    Not ``log(1 - sum(top))``: with a large K the top mass of fp32 log-probs can
    round to 1 or above, and the tail then came out as -inf (an infinite KL).
    """
    return logq.scatter(-1, idx, float("-inf")).logsumexp(-1)


def _vocab_size(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


# ----------------------------------------------------------------------------- the disk cache


def reference_mode(run: RunConfig, model: Any) -> str:
    """The exact reference mode a run gets: ``forgetting.reference``, except that a LoRA on the LM
    head, or a full fine-tune of every weight, changes the head, so the hidden mode (valid only for the
    base's head) falls back to logits."""
    m = run.method
    trains_head = (m.uses_lora_section() and head_module_name(model) in run.lora.target_modules) or (
        m.kind == "full" and m.blocks is None)
    return "logits" if run.forgetting.reference == "hidden" and trains_head else run.forgetting.reference


IDENTITY_FILE = "identity.json"
"""Beside a cached reference's arrays: what it was computed with (:func:`reference_identity`)."""


def evaluated_as(model: Any) -> tuple[str, str]:
    """(device, dtype) a model computes in now, read from its input embeddings: ``cpu``, ``mps`` or ``cuda (NAME)``
    (two GPU kinds round differently), and ``float32``/``bfloat16``/``float16``."""
    weight = model.get_input_embeddings().weight
    return device_label(weight.device), str(weight.dtype).removeprefix("torch.")


def device_label(device: torch.device | str) -> str:
    """``cpu``, ``mps`` or ``cuda (NAME)``: a device as references and studies record it."""
    device = torch.device(device)
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def reference_identity(model: Any, model_fingerprint: str, dtype: str | None = None) -> dict[str, Any]:
    """What a base reference's numbers depend on besides its corpus and storage: the model's full fingerprint
    (:func:`forgetscale.models.source_fingerprint`), its dtype (``dtype`` labels a load dtype evaluated in
    another, as the callback's upcast bf16 weights), the device and dtype it computes in, and the version
    of the metric implementation. Part of every cache key and stored with every reference."""
    device, eval_dtype = evaluated_as(model)
    return {"model": model_fingerprint, "dtype": dtype or eval_dtype, "eval_dtype": eval_dtype, "device": device,
            "metric_version": METRIC_VERSION}  # fmt: skip


def reference_key(identity: dict[str, Any], tok: Any, seqs: list[Sequence], top_k: int | None,
                  mode: str = "logits") -> str:  # fmt: skip
    """The cache key of a base reference: a readable model name, then a hash of everything its numbers
    depend on (the whole :func:`reference_identity`, the tokenizer, the corpus, the storage).

    Shared by studies, ``forgetscale forgetting``, :class:`forgetscale.ForgettingCallback` and Ray workers,
    so that each reuses a reference any of them computed, and none another model's: two hub models whose
    names share a prefix, or two commits of one, never share a key.
    """
    what = {**identity, "tokenizer": tokenizer_fingerprint(tok), "corpus": fingerprint(seqs),
            "storage": f"k{top_k}-tail2" if top_k else ("exact" if mode == "logits" else mode)}  # fmt: skip
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]
    name = identity["model"].split("@")[0].removeprefix("hub:")
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", name.replace("/", "--"))[:40].strip("-.") or "model"
    return f"{slug}-{digest}"


class ReferenceMismatch(UserError):
    """A base reference asked to serve a model, device or dtype other than the one it was made for."""


def identity_problem(found: dict[str, Any] | None, expected: dict[str, Any]) -> str | None:
    """What differs between a reference's recorded identity and the one expected of it, or None."""
    if found is None:
        return "it records no identity (made by an older forgetscale)"
    diff = [f"{k} {found.get(k)!r}, not {v!r}" for k, v in expected.items() if found.get(k) != v]
    return "; ".join(diff) or None


def check_serves(ref: BaseReference, model: Any, where: str = "base reference") -> None:
    """Refuse to compare ``model`` with ``ref`` unless it computes on the device and in the dtype the reference
    was made with: at the identity adapter the two must see the same numbers, so that KL is exactly 0.

    Raises:
        ReferenceMismatch: one line naming both.
    """
    if ref.identity is None:
        return
    device, dtype = evaluated_as(model)
    made = (ref.identity.get("device"), ref.identity.get("eval_dtype"))
    if made != (device, dtype):
        raise ReferenceMismatch(
            f"the {where} was computed on {made[0]} in {made[1]}, but the model now runs on {device} in {dtype}: "
            "measure where the reference was made (model.device, model.dtype), or let a new one be computed"
        )


def base_reference(model: Any, identity: dict[str, Any], tok: Any, seqs: list[Sequence], top_k: int | None,
                   mode: str, batch_size: int, cache: Path, compute: bool = True) -> BaseReference | None:  # fmt: skip
    """The one way every path gets a base reference: the cache entry keyed by everything its numbers depend
    on, checked against ``identity``, or computed from ``model`` (which must be the base now) into it.

    ``compute`` False (the base is not in hand): only a cached reference, else None.
    """
    directory = cache / "refs" / reference_key(identity, tok, seqs, top_k, mode)
    ref = cached_reference(directory, seqs, identity)
    if ref is None and compute:
        ref = save_reference(model, seqs, batch_size, directory, top_k, mode, identity)
    return ref


PER_POSITION = ("entropy", "top1", "top1_p", "target_p", "logp", "topk_idx", "topk_logp", "tail_logp", "mean_emb")
"""BaseReference arrays with one row per target position."""


def cached_reference(
    directory: Path, seqs: list[Sequence], identity: dict[str, Any] | None = None
) -> BaseReference | None:
    """The base reference cached in ``directory``; None when there is none, or when it is damaged
    (truncated or garbage files, rows that do not fit the corpus) or was made for another ``identity``:
    it is a cache, so such an entry is discarded (with a warning logged), to be computed again, rather
    than failing the command or serving another model."""
    if not directory.exists():
        return None
    try:
        # the zip's own CRCs first: np.load also leaves its file open when the archive is damaged
        with zipfile.ZipFile(directory / "meta.npz") as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"meta.npz member {bad} fails its CRC check")
        ref = BaseReference.load(directory, tuple(seqs))
        problem = None if identity is None else identity_problem(ref.identity, identity)
        if problem:
            raise ValueError(f"not this model's reference: {problem}")
        if ref.top1_p is None or ref.target_p is None:  # from before these probabilities were stored
            log.info(f"base reference cache {directory.name} predates the stored top-token and next-token "
                     "probabilities; computing it again")
            discard(directory)
            return None
        for name in PER_POSITION:
            a = getattr(ref, name, None)
            if a is not None and (a.ndim == 0 or a.shape[0] != ref.n_tokens):
                raise ValueError(f"{name} has {a.shape} rows for {ref.n_tokens} positions")
        if not np.isfinite(ref.entropy).all():
            raise ValueError("non-finite base entropy")
        stored = [n for n in ("logp", "mean_emb", "topk_idx") if getattr(ref, n, None) is not None]
        if len(stored) != 1:  # a file of the reference is missing (or one too many)
            raise ValueError(f"the base distribution is stored as {stored or 'nothing'}")
        parts = {"topk_idx": ("topk_logp", "tail_logp"), "mean_emb": ("head_check",)}.get(stored[0], ())
        if any(getattr(ref, n, None) is None for n in parts):
            raise ValueError(f"{stored[0]} without {', '.join(parts)}")
        return ref
    except Exception as e:  # whatever is wrong with a cache entry, it is recomputed
        log.warning(f"base reference cache {directory.name} is damaged ({type(e).__name__}: {e}); computing it again")
        discard(directory)
        return None


def save_reference(
    model: Any, seqs: list[Sequence], batch_size: int, directory: Path, top_k: int | None, mode: str = "logits",
    identity: dict[str, Any] | None = None,
) -> BaseReference:
    """Compute a base reference into ``directory`` (with its ``identity``) and load it; a half-written one never
    carries the final name (when another process finished the same reference first, theirs is kept)."""

    def fill(tmp: Path) -> None:
        compute_reference(model, seqs, batch_size, tmp, top_k, mode)
        if identity is not None:
            (tmp / IDENTITY_FILE).write_text(json.dumps(identity, sort_keys=True), encoding="utf-8")

    publish_dir(directory, fill, replace=False)
    return BaseReference.load(directory, tuple(seqs))


def first_sequences(ref: BaseReference, n_sequences: int) -> BaseReference:
    """The reference restricted to the corpus' first ``n_sequences`` sequences (a quick check of a cached one)."""
    seqs = ref.sequences[:n_sequences]
    n = sum(s.n_targets for s in seqs)
    cut = {f.name: getattr(ref, f.name)[:n] for f in fields(ref) if f.name in PER_POSITION
           and isinstance(getattr(ref, f.name), np.ndarray)}  # fmt: skip
    return replace(ref, sequences=seqs, **cut)
