"""Undefined statistics: Freqtrade's −100 / no-trade 0 become None with a reason, decided with Freqtrade's
own formulas, and the gates read them as "not enough evidence"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from freqtrade.data.metrics import calculate_calmar, calculate_sharpe, calculate_sortino, calculate_sqn

from tradai_core.backtest_result import parse_backtest_stats
from tradai_core.comparison import ComparisonConfig, Decision, compare_champion_challenger
from tradai_core.hyperopt import OOSRule, overfitting_gate
from tradai_core.model_lifecycle import ChampionPerformance, RollbackLimits, assess_performance
from tradai_core.statistics import (
    FREQTRADE_SENTINEL,
    MIN_RESOLUTION,
    fee_resolution,
    format_statistic,
    undefined_reasons,
)

START = datetime(2022, 8, 1, tzinfo=UTC)
END = datetime(2022, 9, 1, tzinfo=UTC)
BALANCE = 1000.0


def freqtrade_values(profits: list[float]) -> dict[str, float]:
    """Freqtrade's own Sharpe, Sortino, Calmar and SQN of trades with these `profit_abs`."""
    closes = [START + timedelta(days=1 + i) for i in range(len(profits))]
    trades = pd.DataFrame({"profit_abs": profits, "close_date": closes, "open_date": closes})
    return {
        "sharpe": calculate_sharpe(trades, START, END, BALANCE),
        "sortino": calculate_sortino(trades, START, END, BALANCE),
        "calmar": calculate_calmar(trades, START, END, BALANCE),
        "sqn": calculate_sqn(trades, BALANCE),
    }


def drawdown(profits: list[float]) -> float:
    equity = BALANCE + np.cumsum([0.0, *profits])
    peak = np.maximum.accumulate(equity)
    return float(((peak - equity) / peak).max())


@pytest.mark.parametrize(
    ("profits", "undefined"),
    [
        ([], {"sharpe", "sortino", "calmar", "sqn"}),
        ([12.0], {"sharpe", "sortino", "calmar", "sqn"}),
        ([-12.0], {"sharpe", "sortino", "sqn"}),
        ([5.0, 7.0, 9.0], {"sortino", "calmar"}),
        ([5.0, -3.0, 9.0], {"sortino"}),
        ([5.0, -3.0, 9.0, -4.0], set()),
    ],
)
def test_undefined_exactly_where_freqtrade_reports_its_sentinel(
    profits: list[float], undefined: set[str]
) -> None:
    reported = freqtrade_values(profits)
    reasons = undefined_reasons(profits, BALANCE, drawdown(profits), reported)
    assert set(reasons) == undefined
    for name, value in reported.items():
        if name in undefined and profits:
            assert value == FREQTRADE_SENTINEL
        elif not profits:
            assert value == 0  # Freqtrade's "no trades"
        else:
            assert value != FREQTRADE_SENTINEL
    if not profits:
        assert {r.reason for r in reasons.values()} == {"no trades in the window"}


def test_reasons_say_why_in_words() -> None:
    one = undefined_reasons([12.0], BALANCE, 0.0)
    assert one["sharpe"].reason == "one trade: its return has no variance"
    assert one["sortino"].reason == "no losing trade: no downside deviation"
    assert one["calmar"].reason == "no drawdown in the window"
    same = undefined_reasons([5.0, 5.0, 5.0], BALANCE, 0.0)
    assert same["sharpe"].reason == "all 3 trades returned the same: no variance"
    assert format_statistic(None, one["sharpe"]) == "n/a (one trade: its return has no variance)"
    assert format_statistic(1.234) == "1.23"


def one_trade_stats() -> dict[str, object]:
    """Freqtrade's statistics for a window with a single winning trade (the shape its CLI exports)."""
    opened, closed = START + timedelta(hours=5), START + timedelta(hours=9)
    ms = lambda moment: int(moment.timestamp() * 1000)  # noqa: E731
    return {
        "trades": [
            {
                "pair": "SOL/USDT",
                "open_timestamp": ms(opened),
                "close_timestamp": ms(closed),
                "open_rate": 30.0,
                "close_rate": 31.0,
                "amount": 10.0,
                "stake_amount": 300.0,
                "fee_open": 0.001,
                "fee_close": 0.001,
                "profit_abs": 9.4,
                "profit_ratio": 0.0313,
                "exit_reason": "roi",
                "trade_duration": 240,
            }
        ],
        "backtest_start_ts": ms(START),
        "backtest_end_ts": ms(END),
        "starting_balance": BALANCE,
        "final_balance": BALANCE + 9.4,
        "profit_total_abs": 9.4,
        "profit_total": 0.0094,
        "cagr": 0.11,
        **freqtrade_values([9.4]),
        "max_drawdown_account": 0.0,
        "max_drawdown_abs": 0.0,
        "winrate": 1.0,
        "profit_factor": 0.0,
        "expectancy": 9.4,
        "expectancy_ratio": 100.0,
        "total_trades": 1,
        "wins": 1,
        "draws": 0,
        "losses": 0,
        "holding_avg_s": 14400,
        "market_change": 0.02,
        "timeframe": "1h",
        "pairlist": ["SOL/USDT"],
        "stake_currency": "USDT",
    }


def test_a_one_trade_backtest_has_no_sharpe_rather_than_minus_100() -> None:
    result = parse_backtest_stats(one_trade_stats(), "RsiMeanReversion", "2026.9")
    m = result.metrics
    assert m.sharpe is None and m.sortino is None and m.calmar is None and m.sqn is None
    assert m.undefined["sharpe"].reason == "one trade: its return has no variance"
    assert m.display("sharpe") == "n/a (one trade: its return has no variance)"
    numbers = m.defined_numbers()
    assert "sharpe" not in numbers and numbers["trade_count"] == 1.0
    assert FREQTRADE_SENTINEL not in numbers.values()


def test_the_comparison_is_inconclusive_when_a_sharpe_is_undefined() -> None:
    index = pd.date_range("2022-01-01", periods=500, freq="1h", tz="UTC")
    rng = np.random.default_rng(3)
    flat = pd.Series(0.0, index=index)  # the champion never held a position
    moving = pd.Series(rng.normal(0.001, 0.01, 500), index=index)
    result = compare_champion_challenger(
        flat,
        moving,
        rng.normal(0, 0.01, 40),
        rng.normal(0.01, 0.01, 40),
        timeframe="1h",
        config=ComparisonConfig(min_trades=30),
    )
    assert result.decision is Decision.INCONCLUSIVE
    assert result.champion.sharpe is None and result.challenger.sharpe is not None
    assert "not enough evidence: champion Sharpe is undefined" in result.reason


def test_the_overfitting_gate_refuses_an_undefined_out_of_sample_sharpe_as_no_evidence() -> None:
    gate = overfitting_gate(
        None, 0.0, 2.0, None, 1, OOSRule(), "n/a", "one trade: its return has no variance"
    )
    assert not gate.passed and gate.oos_collapsed
    assert any("out-of-sample Sharpe is undefined (one trade" in reason for reason in gate.reasons)
    assert "-100" not in gate.summary()


def test_an_undefined_champion_sharpe_is_not_judged_and_raises_no_alarm() -> None:
    limits = RollbackLimits(max_drawdown=0.2, min_sharpe=-1.0, min_trades=1)
    performance = ChampionPerformance(
        model="tradai-lgbm-1h",
        version=3,
        window_start=START,
        window_end=END,
        trade_count=5,
        total_profit=0.0,
        max_drawdown=0.0,
        sharpe=None,
        sharpe_undefined="the bar returns never vary (no position moved the equity)",
        storage_id=1,
        at=END,
    )
    assessment = assess_performance(performance, limits)
    assert not assessment.judged and not assessment.breached
    assert "not enough evidence" in assessment.reason and "never vary" in assessment.reason
    deep = assess_performance(performance.model_copy(update={"max_drawdown": 0.5}), limits)
    assert deep.breached and deep.breaches == ("drawdown 50.0% > limit 20.0%",)
    assert "sharpe" not in performance.metrics()


def test_reports_show_an_undefined_statistic_as_text_and_log_no_number_for_it() -> None:
    from dagster import MetadataValue

    from tradai_assets.backtest_runner import undefined_tags
    from tradai_assets.backtests import metrics_markdown, statistic_metadata

    result = parse_backtest_stats(one_trade_stats(), "RsiMeanReversion", "2026.9")
    metadata = statistic_metadata(result.metrics)
    assert metadata["sharpe"] == MetadataValue.text("n/a (one trade: its return has no variance)")
    assert metadata["calmar"] == MetadataValue.text("n/a (no drawdown in the window)")
    assert "| Sharpe | n/a (one trade: its return has no variance) |" in metrics_markdown(result)
    assert (
        undefined_tags(result.metrics)["tradai.undefined.sharpe"] == "one trade: its return has no variance"
    )
    assert set(undefined_tags(result.metrics)) == {
        f"tradai.undefined.{n}" for n in ("sharpe", "sortino", "calmar", "sqn")
    }


def test_the_rollback_sensor_reads_an_undefined_champion_sharpe_as_none_with_its_reason() -> None:
    from sensors.model_loop import Materialized, champion_performance

    meta = {
        "model_name": "tradai-lgbm-1h",
        "model_version": 3,
        "window_start": START.timestamp(),
        "window_end": END.timestamp(),
        "trade_count": 4,
        "total_profit": 0.0,
        "max_drawdown": 0.0,
        "sharpe": "n/a (the bar returns never vary (no position moved the equity))",
    }
    event = Materialized(storage_id=7, at=END, run_id="r", partition=None, metadata=meta)
    performance = champion_performance(event)
    assert performance is not None and performance.sharpe is None
    assert "never vary" in (performance.sharpe_undefined or "")
    assert not assess_performance(performance, RollbackLimits(min_trades=1)).judged
    numeric = champion_performance(event.model_copy(update={"metadata": {**meta, "sharpe": -0.5}}))
    assert numeric is not None and numeric.sharpe == -0.5


def test_a_rule_asking_no_out_of_sample_evidence_does_not_judge_an_undefined_sharpe() -> None:
    waived = OOSRule(min_sharpe=0.0, min_fraction=0.0, min_trades=0)
    assert overfitting_gate(None, 0.0, 2.0, None, 1, waived, "n/a", "one trade").reasons == (
        "DSR could not be computed: n/a",
    )


TWO_WEEKS = START + timedelta(days=14)
ROUND_TRIP_FEE = 0.2  # 0.1 % in and out of a 100 USDT stake: 0.02 % of a 1000 USDT account


def freqtrade_two_weeks(profits: list[float]) -> dict[str, float]:
    closes = [START + timedelta(days=1 + i) for i in range(len(profits))]
    trades = pd.DataFrame({"profit_abs": profits, "close_date": closes, "open_date": closes})
    return {
        "sortino": calculate_sortino(trades, START, TWO_WEEKS, BALANCE),
        "calmar": calculate_calmar(trades, START, TWO_WEEKS, BALANCE),
        "sharpe": calculate_sharpe(trades, START, TWO_WEEKS, BALANCE),
        "sqn": calculate_sqn(trades, BALANCE),
    }


def test_the_resolution_is_the_median_trades_round_trip_fee_of_the_account() -> None:
    assert fee_resolution([0.2, 0.2, 5.0], BALANCE) == pytest.approx(0.0002)
    assert fee_resolution([], BALANCE) == MIN_RESOLUTION
    assert fee_resolution([0.0, 0.0], BALANCE) == MIN_RESOLUTION  # a fee-free backtest


def test_a_drawdown_below_one_round_trip_fee_leaves_calmar_and_sortino_undefined() -> None:
    # two losses of a cent in a winning fortnight: Freqtrade reports Sortino ~490 000 and Calmar ~245 000
    profits = [6.0, -0.01, 5.0, -0.0101, 7.0]
    reported = freqtrade_two_weeks(profits)
    assert reported["sortino"] > 1000 and reported["calmar"] > 1000
    reasons = undefined_reasons(
        profits, BALANCE, drawdown(profits), reported, fees_abs=[ROUND_TRIP_FEE] * len(profits)
    )
    assert set(reasons) == {"sortino", "calmar"}
    assert reasons["calmar"].reason == (
        "drawdown 0.001 % of the account is below one round-trip fee (0.02 %): no measurable drawdown"
    )
    assert reasons["sortino"].reason.startswith("the 2 losing trades lost the same within one round-trip fee")
    assert "no measurable downside deviation" in reasons["sortino"].reason


def test_losses_that_differ_by_less_than_a_fee_leave_sortino_undefined_but_a_real_drawdown_keeps_calmar() -> (
    None
):
    same_stop = [6.0, -3.0, 5.0, -3.001, 7.0]  # two trades stopped out at the same price
    reasons = undefined_reasons(
        same_stop, BALANCE, drawdown(same_stop), freqtrade_two_weeks(same_stop), fees_abs=[ROUND_TRIP_FEE] * 5
    )
    assert set(reasons) == {"sortino"}
    different = [6.0, -3.0, 5.0, -1.5, 7.0]  # losses 1.5 apart: a measured downside
    assert undefined_reasons(different, BALANCE, drawdown(different), fees_abs=[ROUND_TRIP_FEE] * 5) == {}


def test_trades_returning_the_same_within_a_fee_leave_sharpe_and_sqn_undefined() -> None:
    roi_exits = [5.0, 5.01, 5.0, 5.02]  # every trade left at the same ROI step
    reasons = undefined_reasons(roi_exits, BALANCE, 0.0, fees_abs=[ROUND_TRIP_FEE] * 4)
    assert {"sharpe", "sqn"} <= set(reasons)
    assert "no measurable variance" in reasons["sharpe"].reason
    # without fees only a floating-point remainder is below the resolution: the same trades are defined
    assert "sharpe" not in undefined_reasons(roi_exits, BALANCE, 0.0)


def test_a_backtest_report_shows_near_zero_drawdown_ratios_as_n_a_and_logs_no_number() -> None:
    stats = one_trade_stats()
    first = stats["trades"][0]
    assert isinstance(first, dict)
    profits = [6.0, -0.01, 5.0, -0.0101, 7.0]
    stats["trades"] = [
        {**first, "profit_abs": p, "close_timestamp": first["close_timestamp"] + i * 86_400_000}
        for i, p in enumerate(profits)
    ]
    stats.update(
        freqtrade_two_weeks(profits),
        max_drawdown_account=drawdown(profits),
        backtest_end_ts=int(TWO_WEEKS.timestamp() * 1000),
        total_trades=5,
    )
    m = parse_backtest_stats(stats, "RsiMeanReversion", "2026.9").metrics
    assert m.sortino is None and m.calmar is None and m.sharpe is not None
    assert m.display("calmar").startswith("n/a (drawdown 0.001 % of the account is below one round-trip fee")
    numbers = m.defined_numbers()
    assert "sortino" not in numbers and "calmar" not in numbers
    assert numbers["sharpe"] == pytest.approx(stats["sharpe"])  # a measured ratio is kept as Freqtrade's
