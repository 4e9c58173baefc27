"""Forgetting inside anyone's training loop: a ``transformers.TrainerCallback``.

:class:`ForgettingCallback` measures the model a ``Trainer`` (or TRL's
``SFTTrainer``, or any subclass) is training against the base it started from,
at the Trainer's own evaluations or on a schedule of its own, and logs the
numbers through the Trainer's logging, so that every ``report_to`` integration
(W&B, TensorBoard, MLflow, ...) receives them. It reuses the pieces a study is
made of: the corpus protocol (:mod:`forgetscale.data.corpus`), the base
reference and its disk cache (:mod:`forgetscale.reference`), the
metrics (:func:`forgetscale.forgetting.measure`) and the fp32 evaluation of a
mixed-precision model (:func:`forgetscale.train.full_precision`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel
from transformers import Trainer, TrainerCallback

from forgetscale.config import ForgettingConfig, ModelConfig, target_suffix
from forgetscale.console import format_metrics, log_to_stderr
from forgetscale.data.corpus import build_corpus, check_corpus
from forgetscale.errors import UserError
from forgetscale.forgetting import measure
from forgetscale.models import cache_dir, resolve, source_fingerprint
from forgetscale.reference import (
    BaseReference,
    cached_reference,
    first_sequences,
    head_module_name,
    reference_identity,
    reference_key,
    save_reference,
)
from forgetscale.run import provenance
from forgetscale.schema import FORGETTING_METRICS, METRIC_VERSION, Measurement
from forgetscale.store import open_study_to_write
from forgetscale.task import TASK_METRICS, held_out_metrics, task_reference, trainer_task_sequences
from forgetscale.train import full_precision

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LOGGED = (*(n for m in FORGETTING_METRICS for n in (m, f"{m}_se")), "top1_agree", "kl_p50", "kl_p99")
"""What goes to the Trainer's log (the standard errors when :func:`~forgetscale.forgetting.measure` gives them)."""

VERIFY_KL = 1e-4
"""Largest KL (nats, mean over the first batch of the corpus) between a cached base reference
and the base model in hand for the cache to count as that model's. Two fp32 evaluations of one
model differ by ~1e-7 (summation order); another checkpoint of it differs by orders more."""


class ForgettingCallback(TrainerCallback):
    """Measure forgetting against the base model during ``Trainer.train()``.

    Attach it like any callback: ``Trainer(..., callbacks=[ForgettingCallback(tokenizer)])``.
    The base reference is taken from the model the Trainer holds before the first
    update (``on_train_begin``) and cached on disk under the same key a study or
    ``forgetscale forgetting`` uses, so each reuses what the others computed:

    - a PEFT model: the base is read through the disabled adapter, at any step;
      a cached reference is checked against it before use, and again after training
      (the base weights must not have moved);
    - a full fine-tune: the reference must be taken before the first update. It
      cannot be re-derived from fine-tuned weights: resuming from a checkpoint
      needs the reference already in the cache (it is then used unchecked).

    Evaluations run in fp32 whatever precision the Trainer trains in (mixed
    precision is taken off the forward pass; half-precision weights are upcast in
    place for the measurement and restored exactly), so a step-0 KL is 0.

    At each measurement ``forget_ce``, ``forget_kl`` (each with ``*_se``, its
    standard error over sequences, when the installed metrics provide it),
    ``base_entropy``, ``forget_top1_ce``, ``data_loss``, ``top1_agree`` (the share of positions whose top
    token is the base's) and ``kl_p50``/``kl_p99`` (the per-position KL's median and 99th percentile) go through
    ``Trainer.log``: into ``state.log_history`` and every ``report_to``
    integration. ``history`` keeps them too, with the step and token count.

    Args:
        tokenizer: the model's tokenizer; None takes the Trainer's ``processing_class``.
        corpus: ``self`` (the base model's own sampled answers to shipped prompts),
            ``wikitext``, a text file, or ``hf:NAME[:CONFIG[:SPLIT]]`` (a hub dataset's ``text`` column).
        seq_len, batch_size, top_k, n_prompts, max_new_tokens, max_blocks, reference: as in
            ``forgetscale forgetting`` and a study's ``forgetting.*`` keys (a full fine-tune, and
            a LoRA on the LM head, always get a ``logits`` reference: they change the head).
        eval_steps: None measures at the Trainer's evaluations (``eval_strategy``);
            an int, every that many optimizer steps; a list, at those steps.
        at_start: also measure before the first update (step 0: KL is 0 there).
        at_end: also measure after the last update.
        store: a study directory: each measurement becomes a row of its
            ``study.sqlite``, written under the study's lock, so ``forgetscale fit``/``report``
            work on it. ``ft_loss`` there means what it means in a study's rows: the held-out
            response-token cross-entropy (from ``task``/``eval_dataset``; None without held-out
            examples); the Trainer's own ``eval_loss`` is kept apart as ``eval_loss``. P is the
            model's trainable parameter count (any PEFT method, or a full fine-tune), and the
            LoRA rank is recorded where there is one (0 otherwise), and the method (``lora``, ``dora``,
            ``ia3``, ... or ``full``) by which the laws group runs with a study's.
        run_id: the run's id in the store. Default: a new unique id per training (``cb-`` and 12
            random hex digits); pass one to resume a run from a checkpoint. A run already
            finished in the store is never overwritten: its id is refused.
        dataset: the label the store's laws group runs by (runs on one fine-tuning set share it).
        model_fingerprint: the base model's cache identity; default: derived from where
            it was loaded (the same value a study computes), else a hash of its weights.
        cache: the cache directory (default ``FORGETSCALE_CACHE`` or the user cache).
        prefix: prepended to the logged keys (``"eval_"`` files them under ``eval/`` in W&B).
        fp32: evaluate in fp32 (default). False evaluates half-precision weights as they are.
        task: held-out fine-tuning examples for ``task_kl`` (KL to the base on the new task's responses;
            :mod:`forgetscale.task`): chat/text examples or tokenized rows (``input_ids``, ``labels``). None
            takes the Trainer's ``eval_dataset``; an empty list measures no ``task_kl``.
        task_examples: at most this many of them.
        verbose: log one line per measurement (logger ``forgetscale.callback``, level INFO; shown on
            stderr unless the application configured logging itself).

    Example (``examples/callback_sft.py`` is the whole script)::

        trainer = Trainer(model=peft_model, args=args, train_dataset=train, eval_dataset=held,
                          callbacks=[ForgettingCallback(tokenizer, "self")])
        trainer.train()   # logs forget_ce, forget_kl, ... at every evaluation
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        corpus: str = "self",
        *,
        seq_len: int = 128,
        batch_size: int = 8,
        top_k: int | None = None,
        n_prompts: int = 12,
        max_new_tokens: int = 48,
        max_blocks: int | None = None,
        reference: str = "hidden",
        eval_steps: int | Iterable[int] | None = None,
        at_start: bool = True,
        at_end: bool = True,
        store: str | Path | None = None,
        run_id: str | None = None,
        dataset: str = "custom",
        model_fingerprint: str | None = None,
        cache: str | Path | None = None,
        prefix: str = "",
        fp32: bool = True,
        task: Iterable[Any] | None = None,
        task_examples: int = 16,
        verbose: bool = True,
    ) -> None:
        try:
            self.config = ForgettingConfig(
                corpus=str(corpus), seq_len=seq_len, batch_size=batch_size, top_k=top_k, n_prompts=n_prompts,
                max_new_tokens=max_new_tokens, max_blocks=max_blocks, reference=reference,
            )  # fmt: skip
        except ValueError as e:  # pydantic's message names the field
            raise UserError(f"ForgettingCallback: {e}") from None
        check_corpus(self.config)
        if isinstance(eval_steps, int) and eval_steps < 1:
            raise UserError(f"ForgettingCallback: eval_steps must be a positive int or a list of steps ({eval_steps})")
        self.tokenizer = tokenizer
        self.eval_steps = eval_steps if eval_steps is None or isinstance(eval_steps, int) else frozenset(eval_steps)
        self.at_start, self.at_end = at_start, at_end
        self.store = Path(store) if store is not None else None
        self.run_id, self.dataset = run_id, dataset
        self.model_fingerprint = model_fingerprint
        self.cache = Path(cache) if cache is not None else None
        self.prefix, self.fp32, self.verbose = prefix, fp32, verbose
        self.history: list[Measurement] = []
        """Every measurement: ``step``, ``tokens``, ``ft_loss`` (or None) and the metrics."""
        if verbose and not logging.getLogger("forgetscale").hasHandlers():
            log_to_stderr()  # asked for lines, and nothing else would show them
        self.reference: BaseReference | None = None
        self.task, self.task_examples = task, task_examples
        self.task_reference: BaseReference | None = None
        """The base on the held-out fine-tuning examples (``task_kl``); None without any."""
        self.base_source = ""
        """How the reference was obtained: computed or cached, and from which view of the model."""
        self._trainer: Trainer | None = None
        self._measured: set[int] = set()
        self._deferred: set[int] = set()
        self._eval_loss: dict[int, float] = {}
        self._pending: dict[str, float] = {}
        self._logging = False
        self._eval_seconds = 0.0
        self._t0 = 0.0
        self._run_id: str | None = None

    # ---------------------------------------------------------------- wiring
    def attach(self, trainer: Trainer) -> Trainer:
        """Add this callback to ``trainer`` after its construction (``callbacks=[...]`` works as well)."""
        trainer.add_callback(self)
        self._trainer = trainer
        return trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self._t0 = time.perf_counter()
        self._trainer = self._trainer or _calling_trainer(self)
        if self._trainer is None:
            warnings.warn(
                "ForgettingCallback: the Trainer running it was not found; its metrics reach only the "
                "callbacks listed after it. Use `callback.attach(trainer)` to log through the Trainer.",
                stacklevel=2,
            )
        tok = self.tokenizer or _tokenizer_of(kw.get("processing_class"))
        if tok is None:
            raise UserError("ForgettingCallback: pass the tokenizer (the Trainer has no processing_class)")
        self.tokenizer = tok
        self._prepare_reference(model, tok, state.global_step)
        self._prepare_task(model, tok, state.global_step)
        if self.store is not None and state.is_world_process_zero:
            self._open_run(args, state, model)
        if self.at_start and getattr(args, "eval_on_start", False):
            self._deferred.add(state.global_step)  # the Trainer evaluates next: measure then, with its eval_loss
        elif self.at_start:
            self._measure(model, args, state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        step = state.global_step
        e = self.eval_steps
        due = (isinstance(e, int) and step % e == 0) or (isinstance(e, frozenset) and step in e)
        due = due or (self.at_end and state.max_steps and step >= state.max_steps)
        if not due or step in self._measured:
            return
        if control.should_evaluate:  # the Trainer evaluates at this step: measure then, with its eval_loss
            self._deferred.add(step)
        else:
            self._measure(model, args, state, control)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, metrics: Any = None, **kw: Any):
        step = state.global_step
        if metrics and isinstance(metrics.get("eval_loss"), (int, float)):
            self._eval_loss[step] = float(metrics["eval_loss"])
        if self.reference is None or step in self._measured:
            return
        if self.eval_steps is None or step in self._deferred:
            self._measure(model, args, state, control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        # fallback without a Trainer handle: ride on the next log call
        if self._pending and not self._logging and logs is not None:
            logs.update(self._pending)
            self._pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.reference is None:
            return
        if self.at_end and state.global_step not in self._measured:  # stopped early (e.g. EarlyStoppingCallback)
            self._measure(model, args, state, control)
        if _is_peft(model):
            kl = self._verify(model)
            if kl > VERIFY_KL:
                warnings.warn(
                    f"ForgettingCallback: with its adapter disabled the model no longer matches the base "
                    f"reference (KL {kl:.3g} nats on the first batch): base weights were trained too, "
                    "so forgetting here also counts those changes",
                    stacklevel=2,
                )
        if self.store is not None and state.is_world_process_zero:
            total = time.perf_counter() - self._t0
            with open_study_to_write(self.store, create=True) as s:
                s.finish_run(self._run_id, {"train": total - self._eval_seconds, "eval": self._eval_seconds,
                                            "total": total})  # fmt: skip

    # ---------------------------------------------------------------- the base reference
    def _prepare_reference(self, model: Any, tok: Any, step: int) -> None:
        cfg, cache = self.config, self.cache or cache_dir()
        peft = _is_peft(model)
        mode = self._mode(model, peft)
        fresh = peft or step == 0  # the base itself is in hand
        view = "the disabled adapter" if peft else "the model before its first update"
        fp = self.model_fingerprint or model_fingerprint(model)
        tok = _with_pad(tok)
        with self._evaluating(model), base_view(model):
            # `self` samples from the base; a cached sample needs no model
            try:
                seqs = build_corpus(cfg, tok, model if fresh else None, fp, cache)
            except RuntimeError:  # `self` not sampled yet, and no base model to sample it from
                raise UserError(
                    f"ForgettingCallback: training resumes at step {step} on a fully fine-tuned model and the "
                    "`self` corpus was never sampled from its base, which cannot be re-derived from fine-tuned "
                    "weights: start from step 0, use a text corpus, or attach the callback to a PEFT model."
                ) from None
            for attempt in (0, 1):
                identity = reference_identity(model, fp, self._dtype(model))
                directory = cache / "refs" / reference_key(identity, tok, seqs, cfg.top_k, mode)
                ref = cached_reference(directory, seqs, identity)
                if ref is not None:
                    if not fresh:
                        self.base_source = f"cached {directory.name}, unchecked (full fine-tune resumed at step {step})"
                        warnings.warn(f"ForgettingCallback: {self.base_source}", stacklevel=3)
                        break
                    self.reference = ref
                    try:
                        kl = self._verify(model, in_base_view=True)
                    except RuntimeError as e:  # a hidden-state reference refuses another model's LM head
                        if "head" not in str(e):
                            raise
                        kl = math.inf
                    if kl <= VERIFY_KL:
                        self.base_source = f"cached {directory.name}, checked against {view} (KL {kl:.1e})"
                        break
                    if attempt == 0:
                        warnings.warn(
                            f"ForgettingCallback: the cached base reference {directory.name} does not match this "
                            f"model (KL {kl:.3g} on the first batch); keying the cache by the weights instead",
                            stacklevel=3,
                        )
                        fp = weights_fingerprint(model)
                        continue
                    raise RuntimeError(f"base reference {directory} does not match the model it was computed from")
                if not fresh:
                    raise UserError(
                        f"ForgettingCallback: training resumes at step {step} on a fully fine-tuned model and no "
                        "base reference is cached for it. A full fine-tune's base cannot be re-derived from its "
                        "fine-tuned weights: start from step 0 (or attach the callback to a PEFT model)."
                    )
                ref = save_reference(model, seqs, cfg.batch_size, directory, cfg.top_k, mode, identity)
                self.base_source = f"computed from {view} into {directory.name}"
                break
        self.reference = ref
        self._fingerprint = fp

    def _prepare_task(self, model: Any, tok: Any, step: int) -> None:
        """The base reference on the held-out examples, as the corpus one (only from the cache when resumed)."""
        seqs = trainer_task_sequences(self.task, self._trainer, tok, self.task_examples)
        if seqs:
            peft = _is_peft(model)
            with self._evaluating(model), base_view(model):
                identity = reference_identity(model, self._fingerprint, self._dtype(model))
                self.task_reference = task_reference(
                    model, tok, identity, seqs, self.config.top_k, self._mode(model, peft),
                    self.config.batch_size, self.cache or cache_dir(), compute=peft or step == 0)  # fmt: skip

    def _verify(self, model: Any, in_base_view: bool = False) -> float:
        """KL between the reference and the base view of ``model`` on the first batch of the corpus."""
        assert self.reference is not None
        sub = first_sequences(self.reference, self.config.batch_size)
        if in_base_view:
            return measure(model, sub, self.config.batch_size)["forget_kl"]
        with self._evaluating(model), base_view(model):
            return measure(model, sub, self.config.batch_size)["forget_kl"]

    def _mode(self, model: Any, peft: bool) -> str:
        """The exact reference's storage, as a study chooses it: ``hidden`` needs the base's LM head at
        every evaluation, which a full fine-tune trains and a LoRA on the head changes: ``logits`` then."""
        if not peft:
            return "logits"
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = head_module_name(base)
        adapted = set()
        for c in (getattr(model, "peft_config", None) or {}).values():
            for attr in ("target_modules", "modules_to_save"):
                names = getattr(c, attr, None) or ()
                adapted |= {names} if isinstance(names, str) else set(names)
        return "logits" if head in adapted else self.config.reference

    def _dtype(self, model: Any) -> str:
        """The dtype part of the cache key: the weights' dtype, marked when they are evaluated upcast."""
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return dtype if dtype == "float32" or not self.fp32 else f"{dtype}-fp32eval"

    @contextmanager
    def _evaluating(self, model: Any) -> Iterator[None]:
        with full_precision(model):
            if self.fp32:
                with upcast(model):
                    yield
            else:
                yield

    # ---------------------------------------------------------------- measuring and logging
    def _measure(self, model: Any, args: Any, state: Any, control: Any) -> None:
        assert self.reference is not None
        t = time.perf_counter()
        task: dict[str, float] = {}
        with self._evaluating(model):
            m = measure(model, self.reference, self.config.batch_size)
            if self.task_reference is not None:
                task = held_out_metrics(model, self.task_reference, self.config.batch_size)
                m.update({k: task[k] for k in TASK_METRICS})
        self._eval_seconds += time.perf_counter() - t
        step = state.global_step
        self._measured.add(step)
        # ft_loss is a study's: the held-out response-token CE, from the same forward as task_kl; the Trainer's
        # eval_loss (its own loss over its own eval set, other tokens, other weighting) keeps its name
        row = Measurement(step=step, tokens=int(state.num_input_tokens_seen or 0), ft_loss=task.get("ft_loss"),
                          ft_loss_se=task.get("ft_loss_se"), eval_loss=self._eval_loss.get(step),
                          metric_version=METRIC_VERSION, n_eval_tokens=int(m.pop("n_tokens")), **m)  # fmt: skip
        self.history.append(row)
        logged = {**m, **{f"heldout_{k}": v for k, v in task.items() if k.startswith("ft_loss")}}
        self._log({self.prefix + k: float(logged[k]) for k in (*LOGGED, *TASK_METRICS, "heldout_ft_loss",
                                                               "heldout_ft_loss_se") if logged.get(k) is not None},
                  control)  # fmt: skip
        if self.store is not None and state.is_world_process_zero:  # one writer under distributed training
            self._write_row(row)
        if self.verbose and state.is_world_process_zero:
            log.info(f"[forgetscale] step {step}: {format_metrics(m, (*FORGETTING_METRICS, 'task_kl'))}")

    def _log(self, logs: dict[str, float], control: Any) -> None:
        if self._trainer is None:
            self._pending.update(logs)
            return
        # Trainer.log itself (not a subclass override: TRL's SFTTrainer.log would flush its own
        # averaged training metrics into this call). The handler's on_log resets should_log,
        # which at on_step_end would cancel the Trainer's own loss log for this step: restore it.
        should_log = control.should_log
        self._logging = True
        try:
            Trainer.log(self._trainer, dict(logs))
        finally:
            self._logging = False
            control.should_log = should_log
            self._trainer.control.should_log = should_log

    # ---------------------------------------------------------------- the store
    def _open_run(self, args: Any, state: Any, model: Any) -> None:
        assert self.reference is not None and self.store is not None
        P, rank, lora, method = _parameters(model)
        config = {
            "source": "ForgettingCallback",
            "model": getattr(getattr(model, "config", None), "_name_or_path", None),
            "model_fingerprint": self._fingerprint,
            "forgetting": self.config.model_dump(mode="json"),
            "lora": lora,
            "method_label": method,
            "train": {k: getattr(args, k, None) for k in _TRAIN_ARGS},
        }
        config = json.loads(json.dumps(config, default=str))
        # unique per training unless the user named the run (args.run_name repeats across a sweep's trainings)
        self._run_id = str(self.run_id) if self.run_id is not None else f"cb-{uuid.uuid4().hex[:12]}"
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        with open_study_to_write(self.store, create=True) as s:
            status = s.run_status(self._run_id)
            if status == "done":
                raise UserError(
                    f"ForgettingCallback: run {self._run_id!r} is finished in {self.store}; its rows are kept: "
                    "pass another run_id (or none, for a new unique one)"
                )
            s.register_run(self._run_id, config, self.dataset, rank, method)
            ids = s.get_meta("run_ids")
            if ids is not None and self._run_id not in ids:
                s.set_meta("run_ids", [*ids, self._run_id])
            # a run resumed from a checkpoint keeps the rows it has; anything else starts clean
            if state.global_step == 0 or status != "running":
                s.start_run(self._run_id, P, provenance(self._fingerprint, "", self.reference, precision))
            self._measured |= {r["step"] for r in s.measurements(self._run_id)}

    def _write_row(self, row: Measurement) -> None:
        assert self.store is not None
        with open_study_to_write(self.store, create=True) as s:
            s.add_measurement(self._run_id, row)


_TRAIN_ARGS = (
    "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "optim", "lr_scheduler_type", "warmup_steps", "weight_decay", "bf16", "fp16", "seed",
)  # fmt: skip


def _calling_trainer(callback: TrainerCallback) -> Trainer | None:
    """The Trainer whose callback handler is calling ``callback`` right now.

    Callbacks get the model, optimizer and data loaders but not the Trainer, and
    only ``Trainer.log`` reaches every integration: the report_to callbacks come
    before user callbacks in the handler, so adding keys to ``logs`` in ``on_log``
    would miss them. Events are always dispatched from a Trainer method, so the
    Trainer is ``self`` in a frame up the stack.
    """
    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, Trainer) and callback in obj.callback_handler.callbacks:
            return obj
        frame = frame.f_back
    return None


def _tokenizer_of(processing_class: Any) -> Any:
    return getattr(processing_class, "tokenizer", processing_class)


def _with_pad(tok: Any) -> Any:
    """The corpus sampler pads batches: give a copy of a pad-less tokenizer the EOS token as pad."""
    if tok.pad_token is not None:
        return tok
    tok = copy.deepcopy(tok)
    tok.pad_token = tok.eos_token
    return tok


def _is_peft(model: Any) -> bool:
    return isinstance(model, PeftModel) or bool(getattr(model, "_hf_peft_config_loaded", False))


@contextmanager
def base_view(model: Any) -> Iterator[None]:
    """The base model: a PEFT model with its adapters disabled, any other model as it is."""
    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield
    elif getattr(model, "_hf_peft_config_loaded", False):  # adapters loaded through transformers
        model.disable_adapters()
        try:
            yield
        finally:
            model.enable_adapters()
    else:
        yield


@contextmanager
def upcast(model: Any) -> Iterator[None]:
    """Evaluate half-precision weights in fp32: upcast in place, restore exactly afterwards.

    bf16/fp16 -> fp32 -> bf16/fp16 is lossless, and only ``.data`` is swapped, so the
    optimizer's references to the parameters stay valid. Costs an fp32 copy of those
    weights while it lasts.
    """
    low = (torch.bfloat16, torch.float16)
    changed = [(t, t.dtype) for t in [*model.parameters(), *model.buffers()] if t.dtype in low]
    for t, _ in changed:
        t.data = t.data.float()
    try:
        yield
    finally:
        for t, dtype in changed:
            t.data = t.data.to(dtype)


def model_fingerprint(model: Any) -> str:
    """The base model's cache identity, as a study computes it for the same source.

    From ``config._name_or_path``: a forgetscale-converted GGUF directory gives the
    GGUF's digest; a local model directory, the digest of its weight files; a hub
    id, ``hub:ID@main``. A model with no recorded source is hashed by its weights.
    """
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    path = Path(name).expanduser()
    if name and (path / "forgetscale.json").is_file():
        return "sha256:" + json.loads((path / "forgetscale.json").read_text())["sha256"]
    if name:
        try:
            kind, p = resolve(ModelConfig(name=name))
        except UserError:
            kind, p = "", None
        if kind in ("dir", "hub", "gguf"):
            return source_fingerprint(ModelConfig(name=name), kind, p)
    return weights_fingerprint(model)


def weights_fingerprint(model: Any) -> str:
    """Hash of the base weights in memory (adapter weights excluded)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or ".modules_to_save." in name:
                continue
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return "weights:" + h.hexdigest()


def _parameters(model: Any) -> tuple[int, int, dict[str, Any] | None, str]:
    """(P trainable parameters, LoRA rank or 0, the adapter config, the method) of the model in training.

    The method is named as studies name it (:attr:`forgetscale.config.RunConfig.method_label`): ``lora``,
    ``dora`` (the named target sets appended: ``lora-mlp``), ``ia3``, another PEFT type in lower case, or
    ``full`` for a model without an adapter (all or some of its own weights training).
    """
    P = sum(p.numel() for p in model.parameters() if p.requires_grad)  # each tensor once: tied weights once
    cfg = getattr(model, "peft_config", None)
    if isinstance(cfg, dict) and cfg:
        c = next(iter(cfg.values()))
        d = c.to_dict() if hasattr(c, "to_dict") else {}
        kind = str(getattr(getattr(c, "peft_type", None), "value", getattr(c, "peft_type", "peft"))).lower()
        if kind == "lora":
            kind = "dora" if getattr(c, "use_dora", False) else "lora"
            kind += target_suffix(getattr(c, "target_modules", None))
        return P, int(getattr(c, "r", 0) or 0), d, kind
    return P, 0, None, "full"

