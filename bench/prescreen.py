"""Hyperopt pre-screen benchmark (issue #17): side by side, in one run, per shipped strategy.

Same candles, window, search space (the strategy's declared spaces plus `roi stoploss`) and seed:

- **trials per minute**: a pre-screened study (`StudySpec(prescreen=True)`: the compiled simulation
  explores, Freqtrade backtests a random sample and the finalists; the wall time counts all of it, worker
  start-up included) against the stock `freqtrade hyperopt -j 2` (`bench.hyperopt.run_cli`, its default
  sampler with `--random-state`); distinct parameter sets scored per minute of wall time;
- **Spearman**: the rank agreement the study measured between pre-screen and Freqtrade scores on its
  random sample (the pre-screen switches itself off below 0.9);
- **best confirmed score at equal wall time**: the pre-screened study's best Freqtrade-confirmed objective
  against a plain study (Optuna TPE over Freqtrade backtests, 2 workers) given the same wall time.

`uv run python -m bench.prescreen` runs the short default (3 pairs × 2 months, a few hundred explored sets;
minutes on 2 loaded cores); `--full` runs 6 pairs × 6 months. Figures go to the bench results JSON.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import Figure, candles_dir, record, report_figures
from bench.hyperopt import SEED, WORKERS, run_cli
from strategies.validation import STRATEGIES_DIR, load_strategy_class
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.candles import normalize_candles
from tradai_core.hyperopt import StudyReport, StudySpec
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.hyperopt_space import search_space

STRATEGIES = ("RsiMeanReversion", "EmaAdxTrend", "BollingerBreakout")
QUICK = {
    "pairs": ("BTC/USDT", "ETH/USDT", "ADA/USDT"),
    "timerange": "20210601-20210801",
    "cli_epochs": 20,
    "explore": 300,
    "top_k": 5,
    "sample": 12,
}
FULL = {
    "pairs": ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT"),
    "timerange": "20210601-20211201",
    "cli_epochs": 60,
    "explore": 1500,
    "top_k": 10,
    "sample": 20,
}


def _candles(folder: Path, pairs: tuple[str, ...], timerange: str) -> dict[str, pd.DataFrame]:
    start = pd.Timestamp(timerange[:8], tz="UTC") - pd.Timedelta(days=20)
    end = pd.Timestamp(timerange[9:], tz="UTC") + pd.Timedelta(days=1)
    return {
        pair: normalize_candles(pd.read_parquet(folder / f"{pair.replace('/', '_')}-1h.parquet")).loc[
            start:end
        ]
        for pair in pairs
    }


def spaces_of(strategy: str) -> tuple[str, ...]:
    """The strategy's declared spaces plus ROI and stoploss (what both sides tune)."""
    return (*search_space(load_strategy_class(strategy), None, "1h").spaces, "roi", "stoploss")


def _study(
    root: Path, strategy: str, candles: dict, timerange: str, spec: StudySpec
) -> tuple[float, StudyReport]:
    resource = HyperoptResource(storage_url=f"sqlite:///{root / 'optuna.db'}", work_dir=str(root / "work"))
    started = time.time()
    study = resource.optimize(
        strategy, STRATEGIES_DIR, candles, BacktestRunConfig(timerange=timerange, pairs=tuple(candles)), spec
    )
    return time.time() - started, study


def bench_strategy(strategy: str, plan: dict, folder: Path, work: Path) -> list[Figure]:
    """The three figures of one strategy."""
    candles = _candles(folder, plan["pairs"], plan["timerange"])
    spaces = spaces_of(strategy)
    spec = StudySpec(
        n_trials=plan["top_k"],
        workers=1,
        seed=SEED,
        min_trades=1,
        spaces=spaces,
        prescreen=True,
        prescreen_trials=plan["explore"],
        agreement_sample=plan["sample"],
    )
    screened_s, screened = _study(work / f"{strategy}-screened", strategy, candles, plan["timerange"], spec)
    summary = screened.prescreen
    assert summary is not None
    explored = summary.distinct if summary.used else screened.trials_run
    cli_s, epochs = run_cli(
        work / f"{strategy}-cli",
        candles,
        plan["cli_epochs"],
        folder,
        strategy=strategy,
        timerange=plan["timerange"],
        spaces=spaces,
    )
    plain_spec = StudySpec(
        n_trials=100_000,
        workers=WORKERS,
        seed=SEED,
        min_trades=1,
        spaces=spaces,
        time_budget_seconds=screened_s,
    )
    plain_s, plain = _study(work / f"{strategy}-plain", strategy, candles, plan["timerange"], plain_spec)
    rho = summary.agreement.spearman if summary.agreement and summary.agreement.spearman is not None else 0.0
    print(
        f"{strategy}: {summary.note}; explored {summary.explored} ({summary.distinct} distinct) in "
        f"{summary.explore_seconds:.1f} s, study {screened_s:.0f} s with {screened.trials_run} Freqtrade "
        f"backtests; CLI {len(epochs)} epochs in {cli_s:.0f} s; plain study {plain.trials_run} trials in "
        f"{plain_s:.0f} s"
    )
    ours_rate = explored / screened_s * 60
    cli_rate = len(epochs) / cli_s * 60
    return [
        Figure(
            f"prescreen {strategy}: parameter sets/min (pre-screened study / freqtrade hyperopt -j 2)",
            ours_rate,
            cli_rate,
            "sets/min",
            ours_rate,
            cli_rate,
            1,
            "target ≥ 10×" + ("" if summary.used else f" — pre-screen off: {summary.note}"),
        ),
        Figure(
            f"prescreen {strategy}: Spearman vs Freqtrade on the sampled sets (ours / threshold)",
            rho,
            0.9,
            "rho",
            rho,
            0.9,
            1,
            f"target ratio ≥ 1; {summary.agreement.sample if summary.agreement else 0} sets",
        ),
        Figure(
            f"prescreen {strategy}: best confirmed Sharpe at equal wall time (screened / plain TPE)",
            screened.best.value,
            plain.best.value,
            "Sharpe",
            screened.best.value,
            plain.best.value,
            1,
            f"target ours ≥ plain; {screened_s:.0f} s each; plain ran {plain.trials_run} Freqtrade trials "
            f"on {WORKERS} workers",
        ),
    ]


def run(full: bool = False) -> list[Figure]:
    """Every shipped strategy's figures, printed and recorded."""
    plan = FULL if full else QUICK
    folder = candles_dir()
    print(
        f"pre-screen: {len(plan['pairs'])} pairs × {plan['timerange']}, explore {plan['explore']}, "
        f"top-{plan['top_k']}, sample {plan['sample']}, CLI {plan['cli_epochs']} epochs, seed {SEED}"
    )
    import optuna  # noqa: F401  # imports are not timed, as in bench.hyperopt

    work = Path(tempfile.mkdtemp(prefix="tradai-bench-prescreen-"))
    figures: list[Figure] = []
    try:
        for strategy in STRATEGIES:
            figures += bench_strategy(strategy, plan, folder, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report_figures("Hyperopt pre-screen (ratio: ours / baseline)", figures)
    record(figures)
    return figures


if __name__ == "__main__":
    run(full="--full" in sys.argv[1:])
