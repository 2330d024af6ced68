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

Each strategy runs the CLI once and, for each of three seeds, a pre-screened study and a plain one; the
figures are medians over the seeds (the best score found by TPE depends much on its seed). The Numba kernel
is compiled into its on-disk cache before anything is timed (a checkout compiles it once, on its first
study).

`uv run python -m bench.prescreen` runs the short default (3 pairs × 2 months, 1000 explored sets per
study, 3 seeds; about a quarter of an hour on 2 loaded cores); `--full` runs 6 pairs × 6 months, one seed.
Figures go to the bench results JSON.
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
    "explore": 1000,
    "top_k": 5,
    "sample": 12,
    "seeds": (SEED, SEED + 1, SEED + 2),
}
FULL = {
    "pairs": ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT"),
    "timerange": "20210601-20211201",
    "cli_epochs": 60,
    "explore": 3000,
    "top_k": 10,
    "sample": 20,
    "seeds": (SEED,),
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
) -> tuple[float, float, StudyReport, HyperoptResource]:
    """Run one study in a fresh storage; (wall time, start as a Unix time, report, its resource)."""
    resource = HyperoptResource(storage_url=f"sqlite:///{root / 'optuna.db'}", work_dir=str(root / "work"))
    started = time.time()
    study = resource.optimize(
        strategy, STRATEGIES_DIR, candles, BacktestRunConfig(timerange=timerange, pairs=tuple(candles)), spec
    )
    return time.time() - started, started, study, resource


def best_within(
    resource: HyperoptResource, study: StudyReport, started: float, seconds: float
) -> tuple[float, int]:
    """The best value among the study's trials completed within `seconds` of `started` (a Unix time), and
    how many completed: the study's best at that wall time."""
    values = {
        trial.number: trial.datetime_complete.timestamp()
        for trial in resource.load_study(study.study_name).get_trials(deepcopy=False)
        if trial.datetime_complete is not None
    }
    done = [t.value for t in study.trials if values.get(t.number, float("inf")) - started <= seconds]
    return (max(done) if done else float("nan")), len(done)


def warm_kernel() -> None:
    """Compile the simulation into Numba's on-disk cache once, outside the timings (a checkout compiles it
    on its first study; every later study, worker and run loads it)."""
    from tradai_core.prescreen import SimulationSettings, market_arrays, simulate_trades

    dates = pd.date_range("2021-01-01", periods=4, freq="h", tz="UTC")
    frame = pd.DataFrame(
        {"date": dates, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "enter_long": 0, "exit_long": 0}
    )
    market = market_arrays({"X/USDT": frame}, dates[0], dates[-1])
    simulate_trades(market, SimulationSettings(minimal_roi={0: 0.1}, stoploss=-0.1, timeframe_minutes=60))


def bench_strategy(strategy: str, plan: dict, folder: Path, work: Path) -> list[Figure]:
    """The three figures of one strategy: per seed, a pre-screened study and a plain one given the same
    wall time; one stock CLI run."""
    candles = _candles(folder, plan["pairs"], plan["timerange"])
    spaces = spaces_of(strategy)
    cli_s, epochs = run_cli(
        work / f"{strategy}-cli",
        candles,
        plan["cli_epochs"],
        folder,
        strategy=strategy,
        timerange=plan["timerange"],
        spaces=spaces,
    )
    cli_rate = len(epochs) / cli_s * 60
    print(f"{strategy}: CLI {len(epochs)} epochs in {cli_s:.0f} s ({cli_rate:.1f}/min)")
    rates, rhos, ours_best, plain_best, notes = [], [], [], [], []
    for seed in plan["seeds"]:
        spec = StudySpec(
            n_trials=plan["top_k"],
            workers=WORKERS,
            seed=seed,
            min_trades=1,
            spaces=spaces,
            prescreen=True,
            prescreen_trials=plan["explore"],
            agreement_sample=plan["sample"],
        )
        screened_s, _, screened, _ = _study(
            work / f"{strategy}-screened-{seed}", strategy, candles, plan["timerange"], spec
        )
        summary = screened.prescreen
        assert summary is not None
        explored = summary.distinct if summary.used else screened.trials_run
        plain_spec = StudySpec(
            n_trials=100_000,
            workers=WORKERS,
            seed=seed,
            min_trades=1,
            spaces=spaces,
            time_budget_seconds=screened_s,
        )
        plain_s, plain_start, plain, resource = _study(
            work / f"{strategy}-plain-{seed}", strategy, candles, plan["timerange"], plain_spec
        )
        plain_value, plain_trials = best_within(resource, plain, plain_start, screened_s)
        agreement = summary.agreement
        rho = agreement.spearman if agreement and agreement.spearman is not None else 0.0
        print(
            f"  seed {seed}: {summary.note}; explored {summary.explored} ({summary.distinct} distinct), "
            f"{summary.explore_seconds:.1f} s exploring; study {screened_s:.0f} s with {screened.trials_run} "
            f"Freqtrade backtests, best {screened.best.value:.3f}; plain study: {plain_trials} trials done "
            f"within {screened_s:.0f} s (of {plain.trials_run} in {plain_s:.0f} s), best {plain_value:.3f}"
        )
        rates.append(explored / screened_s * 60)
        rhos.append(rho)
        ours_best.append(screened.best.value)
        plain_best.append(plain_value)
        if not summary.used:
            notes.append(f"seed {seed}: pre-screen off: {summary.note}")
    wins = sum(o >= p for o, p in zip(ours_best, plain_best, strict=True))
    seeds = f"median of {len(plan['seeds'])} seeds" if len(plan["seeds"]) > 1 else "a single seed"
    return [
        Figure.of(
            f"prescreen {strategy}: parameter sets/min (pre-screened study / freqtrade hyperopt -j 2)",
            rates,
            [cli_rate],
            "sets/min",
            f"target ≥ 10×; {seeds}, one CLI run" + "".join(f" — {n}" for n in notes),
        ),
        Figure.of(
            f"prescreen {strategy}: Spearman vs Freqtrade on the sampled sets (ours / threshold)",
            rhos,
            [0.9],
            "rho",
            f"target ratio ≥ 1; {plan['sample']} sets per study; {seeds}",
        ),
        Figure.of(
            f"prescreen {strategy}: best confirmed Sharpe at equal wall time (screened / plain TPE)",
            ours_best,
            plain_best,
            "Sharpe",
            f"target ours ≥ plain; {seeds} (ours ≥ plain in {wins} of {len(ours_best)}); plain: Optuna TPE "
            f"over Freqtrade on {WORKERS} workers, trials completed within the screened study's wall time",
        ),
    ]


def run(full: bool = False) -> list[Figure]:
    """Every shipped strategy's figures, printed and recorded."""
    plan = FULL if full else QUICK
    folder = candles_dir()
    print(
        f"pre-screen: {len(plan['pairs'])} pairs × {plan['timerange']}, explore {plan['explore']}, "
        f"top-{plan['top_k']}, sample {plan['sample']}, CLI {plan['cli_epochs']} epochs (seed {SEED}), "
        f"studies with seeds {', '.join(map(str, plan['seeds']))}, {WORKERS} workers each"
    )
    import optuna  # noqa: F401  # imports are not timed, as in bench.hyperopt

    warm_kernel()

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
