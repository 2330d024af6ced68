"""Recorded candles for the replay server: parquet files loaded once into numpy arrays.

A request for a page of klines must cost microseconds to milliseconds, because a benchmark pulls years of
candles through the server. So each file is read once (lazily, on the first request for that pair) into
an int64 array of open times in milliseconds plus float64 price and volume arrays; a page is then two
binary searches and a slice.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from tradai_core.errors import ConfigurationError, ValidationError
from tradai_core.timeframes import timeframe_ms

logger = logging.getLogger(__name__)

# `BTC_USDT-1h.parquet`: base, quote and timeframe, as Freqtrade names its spot data files.
CANDLE_FILE = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<timeframe>\d+[mhdw])\.parquet$")
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")

# Binance prints prices and quantities with 8 decimals. A recorded float is printed that way only when
# the 8-decimal string parses back to the very same float; otherwise the shortest exact repr is used.
_FIXED8 = "%.8f"
_EXACT = "%r"
_UNITS_PER_MS = {"s": 0.001, "ms": 1, "us": 1000, "ns": 1_000_000}
_STAT_UNITS_PER_MS = {"milliseconds": 1, "microseconds": 1000, "nanoseconds": 1_000_000}


class CandleFile(BaseModel):
    """One recorded parquet file: which pair and timeframe it holds and where it lives."""

    model_config = ConfigDict(frozen=True)

    pair: str
    base: str
    quote: str
    timeframe: str
    path: Path

    @property
    def symbol(self) -> str:
        """The Binance market id, e.g. `BTCUSDT` for `BTC/USDT`."""
        return f"{self.base}{self.quote}"


@dataclass(frozen=True, slots=True, eq=False)
class CandleSeries:
    """The candles of one pair and timeframe as columns (open time in ms, then float64 prices).

    A frozen dataclass rather than a pydantic model because its fields are numpy arrays.
    """

    pair: str
    timeframe: str
    timeframe_ms: int
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    number_format: str

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @property
    def last_close_ms(self) -> int:
        """The moment the last recorded candle closed (its open time plus one timeframe)."""
        return int(self.open_time[-1]) + self.timeframe_ms if len(self) else 0

    def window(self, start_ms: int | None, end_ms: int | None, limit: int) -> tuple[int, int]:
        """Row range `[lo, hi)` Binance would answer for these `startTime`/`endTime`/`limit` values.

        With a start: the first `limit` candles opening at or after `start_ms` (and not after `end_ms`).
        Without one: the last `limit` candles opening at or before `end_ms` (or the last recorded one).
        """
        hi = len(self) if end_ms is None else int(np.searchsorted(self.open_time, end_ms, side="right"))
        if start_ms is not None:
            lo = int(np.searchsorted(self.open_time, start_ms, side="left"))
            return lo, max(lo, min(hi, lo + limit))
        return max(0, hi - limit), hi

    def kline_json(self, lo: int, hi: int) -> bytes:
        """Rows `[lo, hi)` as the JSON body of a Binance klines answer (arrays, numbers as strings).

        The recording has no quote volume, trade count or taker volumes: quote volume is volume × close,
        the trade count 0 and the taker volumes 0, so nothing pretends to be recorded that is not.
        Formatted row by row with one %-template: about 2 ms for 1,000 candles.
        """
        number = self.number_format
        prices = ",".join([f'"{number}"'] * 5)  # open, high, low, close, volume
        row = f'[%d,{prices},%d,"%.8f",0,"0.00000000","0.00000000","0"]'
        open_time = self.open_time[lo:hi]
        rows = zip(
            open_time.tolist(),
            self.open[lo:hi].tolist(),
            self.high[lo:hi].tolist(),
            self.low[lo:hi].tolist(),
            self.close[lo:hi].tolist(),
            self.volume[lo:hi].tolist(),
            (open_time + (self.timeframe_ms - 1)).tolist(),
            (self.volume[lo:hi] * self.close[lo:hi]).tolist(),
            strict=True,
        )
        return ("[" + ",".join([row % values for values in rows]) + "]").encode()


def parse_candle_file(path: Path) -> CandleFile | None:
    """The pair and timeframe a file name like `BTC_USDT-1h.parquet` stands for; None for other files."""
    match = CANDLE_FILE.match(path.name)
    if match is None:
        return None
    base, quote = match.group("base"), match.group("quote")
    return CandleFile(
        pair=f"{base}/{quote}", base=base, quote=quote, timeframe=match.group("timeframe"), path=path
    )


def _fixed8_is_exact(values: np.ndarray) -> bool:
    """Whether printing every value with 8 decimals and parsing it back gives the same float.

    True when a value is the nearest float to an 8-decimal number, or when floats are so coarse there that
    any 8-decimal rounding parses back to the same float.
    """
    if values.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        nearest = np.rint(values * 1e8) / 1e8
    return bool(np.all((nearest == values) | (np.spacing(np.abs(values)) > 2e-8)))


def load_candles(candle_file: CandleFile) -> CandleSeries:
    """Read one parquet file into a `CandleSeries`; rejects unsorted or duplicated open times."""
    try:
        # ParquetFile.read, unlike read_table, does not import pandas (a second of start-up time).
        table = pq.ParquetFile(candle_file.path).read(
            columns=["date", *PRICE_COLUMNS], use_pandas_metadata=False
        )
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise ConfigurationError(
            f"cannot read candles from {candle_file.path}: {exc}",
            "the file must be parquet with columns date, open, high, low, close, volume",
        ) from exc
    dates = table.column("date")
    if not pa.types.is_timestamp(dates.type):
        raise ConfigurationError(
            f"column 'date' of {candle_file.path} is {dates.type}, not a timestamp",
            "store the candle open time as a UTC datetime column",
        )
    open_time = _to_ms(
        _numpy_column(candle_file, "date", dates.cast(pa.int64()), np.int64), _UNITS_PER_MS[dates.type.unit]
    )
    if open_time.size > 1 and not bool(np.all(np.diff(open_time) > 0)):
        raise ValidationError(
            f"open times in {candle_file.path} are not strictly increasing",
            "sort the file by date and drop duplicated candles before serving it",
        )
    columns = {
        name: _numpy_column(candle_file, name, table.column(name).cast(pa.float64()), np.float64)
        for name in PRICE_COLUMNS
    }
    exact = all(_fixed8_is_exact(values) for values in columns.values())
    series = CandleSeries(
        pair=candle_file.pair,
        timeframe=candle_file.timeframe,
        timeframe_ms=timeframe_ms(candle_file.timeframe),
        open_time=open_time,
        number_format=_FIXED8 if exact else _EXACT,
        **columns,
    )
    logger.debug(
        "loaded %d %s %s candles from %s", len(series), series.pair, series.timeframe, candle_file.path
    )
    return series


def _numpy_column(
    candle_file: CandleFile, name: str, column: pa.ChunkedArray, dtype: type[np.generic]
) -> np.ndarray:
    """A numeric parquet column as a numpy array, read from the Arrow buffers; rejects missing values.

    (pyarrow's own `to_numpy` imports pandas, a second of start-up time the server does not need.)
    """
    parts = []
    for chunk in column.chunks:
        if chunk.null_count:
            raise ValidationError(
                f"column '{name}' of {candle_file.path} has {chunk.null_count} missing values",
                "a recorded candle needs a date, prices and a volume; drop incomplete rows before serving",
            )
        offset = chunk.offset * np.dtype(dtype).itemsize
        parts.append(np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=offset))
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def _to_ms(values: np.ndarray, units_per_ms: float) -> np.ndarray:
    """Raw timestamp integers in their unit (s, ms, us, ns) as int64 milliseconds."""
    if units_per_ms >= 1:
        return np.asarray(values, dtype=np.int64) // int(units_per_ms)
    return np.asarray(values, dtype=np.int64) * round(1 / units_per_ms)


def _last_open_ms_from_metadata(path: Path) -> int | None:
    """The last candle's open time from the parquet statistics, without reading the rows (None if absent)."""
    try:
        metadata = pq.ParquetFile(path).metadata
        index = metadata.schema.names.index("date")
        logical = json.loads(metadata.schema.column(index).logical_type.to_json())
        units_per_ms = _STAT_UNITS_PER_MS.get(logical.get("timeUnit", ""))
        if logical.get("Type") != "Timestamp" or units_per_ms is None or metadata.num_row_groups == 0:
            return None
        maxima = []
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max or not isinstance(stats.max_raw, int):
                return None
            maxima.append(stats.max_raw)
    except (OSError, ValueError, pa.ArrowException):
        return None
    return int(_to_ms(np.array([max(maxima)]), units_per_ms)[0])


class CandleStore:
    """All recorded candle files of one folder, loaded on first use and then kept in memory."""

    def __init__(self, candles_dir: Path) -> None:
        candles_dir = Path(candles_dir)
        if not candles_dir.is_dir():
            raise ConfigurationError(
                f"candles folder {candles_dir} does not exist",
                "pass a folder of files named like BTC_USDT-1h.parquet, e.g. demo_data/binance_spot_1h",
            )
        self.candles_dir = candles_dir
        self._files: dict[tuple[str, str], CandleFile] = {}
        for path in sorted(candles_dir.iterdir()):
            candle_file = parse_candle_file(path)
            if candle_file is None:
                if path.suffix == ".parquet":
                    logger.warning("ignoring %s: not named like BTC_USDT-1h.parquet", path)
                continue
            self._files[(candle_file.symbol, candle_file.timeframe)] = candle_file
        if not self._files:
            raise ConfigurationError(
                f"no candle files in {candles_dir}",
                "put parquet files named like BTC_USDT-1h.parquet in it",
            )
        self._pairs = sorted({candle_file.pair for candle_file in self._files.values()})
        self._symbols = {candle_file.symbol: candle_file.pair for candle_file in self._files.values()}
        self._series: dict[tuple[str, str], CandleSeries] = {}
        self._lock = threading.Lock()

    @property
    def pairs(self) -> list[str]:
        """Every pair with at least one recorded file, sorted."""
        return list(self._pairs)

    @property
    def symbols(self) -> dict[str, str]:
        """Binance market id → pair, e.g. `{"BTCUSDT": "BTC/USDT"}` (do not modify)."""
        return self._symbols

    def timeframes(self, symbol: str) -> list[str]:
        """The timeframes recorded for a market id."""
        return sorted(timeframe for (sym, timeframe) in self._files if sym == symbol)

    def series(self, symbol: str, timeframe: str) -> CandleSeries | None:
        """The candles of a market id and timeframe (loaded on first use), or None if not recorded."""
        key = (symbol, timeframe)
        series = self._series.get(key)
        if series is not None:
            return series
        candle_file = self._files.get(key)
        if candle_file is None:
            return None
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = load_candles(candle_file)
                self._series[key] = series
        return series

    def last_close_ms(self) -> int:
        """When the latest recorded candle of any file closed; read from parquet statistics where possible."""
        latest = 0
        for key, candle_file in self._files.items():
            last_open = _last_open_ms_from_metadata(candle_file.path)
            if last_open is None:
                series = self.series(*key)
                latest = max(latest, series.last_close_ms if series is not None else 0)
            else:
                latest = max(latest, last_open + timeframe_ms(candle_file.timeframe))
        return latest

    def last_close_price(self, pair: str, at_ms: int | None = None) -> float | None:
        """The close of the pair's last candle opening at or before `at_ms` (any timeframe), or None."""
        for (symbol, timeframe), candle_file in sorted(self._files.items()):
            if candle_file.pair != pair:
                continue
            series = self.series(symbol, timeframe)
            if series is None or not len(series):
                continue
            lo, hi = series.window(None, at_ms, 1)
            if hi > lo:
                return float(series.close[lo])
        return None
