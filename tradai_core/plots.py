"""Plots for asset metadata: matplotlib figures rendered to small PNGs embedded as markdown images, and a
self-contained interactive HTML trade chart (inline SVG, no external scripts) for MLflow.

Images go inline into Dagster's metadata, so each one is kept under `MAX_PNG_BYTES`: the figure is
re-rendered at a lower resolution until it fits, which keeps the UI fast.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from tradai_core.lazy import LazyModule


def _render_to_memory() -> None:
    """No display: matplotlib renders to memory only (set before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")


# imported when a plot is first drawn, not when the code location loads (matplotlib takes a second)
plt = LazyModule("matplotlib.pyplot", setup=_render_to_memory)
mdates = LazyModule("matplotlib.dates", setup=_render_to_memory)
mcollections = LazyModule("matplotlib.collections", setup=_render_to_memory)

MAX_PNG_BYTES = 60_000
"""Largest PNG embedded in metadata (the UI loads every image of an asset's metadata at once)."""
_DPI_STEPS = (80, 64, 52, 42, 34)
CHART_CANDLES = 240
"""Candles drawn in a trade chart's PNG: the last ones up to the last trade, so entries and exits show."""
UP_COLOR, DOWN_COLOR = "#2da44e", "#cf222e"
ENTRY_COLOR = "#00b4d8"
"""Entry markers (cyan ▲): a colour no candle or indicator line uses, so a reader (or a test) finds them."""
EXIT_COLOR = "#ff8c00"
"""Exit markers (orange ▼)."""
FIXED_MARGINS = {"left": 0.1, "right": 0.985, "top": 0.93}
"""Margins of the backtest charts (room for price labels and a rotated date axis: `autofmt_xdate` sets the
bottom), so they render without `crop`."""
_LINE_COLORS = ("#1f6feb", "#8250df", "#6e7781", "#d63384", "#116329", "#57606a")


def png_bytes(figure: plt.Figure, max_bytes: int = MAX_PNG_BYTES, *, crop: bool = True) -> bytes:
    """The figure as PNG bytes, at the highest of a few resolutions that fits in `max_bytes` (closes it).
    `crop` trims the margins to what is drawn (`bbox_inches="tight"`: a second layout pass, about 40 % of
    the rendering); figures laid out with fixed margins (`FIXED_MARGINS`) are rendered as they are."""
    try:
        image = b""
        for dpi in _DPI_STEPS:
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if crop else None)
            image = buffer.getvalue()
            if len(image) <= max_bytes:
                break
        return image
    finally:
        plt.close(figure)


def png_markdown(figure: plt.Figure, alt: str, max_bytes: int = MAX_PNG_BYTES, *, crop: bool = True) -> str:
    """A figure as a markdown image with the PNG inline (what Dagster's UI shows in metadata)."""
    encoded = base64.b64encode(png_bytes(figure, max_bytes, crop=crop)).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def equity_and_drawdown_figure(equity: pd.Series, title: str) -> plt.Figure:
    """Equity curve over drawdown from the running peak, sharing the time axis."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    top.plot(equity.index, equity.to_numpy(), color="#1f6feb", linewidth=1.2)
    top.set_ylabel("equity")
    top.set_title(title)
    top.grid(alpha=0.3)
    drawdown = equity / equity.cummax() - 1.0
    bottom.fill_between(drawdown.index, drawdown.to_numpy() * 100, 0, color="#d1242f", alpha=0.5, step="post")
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.subplots_adjust(**FIXED_MARGINS)
    return figure


@dataclass(frozen=True)
class ChartTrade:
    """One trade as a chart draws it: an entry marker and an exit marker."""

    open_date: datetime
    open_rate: float
    close_date: datetime
    close_rate: float
    profit_ratio: float
    exit_reason: str


def split_indicators(candles: pd.DataFrame, indicators: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Indicator columns drawn over the price (their typical value is near the close's) and the others
    (oscillators such as RSI or ADX, drawn in a panel of their own)."""
    overlay, oscillators = [], []
    close = float(candles["close"].median()) if len(candles) else 0.0
    for name in indicators.columns:
        values = pd.to_numeric(indicators[name], errors="coerce").dropna()
        if values.empty:
            continue
        typical = float(values.median())
        (overlay if close > 0 and 0.5 <= typical / close <= 2.0 else oscillators).append(name)
    return overlay, oscillators


def chart_window(index: pd.DatetimeIndex, trades: Sequence[ChartTrade], size: int = CHART_CANDLES) -> slice:
    """Positions of the `size` candles a static chart shows: up to a few candles after the last exit (or
    the last candles when nothing traded)."""
    if not len(index):
        return slice(0, 0)
    end = len(index)
    if trades:
        last_exit = max(pd.Timestamp(t.close_date) for t in trades)
        end = min(len(index), int(index.searchsorted(last_exit, side="right")) + 12)
    return slice(max(0, end - size), end)


def _draw_candles(axes: plt.Axes, x: np.ndarray, candles: pd.DataFrame, width: float) -> None:
    """Wicks as one line collection, bodies as one polygon collection (one artist each, not one patch per
    candle: a bar per candle made drawing the six charts of a report take seconds)."""
    rising = (candles["close"] >= candles["open"]).to_numpy()
    colors = np.where(rising, UP_COLOR, DOWN_COLOR)
    axes.vlines(x, candles["low"], candles["high"], colors=colors, linewidth=0.5)
    bottom = np.minimum(candles["open"], candles["close"]).to_numpy(dtype=float)
    top = bottom + np.abs(candles["close"] - candles["open"]).to_numpy(dtype=float)
    left, right = x - width / 2, x + width / 2
    bodies = np.stack(
        [np.column_stack(corner) for corner in ((left, bottom), (left, top), (right, top), (right, bottom))],
        axis=1,
    )
    axes.add_collection(mcollections.PolyCollection(bodies, facecolors=colors, linewidths=0), autolim=True)
    axes.autoscale_view()


def trade_chart_figure(
    candles: pd.DataFrame, indicators: pd.DataFrame, trades: Sequence[ChartTrade], title: str
) -> plt.Figure:
    """Candles with the strategy's indicators and its entries (▲) and exits (▼), over the last
    `CHART_CANDLES` candles up to the last trade; oscillators in a lower panel."""
    window = chart_window(pd.DatetimeIndex(candles.index), trades)
    shown = candles.iloc[window]
    extra = indicators.reindex(shown.index)
    overlay, oscillators = split_indicators(shown, extra)
    panels = 2 if oscillators else 1
    figure, axes = plt.subplots(
        panels,
        1,
        figsize=(8, 4.2 if panels == 2 else 3.4),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.2][:panels]},
    )
    price = axes[0][0]
    x = mdates.date2num(shown.index.to_pydatetime()) if len(shown) else np.array([])
    width = float(np.median(np.diff(x))) * 0.7 if len(x) > 1 else 0.02
    if len(shown):
        _draw_candles(price, x, shown, width)
    for color, name in zip(_LINE_COLORS, overlay, strict=False):
        price.plot(x, extra[name].to_numpy(dtype=float), linewidth=0.9, color=color, label=name)
    if len(shown):
        first, last = shown.index[0], shown.index[-1]
        visible = [
            t for t in trades if first <= pd.Timestamp(t.close_date) and pd.Timestamp(t.open_date) <= last
        ]
        entries = [(t.open_date, t.open_rate) for t in visible if first <= pd.Timestamp(t.open_date)]
        exits = [(t.close_date, t.close_rate) for t in visible if pd.Timestamp(t.close_date) <= last]
        if entries:
            price.scatter(
                *zip(*entries, strict=True), marker="^", s=36, color=ENTRY_COLOR, label="entry", zorder=5
            )
        if exits:
            price.scatter(
                *zip(*exits, strict=True), marker="v", s=36, color=EXIT_COLOR, label="exit", zorder=5
            )
    price.set_title(title, fontsize=9)
    price.grid(alpha=0.3)
    if price.get_legend_handles_labels()[0]:
        price.legend(fontsize=7, loc="upper left", ncol=4)
    if oscillators:
        lower = axes[1][0]
        for color, name in zip(_LINE_COLORS, oscillators[:3], strict=False):
            lower.plot(x, extra[name].to_numpy(dtype=float), linewidth=0.9, color=color, label=name)
        lower.grid(alpha=0.3)
        lower.legend(fontsize=7, loc="upper left", ncol=3)
    figure.autofmt_xdate()
    figure.subplots_adjust(**FIXED_MARGINS)
    return figure


def _svg_path(xs: Iterable[float], ys: Iterable[float]) -> str:
    parts, pen = [], "M"
    for x, y in zip(xs, ys, strict=True):
        if y != y:  # NaN (a gap in the line); `np.isnan` per value took most of the page's line time
            pen = "M"
            continue
        parts.append(f"{pen}{x:.1f},{y:.1f}")
        pen = "L"
    return " ".join(parts)


def _candle_shapes(candles: pd.DataFrame, step: float, price_y: Callable[[float], float]) -> list[str]:
    """One SVG group per candle (wick, body, and its values on hover), built from plain lists: a report
    has thousands of candles per pair, and per-candle Timestamp formatting and function calls took most of
    the page's time. (The hover text holds only dates and numbers: nothing to escape.)"""
    opens, highs, lows, closes, volumes = (
        candles[name].to_numpy(dtype=float).tolist() for name in ("open", "high", "low", "close", "volume")
    )
    stamps = pd.DatetimeIndex(candles.index).strftime("%Y-%m-%d %H:%M").tolist()
    shapes = []
    for i, (stamp, open_, high_, low_, close, volume) in enumerate(
        zip(stamps, opens, highs, lows, closes, volumes, strict=True)
    ):
        cx = i * step + step / 2
        color = UP_COLOR if close >= open_ else DOWN_COLOR
        top, bottom = price_y(max(open_, close)), price_y(min(open_, close))
        shapes.append(
            f"<g><title>{stamp} O {open_:.6g} H {high_:.6g} L {low_:.6g} C {close:.6g} V {volume:.6g}</title>"
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{price_y(high_):.1f}" y2="{price_y(low_):.1f}" '
            f'stroke="{color}" stroke-width="0.8"/><rect x="{cx - step * 0.35:.1f}" y="{top:.1f}" '
            f'width="{step * 0.7:.1f}" height="{max(bottom - top, 0.5):.1f}" fill="{color}"/></g>'
        )
    return shapes


def trade_chart_html(
    candles: pd.DataFrame, indicators: pd.DataFrame, trades: Sequence[ChartTrade], title: str
) -> str:
    """A self-contained HTML page (inline SVG and a few lines of script, nothing fetched): every candle of
    the window with the indicators, entries and exits; hover a candle or marker for its values, scroll to
    zoom, drag to pan."""
    n = len(candles)
    step, height, lower_height = 6.0, 420.0, 120.0
    width = max(step * n, 600.0)
    overlay, oscillators = split_indicators(candles, indicators)
    low = float(candles["low"].min()) if n else 0.0
    high = float(candles["high"].max()) if n else 1.0
    span = (high - low) or 1.0

    def price_y(value: float) -> float:
        return height - 10 - (value - low) / span * (height - 20)

    def x_of(when: datetime) -> float:
        i = int(pd.DatetimeIndex(candles.index).searchsorted(pd.Timestamp(when)))
        return min(i, max(n - 1, 0)) * step + step / 2

    shapes = _candle_shapes(candles, step, price_y)
    xs = [i * step + step / 2 for i in range(n)]
    legend = []
    for color, name in zip(_LINE_COLORS, overlay, strict=False):
        ys = [price_y(v) for v in pd.to_numeric(indicators[name].reindex(candles.index), errors="coerce")]
        shapes.append(f'<path d="{_svg_path(xs, ys)}" fill="none" stroke="{color}" stroke-width="1.2"/>')
        legend.append(f'<span style="color:{color}">━ {html.escape(name)}</span>')
    for t in trades:
        tip = html.escape(
            f"{t.open_date:%Y-%m-%d %H:%M} → {t.close_date:%Y-%m-%d %H:%M}: {t.profit_ratio * 100:.2f} % "
            f"({t.exit_reason})"
        )
        ex, ey = x_of(t.open_date), price_y(t.open_rate)
        qx, qy = x_of(t.close_date), price_y(t.close_rate)
        shapes.append(
            f'<g class="entry"><title>entry {tip}</title><path d="M{ex:.1f},{ey + 4:.1f} l-5,9 h10 z" '
            f'fill="{ENTRY_COLOR}"/></g><g class="exit"><title>exit {tip}</title>'
            f'<path d="M{qx:.1f},{qy - 4:.1f} l-5,-9 h10 z" fill="{EXIT_COLOR}"/></g>'
        )
    lower: list[str] = []
    for color, name in zip(_LINE_COLORS, oscillators[:3], strict=False):
        values = pd.to_numeric(indicators[name].reindex(candles.index), errors="coerce")
        vmin, vmax = float(values.min()), float(values.max())
        scale = (vmax - vmin) or 1.0
        ys = [height + lower_height - 5 - (v - vmin) / scale * (lower_height - 10) for v in values]
        lower.append(f'<path d="{_svg_path(xs, ys)}" fill="none" stroke="{color}" stroke-width="1"/>')
        legend.append(f'<span style="color:{color}">━ {html.escape(name)} ({vmin:.3g}…{vmax:.3g})</span>')
    total = height + (lower_height if lower else 0)
    first = f"{candles.index[0]:%Y-%m-%d %H:%M}" if n else ""
    last = f"{candles.index[-1]:%Y-%m-%d %H:%M}" if n else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:13px sans-serif;margin:12px}} svg{{border:1px solid #d0d7de;cursor:grab;width:100%}}
.legend span{{margin-right:14px}}</style></head><body>
<h3>{html.escape(title)}</h3>
<div class="legend"><span style="color:{ENTRY_COLOR}">▲ entry</span>
<span style="color:{EXIT_COLOR}">▼ exit</span>
{"".join(legend)} <span>{n} candles, {first} → {last} UTC; {len(trades)} trades. Scroll to zoom, drag to pan,
hover for values.</span></div>
<svg id="chart" viewBox="0 0 {width:.0f} {total:.0f}" height="{total:.0f}" preserveAspectRatio="none">
{"".join(shapes)}{"".join(lower)}</svg>
<script>
const svg = document.getElementById("chart"); const full = {width:.0f}; let x0 = 0, w = full, drag = null;
function show() {{ svg.setAttribute("viewBox", x0 + " 0 " + w + " {total:.0f}"); }}
svg.addEventListener("wheel", e => {{ e.preventDefault(); const r = svg.getBoundingClientRect();
  const at = x0 + (e.clientX - r.left) / r.width * w;
  const nw = Math.min(full, Math.max(60, w * (e.deltaY > 0 ? 1.25 : 0.8)));
  x0 = Math.min(Math.max(0, at - (at - x0) * nw / w), full - nw); w = nw; show(); }});
svg.addEventListener("mousedown", e => {{ drag = {{x: e.clientX, x0: x0}}; }});
window.addEventListener("mouseup", () => {{ drag = null; }});
window.addEventListener("mousemove", e => {{ if (!drag) return; const r = svg.getBoundingClientRect();
  x0 = Math.min(Math.max(0, drag.x0 - (e.clientX - drag.x) / r.width * w), full - w); show(); }});
</script></body></html>
"""
