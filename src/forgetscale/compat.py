"""The one place that knows how transformers' forward-pass API differs between versions.

- transformers 5.x renamed the forward argument ``past_key_values`` to
  ``cache`` (and the output field with it); the old name still works but warns,
  and is due to go. The name is read off the model's own ``forward`` signature.
- Newer versions accept a boolean ``logits_to_keep`` mask and project only those
  positions onto the vocabulary; older ones fall back to full logits.

pyproject accepts transformers 4.56 onwards, so both sides must work.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module must not import torch (the CLI's --help stays fast)
    import torch


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for passing a key/value cache to ``model``'s forward."""
    return {_cache_name(type(_unwrap(model))): cache}


def kept_logits(model: Any, ids: torch.Tensor, attn: torch.Tensor, keep: torch.Tensor, **kw: Any) -> torch.Tensor:
    """Logits at the ``keep`` positions, flattened to (n_kept, V) in row-major order.

    Skipping the vocabulary projection elsewhere saves a fifth of a small model's
    FLOPs wherever only some positions are scored (responses, not prompts).
    """
    try:
        logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep, **kw).logits
        if logits.ndim == 2:
            return logits
    except (TypeError, IndexError):  # no mask support: the mask was rejected or read as positions
        pass
    return model(input_ids=ids, attention_mask=attn, **kw).logits[keep]


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
