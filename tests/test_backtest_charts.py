"""Charts of a backtest report: a small PNG per pair with the trades in the UI, an interactive HTML page per
pair in MLflow, and a monthly returns table that adds up to the total return."""

from __future__ import annotations

import base64
import io
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest

from strategies.validation import STRATEGIES_DIR
from tests.backtest_fixtures import backtest_lab, run_backtest
from tests.conftest import load_recorded
from tradai_core.backtest_charts import BacktestCharts, draw_backtest_charts, split_for_two
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.monthly_returns import monthly_returns
from tradai_core.plots import ENTRY_COLOR, EXIT_COLOR, MAX_PNG_BYTES, png_bytes, trade_chart_figure
from tradai_core.settings import TradAISettings
from tradai_resources.freqtrade_backtester import ChartRequest, FreqtradeResource, read_charts

WINDOW = {"start": "2022-07-01", "end": "2022-09-01"}
BACKTEST_ONLY = "InBacktestOnly"
IN_BACKTEST_ONLY = """\
        if self.dp is None:  # outside Freqtrade's engine (no data provider): refuse, loudly
            raise RuntimeError("populate_indicators called outside a backtest")
"""
"""A guard making the strategy's indicators computable inside Freqtrade's backtest only."""
PNG_IN_MARKDOWN = re.compile(r"^!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)$")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path) -> Iterator[dict[str, object]]:
    """RsiMeanReversion backtested on recorded candles 2022-07-01 → 2022-08-31 (startup from 2022-06-20)."""
    lab = backtest_lab(
        tmp_path_factory.mktemp("charts"),
        demo_candles_dir,
        history_start=date(2022, 6, 1),
        candle_days=("2022-06-20", "2022-08-31"),
    )
    source = (STRATEGIES_DIR / "rsi_mean_reversion.py").read_text().replace("RsiMeanReversion", BACKTEST_ONLY)
    guard = '        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)'
    assert guard in source
    (lab.folder / "in_backtest_only.py").write_text(source.replace(guard, IN_BACKTEST_ONLY + guard))
    (lab.folder / "in_backtest_only.yaml").write_text(
        (STRATEGIES_DIR / "rsi_mean_reversion.yaml").read_text().replace("RsiMeanReversion", BACKTEST_ONLY)
    )
    result = run_backtest(lab, "RsiMeanReversion", WINDOW, raise_on_error=True)
    [materialization] = result.asset_materializations_for_node("backtest_report")
    only = run_backtest(lab, BACKTEST_ONLY, WINDOW, raise_on_error=True)
    [in_backtest] = only.asset_materializations_for_node("backtest_report")
    yield {
        "settings": lab.settings,
        "metadata": materialization.metadata,
        "in_backtest": in_backtest.metadata,
    }


def decode_png(markdown: str) -> bytes:
    match = PNG_IN_MARKDOWN.match(markdown)
    assert match, markdown[:80]
    image = base64.b64decode(match.group(1))
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return image


def pixels_of(image: bytes, color: str) -> int:
    """How many pixels are (nearly) exactly `color`."""
    rgb = matplotlib.image.imread(io.BytesIO(image), format="png")[..., :3]
    target = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < 0.03).sum())


def test_each_pair_has_a_small_png_chart_showing_its_entries_and_exits(report: dict[str, object]) -> None:
    metadata = report["metadata"]
    settings: TradAISettings = report["settings"]  # type: ignore[assignment]
    charts = {key: value.value for key, value in metadata.items() if key.startswith("chart_")}  # type: ignore[union-attr]
    assert set(charts) == {f"chart_{p.replace('/', '_')}" for p in settings.pairs}
    traded = 0
    for markdown in charts.values():
        image = decode_png(markdown)
        assert len(image) <= MAX_PNG_BYTES
        if pixels_of(image, ENTRY_COLOR) > 0:
            assert pixels_of(image, EXIT_COLOR) > 0
            traded += 1
    assert traded >= 2  # RSI dips in July-August 2022 traded several pairs


def test_a_chart_without_trades_has_no_entry_or_exit_markers(demo_candles_dir: Path) -> None:
    candles = pd.read_parquet(demo_candles_dir / "BTC_USDT-1h.parquet").set_index("date").iloc[-300:]
    image = png_bytes(trade_chart_figure(candles, pd.DataFrame(index=candles.index), [], "no trades"))
    assert pixels_of(image, ENTRY_COLOR) == 0 and pixels_of(image, EXIT_COLOR) == 0


def test_the_mlflow_run_has_an_interactive_html_chart_per_pair(report: dict[str, object]) -> None:
    metadata = report["metadata"]
    settings: TradAISettings = report["settings"]  # type: ignore[assignment]
    client = mlflow.MlflowClient(settings.resolved_mlflow_uri)
    run_id = metadata["mlflow_run_id"].value  # type: ignore[index,union-attr]
    pages = {a.path for a in client.list_artifacts(run_id, "backtest/charts")}
    assert pages == {f"backtest/charts/{p.replace('/', '_')}.html" for p in settings.pairs}
    page = Path(client.download_artifacts(run_id, "backtest/charts/BTC_USDT.html")).read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "addEventListener" in page
    assert "http" not in page  # self-contained: nothing fetched
    assert 'class="entry"' in page and 'class="exit"' in page


def test_monthly_returns_add_up_to_the_total_return(report: dict[str, object]) -> None:
    metadata = report["metadata"]
    table = metadata["monthly_returns"].value  # type: ignore[index,union-attr]
    rows = [line for line in table.splitlines() if re.match(r"^\| \d{4}-\d{2} \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["2022-07", "2022-08"]
    profits = [float(row.split("|")[4].replace(",", "")) for row in rows]
    total = float(metadata["total_profit_pct"].value)  # type: ignore[index,union-attr]
    returns = [float(row.split("|")[5].strip(" %")) / 100 for row in rows]
    assert np.prod([1 + r for r in returns]) - 1 == pytest.approx(total / 100, abs=1e-3)
    assert sum(profits) == pytest.approx(total / 100 * 1000.0, abs=0.05)


def test_monthly_returns_compound_to_the_curves_total() -> None:
    index = pd.to_datetime(["2022-01-01", "2022-01-20", "2022-03-05", "2022-03-30"], utc=True)
    table = monthly_returns(pd.Series([1000.0, 1100.0, 990.0, 1089.0], index=index), 1000.0)
    assert list(table["month"]) == ["2022-01", "2022-02", "2022-03"]
    assert list(table["return"].round(6)) == [0.1, 0.0, -0.01]
    assert np.prod(1 + table["return"]) - 1 == pytest.approx(0.089)
    assert table["profit"].sum() == pytest.approx(89.0)


def test_the_charts_indicators_come_from_the_backtest_itself(report: dict[str, object]) -> None:
    """The chart's indicator lines are those the backtest computed (in its worker child, inside Freqtrade's
    engine): a strategy whose indicators exist only inside the engine still has its RSI line charted."""
    settings: TradAISettings = report["settings"]  # type: ignore[assignment]
    metadata = report["in_backtest"]
    client = mlflow.MlflowClient(settings.resolved_mlflow_uri)
    run_id = metadata["mlflow_run_id"].value  # type: ignore[index]
    page = Path(client.download_artifacts(run_id, "backtest/charts/BTC_USDT.html")).read_text()
    assert "━ rsi (" in page and "━ ema_trend</span>" in page


def test_the_worker_draws_exactly_the_charts_the_report_would_draw_itself(
    demo_candles_dir: Path, tmp_path: Path
) -> None:
    """The report's charts are drawn in the backtest's worker child (matplotlib stays out of the Dagster
    process), half of them by a helper it forks; they are the very images and pages drawn here from the same
    result, candles and indicators, which is also what the report falls back to when the worker could not
    draw them."""
    pairs = ("BTC/USDT", "ETH/USDT", "XRP/USDT")
    candles = {pair: load_recorded(demo_candles_dir, pair).loc["2022-06-20":"2022-08-01"] for pair in pairs}
    start = pd.Timestamp("2022-07-01", tz="UTC")
    request = ChartRequest(trading_start=start, equity_title="RsiMeanReversion 20220701-20220801")
    charted = FreqtradeResource(work_dir=str(tmp_path)).backtest_charted(
        "RsiMeanReversion",
        STRATEGIES_DIR,
        candles,
        BacktestRunConfig(timerange="20220701-20220801", pairs=pairs),
        request,
    )
    assert charted.charts is not None, "the worker drew no charts"
    assert charted.result.metrics.trade_count > 0
    assert set(charted.indicators) == set(pairs) and "rsi" in charted.indicators["BTC/USDT"]
    here = draw_backtest_charts(charted.result, candles, charted.indicators, *request)
    assert list(charted.charts.images) == list(pairs)  # the report's pair order
    assert charted.charts == here
    assert pixels_of(decode_png(charted.charts.images["BTC/USDT"]), ENTRY_COLOR) > 0
    assert decode_png(charted.charts.equity)
    # the worker's way of drawing them, in a process of its own: one helper forked, the same charts; and
    # a helper that fails leaves its pairs to the worker, still the same charts
    data = tmp_path / "charts-input.pkl"
    data.write_bytes(pickle.dumps((charted.result, candles, charted.indicators, request, here)))
    done = subprocess.run(
        [sys.executable, "-c", TWO_PROCESS_PROBE, str(data), str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["forks=1", "same=True", "failed-helper-forks=1", "same=True"]
    assert "the chart helper failed; drawing its charts here" in done.stderr


TWO_PROCESS_PROBE = """
import os, pickle, sys
from pathlib import Path
import tradai_core.backtest_charts as charts
from tradai_resources.workers.backtest_child import _draw_in_two
from tradai_resources.workers.jobs import ChartJob

result, candles, indicators, request, expected = pickle.loads(Path(sys.argv[1]).read_bytes())
job = ChartJob(path=sys.argv[2] + "/charts.json", candle_files={}, trading_start=request.trading_start,
               equity_title=request.equity_title)
forks, fork, parent = [], os.fork, os.getpid()
os.fork = lambda: forks.append(1) or fork()
drawn = _draw_in_two(result, candles, indicators, job)
print(f"forks={len(forks)}", f"same={drawn == expected}")
draw = charts.draw_pair_charts
def failing_in_the_helper(*args):
    if os.getpid() != parent:
        raise RuntimeError("the helper fails")
    return draw(*args)
charts.draw_pair_charts = failing_in_the_helper
forks.clear()
drawn = _draw_in_two(result, candles, indicators, job)
print(f"failed-helper-forks={len(forks)}", f"same={drawn == expected}")
"""


def test_charts_the_worker_could_not_write_whole_are_drawn_by_the_report_instead(tmp_path: Path) -> None:
    """A missing or unreadable charts file is no charts (the report draws them), never a failed report."""
    assert read_charts(tmp_path / "charts.json") is None
    (tmp_path / "charts.json").write_text('{"images": {"BTC/USDT": "![x](data:', encoding="utf-8")
    assert read_charts(tmp_path / "charts.json") is None
    drawn = BacktestCharts(images={"BTC/USDT": "![a](b)"}, pages={"BTC/USDT": "<html>"}, equity="![e](f)")
    (tmp_path / "charts.json").write_text(drawn.model_dump_json(), encoding="utf-8")
    assert read_charts(tmp_path / "charts.json") == drawn


def test_a_helper_takes_about_half_of_the_drawing() -> None:
    """The worker's forked helper draws the first ⌈n/2⌉ pair charts; the worker the rest and the equity."""
    assert split_for_two(["A", "B", "C", "D", "E", "F"]) == (("A", "B", "C"), ("D", "E", "F"))
    assert split_for_two(["A", "B", "C"]) == (("A", "B"), ("C",))
    assert split_for_two(["A"]) == (("A",), ())
    assert split_for_two([]) == ((), ())
