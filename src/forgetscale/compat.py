"""The one place that knows how transformers' forward-pass API differs between versions.

- transformers 5.x renamed the forward argument ``past_key_values`` to
  ``cache`` (and the output field with it); the old name still works but warns,
  and is due to go. The name is read off the model's own ``forward`` signature.
- Newer versions accept a boolean ``logits_to_keep`` mask and project only those
  positions onto the vocabulary; older ones fall back to full logits.

pyproject accepts transformers 4.56 onwards, so both sides must work.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module must not import torch (the CLI's --help stays fast)
    import torch


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for passing a key/value cache to ``model``'s forward."""
    return {_cache_name(type(_unwrap(model))): cache}


_MASK_SUPPORT: dict[type, bool] = {}
"""Per model class: does its forward take a boolean ``logits_to_keep`` mask? Learnt on first use."""


def kept_logits(model: Any, ids: torch.Tensor, attn: torch.Tensor, keep: torch.Tensor, **kw: Any) -> torch.Tensor:
    """Logits at the ``keep`` positions, flattened to (n_kept, V) in row-major order.

    Skipping the vocabulary projection elsewhere saves a fifth of a small model's
    FLOPs wherever only some positions are scored (responses, not prompts).
    """
    cls = type(_unwrap(model))
    if cls not in _MASK_SUPPORT:
        # A forward that rejects the mask (or reads it as positions) may fail only after its layers
        # ran, and by then it has appended this batch to the key/value cache passed in ``kw``: a retry
        # on that cache would see the batch twice, at shifted positions. So the first call for a model
        # class tries on copies of its arguments, and later calls go straight to the path that works.
        logits = _masked(model, ids, attn, keep, {k: copy.deepcopy(v) for k, v in kw.items()})
        _MASK_SUPPORT[cls] = logits is not None
        if logits is not None:
            return logits
    elif _MASK_SUPPORT[cls]:
        logits = _masked(model, ids, attn, keep, kw)
        if logits is None:  # pragma: no cover - the same class behaving differently
            raise RuntimeError(f"{cls.__name__} rejected a logits_to_keep mask it accepted before")
        return logits
    return model(input_ids=ids, attention_mask=attn, **kw).logits[keep]


def _masked(model: Any, ids: torch.Tensor, attn: torch.Tensor, keep: torch.Tensor, kw: dict[str, Any]) -> Any:
    """Logits (n_kept, V) through the mask, or None when the model has no mask support."""
    try:
        logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep, **kw).logits
    except (TypeError, IndexError):  # the mask was rejected, or read as positions and overran
        return None
    return logits if logits.ndim == 2 else None  # a 3-D result: the mask was read as positions


def output_cache(out: Any) -> Any:
    """The key/value cache a forward pass returned (None when it returned none)."""
    for name in ("cache", "past_key_values"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return None


def _unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (whose forward takes ``**kwargs``)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@functools.cache
def _cache_name(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
