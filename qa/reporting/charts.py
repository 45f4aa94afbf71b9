"""PNG charts for :mod:`qa.reporting.report`, drawn with matplotlib's Agg renderer (no display, no
pyplot state), with a CJK font so that Chinese team names and labels render.

Font lookup, first hit wins: the Noto Sans CJK SC file shipped by the ``mplfonts`` package (a
project dependency, so a fresh machine needs no system fonts), then system fonts known to
cover Simplified Chinese (Debian ``fonts-noto-cjk``, WenQuanYi, Source Han). Without any of
them charts still render, with a logged warning, and Chinese glyphs show as boxes.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib import colormaps, font_manager

# Figures are built without pyplot: savefig on a bare Figure renders with Agg whatever the
# process's interactive backend is, and no global pyplot state is touched.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

# File-name stems of system fonts that cover Simplified Chinese: Debian/Ubuntu fonts-noto-cjk
# (NotoSansCJK-Regular.ttc), Fedora/Arch google-noto-sans-cjk (NotoSansCJKsc-Regular.otf,
# NotoSansSC-*), adobe-source-han-sans, fonts-wqy-zenhei / fonts-wqy-microhei.
_SYSTEM_CJK_FILES = ("notosanscjk", "notosanssc", "sourcehansans", "wqy-zenhei", "wqy-microhei", "notoserifcjk")
# A .ttc file holds one face per language; the SC face draws mainland glyph shapes, where the
# file's first face (JP) would draw some characters the Japanese way.
_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
                 "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Noto Serif CJK SC")
_HEAVY = ("bold", "black", "heavy", "light", "thin", "medium")
_PALETTE = ("#2f6fb0", "#e07b39", "#4a9d5b", "#c94c4c", "#8a6bbf", "#7f7f7f", "#b8a03a", "#3aa6b8")
GOOD, LATE, WAITING, BAD, NEUTRAL = "#4a9d5b", "#e0a030", "#8fb3d9", "#c94c4c", "#2f6fb0"
_DPI = 110


def _packaged_font() -> Path | None:
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NotoSansCJKsc-Regular.otf"
    return path if path.is_file() else None


def _system_fonts() -> list[Path]:
    """Regular-weight CJK font files installed on the system, best first."""
    found = font_manager.findSystemFonts(fontext="ttf") + font_manager.findSystemFonts(fontext="otf")
    files = sorted({Path(f) for f in found}, key=lambda p: p.name.lower())
    out = []
    for stem in _SYSTEM_CJK_FILES:
        out += [p for p in files if p.name.lower().startswith(stem) and not any(w in p.name.lower() for w in _HEAVY)]
    return out


def _register(path: Path) -> str | None:
    """Add ``path`` to matplotlib's font list (its cache may predate the font's installation)
    and return the family to ask for: the Simplified Chinese face where the file has several."""
    try:
        font_manager.fontManager.addfont(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        log.warning("cannot load font %s: %s", path, e)
        return None
    faces = {f.name for f in font_manager.fontManager.ttflist if Path(f.fname) == path}
    return next((name for name in _CJK_FAMILIES if name in faces), min(faces) if faces else None)


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of a registered CJK font, or None (logged) when there is none."""
    packaged = _packaged_font()
    for path in ([packaged] if packaged else []) + _system_fonts():
        name = _register(path)
        if name:
            log.debug("report font: %s (%s)", name, path)
            return name
    log.warning("no CJK font found (pip install mplfonts, or apt-get install fonts-noto-cjk): "
                "Chinese labels in report charts will not render")
    return None


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _props(size: float | None = None) -> font_manager.FontProperties:
    # Font set per text object rather than in rcParams, which are process-global.
    family = cjk_font()
    return font_manager.FontProperties(family=[family, "DejaVu Sans"] if family else ["DejaVu Sans"], size=size)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _style(ax, title: str) -> None:
    props = _props()
    ax.set_title(title, fontproperties=_props(12))
    for label in ax.get_xticklabels() + ax.get_yticklabels():
        label.set_fontproperties(props)
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            text.set_fontproperties(props)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def stacked_bars(key: str, title: str, categories: list[str], series: dict[str, list[float]], *,
                 horizontal: bool = False, width: float = 9.0, height: float = 3.6,
                 colors: tuple[str, ...] = _PALETTE) -> Chart:
    """Bars per category, one stacked segment per series (a single series is a plain bar
    chart). ``colors``: one per series, where the colour means something (red = overdue)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    positions = list(range(len(categories)))
    base = [0.0] * len(categories)
    for i, (name, values) in enumerate(series.items()):
        color = colors[i % len(colors)]
        if horizontal:
            ax.barh(positions, values, left=base, label=name, color=color)
        else:
            ax.bar(positions, values, bottom=base, label=name, color=color)
        base = [b + v for b, v in zip(base, values)]
    # Counts: no 0.5-call ticks when the numbers are small.
    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    if horizontal:
        ax.set_yticks(positions, categories)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_xticks(positions, categories, rotation=30 if len(categories) > 8 else 0, ha="right"
                      if len(categories) > 8 else "center")
    if len(series) > 1:
        # Beside the plot, where it cannot cover a bar.
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _style(ax, title)
    if horizontal:
        ax.grid(axis="y", visible=False)
    return Chart(key, title, _png(fig))


def value_bars(key: str, title: str, labels: list[str], values: list[float], *, xlim: tuple[float, float] | None = None,
               annotations: list[str] | None = None, counts: bool = False, width: float = 9.0,
               colors: list[str] | None = None) -> Chart:
    """Horizontal bars with the value (or an annotation) written at the end of each bar;
    ``counts`` puts ticks on whole numbers; ``colors``, one per bar, marks bands (low scores red)."""
    fig = _figure(width, max(2.2, 0.38 * len(labels) + 1.0))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    ax.barh(positions, values, color=colors or _PALETTE[0])
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    if xlim:
        ax.set_xlim(*xlim)
    if counts:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    props = _props(9)
    for pos, value, note in zip(positions, values, annotations or [f"{v:g}" for v in values]):
        ax.annotate(note, (value, pos), xytext=(4, 0), textcoords="offset points", va="center", fontproperties=props)
    _style(ax, title)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", alpha=0.3)
    return Chart(key, title, _png(fig))


def heatmap(key: str, title: str, x_labels: list[str], y_labels: list[str], values: list[list[float | None]], *,
            vmin: float = 50.0, vmax: float = 100.0) -> Chart:
    """A grid of scores (rows ``y_labels``, columns ``x_labels``) with the value written in
    each cell; empty cells (None) stay blank. Colours run red (``vmin`` and below) to green."""
    grid = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float))
    width = min(13.0, max(6.0, 2.2 + 0.62 * len(x_labels)))
    fig = _figure(width, max(2.0, 0.34 * len(y_labels) + 1.3))
    ax = fig.add_subplot()
    cmap = colormaps["RdYlGn"].with_extremes(bad="#f0f2f5")
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(x_labels)), x_labels, rotation=45 if len(x_labels) > 12 else 0,
                  ha="right" if len(x_labels) > 12 else "center")
    ax.set_yticks(range(len(y_labels)), y_labels)
    props = _props(8)
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            if v is None:
                continue
            red, green, blue, _ = cmap(min(1.0, max(0.0, (v - vmin) / (vmax - vmin))))
            # Dark text on the light middle of the scale, white on its dark ends.
            dark = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", color="#1f2933" if dark else "white",
                    fontproperties=props)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=8)
    _style(ax, title)
    ax.grid(False)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    return Chart(key, title, _png(fig))


def interval_bars(key: str, title: str, labels: list[str], values: list[float],
                  intervals: list[tuple[float, float]], *, unit: str = "") -> Chart:
    """Horizontal bars with an error bar for each value's (low, high) interval, and the value
    and interval written beside it."""
    fig = _figure(9.0, max(1.8, 0.42 * len(labels) + 1.0))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    errors = [[v - low for v, (low, _) in zip(values, intervals)], [high - v for v, (_, high) in zip(values, intervals)]]
    ax.barh(positions, values, color=_PALETTE[1], xerr=errors, error_kw={"ecolor": "#52606d", "capsize": 3})
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    top = max(high for _, high in intervals)
    limit = max(1.0, top)
    # Room on the right for the written interval, without ticks past what a value can reach.
    ax.set_xlim(0, limit * 1.45)
    ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= (100.0 if unit == "%" else limit * 1.45)])
    props = _props(9)
    for pos, value, (low, high) in zip(positions, values, intervals):
        ax.annotate(f"{value:.1f}{unit}（{low:.1f}–{high:.1f}{unit}）", (high, pos), xytext=(6, 0),
                    textcoords="offset points", va="center", fontproperties=props)
    _style(ax, title)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", alpha=0.3)
    return Chart(key, title, _png(fig))
