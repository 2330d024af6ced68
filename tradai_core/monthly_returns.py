"""Calendar-month returns of a realized equity curve (what a quant reads next to the equity plot)."""

from __future__ import annotations

import pandas as pd


def monthly_returns(equity: pd.Series, starting_balance: float) -> pd.DataFrame:
    """One row per calendar month from the curve's first point to its last: balance at the start and end
    of the month, profit and return. Profits add up to the total profit and returns compound to the total
    return (`end` of the last month over `starting_balance`)."""
    if starting_balance <= 0:
        raise ValueError(f"starting_balance must be positive, got {starting_balance}")
    if equity.empty:
        return pd.DataFrame(columns=["month", "start", "end", "profit", "return"])
    index = pd.DatetimeIndex(equity.index)
    series = pd.Series(equity.to_numpy(dtype=float), index=index).sort_index()
    month_end = series.resample("ME").last().ffill()
    start = month_end.shift(1).fillna(starting_balance)
    frame = pd.DataFrame(
        {
            "month": [stamp.strftime("%Y-%m") for stamp in month_end.index],
            "start": start.to_numpy(),
            "end": month_end.to_numpy(),
        }
    )
    frame["profit"] = frame["end"] - frame["start"]
    frame["return"] = frame["end"] / frame["start"] - 1.0
    return frame


def monthly_returns_markdown(table: pd.DataFrame, starting_balance: float, currency: str) -> str:
    """The monthly table as markdown, with a total row (compounded return)."""
    if table.empty:
        return "No equity points: nothing traded."
    lines = [f"| month | start | end | profit ({currency}) | return |", "|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        lines.append(
            f"| {row['month']} | {row['start']:,.2f} | {row['end']:,.2f} | {row['profit']:+,.2f} | "
            f"{row['return'] * 100:+.2f} % |"
        )
    final = float(table["end"].iloc[-1])
    lines.append(
        f"| **total** | {starting_balance:,.2f} | {final:,.2f} | {final - starting_balance:+,.2f} | "
        f"{(final / starting_balance - 1) * 100:+.2f} % |"
    )
    return "\n".join(lines)
