"""forgetscale: measure, predict and reduce the forgetting caused by fine-tuning language models.

The public API, loaded on first use so that ``import forgetscale`` stays light (no torch):

- :class:`ForgettingCallback`: forgetting inside a ``transformers.Trainer`` / TRL ``SFTTrainer`` run;
- :func:`measure_forgetting`: an adapter or fine-tuned model against its base (:class:`ForgettingResult`);
- :func:`run_study`: a whole study (sweep, probes, fits, report), as ``forgetscale run``;
- :func:`probe`: behaviour probes of a study's base model and adapters, as ``forgetscale probe``;
- :func:`load_results`: a study's rows, fits, runs and probes as tables; :func:`fit_laws`: the scaling laws on rows;
- :func:`fit`, :func:`fit_csv`, :func:`findings`, :func:`predict`, :func:`plan`, :func:`compare`,
  :func:`write_report`: a study directory's laws, findings, predictions, plans, mitigations and report,
  one function per command (:mod:`forgetscale.api` lists them);
- :func:`load_base`: a base model and tokenizer, the built-in default included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ForgettingCallback",
    "ForgettingResult",
    "Results",
    "__version__",
    "compare",
    "findings",
    "fit",
    "fit_csv",
    "fit_laws",
    "lm_eval_flips",
    "load_base",
    "load_results",
    "measure_forgetting",
    "plan",
    "predict",
    "probe",
    "run_study",
    "write_report",
]
_EXPORTS = {name: "forgetscale.api" for name in __all__ if name != "__version__"}

if TYPE_CHECKING:
    from forgetscale.api import (
        ForgettingCallback,
        ForgettingResult,
        Results,
        compare,
        findings,
        fit,
        fit_csv,
        fit_laws,
        lm_eval_flips,
        load_base,
        load_results,
        measure_forgetting,
        plan,
        predict,
        probe,
        run_study,
        write_report,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'forgetscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
