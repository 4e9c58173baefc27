"""`forgetscale report DIR`: regenerate the study report from the store alone.

Heavy imports (matplotlib, jinja2) happen inside the functions, so
``forgetscale --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.errors import UserError
from forgetscale.fsutil import atomic_write
from forgetscale.store import open_study

if TYPE_CHECKING:
    from forgetscale.report.data import ReportData

log = logging.getLogger(__name__)

FORMATS = {"html": "report.html", "md": "report.md"}


def add_report_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the study report (HTML or Markdown) from the store",
        description=(
            "Regenerate the report of a study from DIR/study.sqlite alone: headline numbers, figures, fitted laws, "
            "law comparison, runs, probes, config and provenance. HTML is one self-contained file (figures inline, "
            "nothing loaded from anywhere); Markdown references its figures as SVG files in a folder beside it."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="study directory (from `forgetscale run --out DIR`)")
    p.add_argument("--format", choices=sorted(FORMATS), default="html", help="html (default) or md")
    p.add_argument(
        "--out", type=Path, metavar="FILE", help="where to write (default: DIR/report.html or DIR/report.md)"
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.dir, args.format, dest=args.out)
    print(path)
    return 0


def write_report(out: Path, fmt: str = "html", dest: Path | None = None) -> Path:
    """Write the report of the study in ``out`` and return its path.

    Args:
        out: the study directory.
        fmt: ``"html"`` or ``"md"``.
        dest: the file to write (default ``out/report.html`` or ``out/report.md``).
            For Markdown, the figures go to ``<dest stem>_figures/`` beside it.

    Returns:
        The path written. Every file is written to a temporary name and moved
        into place, so a reader never sees half a report.

    Raises:
        UserError: no store in ``out``, an unknown format, or no folder for ``dest``.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(sorted(FORMATS))}")
    out = Path(out)
    open_study(out).close()  # one line when there is no study here
    dest = Path(dest) if dest is not None else out / FORMATS[fmt]
    if not dest.parent.is_dir():
        raise UserError(f"--out {dest}: folder {dest.parent} does not exist")
    if dest.is_dir():
        raise UserError(f"--out {dest}: is a folder; name a file")

    from forgetscale.report import figures as figs
    from forgetscale.report.data import gather

    data = gather(out)
    drawn = _draw(data)
    captions = figs.captions(data.fits)  # what the bands are, from the fits' own records
    if fmt == "html":
        from forgetscale.report.html import render_html

        atomic_write(dest, render_html(data, drawn, captions))
    else:
        from forgetscale.report.html import svg_text
        from forgetscale.report.markdown import render_markdown

        fig_dir = dest.with_name(f"{dest.stem}_figures")
        fig_dir.mkdir(exist_ok=True)
        files = {}
        for name, fig in drawn.items():
            if isinstance(fig, str):
                files[name] = f"error: {fig}"
                continue
            atomic_write(fig_dir / f"{name}.svg", svg_text(fig))
            files[name] = f"{fig_dir.name}/{name}.svg"
        atomic_write(dest, render_markdown(data, files, captions))
    log.info(f"report: wrote {dest}")
    return dest


def _draw(data: ReportData) -> dict[str, Any]:
    """Every figure; one that fails is replaced by its error message, so the rest of the report is still written."""
    from forgetscale.report.figures import FIGURES

    drawn: dict[str, Any] = {}
    for name, (fn, _) in FIGURES.items():
        try:
            drawn[name] = fn(data.rows, data.fits)
        except Exception as e:  # noqa: BLE001 - a figure bug must not lose a finished study's report
            log.warning(f"report: figure {name!r} could not be drawn: {type(e).__name__}: {e}")
            drawn[name] = f"{type(e).__name__}: {e}"
    if data.frontier is not None:  # the methods' and mitigations' sections' figures (``forgetscale compare``)
        from forgetscale.report.figures import frontier_figure, methods_figure

        rows = data.frontier.get("rows") or []
        wanted = {"frontier": (frontier_figure, any("mitigation" in r for r in rows)),
                  "methods": (methods_figure, any("mitigation" not in r for r in rows))}  # fmt: skip
        for name, (fn, shown) in wanted.items():
            if not shown:
                continue
            try:
                drawn[name] = fn(data.frontier)
            except Exception as e:  # noqa: BLE001 - as above
                log.warning(f"report: figure {name!r} could not be drawn: {type(e).__name__}: {e}")
                drawn[name] = f"{type(e).__name__}: {e}"
    return drawn

