"""Terminal output: numbers with their uncertainty, tables, progress lines, the log handler, quiet libraries.

Every number forgetscale prints with its ± or interval goes through :func:`format_pm` or
:func:`format_interval`, so the CLI, the progress lines and :class:`forgetscale.ForgettingResult`
print a metric the same way. Library code logs through :mod:`logging` (``forgetscale.*`` loggers);
the CLI installs one stderr handler (:func:`log_to_stderr`). Nothing heavy is imported at module
level: ``forgetscale --help`` must not import torch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forgetscale.schema import FORGETTING_METRICS

log = logging.getLogger(__name__)


def print_rows(rows: list[dict[str, Any]], cols: list[str]) -> None:
    """Print ``rows`` as a table of the columns ``cols``, right-aligned, one header line; a missing value is ``-``."""
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def fmt(v: Any) -> str:
    """One printed value: ``-`` for None, a float to 4 decimals (4 significant digits when tiny or huge).

    >>> fmt(None), fmt(1.23456), fmt(1.5e-5), fmt(3)
    ('-', '1.2346', '1.5e-05', '3')
    """
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.4g}"
    return str(v)


def _known(x: Any) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def format_pm(value: float, se: float | None = None, digits: int = 4) -> str:
    """``value ± se`` to ``digits`` decimals; the value alone when its standard error is unknown (None or NaN).

    >>> format_pm(2.0, 0.01), format_pm(0.2, float("nan"), 5)
    ('2.0000 ± 0.0100', '0.20000')
    """
    return f"{value:.{digits}f}" + (f" ± {se:.{digits}f}" if _known(se) else "")


def format_interval(value: Any, lo: Any, hi: Any) -> str:
    """``value [lo, hi]`` (each as :func:`fmt` prints it); the value alone when the interval is unknown.

    >>> format_interval(1.5, 1.25, 1.75), format_interval(1.5, None, None)
    ('1.5000 [1.2500, 1.7500]', '1.5000')
    """
    return fmt(value) + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "")


def metric_digits(name: str) -> int:
    """Decimals a metric is printed with: KL is small, so one more."""
    return 5 if name == "forget_kl" else 4


def format_metrics(m: Mapping[str, Any], names: tuple[str, ...] = FORGETTING_METRICS) -> str:
    """One line: ``forget_ce 2.1234 ± 0.0123  forget_kl ...`` (± only where a standard error is known).

    >>> format_metrics({"forget_ce": 2.0, "forget_ce_se": 0.01, "forget_kl": 0.0, "base_entropy": 2.0})
    'forget_ce 2.0000 ± 0.0100  forget_kl 0.00000  base_entropy 2.0000'
    """
    return "  ".join(f"{k} {format_pm(m[k], m.get(f'{k}_se'), metric_digits(k))}"
                     for k in names if m.get(k) is not None)  # fmt: skip


def run_label(run: Any) -> str:
    """A run's dataset, method and size as progress lines show them (plain LoRA: ``news r=4`` as always).

    >>> from forgetscale.config import RunConfig
    >>> run_label(RunConfig()), run_label(RunConfig(method={"kind": "full", "blocks": 2}))
    ('instruct r=4', 'instruct full blocks=2')
    """
    label = run.method_label
    size = {"lora": f"r={run.lora.rank}", "dora": f"r={run.lora.rank}",
            "full": f"blocks={run.method.blocks or 'all'}"}.get(run.method.kind)  # fmt: skip
    return " ".join(x for x in (run.data.dataset, None if label == "lora" else label, size) if x)


def hms(seconds: float) -> str:
    """``12m05s``; ``?`` for an unknown (NaN) duration.

    >>> hms(725.2), hms(float("nan"))
    ('12m05s', '?')
    """
    if seconds != seconds:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


@dataclass
class Progress:
    """Logs ``[label] step N/steps  metrics  elapsed  ETA`` lines; the ETA extrapolates the pace so far.

    One instance follows the steps of every run of a study (``total_steps`` in all); ``label``
    names the run the next line is about.
    """

    total_steps: int
    label: str = ""
    done_steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_step: int = 0
    """The step the current run last reported (steps between two reports count as done)."""

    def switch(self, label: str, last_step: int) -> None:
        """The next line is about another run, which last reported ``last_step`` (interleaved runs on Ray)."""
        self.label, self.last_step = label, last_step

    def discard(self, steps: int) -> None:
        """``steps`` done steps will be trained again (a run lost its worker)."""
        self.done_steps -= steps

    def step(self, step: int, steps: int, row: Mapping[str, Any]) -> None:
        """Log one run's measurement at ``step`` of its ``steps``."""
        if step < self.last_step or step == 0:
            self.last_step = 0
        self.done_steps += step - self.last_step
        self.last_step = step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done_steps * (self.total_steps - self.done_steps) if self.done_steps else float("nan")
        metrics = "  ".join(f"{k} {format_pm(row[k], row.get(f'{k}_se'), metric_digits(k))}"
                            for k in ("ft_loss", "forget_ce", "forget_kl") if row.get(k) is not None)  # fmt: skip
        log.info(f"[{self.label}] step {step:>4}/{steps}  {metrics}  elapsed {hms(elapsed)}  ETA {hms(eta)}")


class StderrHandler(logging.Handler):
    """Each record as its bare message on the *current* ``sys.stderr``, flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the program
            self.handleError(record)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show ``forgetscale``'s log lines on stderr, as the commands print them (idempotent)."""
    root = logging.getLogger("forgetscale")
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        root.addHandler(StderrHandler())
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)


def quiet_libraries() -> None:
    """Keep library chatter (progress bars, advisory warnings) out of the study log. Imports transformers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    import transformers

    # deprecations raised inside PEFT/transformers are theirs to fix, not the user's to read
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
