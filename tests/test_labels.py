"""Labels from real recorded candles: forward returns that never cross an outage or peek past the data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from tradai_core.errors import ValidationError
from tradai_core.labels import LabelSpec, find_gaps, make_labels

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"
SHARED_CANDLES = PROJECT_ROOT.parent / "shared" / "data" / "binance_spot_1h"
HOUR = pd.Timedelta("1h")


def load(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index("date")


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return load(DEMO_CANDLES / "BTC_USDT-1h.parquet")


def test_find_gaps_reports_the_real_outages_in_the_demo_candles(btc: pd.DataFrame) -> None:
    gaps = find_gaps(btc.index, "1h")
    assert len(gaps) == 9
    december = gaps[gaps["after"] == pd.Timestamp("2020-12-21 13:00", tz="UTC")].iloc[0]
    assert december["resumes"] == pd.Timestamp("2020-12-21 18:00", tz="UTC")
    assert december["missing"] == 4
    assert ((gaps["resumes"] - gaps["after"]) == (gaps["missing"] + 1) * HOUR).all()
    assert len(btc) + gaps["missing"].sum() == (btc.index[-1] - btc.index[0]) / HOUR + 1


def test_find_gaps_matches_the_shared_data_readme() -> None:
    path = SHARED_CANDLES / "BTC_USDT-1h.parquet"
    if not path.is_file():
        pytest.skip("../shared/data is not beside this clone")
    gaps = find_gaps(load(path).index, "1h")
    assert len(gaps) == 27 and gaps["missing"].sum() == 127  # "BTC misses 127 of 45,151 hours in 27 gaps"
    longest = gaps.loc[gaps["missing"].idxmax()]
    assert longest["after"] == pd.Timestamp("2018-02-08 00:00", tz="UTC")
    assert longest["missing"] == 33


def reference_labels(candles: pd.DataFrame, horizon: int, threshold: float) -> pd.DataFrame:
    """The labels worked out another way than `make_labels` does: on the full hourly grid (missing candles
    as NaN), a row is labelled only when all `horizon + 1` candles from it to its label end exist."""
    close = candles["close"].astype("float64")
    grid = close.reindex(
        pd.date_range(
            close.index[0], close.index[-1], freq="1h", name=close.index.name, unit=close.index.unit
        )
    )
    complete = grid.notna().rolling(horizon + 1).sum().shift(-horizon) == horizon + 1
    forward = (grid.shift(-horizon) / grid - 1.0)[complete]
    return pd.DataFrame(
        {
            "forward_return": forward,
            "label": (forward > threshold).astype("int8"),
            "label_end": forward.index + horizon * HOUR,
        },
        index=forward.index,
    )


def test_classification_label_is_one_when_the_forward_return_beats_the_threshold(btc: pd.DataFrame) -> None:
    spec = LabelSpec(horizon=4, kind="classification", threshold=0.002)
    labels = make_labels(btc, spec)

    expected = reference_labels(btc, 4, 0.002)
    assert labels.index.equals(expected.index)  # every labellable row, and no other
    np.testing.assert_allclose(labels["forward_return"], expected["forward_return"], rtol=1e-15)
    np.testing.assert_array_equal(labels["label"], expected["label"])
    assert labels["label"].dtype == np.int8
    assert labels["label_end"].eq(expected["label_end"]).all()
    assert 0.3 < labels["label"].mean() < 0.6


def test_regression_label_is_the_forward_return_itself(btc: pd.DataFrame) -> None:
    labels = make_labels(btc, LabelSpec(horizon=12, kind="regression"))
    assert labels["label"].dtype == np.float64
    assert labels["label"].equals(labels["forward_return"])


def test_a_higher_fee_threshold_gives_fewer_positive_labels(btc: pd.DataFrame) -> None:
    cheap = make_labels(btc, LabelSpec(horizon=4, threshold=0.0))["label"].sum()
    dear = make_labels(btc, LabelSpec(horizon=4, threshold=0.01))["label"].sum()
    assert dear < cheap


@pytest.mark.parametrize("horizon", [1, 4, 24])
def test_no_label_spans_an_outage(btc: pd.DataFrame, horizon: int) -> None:
    labels = make_labels(btc, LabelSpec(horizon=horizon))
    assert ((labels["label_end"] - labels.index) == horizon * HOUR).all()
    assert labels.index.isin(btc.index).all() and pd.Index(labels["label_end"]).isin(btc.index).all()

    gaps = find_gaps(btc.index, "1h")
    for after in gaps["after"]:
        blocked = btc.index[(btc.index > after - horizon * HOUR) & (btc.index <= after)]
        assert not labels.index.isin(blocked).any(), f"a label crosses the outage after {after}"
    # Around 2020-12-21 13:00 → 18:00 with a 4-candle horizon: 09:00 still ends at 13:00, 10:00-13:00
    # would need the missing candles, 18:00 looks ahead into candles that exist again.
    if horizon == 4:
        stamps = pd.DatetimeIndex(
            ["2020-12-21 09:00", "2020-12-21 10:00", "2020-12-21 13:00", "2020-12-21 18:00"], tz="UTC"
        )
        assert stamps.isin(labels.index).tolist() == [True, False, False, True]
    expected_rows = (
        len(btc)
        - horizon
        - sum(
            int(((btc.index > after - horizon * HOUR) & (btc.index <= after)).sum())
            for after in gaps["after"]
        )
    )
    assert len(labels) == expected_rows


def test_every_pair_of_the_shared_data_keeps_labels_off_its_outages() -> None:
    if not SHARED_CANDLES.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    spec = LabelSpec(horizon=6)
    for path in sorted(SHARED_CANDLES.glob("*-1h.parquet")):
        labels = make_labels(load(path), spec)
        assert ((labels["label_end"] - labels.index) == 6 * HOUR).all(), path.name


def test_candles_whose_horizon_is_not_seen_yet_get_no_label_until_it_is(btc: pd.DataFrame) -> None:
    spec = LabelSpec(horizon=4)
    cut = btc.index.get_loc(pd.Timestamp("2022-06-13 00:00", tz="UTC"))
    known = make_labels(btc.iloc[: cut + 1], spec)
    later = make_labels(btc, spec)

    assert known.index[-1] == btc.index[cut - 4]
    assert later.index[-1] == btc.index[-5]
    pd.testing.assert_frame_equal(known, later.loc[: known.index[-1]], check_exact=True)
    assert btc.index[cut - 3] in later.index


def test_too_few_candles_give_an_empty_label_frame(btc: pd.DataFrame) -> None:
    labels = make_labels(btc.iloc[:3], LabelSpec(horizon=4))
    assert labels.empty
    assert list(labels.columns) == ["forward_return", "label", "label_end"]


def test_the_label_spec_is_frozen_validated_and_describes_itself() -> None:
    spec = LabelSpec(horizon=4, kind="classification", threshold=0.002, timeframe="1h")
    assert "classification" in spec.description
    assert "4 × 1h" in spec.description and "0.2000%" in spec.description
    assert "missing candle" in spec.description
    assert "forward return" in LabelSpec(kind="regression").description
    with pytest.raises(pydantic.ValidationError):
        spec.horizon = 8  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        LabelSpec(horizon=0)
    with pytest.raises(pydantic.ValidationError):
        LabelSpec(threshold=-0.01)
    with pytest.raises(ValidationError, match="timeframe"):
        LabelSpec(timeframe="1 hour")


def test_candles_with_broken_closes_are_rejected(btc: pd.DataFrame) -> None:
    broken = btc.iloc[:20].copy()
    broken.iloc[5, broken.columns.get_loc("close")] = 0.0
    with pytest.raises(ValidationError, match="non-positive"):
        make_labels(broken, LabelSpec())
    with pytest.raises(ValidationError, match="sorted"):
        make_labels(btc.iloc[:20].iloc[::-1], LabelSpec())
