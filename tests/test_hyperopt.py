"""Hyperparameter optimization: Optuna studies over real Freqtrade backtests, and the overfitting guards.

Studies here run the real engine (Freqtrade in study-worker processes, markets from the exchangeInfo
snapshot) against real Optuna SQLite storage, on recorded candles of three pairs over two months.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded

from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR, load_strategy_class
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.deflated_sharpe import deflated_sharpe_ratio
from tradai_core.errors import BacktestError, ConfigurationError, ValidationError
from tradai_core.hyperopt import (
    MIN_TRADES_PENALTY,
    UNDEFINED_OBJECTIVE,
    OOSRule,
    ReturnStats,
    StudyReport,
    StudySpec,
    TrialRecord,
    daily_returns,
    default_study_name,
    hyperopt_windows,
    objective_value,
    oos_collapse_reasons,
    overfitting_gate,
    return_stats,
    study_deflated_sharpe,
    worker_seed,
    worker_shares,
)
from tradai_core.tuned_params import TunedParameters, apply_tuned, apply_values
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.hyperopt_space import search_space

PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT")
IN_SAMPLE = BacktestRunConfig(timerange="20210101-20210301", pairs=PAIRS)
SPEC = StudySpec(n_trials=8, workers=1, seed=11, min_trades=3, startup_trials=4)


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    """Recorded candles of three pairs for the in-sample window plus the strategies' startup."""
    start, end = pd.Timestamp("2020-12-01", tz="UTC"), pd.Timestamp("2021-03-02", tz="UTC")
    return {pair: load_recorded(DEMO_CANDLES, pair).loc[start:end] for pair in PAIRS}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hyperopt")


def resource(work: Path, db: str) -> HyperoptResource:
    return HyperoptResource(storage_url=f"sqlite:///{work / db}", work_dir=str(work / "scratch"))


@pytest.fixture(scope="module")
def seeded(work: Path, candles: dict[str, pd.DataFrame]) -> Iterator[tuple[StudyReport, StudyReport]]:
    """The same seeded one-worker study run twice, into two separate storages."""
    first = resource(work, "a.db").optimize("RsiMeanReversion", STRATEGIES_DIR, candles, IN_SAMPLE, SPEC)
    second = resource(work, "b.db").optimize("RsiMeanReversion", STRATEGIES_DIR, candles, IN_SAMPLE, SPEC)
    yield first, second


# -- search space


def test_the_search_space_is_the_strategys_freqtrade_hyperoptable_parameters() -> None:
    rsi = search_space(load_strategy_class("RsiMeanReversion"), None, "1h")
    assert rsi.spaces == ("buy", "sell")
    assert [(p.name, p.space, p.kind, p.low, p.high) for p in rsi.parameters] == [
        ("buy_rsi", "buy", "int", 10, 40),
        ("buy_trend_floor", "buy", "float", 0.8, 1.0),
        ("sell_rsi", "sell", "int", 55, 90),
    ]
    assert rsi.parameters[1].step == pytest.approx(0.01) and rsi.parameters[1].decimals == 2
    # optimize=False parameters (EmaAdxTrend's EMA periods) are not tuned
    assert search_space(load_strategy_class("EmaAdxTrend"), None, "1h").names == ("buy_adx",)


def test_roi_and_stoploss_spaces_come_from_freqtrade_when_asked_for() -> None:
    space = search_space(load_strategy_class("RsiMeanReversion"), ["buy", "roi", "stoploss"], "1h")
    assert space.names == (
        "buy_rsi",
        "buy_trend_floor",
        "roi_t1",
        "roi_t2",
        "roi_t3",
        "roi_p1",
        "roi_p2",
        "roi_p3",
        "stoploss",
    )
    stoploss = space.parameters[-1]
    assert (stoploss.low, stoploss.high, stoploss.decimals) == (-0.35, -0.02, 3)


def test_an_unknown_or_empty_space_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="trailing"):
        search_space(load_strategy_class("RsiMeanReversion"), ["buy", "trailing"], "1h")
    with pytest.raises(ConfigurationError, match="no optimizable parameter in space 'sell'"):
        search_space(load_strategy_class("EmaAdxTrend"), ["sell"], "1h")


# -- windows, objective, returns


def test_windows_lie_before_the_holdout_and_never_overlap() -> None:
    windows = hyperopt_windows(date(2022, 6, 13), in_sample_days=180, oos_days=60)
    assert windows.oos_end == date(2022, 6, 13)
    assert windows.oos_start == date(2022, 4, 14)
    assert windows.in_sample_start == date(2021, 10, 16)
    assert windows.in_sample_timerange == "20211016-20220414"
    assert windows.oos_timerange == "20220414-20220613"
    assert default_study_name("RsiMeanReversion", windows.in_sample_timerange, "sharpe") == (
        "RsiMeanReversion-20211016-20220414-sharpe"
    )


def test_the_objective_is_freqtrades_statistic_with_a_penalty_below_the_minimum_trade_count() -> None:
    stats = {"total_trades": 12, "sharpe": 1.5, "sortino": 2.0, "profit_total": 0.08, "calmar": 3.0}
    assert objective_value(stats, "sharpe", min_trades=10) == 1.5
    assert objective_value(stats, "profit", min_trades=10) == 0.08
    assert objective_value(stats, "calmar", min_trades=10) == 3.0
    assert objective_value(stats, "sortino", min_trades=15) == MIN_TRADES_PENALTY - 3
    assert objective_value(stats, "sortino", min_trades=14) > objective_value(stats, "sortino", min_trades=15)


def test_an_undefined_statistic_is_never_scored_as_a_number() -> None:
    # Freqtrade's −100 for "no variance" would outrank a real Sortino of −150: it must score below both
    sentinel = {"total_trades": 12, "sharpe": 1.5, "sortino": -100.0, "profit_total": 0.08, "calmar": -100.0}
    real = {**sentinel, "sortino": -150.0}
    assert objective_value(sentinel, "sortino", min_trades=10) == UNDEFINED_OBJECTIVE
    assert objective_value(sentinel, "calmar", min_trades=10) == UNDEFINED_OBJECTIVE
    assert objective_value(real, "sortino", min_trades=10) == -150.0 > UNDEFINED_OBJECTIVE
    # below the backtest's resolution (statistics.undefined_reasons) a finite value is undefined too
    tiny = {**sentinel, "sortino": 3053.0}
    assert objective_value(tiny, "sortino", min_trades=10, undefined={"sortino"}) == UNDEFINED_OBJECTIVE
    assert objective_value(tiny, "sharpe", min_trades=10, undefined={"sortino"}) == 1.5
    assert objective_value({**sentinel, "sharpe": float("nan")}, "sharpe", 10) == UNDEFINED_OBJECTIVE


def test_daily_returns_count_each_profit_on_its_closing_day_against_the_balance_before_it() -> None:
    closes = pd.to_datetime(["2021-01-02 05:00", "2021-01-02 07:00", "2021-01-04 00:00"], utc=True)
    returns = daily_returns(
        closes,
        [30.0, -10.0, 51.0],
        datetime(2021, 1, 1, tzinfo=UTC),
        datetime(2021, 1, 5, tzinfo=UTC),
        1000.0,
    )
    assert returns.tolist() == pytest.approx([0.0, 0.02, 0.0, 51 / 1020])
    assert return_stats(np.zeros(30)) == ReturnStats(
        sharpe=0.0, skewness=0.0, kurtosis=3.0, n_days=30, defined=False
    )


def test_trials_are_split_across_workers_and_seeds_never_repeat() -> None:
    assert worker_shares(10, 2) == [5, 5]
    assert worker_shares(7, 2) == [4, 3]
    assert worker_shares(1, 4) == [1]
    assert worker_seed(42, 0, 0) == 42  # a fresh one-worker study uses the seed itself
    assert len({worker_seed(42, w, before) for w in range(2) for before in (0, 8, 16)}) == 6


# -- the gate


def record(number: int, value: float, daily_sharpe: float, duplicate_of: int | None = None) -> TrialRecord:
    return TrialRecord(
        number=number,
        value=value,
        params={"x": number},
        trades=20,
        sharpe=value,
        sortino=value,
        calmar=value,
        profit_total=0.1,
        max_drawdown=0.05,
        daily=ReturnStats(sharpe=daily_sharpe, skewness=-0.5, kurtosis=5.0, n_days=180, defined=True),
        duplicate_of=duplicate_of,
    )


def test_dsr_deflates_the_best_trial_by_every_distinct_trial() -> None:
    trials = [
        record(0, 1.0, 0.05),
        record(1, 2.0, 0.12),
        record(2, 0.5, 0.02),
        record(3, 2.0, 0.12, duplicate_of=1),
    ]
    result = study_deflated_sharpe(trials, trials[1])
    expected = deflated_sharpe_ratio(
        0.12, 180, 3, float(np.var([0.05, 0.12, 0.02], ddof=1)), skewness=-0.5, kurtosis=5.0
    )
    assert result == expected  # N = 3: the repeated parameter set is not a trial of its own
    assert result.dsr < result.psr


def test_dsr_of_a_best_trial_without_trades_is_refused() -> None:
    flat = record(0, MIN_TRADES_PENALTY, 0.0).model_copy(
        update={"daily": ReturnStats(sharpe=0.0, skewness=0.0, kurtosis=3.0, n_days=60, defined=False)}
    )
    with pytest.raises(ValidationError, match="undefined"):
        study_deflated_sharpe([flat], flat)


def test_out_of_sample_collapse_is_a_negative_or_a_much_smaller_sharpe() -> None:
    rule = OOSRule(min_sharpe=0.0, min_fraction=0.25, min_trades=5)
    assert oos_collapse_reasons(2.0, 1.0, 12, rule) == []
    assert oos_collapse_reasons(2.0, 0.4, 12, rule) == [
        "out-of-sample Sharpe 0.40 is below 25% of the in-sample 2.00"
    ]
    assert "below 0.00" in oos_collapse_reasons(2.0, -0.1, 12, rule)[0]
    assert oos_collapse_reasons(2.0, 1.0, 3, rule) == ["3 out-of-sample trades, fewer than 5"]


def test_the_gate_needs_both_a_high_dsr_and_a_sound_out_of_sample() -> None:
    dsr = deflated_sharpe_ratio(0.15, 250, 20, 0.002)
    rule = OOSRule()
    assert overfitting_gate(dsr, 0.5, 2.0, 1.5, 10, rule).passed
    refused = overfitting_gate(dsr, 0.999, 2.0, 1.5, 10, rule)
    assert not refused.passed and not refused.oos_collapsed and "DSR" in refused.summary()
    collapsed = overfitting_gate(dsr, 0.5, 2.0, -0.3, 10, rule)
    assert not collapsed.passed and collapsed.oos_collapsed
    assert not overfitting_gate(None, 0.5, 2.0, 1.5, 10, rule, "no trade").passed


def test_tuned_parameters_are_layered_over_the_strategy_config_explicitly() -> None:
    config = load_strategy_config(STRATEGIES_DIR / "rsi_mean_reversion.yaml")
    tuned_config = apply_values(config, {"buy_rsi": 22}, {}, {"0": 0.05, "120": 0.0}, -0.07)
    assert tuned_config.buy_params == {"buy_rsi": 22, "buy_trend_floor": 0.9}
    assert tuned_config.sell_params == config.sell_params
    assert tuned_config.parameters == {"stoploss": -0.07, "minimal_roi": {"0": 0.05, "120": 0.0}}
    other = TunedParameters.model_validate(
        {
            "strategy": "EmaAdxTrend", "version": 1, "objective": "sharpe", "best_value": 1.0, "study": "s",
            "storage": "sqlite:///x", "trials": 1, "distinct_trials": 1, "dsr": 0.5, "dsr_threshold": 0.95,
            "gate_passed": False, "gate_summary": "refused", "in_sample_timerange": "20210101-20210301",
            "oos_timerange": "20210301-20210401", "oos_sharpe": 0.0, "oos_profit_ratio": 0.0, "oos_trades": 0,
            "pairs": ["BTC/USDT"], "strategy_config_version": "1.0.0", "source_sha256": "0",
            "mlflow_run_id": "r", "created_at": "2022-01-01T00:00:00Z",
        }
    )  # fmt: skip
    with pytest.raises(ValidationError, match="for EmaAdxTrend, not RsiMeanReversion"):
        apply_tuned(config, other)


# -- studies on the real engine


def test_the_same_seed_gives_the_same_study(seeded: tuple[StudyReport, StudyReport]) -> None:
    first, second = seeded
    assert first.trials_total == second.trials_total == SPEC.n_trials
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]
    assert len({tuple(t.params.values()) for t in first.trials}) > 1  # it did explore


def test_a_study_records_what_the_gate_needs(seeded: tuple[StudyReport, StudyReport]) -> None:
    study = seeded[0]
    assert study.indicators_once  # RsiMeanReversion reads no tuned value in populate_indicators
    assert study.best.value == max(t.value for t in study.trials)
    assert study.best.daily.n_days == 59
    assert study.dsr is not None and 0.0 <= study.dsr.dsr <= 1.0
    assert study.dsr.n_trials == study.distinct_trials
    assert set(study.best.buy_params) == {"buy_rsi", "buy_trend_floor"} and set(study.best.sell_params) == {
        "sell_rsi"
    }
    assert study.trials_per_minute > 0


def test_the_best_trials_value_equals_a_plain_backtest_with_its_parameters(
    seeded: tuple[StudyReport, StudyReport], candles: dict[str, pd.DataFrame], work: Path
) -> None:
    best = seeded[0].best
    config = load_strategy_config(STRATEGIES_DIR / "rsi_mean_reversion.yaml")
    tuned = apply_values(config, best.buy_params, best.sell_params, best.roi, best.stoploss)
    plain = FreqtradeResource(work_dir=str(work / "bt")).backtest(
        "RsiMeanReversion", STRATEGIES_DIR, candles, IN_SAMPLE, strategy_config=tuned
    )
    assert plain.metrics.trade_count == best.trades > SPEC.min_trades
    undefined = set(plain.metrics.undefined)
    assert objective_value(plain.freqtrade_stats, SPEC.objective, SPEC.min_trades, undefined) == best.value
    assert best.undefined == {name: why.reason for name, why in plain.metrics.undefined.items()}
    assert plain.metrics.sharpe == best.sharpe
    assert plain.metrics.total_profit_ratio == pytest.approx(best.profit_total, rel=1e-12)


def test_a_new_run_continues_the_study(
    seeded: tuple[StudyReport, StudyReport], work: Path, candles: dict[str, pd.DataFrame]
) -> None:
    first = seeded[1]
    more = resource(work, "b.db").optimize(
        "RsiMeanReversion", STRATEGIES_DIR, candles, IN_SAMPLE, SPEC.model_copy(update={"n_trials": 4})
    )
    assert more.study_name == first.study_name
    assert (more.trials_before, more.trials_run, more.trials_total) == (8, 4, 12)
    assert [t.number for t in more.trials] == list(range(12))
    assert more.best.value >= first.best.value
    assert more.trials[:8] == first.trials  # earlier trials are kept as they were
    # the resumed sampler is seeded differently: it does not replay the study's first trials
    assert [t.params for t in more.trials[8:]] != [t.params for t in first.trials[:4]]


def test_a_study_resumed_with_other_settings_is_refused(
    seeded: tuple[StudyReport, StudyReport], work: Path, candles: dict[str, pd.DataFrame]
) -> None:
    with pytest.raises(ConfigurationError, match="min_trades changed"):
        resource(work, "a.db").optimize(
            "RsiMeanReversion", STRATEGIES_DIR, candles, IN_SAMPLE, SPEC.model_copy(update={"min_trades": 5})
        )
    storage = f"sqlite:///{work / 'a.db'}"
    assert len(optuna.load_study(study_name=seeded[0].study_name, storage=storage).trials) == SPEC.n_trials


def test_indicators_are_recomputed_per_trial_when_populate_indicators_reads_a_tuned_value(
    work: Path, candles: dict[str, pd.DataFrame]
) -> None:
    # BollingerBreakout builds its bands from buy_bb_std.value: computing them once would freeze it
    study = resource(work, "bb.db").optimize(
        "BollingerBreakout",
        STRATEGIES_DIR,
        candles,
        IN_SAMPLE,
        SPEC.model_copy(update={"n_trials": 3, "min_trades": 1}),
    )
    assert not study.indicators_once and study.static_parameters == ("buy_bb_std",)
    assert len({t.params["buy_bb_std"] for t in study.trials}) > 1


def test_a_crashing_strategy_fails_the_study_with_its_log(
    tmp_path: Path, candles: dict[str, pd.DataFrame]
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    source = (STRATEGIES_DIR / "rsi_mean_reversion.py").read_text().replace("RsiMeanReversion", "Crashing")
    source = source.replace(
        "    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:\n",
        "    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:\n"
        "        raise RuntimeError('entry crash on purpose')\n",
    )
    (folder / "crashing.py").write_text(source)
    (folder / "crashing.yaml").write_text(
        (STRATEGIES_DIR / "rsi_mean_reversion.yaml").read_text().replace("RsiMeanReversion", "Crashing")
    )
    with pytest.raises(BacktestError, match="entry crash on purpose"):
        resource(tmp_path, "crash.db").optimize("Crashing", folder, candles, IN_SAMPLE, SPEC)
    assert not any((tmp_path / "scratch").iterdir())  # the workspace is removed
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == [
        "crashing.py",
        "crashing.yaml",
    ]


@pytest.mark.slow
def test_a_repeated_parameter_set_is_not_backtested_twice(
    work: Path, candles: dict[str, pd.DataFrame]
) -> None:
    # EmaAdxTrend tunes one integer in 15..40: thirty trials must repeat some
    study = resource(work, "ema.db").optimize(
        "EmaAdxTrend",
        STRATEGIES_DIR,
        candles,
        IN_SAMPLE,
        SPEC.model_copy(update={"n_trials": 30, "min_trades": 1}),
    )
    repeats = [t for t in study.trials if t.duplicate_of is not None]
    assert repeats and study.distinct_trials == len({t.params["buy_adx"] for t in study.trials})
    for repeat in repeats:
        original = study.trials[repeat.duplicate_of]
        assert (repeat.params, repeat.value, repeat.seconds) == (original.params, original.value, 0.0)
    assert study.dsr is None or study.dsr.n_trials == study.distinct_trials
    assert math.isfinite(study.best.value)


def test_a_study_trades_pairs_the_snapshot_lacks(shared_candles_dir: Path, tmp_path: Path) -> None:
    pairs = ("BTC/USDT", "SOL/USDT")  # SOL is not in the recorded exchangeInfo
    run = BacktestRunConfig(timerange="20210101-20210301", pairs=pairs)
    recorded = {p: load_recorded(shared_candles_dir, p).loc["2020-12-01":"2021-03-02"] for p in pairs}
    spec = StudySpec(n_trials=1, workers=1, seed=3, min_trades=0, startup_trials=1)
    study = resource(tmp_path, "off.db").optimize("RsiMeanReversion", STRATEGIES_DIR, recorded, run, spec)
    assert study.pairs == pairs and study.trials_run == 1
    assert list((tmp_path / "scratch").iterdir()) == []
    # the trial traded both pairs: it is the backtest of its parameters (which markets SOL itself)
    best = study.best
    config = load_strategy_config(STRATEGIES_DIR / "rsi_mean_reversion.yaml")
    tuned = apply_values(config, best.buy_params, best.sell_params, best.roi, best.stoploss)
    plain = FreqtradeResource(work_dir=str(tmp_path / "bt")).backtest(
        "RsiMeanReversion", STRATEGIES_DIR, recorded, run, strategy_config=tuned
    )
    assert "SOL/USDT" in {trade.pair for trade in plain.trades}
    assert best.trades == plain.metrics.trade_count
    assert best.profit_total == pytest.approx(plain.metrics.total_profit_ratio, rel=1e-12)
