"""Freqtrade's historic price precision ("tick size over time"), computed without formatting every price.

Freqtrade's backtester rounds simulated order prices to the tick size the market had *at the time*,
estimated per calendar month from the candles themselves (`freqtrade.data.btanalysis.historic_precision.
get_tick_size_over_time`): each open/high/low/close is printed with 14 significant digits, the decimals up
to its last non-zero digit are counted, and a month's tick size is `10 ** -max(count)`. It formats every
price as a Python string — four per candle — and on 12 pairs × 2 years of hourly candles that is ~3 s, a
quarter of a whole backtest, paid again by every backtest of the same candles.

`tick_size_over_time` returns the identical Series — and, like Freqtrade's, adds the same count columns
(`open_count` … `max_count`, same values, same dtypes) to the candle frame it is given, since the strategy
later receives that very frame. `significant_decimals` gets each count arithmetically: with
`k = 13 - floor(log10|x|)`, `round(|x| * 10**k)` is the 14-digit mantissa, and the count is `k` minus its
trailing zeros. For `|x| >= 1e-9`, `10**k` is an exact double and the product is within 2**-7 of the
exact value, so the rounding is exact unless the product lies within 0.01 of a half or within 1 of the
mantissa's range limits; those values, and zeros, NaN, infinities and prices below 1e-9, are formatted
exactly as Freqtrade does. `tests/test_tick_size.py` checks equality against Freqtrade's own function on
the recorded candles and on random prices of every magnitude.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
SIGNIFICANT_DIGITS = 14
_MANTISSA_LOW = 10.0 ** (SIGNIFICANT_DIGITS - 1)
_MANTISSA_HIGH = 10.0**SIGNIFICANT_DIGITS
_EXACT_POWER_LIMIT = 22  # 10**k is an exact double for 0 <= k <= 22
_HALF_MARGIN = 0.01  # > 2**-7, the product's largest rounding error below 2**47


def _formatted_decimals(value: float) -> float:
    """Freqtrade's own rule for one price: decimals up to the last non-zero digit of its 14-digit print."""
    text = np.format_float_positional(
        value, precision=SIGNIFICANT_DIGITS, unique=False, fractional=False, trim="-"
    )
    _, dot, fraction = text.partition(".")
    digits = fraction.rstrip("0") if dot else ""
    return float(len(digits)) if digits and digits.isdigit() else np.nan


def significant_decimals(prices: np.ndarray) -> np.ndarray:
    """Per price, how many decimals its 14-significant-digit form needs (NaN: none, or not a number).

    Equal, value for value, to Freqtrade's `format_float_positional(…, precision=14, unique=False,
    fractional=False, trim="-")` followed by counting the digits after the point up to the last non-zero one.
    """
    values = np.abs(np.asarray(prices, dtype=np.float64))
    counts = np.full(values.shape, np.nan)
    usable = np.isfinite(values) & (values >= 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.where(usable, values, 1.0))).astype(np.int64)
    shift = SIGNIFICANT_DIGITS - 1 - exponent
    usable &= shift <= _EXACT_POWER_LIMIT
    shift = np.where(usable, shift, 0)
    # shift < 0 (|x| >= 1e14): the print has no decimals whatever the digits; the count stays NaN.
    positive = usable & (shift >= 0)
    scaled = np.where(positive, values, 1.0) * np.power(10.0, np.where(positive, shift, 0))
    fraction = scaled - np.floor(scaled)
    exact = (
        positive
        & (scaled >= _MANTISSA_LOW + 1)
        & (scaled < _MANTISSA_HIGH - 1)
        & (np.abs(fraction - 0.5) > _HALF_MARGIN)
    )
    mantissa = np.rint(np.where(exact, scaled, 1.0)).astype(np.int64)
    trailing_zeros = np.zeros(values.shape, dtype=np.int64)
    rest = mantissa.copy()
    for _ in range(SIGNIFICANT_DIGITS + 1):
        divisible = (rest % 10 == 0) & (rest > 0)
        if not divisible.any():
            break
        trailing_zeros += divisible
        rest = np.where(divisible, rest // 10, rest)
    decimals = (shift - trailing_zeros).astype(np.float64)
    counts[exact] = np.where(decimals[exact] > 0, decimals[exact], np.nan)
    slow = ~exact & ~(usable & (shift < 0))
    raw = np.asarray(prices, dtype=np.float64)
    counts[slow] = [_formatted_decimals(float(v)) for v in raw[slow]]
    return counts


def _as_str_len(counts: np.ndarray) -> np.ndarray:
    """The dtype pandas' `.str.len()` gives Freqtrade: int64 when every price has decimals, object when
    none has (an all-missing extract stays object), float64 with NaN in between."""
    missing = np.isnan(counts)
    if missing.all():
        return counts.astype(object)
    return counts if missing.any() else counts.astype(np.int64)


def tick_size_over_time(candles: pd.DataFrame) -> pd.Series:
    """Freqtrade's monthly tick-size Series for `candles` (a `date` column and OHLC), and its side effects.

    Adds `<col>_count` for open/high/low/close and `max_count` to `candles` in place, exactly as
    `freqtrade.data.btanalysis.get_tick_size_over_time` does, and returns the same Series.
    """
    for column in PRICE_COLUMNS:
        candles[f"{column}_count"] = _as_str_len(significant_decimals(candles[column].to_numpy()))
    candles["max_count"] = candles[["open_count", "close_count", "high_count", "low_count"]].max(axis=1)
    monthly_max = candles.set_index("date", drop=True)["max_count"].resample("MS").max()
    return 1 / 10**monthly_max
