"""forgetscale: measure, predict and reduce the forgetting caused by fine-tuning language models.

The public API, loaded on first use so that ``import forgetscale`` stays light (no torch):

- :class:`ForgettingCallback`: forgetting inside a ``transformers.Trainer`` / TRL ``SFTTrainer`` run;
- :func:`measure_forgetting`: an adapter or fine-tuned model against its base (:class:`ForgettingResult`);
- :func:`load_study`: a study's rows, fits and runs as tables; :func:`fit_laws`: the scaling laws on rows;
- :func:`load_base`: a base model and tokenizer, the built-in default included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ForgettingCallback": "forgetscale.callback",
    "ForgettingResult": "forgetscale.api",
    "Study": "forgetscale.api",
    "measure_forgetting": "forgetscale.api",
    "load_study": "forgetscale.api",
    "fit_laws": "forgetscale.api",
    "load_base": "forgetscale.api",
}
__all__ = [
    "ForgettingCallback",
    "ForgettingResult",
    "Study",
    "__version__",
    "fit_laws",
    "load_base",
    "load_study",
    "measure_forgetting",
]

if TYPE_CHECKING:
    from forgetscale.api import ForgettingResult, Study, fit_laws, load_base, load_study, measure_forgetting
    from forgetscale.callback import ForgettingCallback


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'forgetscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
