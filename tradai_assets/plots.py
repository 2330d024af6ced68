"""Plots for asset metadata: matplotlib figures rendered to PNG and embedded as markdown images."""

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only

import matplotlib.pyplot as plt
import pandas as pd


def png_markdown(figure: plt.Figure, alt: str) -> str:
    """A figure as a markdown image with the PNG inline (what Dagster's UI shows in metadata)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


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
    return figure
