"""Terminal output for the commands: tables on stdout, progress lines on stderr, library chatter kept quiet.

Shared by :mod:`forgetscale.cli` and the commands that live with their stage (``probes/command.py``,
``report/command.py``), so none of them imports another's command module. Nothing heavy is imported
at module level: ``forgetscale --help`` must not import torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def print_rows(rows: list[dict[str, Any]], cols: list[str]) -> None:
    """Print ``rows`` as a table of the columns ``cols``, right-aligned, one header line; a missing value is ``-``."""
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def fmt(v: Any) -> str:
    """One printed value: ``-`` for None, a float to 4 decimals (4 significant digits when tiny or huge)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.4g}"
    return str(v)


def log_stderr(msg: str) -> None:
    """The commands' progress log: one line on stderr, flushed at once."""
    print(msg, file=sys.stderr, flush=True)


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
