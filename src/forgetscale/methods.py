"""What a run trains: a PEFT method around the shared base, or a trained copy of the base.

``method.kind`` picks it (:class:`forgetscale.config.MethodConfig`):

- ``lora`` and ``dora``: PEFT's LoRA (``use_dora`` for DoRA) on ``lora.target_modules``, injected into the
  shared base in place and removed again by :func:`detach`, which hands the base back unmerged;
- ``ia3``: PEFT's IA3 rescaling vectors on PEFT's default modules for the architecture (for Llama-family
  models ``k_proj``, ``v_proj`` and ``down_proj``), injected and removed the same way;
- ``full``: a deep copy of the base, with every weight trainable, or only its last ``method.blocks``
  transformer blocks. The shared base is never written: it serves every other run and the reference.

P is what the method trains, counted once per tensor (tied weights once): for LoRA ``r (d_in + d_out)`` per
adapted layer; for DoRA that plus the magnitude vector (``d_out`` per layer), which DoRA trains; for IA3 one
vector per adapted layer; for a full fine-tune every trainable weight, norms included. Nothing is counted
that does not train (``modules_to_save`` is never set).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from forgetscale.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from forgetscale.config import LoraConfig, RunConfig


def attach(model: PreTrainedModel, run: RunConfig) -> Any:
    """The model ``run`` trains: a PEFT model around ``model`` (undone by :func:`detach`), or a copy of it.

    The seed is set first, so the same run draws the same adapter initialisation.
    """
    kind = run.method.kind
    check_method(model, run)
    if kind in ("lora", "dora"):
        return attach_lora(model, run.lora, run.train.seed, dora=kind == "dora")
    torch.manual_seed(run.train.seed)
    if kind == "ia3":
        from peft import IA3Config, get_peft_model

        return get_peft_model(model, IA3Config(task_type="CAUSAL_LM"))
    trained = copy.deepcopy(model)  # the base serves the reference and every other run: never train it
    if run.method.blocks is not None:
        blocks = _blocks(trained)
        trained.requires_grad_(False)
        for block in blocks[-run.method.blocks :]:
            block.requires_grad_(True)
    else:
        trained.requires_grad_(True)
    return trained


def detach(trained: Any, base: PreTrainedModel) -> PreTrainedModel:
    """Undo :func:`attach`: remove a PEFT method's layers unmerged; a full fine-tune's copy is dropped."""
    if trained is base or not _is_peft(trained):
        return base
    return trained.unload()


def check_method(model: PreTrainedModel, run: RunConfig) -> None:
    """The method applies to this model (checked before anything is written); one line naming the key if not."""
    kind = run.method.kind
    if kind in ("lora", "dora"):
        check_targets(model, run.lora)
    elif kind == "ia3":
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as targets

        if model.config.model_type not in targets:
            raise UserError(f"method.kind ia3: PEFT has no default IA3 modules for model type "
                            f"{model.config.model_type!r} (it has them for e.g. {sorted(targets)[:6]})")
    elif run.method.blocks is not None:
        n = len(_blocks(model))
        if run.method.blocks > n:
            raise UserError(f"method.blocks: {run.method.blocks} is more than the model's {n} transformer blocks")


def _blocks(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks, in order: the longest ``ModuleList`` of the model (``model.layers`` for Llama)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise UserError(f"method.blocks: the model ({type(model).__name__}) has no list of transformer blocks")
    return list(max(lists, key=len))


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def attach_lora(model: PreTrainedModel, cfg: LoraConfig, seed: int, dora: bool = False) -> Any:
    """Wrap ``model`` with a fresh LoRA (or DoRA) adapter (PEFT injects it in place: undo with :func:`detach`)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_targets(model, cfg)
    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter
    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        use_rslora=cfg.use_rslora,
        use_dora=dora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def check_targets(model: PreTrainedModel, cfg: LoraConfig) -> None:
    """Every ``lora.target_modules`` name must exist in the model (checked before anything is written)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        raise UserError(f"lora.target_modules: {missing} not found in the model (it has e.g. {sorted(present)[:12]})")


def detach_lora(peft_model: Any) -> PreTrainedModel:
    """Remove the LoRA layers (without merging) and hand back the untouched base model."""
    return peft_model.unload()


def is_identity(model: Any, base: PreTrainedModel | None = None) -> bool:
    """True while the trained model is exactly its base: every LoRA/DoRA ``B`` is zero (as PEFT initialises
    it), every IA3 vector is one, or a full fine-tune's copy still equals ``base`` weight for weight."""
    named = dict(model.named_parameters())
    if _is_peft(model):
        b = [p for name, p in named.items() if "lora_B" in name]
        ia3 = [p for name, p in named.items() if "ia3_l" in name]
        return bool(b or ia3) and all(not p.any() for p in b) and all(bool((p == 1).all()) for p in ia3)
    if base is None or model is base:
        return False
    ref = dict(base.named_parameters())
    return named.keys() == ref.keys() and all(torch.equal(p, ref[k]) for k, p in named.items())


def trainable_parameters(model: Any) -> int:
    """P: the trainable parameters, each tensor once (PEFT's count for a PEFT model)."""
    if _is_peft(model):
        return int(model.get_nb_trainable_parameters()[0])
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
