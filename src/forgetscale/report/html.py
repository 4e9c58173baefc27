"""The self-contained HTML report: one file, figures inline as SVG, no request to any address.

Every string from the store or the config goes through jinja2's autoescape; the
only markup trusted as is, the figures' SVG, is produced here by matplotlib
(text drawn as glyph paths), stripped of comments, metadata and namespace URLs,
its ids made unique per figure, and checked for anything that could run or load.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from forgetscale.report.data import ReportData, fmt, fmt_ci, fmt_pct
from forgetscale.report.flips import flip_table, rate_text
from forgetscale.report.methods import band_text, interval_methods
from forgetscale.report.texts import text_tables

__all__ = ["check_svg", "inline_svg", "render_html", "svg_text"]

# Text as glyph paths: the SVG needs no font on the reader's machine and carries no text
# but the comments matplotlib writes (escaped) before each string, which are removed anyway.
_RC = {"svg.fonttype": "path", "svg.hashsalt": "forgetscale", "svg.image_inline": True}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_PROLOG = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_UNSAFE = re.compile(r"<script|<foreignObject|<iframe|<image|javascript:|https?:|\bon[a-z]+\s*=|@import", re.I)


def svg_text(fig: Any) -> str:
    """A figure as a standalone SVG document (for a file next to a Markdown report).

    Deterministic: the same figure gives the same bytes (no date, fixed id salt).
    """
    import matplotlib as mpl

    buf = io.StringIO()
    with mpl.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = _METADATA.sub("", _COMMENT.sub("", buf.getvalue()))
    return check_svg(_PROLOG.sub("", svg).strip() + "\n", standalone=True)


def inline_svg(fig: Any, prefix: str) -> str:
    """A figure as an ``<svg>`` element for inlining in HTML.

    Args:
        fig: a matplotlib Figure.
        prefix: makes the SVG's ids (clip paths, glyphs, markers) unique in the page.

    Returns:
        SVG markup without XML prolog, comments, metadata or namespace URLs.

    Raises:
        ValueError: the SVG holds anything that could run a script or load a resource.
    """
    svg = _XMLNS.sub("", svg_text(fig))
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    return check_svg(svg)


def check_svg(svg: str, standalone: bool = False) -> str:
    """Return ``svg`` unchanged if it is inert: no script, event handler, external reference or URL.

    A standalone document keeps its two namespace declarations (they are names, never fetched).
    """
    probe = _XMLNS.sub("", svg) if standalone else svg
    bad = _UNSAFE.search(probe)
    if bad:
        raise ValueError(f"figure SVG contains {bad.group(0)!r}; refusing to embed it")
    hrefs = re.findall(r'href="([^"]*)"', probe)
    if any(not h.startswith("#") for h in hrefs):
        raise ValueError("figure SVG references something outside itself")
    return svg


def render_html(data: ReportData, figures: Mapping[str, Any], captions: Mapping[str, str] | None = None) -> str:
    """The report as one self-contained HTML document.

    Args:
        data: what :func:`forgetscale.report.data.gather` returns.
        figures: name -> matplotlib Figure (or an error message string when it could not be drawn).
        captions: name -> caption.

    Returns:
        The HTML text.
    """
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("forgetscale.report", "templates"),
        autoescape=True,  # every string from the store or the config is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt, ci=_ci, pct=fmt_pct, secs=_secs, rate=rate_text, flip_table=flip_table,
                       text_tables=text_tables)
    figs = []
    for i, (name, fig) in enumerate(figures.items()):
        entry = {"name": name, "caption": (captions or {}).get(name, ""), "svg": None, "error": None}
        if isinstance(fig, str):
            entry["error"] = fig
        else:
            # trusted: matplotlib's own output, sanitised and checked by inline_svg
            entry["svg"] = Markup(inline_svg(fig, f"f{i}"))  # noqa: S704
        figs.append(entry)
    return env.get_template("report.html.j2").render(d=data, figures=figs, methods=interval_methods(data.fits),
                                                     band=band_text(data.fits))


def _ci(d: Mapping[str, Any] | None, digits: int = 4) -> Any:
    """``value [lo, hi]`` with the interval in a span that the page styles (and never splits)."""
    from markupsafe import Markup

    value, sep, interval = fmt_ci(d, digits).partition(" [")
    return Markup('{} <span class="ci">[{}</span>').format(value, interval) if sep else value


def _secs(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"
