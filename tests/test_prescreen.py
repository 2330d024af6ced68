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
    SAMPLERS_PER_SEARCH,
    agreement,
    fast_daily_returns,
    sampler_seeds,
    search_seed,
    search_sizes,
    searches_for,
    spearman,
    unmodellable_reasons,
)
from tradai_resources.freqtrade_backtester import DEFAULT_EXCHANGE_INFO
from tradai_resources.freqtrade_hyperopt import HyperoptResource, hyperopt_argv
from tradai_resources.freqtrade_workspace import prepare_workspace
from tradai_resources.hyperopt_space import search_space
from tradai_resources.workers.fast_tpe import log_ndtr, vectorized_log_ndtr
from tradai_resources.workers.hyperopt_child import make_sampler, trial_engine
from tradai_resources.workers.jobs import HyperoptJob
from tradai_resources.workers.prescreen_engine import PrescreenEngine
from tradai_resources.workers.prescreen_exchange import WorkerExchange
from tradai_resources.workers.prescreen_study import _distinct_finalists, run_search

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


def test_indicators_that_read_tuned_values_are_computed_once_per_value_of_those(
    candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    # BollingerBreakout's bands read buy_bb_std: indicators per buy_bb_std value, not per parameter set
    job = _engine_job("BollingerBreakout", tmp_path, candles)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    with trial_engine(job) as (engine, _markets):
        assert engine.static_parameters == ["buy_bb_std"]
        screen = PrescreenEngine(engine)  # its own signals: indicators with the default, 2.0
        stds = {2.0}
        for i in range(12):
            trial = sampler.ask()
            values = {spec.name: spec.suggest(trial) for spec in job.search_space.parameters}
            values["buy_bb_std"] = (2.0, 2.5)[i % 2]
            stds.add(values["buy_bb_std"])
            first = screen.evaluate(values)
            again = screen.evaluate(values)  # from the caches: the same score
            assert again["value"] == first["value"]
        assert screen.indicator_computations == len(stds) == 2


# -- pure logic


def test_the_vectorized_log_cdf_is_optunas_and_tpe_draws_the_same_sets() -> None:
    from optuna.samplers._tpe import _truncnorm

    grid = np.concatenate([np.linspace(-400.0, 40.0, 8001), np.random.default_rng(3).normal(0, 30, 4000)])
    np.testing.assert_allclose(log_ndtr(grid), _truncnorm._log_ndtr(grid), rtol=1e-9, atol=1e-15)

    def draws(fast: bool) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(5, 10))

        def objective(trial: optuna.Trial) -> float:
            a = trial.suggest_int("a", 10, 40)
            b = trial.suggest_float("b", 0.8, 1.0, step=0.01)
            c = trial.suggest_float("c", -0.35, -0.02, step=0.001)
            return -((a - 23) ** 2) / 100 - (b - 0.9) ** 2 + c

        if fast:
            with vectorized_log_ndtr() as used:
                assert used and _truncnorm._log_ndtr is log_ndtr
                study.optimize(objective, n_trials=60)
        else:
            study.optimize(objective, n_trials=60)
        return [t.params for t in study.trials]

    assert draws(fast=True) == draws(fast=False)
    assert _truncnorm._log_ndtr is not log_ndtr  # restored after the exploration


def test_the_exploration_budget_is_split_into_seeded_searches() -> None:
    assert searches_for(60) == 1 and searches_for(60, workers=2) == 2
    assert searches_for(500, workers=2) == 2 and searches_for(1000, workers=2) == 4
    assert searches_for(3, workers=8) == 3
    assert search_sizes(1000, 4) == [250] * 4 and search_sizes(7, 3) == [3, 2, 2]
    assert search_seed(7, 0) == 7 and len({search_seed(7, i) for i in range(8)}) == 8


def test_a_search_takes_turns_between_samplers_each_proposing_while_the_last_set_is_pending() -> None:
    # one TPE sampler proposing one set at a time collapses onto the first good region it meets; a
    # study's two workers do not: each proposes while the other's set is in flight (constant liar)
    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_int("a", 10, 40)
        c = trial.suggest_float("c", -0.35, -0.02, step=0.001)
        return -((a - 23) ** 2) / 100 + c

    def search(seeds: list[int], seen: list | None = None) -> list[dict]:
        samplers = [make_sampler(seed, 5) for seed in seeds]

        def score(trial: optuna.Trial) -> float:
            value = objective(trial)
            if seen is not None:
                running = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                seen.append(([t.number for t in running], samplers.index(trial.study.sampler)))
            return value

        study = run_search(score, samplers, 30)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        return [t.params for t in study.trials]

    assert SAMPLERS_PER_SEARCH == 2 and len(set(sampler_seeds(7, 0) + sampler_seeds(7, 1))) == 4
    assert sampler_seeds(7, 0)[0] == search_seed(7, 0) == 7
    seen: list = []
    first = search(sampler_seeds(7, 0), seen)
    assert len(first) == 30
    # trial n is drawn by sampler n mod 2 while trial n - 1 is still pending (and nothing older is)
    assert seen == [([n - 1, n] if n else [0], n % 2) for n in range(30)]
    assert search(sampler_seeds(7, 0)) == first  # deterministic for given seeds
    # and not what one sampler drawing one set at a time proposes
    alone = optuna.create_study(direction="maximize", sampler=make_sampler(7, 5))
    alone.optimize(objective, n_trials=30)
    assert [t.params for t in alone.trials] != first


def test_finalists_are_the_best_sets_one_per_simulated_outcome() -> None:
    def scored(a: int, value: float, trades: int = 5, profit: float = 0.1) -> tuple[dict, dict]:
        return {"a": a}, {"value": value, "trades": trades, "profit_total": profit}

    explored = [
        scored(1, 2.0),
        scored(2, 2.0),  # the same trades as a=1 (e.g. an ROI table that never binds): one backtest
        scored(3, 1.5),
        scored(4, 1.9, trades=6),
        scored(5, 3.0),  # already backtested for the agreement sample
        scored(6, 0.5),
    ]
    skip = {'[["a", 5]]'}
    assert _distinct_finalists(explored, skip, 3) == [{"a": 1}, {"a": 4}, {"a": 3}]


def test_workers_read_each_others_whole_lines_only(tmp_path: Path) -> None:
    first, second = WorkerExchange(tmp_path, 0, 2), WorkerExchange(tmp_path, 1, 2)
    try:
        first.publish({"set": {"a": 1}, "record": {"value": 0.5}})
        with (tmp_path / "worker-0.jsonl").open("a") as handle:
            handle.write('{"done": 1')  # a line still being written
        assert list(second.receive()) == [(0, {"set": {"a": 1}, "record": {"value": 0.5}})]
        assert list(first.receive()) == []
        with (tmp_path / "worker-0.jsonl").open("a") as handle:
            handle.write("}\n")
        assert list(second.receive()) == [(0, {"done": 1})]
        with pytest.raises(RuntimeError, match="waited"):
            second.wait(lambda: False, lambda: None, "nothing", 0.1)
    finally:
        first.close()
        second.close()


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


def test_two_workers_share_the_exploration_and_the_freqtrade_confirmations(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    study = _study(tmp_path, "RsiMeanReversion", STRATEGIES_DIR, candles, workers=2, prescreen_trials=80)
    summary = study.prescreen
    assert summary is not None and summary.used and summary.agreement is not None
    assert summary.explored == 80 and summary.agreement.sample == 6 and summary.finalists == 3
    # the sample and the finalists, backtested once each, by both workers
    assert study.trials_run == 6 + 3 and {t.worker for t in study.trials} == {0, 1}
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 9
    # every explored set Freqtrade did not backtest is counted once in the DSR
    assert study.prescreened_total == len(summary.unconfirmed_daily_sharpes) == summary.distinct - 9
    assert study.dsr is None or study.dsr.n_trials == study.distinct_trials == summary.distinct


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
