"""Fine-tuning with scheduled forgetting evaluations.

The engine is a stock ``transformers.Trainer`` on the model a method trains (a PEFT model, or a
copy of the base for a full fine-tune: :mod:`forgetscale.methods`) with two
additions: :class:`ScheduledEval`, a callback that measures the model at the
scheduled steps (step 0 before the first update included) and refuses to go
on once the training loss is no longer finite; and :class:`TargetsOnlyTrainer`,
which computes the same loss as the stock one but projects onto the vocabulary
only at the positions that have a label.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from forgetscale.compat import kept_logits
from forgetscale.data.encode import IGNORE_INDEX, Sequence
from forgetscale.errors import UserError
from forgetscale.fsutil import publish_dir
from forgetscale.methods import attach_lora, check_targets, detach_lora, is_identity, trainable_parameters
from forgetscale.mitigation import ReplayCollator
from forgetscale.precision import resolve as resolve_precision

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from forgetscale.config import RunConfig

__all__ = ["attach_lora", "check_targets", "detach_lora", "is_identity", "trainable_parameters", "train",
           "save_adapter", "Diverged", "ScheduledEval", "TargetsOnlyTrainer"]  # the first five live in methods

Evaluate = Callable[[torch.nn.Module, int, int], None]
"""Called as ``evaluate(model, step, tokens_seen)`` at each scheduled step."""


class Diverged(UserError):
    """The training loss became NaN or infinite: a hyperparameter problem, reported as bad input."""


@contextmanager
def full_precision(model: Any) -> Iterator[None]:
    """Run ``model`` without the mixed-precision wrapper that training put on it.

    accelerate implements bf16/fp16 training by replacing ``model.forward`` with
    an autocast-wrapped copy (the original kept as ``_original_forward``). An
    evaluation calling it would compare a bf16 model with an fp32 base reference:
    measured here, a KL of 7e-4 at step 0, where it is exactly 0.
    """
    patched, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if patched is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = patched


def _drop_autocast(model: Any) -> None:
    """After training: the model's forward is its own again (fp32 for whatever comes next)."""
    if model.__dict__.pop("_original_forward", None) is not None:
        model.__dict__.pop("forward", None)


@dataclass
class ScheduledEval(TrainerCallback):
    schedule: tuple[int, ...]
    evaluate: Evaluate
    eval_seconds: float = 0.0
    train_started: float = field(default=0.0)
    last_loss: float | None = None

    def _run(self, model: Any, state: Any) -> None:
        t = time.perf_counter()
        with full_precision(model):
            self.evaluate(model, state.global_step, int(state.num_input_tokens_seen or 0))
        self.eval_seconds += time.perf_counter() - t

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.train_started = time.perf_counter()
        if 0 in self.schedule:
            self._run(model, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None:
            self.last_loss = loss
            if not math.isfinite(loss):
                raise Diverged(
                    f"training diverged (loss {loss} at step {state.global_step}); lower train.lr or use fp32"
                )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if state.global_step in self.schedule:
            self._run(model, state)


class TargetsOnlyTrainer(Trainer):
    """The stock loss, with the vocabulary projection skipped where no label is scored.

    On chat data only the response is trained on (a third of the positions in
    the default ``instruct`` set): the other positions' logits, a 49k-wide
    projection and log-softmax each, forward and backward, are wasted. The value
    returned follows the stock causal-LM loss exactly: a sum divided by the
    Trainer's ``num_items_in_batch`` when it passes one, a token mean otherwise.

    With ``kl_weight`` set (``mitigation.kind: kl``) it adds ``kl_weight`` times
    KL(p_base || p_ft) at the same positions, normalised the same way. The base
    distribution is the same model's with its adapter disabled (PEFT's
    ``disable_adapter()``, no gradient), not a second copy of the model.
    """

    kl_weight: float | None = None

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        labels = inputs["labels"]
        targets = labels[:, 1:]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = targets != IGNORE_INDEX  # the logit at t-1 predicts token t
        logits = kept_logits(model, inputs["input_ids"], inputs.get("attention_mask"), keep)
        nll = F.cross_entropy(logits.float(), targets[targets != IGNORE_INDEX], reduction="sum")
        if self.kl_weight is not None:
            nll = nll + self.kl_weight * _kl_to_base(model, inputs, keep, logits)
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = nll / num_items_in_batch
        else:
            loss = nll / keep.sum().clamp_min(1)
        return (loss, None) if return_outputs else loss


def _kl_to_base(model: Any, inputs: dict[str, Any], keep: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over the kept positions of KL(p_base || p_ft), the base read through the disabled adapter."""
    peft_model = getattr(model, "module", model)  # under DDP: the wrapped PeftModel
    with torch.no_grad(), peft_model.disable_adapter():
        base = kept_logits(model, inputs["input_ids"], inputs.get("attention_mask"), keep)
    logp_base = F.log_softmax(base.float(), dim=-1)
    logp_ft = F.log_softmax(logits.float(), dim=-1)
    return (logp_base.exp() * (logp_base - logp_ft)).sum()


def scheduler_name(scheduler: str, warmup_steps: int) -> str:
    """The Trainer's ``lr_scheduler_type`` for ``train.scheduler`` with ``warmup_steps``.

    transformers' ``constant`` schedule ignores ``warmup_steps`` (only ``constant_with_warmup`` reads
    them), so a warmup asked for with the constant schedule would silently not happen.

    >>> scheduler_name("constant", 0), scheduler_name("constant", 8), scheduler_name("cosine", 8)
    ('constant', 'constant_with_warmup', 'cosine')
    """
    return "constant_with_warmup" if scheduler == "constant" and warmup_steps > 0 else scheduler


def train(
    peft_model: PeftModel,
    tok: PreTrainedTokenizerBase,
    cfg: RunConfig,
    train_seqs: list[Sequence],
    evaluate: Evaluate,
    replay: list[Sequence] | None = None,
) -> dict[str, float]:
    """Fine-tune ``peft_model`` in place for ``cfg.train.steps`` updates, evaluating on schedule.

    ``cfg.mitigation`` applies: ``kl`` adds the KL-to-base term to the loss; ``replay`` mixes
    ``replay`` sequences into every batch (:class:`forgetscale.mitigation.ReplayCollator`).

    Returns:
        timings in seconds: ``train`` (updates only), ``eval``, ``total``.
    """
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, TrainingArguments

    t = cfg.train
    precision = resolve_precision(t.precision)  # `auto` (outside a study): measured on this machine
    ds = Dataset.from_list([{"input_ids": list(s.ids), "labels": s.labels()} for s in train_seqs])
    callback = ScheduledEval(cfg.eval_schedule(), evaluate)
    with tempfile.TemporaryDirectory(prefix="forgetscale-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=t.steps,
            per_device_train_batch_size=t.batch_size,
            gradient_accumulation_steps=t.grad_accum,
            learning_rate=t.lr,
            optim="adafactor" if t.optimizer == "adafactor" else "adamw_torch",
            lr_scheduler_type=scheduler_name(t.scheduler, t.warmup_steps),
            warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay,
            bf16=precision == "bf16",
            # the Trainer trains where the model was placed (model.device), never elsewhere: moving it would
            # leave the references behind; on a CPU it also lets bf16 autocast run without a GPU
            use_cpu=next(peft_model.parameters()).device.type == "cpu",
            fp16=precision == "fp16",
            seed=t.seed,
            data_seed=t.seed,
            logging_strategy="steps",
            logging_steps=1,
            # the default filter hides NaN losses from the log: we want to see them
            logging_nan_inf_filter=False,
            include_num_input_tokens_seen="non_padding",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            train_sampling_strategy=t.sampling,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=False,
        )
        collator: Any = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE_INDEX)
        m = cfg.mitigation
        if m.kind == "replay":
            collator = ReplayCollator(collator, replay or [], m.replay_fraction, t.seed)
        trainer = TargetsOnlyTrainer(
            model=peft_model, args=args, train_dataset=ds, data_collator=collator, callbacks=[callback]
        )
        if m.kind == "kl":
            trainer.kl_weight = m.kl_weight
        trainer.remove_callback(PrinterCallback)  # progress goes through our callback, not raw log dicts
        start = time.perf_counter()
        try:
            trainer.train()
        finally:
            _drop_autocast(peft_model)
        total = time.perf_counter() - start
    return {"train": total - callback.eval_seconds, "eval": callback.eval_seconds, "total": total}


def save_adapter(peft_model: PeftModel, out: Path) -> None:
    """Save in stock PEFT format (a full fine-tune: stock transformers format), atomically: a half-written
    adapter never has the final name."""
    publish_dir(out, peft_model.save_pretrained)
