"""PNG charts for :mod:`qa.report`, drawn with matplotlib's Agg renderer (no display, no
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

from matplotlib import font_manager
# Figures are built without pyplot: savefig on a bare Figure renders with Agg whatever the
# process's interactive backend is, and no global pyplot state is touched.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

log = logging.getLogger("qa.report")

_SYSTEM_CJK_NAMES = ("NotoSansCJK", "NotoSansSC", "SourceHanSans", "wqy-zenhei", "wqy-microhei", "NotoSerifCJK")
_PALETTE = ("#2f6fb0", "#e07b39", "#4a9d5b", "#c94c4c", "#8a6bbf", "#7f7f7f", "#b8a03a", "#3aa6b8")
_DPI = 110


def _packaged_font() -> Path | None:
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NotoSansCJKsc-Regular.otf"
    return path if path.is_file() else None


def _system_font() -> Path | None:
    found = sorted(font_manager.findSystemFonts(fontext="ttf") + font_manager.findSystemFonts(fontext="otf"))
    for name in _SYSTEM_CJK_NAMES:
        for path in found:
            if name.lower() in Path(path).name.lower() and "bold" not in Path(path).name.lower():
                return Path(path)
    return None


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of a registered CJK font, or None (logged) when there is none."""
    for path in (_packaged_font(), _system_font()):
        if path is None:
            continue
        try:
            font_manager.fontManager.addfont(str(path))
            name = font_manager.FontProperties(fname=str(path)).get_name()
        except (OSError, RuntimeError, ValueError) as e:
            log.warning("cannot load font %s: %s", path, e)
            continue
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
                 horizontal: bool = False, width: float = 9.0, height: float = 3.6) -> Chart:
    """Bars per category, one stacked segment per series (a single series is a plain bar chart)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    positions = list(range(len(categories)))
    base = [0.0] * len(categories)
    for i, (name, values) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
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
               annotations: list[str] | None = None, counts: bool = False, width: float = 9.0) -> Chart:
    """Horizontal bars with the value (or an annotation) written at the end of each bar;
    ``counts`` puts ticks on whole numbers."""
    fig = _figure(width, max(2.2, 0.38 * len(labels) + 1.0))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    ax.barh(positions, values, color=_PALETTE[0])
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


def lines(key: str, title: str, x_labels: list[str], series: dict[str, list[float | None]], *,
          ylabel: str = "", width: float = 9.0, height: float = 3.6) -> Chart:
    """One line per series over the x labels (days). Days without a value (None) are
    skipped and the line joins the days on either side: a team that takes calls every other
    day still gets a trend line, not scattered dots."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    positions = list(range(len(x_labels)))
    for i, (name, values) in enumerate(series.items()):
        points = [(x, v) for x, v in zip(positions, values) if v is not None]
        ax.plot([x for x, _ in points], [v for _, v in points], marker="o", label=name,
                color=_PALETTE[i % len(_PALETTE)])
    ax.set_xticks(positions, x_labels)
    if ylabel:
        ax.set_ylabel(ylabel, fontproperties=_props())
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _style(ax, title)
    return Chart(key, title, _png(fig))
