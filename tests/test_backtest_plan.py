"""Which pairs and which period a backtest plans for: run config first, else the strategy's defaults
within the pair universe."""

from __future__ import annotations

import pytest

from tradai_core.backtest_plan import parse_timerange, select_pairs
from tradai_core.errors import ValidationError

UNIVERSE = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def test_default_pairs_keep_those_in_the_universe_and_say_why_others_went() -> None:
    selection = select_pairs(None, ("BTC/USDT", "XRP/USDT", "SOL/USDT"), UNIVERSE)
    assert selection.pairs == ("BTC/USDT", "SOL/USDT") and not selection.explicit
    assert selection.dropped == {
        "XRP/USDT": "not in the pair universe (TRADAI_PAIRS=BTC/USDT,ETH/USDT,SOL/USDT)"
    }
    assert "dropped XRP/USDT: not in the pair universe" in selection.describe()


def test_requested_pairs_win_and_must_be_in_the_universe() -> None:
    selection = select_pairs(["SOL/USDT"], ("BTC/USDT",), UNIVERSE)
    assert selection.pairs == ("SOL/USDT",) and selection.explicit and selection.dropped == {}
    with pytest.raises(ValidationError, match=r"BNB/USDT are not in the pair universe") as error:
        select_pairs(["SOL/USDT", "BNB/USDT"], ("BTC/USDT",), UNIVERSE)
    assert "add them to TRADAI_PAIRS" in str(error.value)
    with pytest.raises(ValidationError, match="empty"):
        select_pairs([], ("BTC/USDT",), UNIVERSE)
    with pytest.raises(ValidationError, match="repeat"):
        select_pairs(["BTC/USDT", "BTC/USDT"], ("BTC/USDT",), UNIVERSE)


def test_a_default_entirely_outside_the_universe_is_an_error() -> None:
    with pytest.raises(ValidationError, match="none of the strategy's pairs"):
        select_pairs(None, ("XRP/USDT",), UNIVERSE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20220801-20220901", ("2022-08-01", "2022-09-01")),
        ("20220801-", ("2022-08-01", None)),
        ("-20220901", (None, "2022-09-01")),
    ],
)
def test_timerange_parses_like_freqtrade(text: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_timerange(text) == expected


@pytest.mark.parametrize("text", ["20220801", "2022-08-01-2022-09-01", "-", "20221301-"])
def test_a_bad_timerange_is_refused_clearly(text: str) -> None:
    with pytest.raises(ValidationError, match="not YYYYMMDD-YYYYMMDD"):
        parse_timerange(text)
