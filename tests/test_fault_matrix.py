"""The fault matrix (bench/fault_matrix.py): its judge tells the outcomes apart, and the whole matrix run
against the real code path loses nothing and alters nothing silently."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.fault_matrix import BAD_OUTCOMES, PAIR, classify, counts_line, run_matrix
from tests.conftest import DEMO_CANDLES, load_recorded
from tradai_replay import supported_faults

DAY = (pd.Timestamp("2021-05-02", tz="UTC"), pd.Timestamp("2021-05-03", tz="UTC"))


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    return load_recorded(DEMO_CANDLES, PAIR).loc["2021-05-01":"2021-05-03"]


def window(frame: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    return frame.loc[first:last]


def test_a_run_storing_the_source_survived(source: pd.DataFrame) -> None:
    before = window(source, "2021-05-01", "2021-05-01")
    after = window(source, "2021-05-01", "2021-05-02")
    assert classify(True, before, after, source, DAY, "", {})[0] == "survived"


def test_a_failed_run_is_clean_only_when_the_store_is_unchanged_and_the_error_names_the_pair(
    source: pd.DataFrame,
) -> None:
    before = window(source, "2021-05-01", "2021-05-01")
    error = f"{PAIR} candle 2021-05-02T12:00 breaks rule 'prices are positive'"
    assert classify(False, before, before.copy(), source, DAY, error, {})[0] == "failed cleanly"
    assert classify(False, before, before.copy(), source, DAY, "boom", {})[0] == "failed unclearly"
    grown = window(source, "2021-05-01", "2021-05-02")
    assert classify(False, before, grown, source, DAY, error, {})[0] == "failed unclearly"


def test_missing_candles_are_lost_data(source: pd.DataFrame) -> None:
    before = window(source, "2021-05-01", "2021-05-02")
    shrunk = before.drop(before.index[5])  # a candle stored before is gone
    assert classify(True, before, shrunk, source, DAY, "", {})[0] == "lost data"
    assert classify(False, before, shrunk, source, DAY, PAIR, {})[0] == "lost data"
    first_day = window(source, "2021-05-01", "2021-05-01")
    served_not_stored = window(source, "2021-05-01", "2021-05-02").drop(
        pd.Timestamp("2021-05-02 07:00", tz="UTC")
    )
    assert classify(True, first_day, served_not_stored, source, DAY, "", {})[0] == "lost data"


def test_a_changed_candle_is_silently_altered_unless_a_check_named_it(source: pd.DataFrame) -> None:
    before = window(source, "2021-05-01", "2021-05-01")
    after = window(source, "2021-05-01", "2021-05-02").copy()
    spiked = pd.Timestamp("2021-05-02 12:00", tz="UTC")
    after.loc[spiked, ["open", "high", "low", "close"]] *= 1000
    assert classify(True, before, after, source, DAY, "", {})[0] == "silently altered"
    assert (
        classify(True, before, after, source, DAY, "", {pd.Timestamp("2021-05-02 13:00", tz="UTC"): ["x"]})[0]
        == "silently altered"
    )
    outcome, detail = classify(True, before, after, source, DAY, "", {spiked: ["outliers"]})
    assert outcome == "survived" and "x1000" in detail and "outliers warned" in detail
    appeared = window(source, "2021-05-01", "2021-05-03")  # a run of 2021-05-02 wrote 2021-05-03 too
    assert classify(True, before, appeared, source, DAY, "", {})[0] == "silently altered"
    outside = before.copy()
    outside.iloc[3, 0] += 1.0  # a candle outside the window changed: never allowed, even if flagged
    assert classify(True, before, outside, source, DAY, "", {outside.index[3]: ["outliers"]})[0] == (
        "silently altered"
    )


@pytest.mark.slow  # minutes: ~45 Dagster runs, subprocess backfill and writers
def test_the_fault_matrix_loses_nothing_and_alters_nothing_silently() -> None:
    cases = run_matrix()
    by_case = {case.case: case for case in cases}
    table = "\n".join(f"{c.case}: {c.outcome}: {c.detail}" for c in cases)
    assert not [c for c in cases if c.outcome in BAD_OUTCOMES], table
    assert len(cases) == 2 * len(supported_faults()) + 3, table
    for variant in ("zero_price", "negative_price", "nan_price", "duplicate_row", "out_of_order"):
        assert by_case[f"malformed/{variant} (new day, klines always)"].outcome == "failed cleanly", table
    spike = by_case["malformed/price_spike (re-run, once)"]
    assert spike.outcome == "survived" and "outliers warned" in spike.detail, table
    for fault in supported_faults():  # a fault that clears is retried through: the day lands as recorded
        if fault.kind != "malformed":
            label = fault.kind if fault.variant is None else f"{fault.kind}/{fault.variant}"
            assert by_case[f"{label} (re-run, once)"].outcome == "survived", table
    assert by_case["http_5xx/html (new day, klines always)"].outcome == "failed cleanly", table
    for crash in (
        "kill -9 mid-backfill, then re-run",
        "two writers, one symbol",
        "kill -9 mid-write, then re-run",
    ):
        assert by_case[crash].outcome == "survived", table
    assert counts_line(cases).endswith("lost 0, silently altered 0")
