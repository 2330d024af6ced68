"""The hyperopt pre-screen: its simulation against real Freqtrade, its self-check, and its fallbacks.

The equivalence tests build a study-worker's Freqtrade engine in this process (markets from the bundled
exchangeInfo snapshot, no network) on recorded candles, and compare, parameter set by parameter set, the
trades Freqtrade's `Backtesting.backtest` makes with the trades the compiled simulation makes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR, find_strategy_file, load_strategy_class
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.hyperopt import Objective, StudySpec, daily_returns
from tradai_core.prescreen import (
    MIN_SPEARMAN,
    agreement,
    fast_daily_returns,
    spearman,
    unmodellable_reasons,
)
from tradai_resources.freqtrade_backtester import DEFAULT_EXCHANGE_INFO
from tradai_resources.freqtrade_hyperopt import HyperoptResource, hyperopt_argv
from tradai_resources.freqtrade_workspace import prepare_workspace
from tradai_resources.hyperopt_space import search_space
from tradai_resources.workers.hyperopt_child import trial_engine
from tradai_resources.workers.jobs import HyperoptJob
from tradai_resources.workers.prescreen_engine import PrescreenEngine

PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT")
IN_SAMPLE = BacktestRunConfig(timerange="20210101-20210301", pairs=PAIRS)
YAML = {
    "RsiMeanReversion": "rsi_mean_reversion",
    "EmaAdxTrend": "ema_adx_trend",
    "BollingerBreakout": "bollinger_breakout",
}
SIGNAL_EXITS = {"rsi_overbought", "ema_cross_down", "bb_mean_return", "exit_signal"}
"""Freqtrade names a signal exit by the strategy's exit tag; the simulation says `exit_signal`."""


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    return {p: load_recorded(DEMO_CANDLES, p).loc["2020-11-01":"2021-03-02"] for p in PAIRS}


def _engine_job(name: str, root: Path, candles: dict[str, pd.DataFrame]) -> HyperoptJob:
    config = load_strategy_config(STRATEGIES_DIR / f"{YAML[name]}.yaml")
    cls = load_strategy_class(name, STRATEGIES_DIR)
    declared = search_space(cls, None, config.timeframe).spaces
    space = search_space(cls, (*declared, "roi", "stoploss"), config.timeframe)
    workspace = prepare_workspace(root, find_strategy_file(name, STRATEGIES_DIR), config, IN_SAMPLE, candles)
    argv = hyperopt_argv(
        workspace, name, IN_SAMPLE.timerange, space.spaces, epochs=1, jobs=1, seed=1, min_trades=1
    )
    return HyperoptJob(
        argv=tuple(argv),
        strategy=name,
        exchange="binance",
        exchange_info_path=str(DEFAULT_EXCHANGE_INFO),
        result_path=str(root / "result.json"),
        error_path=str(root / "error.json"),
        storage_url="sqlite://",
        study_name="equivalence",
        n_trials=1,
        sampler_seed=1,
        objective=Objective.SHARPE,
        min_trades=1,
        search_space=space,
    )


def _trade_keys(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    reason = frame["exit_reason"].where(~frame["exit_reason"].isin(SIGNAL_EXITS), "exit_signal")
    return sorted(
        zip(
            frame["pair"],
            frame["open_date"].astype(str),
            frame["close_date"].astype(str),
            reason,
            strict=True,
        )
    )


@pytest.mark.parametrize("name", ["RsiMeanReversion", "EmaAdxTrend", "BollingerBreakout"])
def test_the_simulation_makes_freqtrades_trades(
    name: str, candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    job = _engine_job(name, tmp_path, candles)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    compared = traded = 0
    with trial_engine(job) as (engine, _markets):
        screen = PrescreenEngine(engine)
        for _ in range(6):
            trial = sampler.ask()
            values = {spec.name: spec.suggest(trial) for spec in job.search_space.parameters}
            simulated = screen.trades(values)
            engine.apply(values)
            if engine.indicators_once:
                processed = {pair: frame.copy() for pair, frame in engine.preprocessed.items()}
            else:  # BollingerBreakout's bands read a tuned value: indicators per parameter set
                processed = engine.strategy.advise_all_indicators(engine.data)
            freqtrade = engine.backtesting.backtest(
                processed=processed, start_date=engine.min_date, end_date=engine.max_date
            )["results"]
            assert _trade_keys(simulated) == _trade_keys(freqtrade), values
            ours = simulated.sort_values(["pair", "open_date"])["profit_abs"].to_numpy(dtype=float)
            theirs = freqtrade.sort_values(["pair", "open_date"])["profit_abs"].to_numpy(dtype=float)
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)  # stated tolerance: 1e-6 USDT
            record = screen.evaluate(values)
            assert record["trades"] == len(freqtrade)
            compared += 1
            traded += len(freqtrade) > 0
    assert compared == 6 and traded >= 2  # the comparison covered parameter sets that trade


# -- pure logic


def test_the_fast_daily_returns_are_the_studys_daily_returns() -> None:
    start, end = pd.Timestamp("2021-01-01", tz="UTC"), pd.Timestamp("2021-01-11", tz="UTC")
    closes = pd.to_datetime(
        ["2021-01-01 05:00", "2021-01-03 23:00", "2021-01-03 01:00", "2021-01-12 00:00"], utc=True
    )
    profits = np.array([10.0, -4.0, 2.5, 1.0])
    expected = daily_returns(pd.Series(closes), profits, start, end, 1000.0)
    got = fast_daily_returns(closes.to_numpy("datetime64[ns]"), profits, start, end, 1000.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_the_pre_screen_switches_itself_off_below_the_agreement_threshold() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    on = agreement([1, 2, 3, 4, 5], [1.1, 2.5, 2.9, 4.2, 9.0])
    assert on.enabled and on.spearman == pytest.approx(1.0) and "pre-screen on" in on.note
    off = agreement([1, 2, 3, 4, 5], [5, 1, 4, 2, 3])
    assert not off.enabled and off.spearman is not None and off.spearman < MIN_SPEARMAN
    assert "switched off" in off.note and f"{off.spearman:.3f}" in off.note
    flat = agreement([1, 2, 3], [0.0, 0.0, 0.0])  # Freqtrade scored them all alike: no evidence either way
    assert not flat.enabled and flat.spearman is None and "undefined" in flat.note
    assert math.isnan(spearman([1, 2], [2, 1]))


def test_callbacks_the_simulation_does_not_model_are_named() -> None:
    assert unmodellable_reasons([]) == []
    reasons = unmodellable_reasons(["custom_stoploss", "populate_indicators"], position_adjustment=True)
    assert reasons == [
        "custom_stoploss moves the stop per trade",
        "position_adjustment_enable changes positions while they are open",
    ]


# -- studies with the pre-screen


def _variant(folder: Path, name: str, edit: tuple[str, str]) -> Path:
    """A copy of RsiMeanReversion named `name`, with one source edit."""
    folder.mkdir(exist_ok=True)
    source = (STRATEGIES_DIR / "rsi_mean_reversion.py").read_text().replace("RsiMeanReversion", name)
    assert edit[0] in source
    (folder / f"{name.lower()}.py").write_text(source.replace(*edit))
    yaml = (STRATEGIES_DIR / "rsi_mean_reversion.yaml").read_text().replace("RsiMeanReversion", name)
    (folder / f"{name.lower()}.yaml").write_text(yaml)
    return folder


def _study(tmp_path: Path, name: str, folder: Path, candles: dict[str, pd.DataFrame], **spec: object):
    resource = HyperoptResource(
        storage_url=f"sqlite:///{tmp_path / 'study.db'}", work_dir=str(tmp_path / "w")
    )
    settings = {"n_trials": 3, "workers": 1, "seed": 3, "min_trades": 3, "startup_trials": 5}
    settings.update({"prescreen": True, "prescreen_trials": 60, "agreement_sample": 6, **spec})
    window = {p: frame.loc["2020-12-01":] for p, frame in candles.items()}
    return resource.optimize(name, folder, window, IN_SAMPLE, StudySpec(**settings))


def test_a_pre_screened_study_keeps_only_freqtrade_scores_and_counts_every_explored_set(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    study = _study(tmp_path, "RsiMeanReversion", STRATEGIES_DIR, candles)
    summary = study.prescreen
    assert summary is not None and summary.used and summary.agreement is not None
    assert summary.agreement.spearman is not None and summary.agreement.spearman >= MIN_SPEARMAN
    assert summary.explored == 60 and summary.finalists == 3
    # the study itself holds the Freqtrade backtests only: the agreement sample and the finalists
    assert study.trials_run == 6 + 3
    assert study.best in study.trials
    # the DSR counts every explored set: Freqtrade's trials plus those only the pre-screen scored
    assert study.prescreened_total == len(summary.unconfirmed_daily_sharpes) > 0
    assert study.distinct_trials == len({tuple(sorted(t.params.items())) for t in study.trials}) + (
        study.prescreened_total
    )
    assert study.dsr is None or study.dsr.n_trials == study.distinct_trials


def test_a_strategy_the_simulation_cannot_model_falls_back_to_freqtrade_trials(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    folder = _variant(
        tmp_path / "strategies",
        "CustomStop",
        (
            "    def populate_indicators(",
            "    use_custom_stoploss = True\n\n"
            "    def custom_stoploss(self, pair, trade, current_time, current_rate, current_profit, **kw):\n"
            "        return -0.05\n\n"
            "    def populate_indicators(",
        ),
    )
    study = _study(tmp_path, "CustomStop", folder, candles)
    summary = study.prescreen
    assert summary is not None and not summary.used and summary.explored == 0
    assert "custom_stoploss" in summary.note and "plain Freqtrade trials" in summary.note
    assert study.trials_run == 3 + 6  # the same Freqtrade budget, all sampled by TPE
    assert study.prescreened_total == 0


def test_a_pre_screen_that_ranks_unlike_freqtrade_switches_itself_off(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    # entries drawn at random on every call: the pre-screen's signals (computed once per buy-space values)
    # and Freqtrade's (recomputed per backtest) are unrelated, so their rankings are (P(rho ≥ 0.9) < 1e-4
    # for 10 independent sets), as for any strategy whose signals the pre-screen cannot reproduce
    folder = _variant(
        tmp_path / "strategies",
        "Coin",
        (
            '(dataframe["rsi"] < self.buy_rsi.value)',
            '(__import__("numpy").random.default_rng().random(len(dataframe)) < self.buy_rsi.value / 400)',
        ),
    )
    study = _study(tmp_path, "Coin", folder, candles, min_trades=0, agreement_sample=10)
    summary = study.prescreen
    assert summary is not None and summary.agreement is not None and not summary.used
    assert summary.agreement.spearman is None or summary.agreement.spearman < MIN_SPEARMAN
    assert "switched off" in summary.note or "undefined" in summary.note
    assert summary.finalists == 0 and study.prescreened_total == 0
    assert study.trials_run == 10 + 3  # the sample, then plain Freqtrade trials
