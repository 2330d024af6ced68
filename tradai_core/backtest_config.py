"""Everything a Freqtrade backtest is given, built from our own schemas: config, CLI arguments, files.

A backtest is fully described by a `StrategyConfig` (what the strategy trades, with which parameter values)
and a `BacktestRunConfig` (which period, which pairs, how much money, what fee). From them this module
builds Freqtrade's config dict and the exact `freqtrade backtesting` argument list, and lays out the
files Freqtrade reads — candles as Freqtrade data files, the strategy module copied alone into a fresh
folder (so no stray `<Strategy>.json` parameter file from hyperopt is ever picked up), and the parameter
file we write ourselves from the config's buy/sell params.

Our worker parses that very argument list with Freqtrade's own `Arguments` class, and the stock CLI can be
run on the same workspace, which is how the two are shown to agree (tests/test_freqtrade_cli_equivalence).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from strategies.config import StrategyConfig
from tradai_core.errors import NotFoundError, ValidationError
from tradai_core.settings import pair_slug

logger = logging.getLogger(__name__)

OHLCV_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")
DATA_FORMAT: Final[str] = "feather"
"""Freqtrade's default candle file format; files are `<datadir>/BTC_USDT-1h.feather`."""

_TIMERANGE = re.compile(r"^(\d{8}|\d{10})?-(\d{8}|\d{10})?$")


class BacktestRunConfig(BaseModel):
    """The run-specific half of a backtest: period, pairs, money and costs (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timerange: str = Field(
        description="Freqtrade timerange, `YYYYMMDD-YYYYMMDD` (end exclusive); either side may be open."
    )
    pairs: tuple[str, ...] | None = Field(default=None, description="Pairs to trade; None: the config's.")
    stake_amount: float | Literal["unlimited"] = Field(
        default="unlimited", description="Stake per trade in stake currency, or 'unlimited' (equal split)."
    )
    starting_balance: float = Field(default=1000.0, gt=0, description="Freqtrade's dry_run_wallet.")
    tradable_balance_ratio: float = Field(default=0.99, gt=0, le=1)
    max_open_trades: int = Field(default=3, ge=-1, description="-1 means no limit.")
    fee: float | None = Field(
        default=0.001,
        ge=0,
        lt=0.1,
        description="Fee ratio per side; None: the exchange's worst-case fee from the market snapshot.",
    )
    enable_protections: bool = False

    @field_validator("timerange")
    @classmethod
    def _check_timerange(cls, value: str) -> str:
        match = _TIMERANGE.match(value)
        if match is None or value == "-":
            raise ValueError(f"timerange {value!r} must look like 20210101-20210401")
        start, end = match.groups()
        if start and end and int(start) >= int(end):
            raise ValueError(f"timerange {value!r} ends before it starts")
        return value

    @field_validator("pairs")
    @classmethod
    def _check_pairs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("pairs must not be empty; leave it out to use the strategy config's pairs")
            if len(set(value)) != len(value):
                raise ValueError("pairs must not repeat")
        return value

    @field_validator("stake_amount")
    @classmethod
    def _check_stake(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value <= 0:
            raise ValueError("stake_amount must be positive or 'unlimited'")
        return value

    @classmethod
    def for_dates(cls, start: date | datetime, end: date | datetime, **kwargs: Any) -> BacktestRunConfig:
        """A run config over [start, end) given as dates (a convenience over the timerange string)."""
        return cls(timerange=f"{start:%Y%m%d}-{end:%Y%m%d}", **kwargs)


def resolve_pairs(strategy: StrategyConfig, run: BacktestRunConfig) -> tuple[str, ...]:
    """The pairs a run trades: the run's if given (each quoted in the stake currency), else the config's."""
    pairs = run.pairs or strategy.pairs
    for pair in pairs:
        if not pair.endswith(f"/{strategy.stake_currency}"):
            raise ValidationError(
                f"pair {pair} is not quoted in the stake currency {strategy.stake_currency}",
                "backtest pairs quoted in the strategy's stake currency only",
            )
    return tuple(pairs)


def build_freqtrade_config(strategy: StrategyConfig, run: BacktestRunConfig) -> dict[str, Any]:
    """Freqtrade's config dict (JSON-ready) for backtesting `strategy` under `run`, offline, spot.

    Paths (data, strategy folder, user-data folder) are not in it: they are command-line arguments, as for
    the stock CLI. Strategy attribute overrides from `strategy.parameters` become top-level keys, which is
    how Freqtrade lets a config override a strategy. The backtest cache is off (it ignores changed data).
    """
    pairs = resolve_pairs(strategy, run)
    config: dict[str, Any] = {
        "strategy": strategy.name,
        "timeframe": strategy.timeframe,
        "timerange": run.timerange,
        "trading_mode": "spot",
        "margin_mode": "",
        "dry_run": True,
        "dry_run_wallet": run.starting_balance,
        "stake_currency": strategy.stake_currency,
        "stake_amount": run.stake_amount,
        "tradable_balance_ratio": run.tradable_balance_ratio,
        "max_open_trades": run.max_open_trades,
        "enable_protections": run.enable_protections,
        "backtest_cache": "none",
        "dataformat_ohlcv": DATA_FORMAT,
        "exchange": {
            "name": strategy.exchange,
            "key": "",
            "secret": "",
            "pair_whitelist": list(pairs),
            "pair_blacklist": [],
        },
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "same", "use_order_book": False, "price_last_balance": 0.0},
        "exit_pricing": {"price_side": "same", "use_order_book": False},
        "internals": {},
    }
    if run.fee is not None:
        config["fee"] = run.fee
    config.update(strategy.parameters)
    if strategy.freqai is not None:
        config["freqai"] = strategy.freqai.to_freqtrade()
        config["freqaimodel"] = strategy.freqai.freqaimodel
    return config


FREQTRADE_USER_SUBDIRS: tuple[str, ...] = (
    "backtest_results",
    "data",
    "hyperopts",
    "hyperopt_results",
    "logs",
    "notebooks",
    "plot",
    "strategies",
    "freqaimodels",
)
"""The folders Freqtrade's `create_userdata_dir` makes in a user-data folder (pinned by a contract test).
Made up front, so parallel workers on one workspace never race to create them (a FileExistsError)."""


@dataclass(frozen=True)
class BacktestWorkspace:
    """The files one backtest reads and writes, all under one folder that is removed afterwards."""

    root: Path

    @property
    def datadir(self) -> Path:
        """Candle files, one per pair (`BTC_USDT-1h.feather`)."""
        return self.root / "data"

    @property
    def strategy_dir(self) -> Path:
        """A fresh folder holding the strategy module alone (plus our own parameter file)."""
        return self.root / "strategy"

    @property
    def user_data_dir(self) -> Path:
        """Freqtrade's user-data folder (export directory, logs); only its empty sub-folders at start."""
        return self.root / "user_data"

    @property
    def config_path(self) -> Path:
        """Freqtrade's config file."""
        return self.root / "config.json"

    def backtest_argv(self, strategy: str, timerange: str, *, export: str = "none") -> list[str]:
        """The `freqtrade` argument list for this workspace (the stock CLI takes exactly these)."""
        return [
            "backtesting",
            "--config",
            str(self.config_path),
            "--strategy",
            strategy,
            "--strategy-path",
            str(self.strategy_dir),
            "--datadir",
            str(self.datadir),
            "--userdir",
            str(self.user_data_dir),
            "--timerange",
            timerange,
            "--data-format-ohlcv",
            DATA_FORMAT,
            "--cache",
            "none",
            "--export",
            export,
        ]


def check_candles(pair: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` as Freqtrade candle rows (`date` column + float OHLCV), or raise ValidationError.

    Accepts our store's shape (a tz-aware UTC DatetimeIndex named `date`) or a `date` column.
    """
    data = frame.reset_index() if "date" not in frame.columns else frame.reset_index(drop=True)
    missing = [c for c in ("date", *OHLCV_COLUMNS) if c not in data.columns]
    if missing:
        raise ValidationError(
            f"candles for {pair} lack columns {missing}",
            "pass frames indexed by a UTC DatetimeIndex named 'date' with open/high/low/close/volume",
        )
    dates = data["date"]
    if not isinstance(dates.dtype, pd.DatetimeTZDtype) or str(dates.dt.tz) != "UTC":
        raise ValidationError(
            f"candles for {pair} are not dated in UTC", "convert the index with tz_convert('UTC')"
        )
    if data.empty:
        raise ValidationError(f"candles for {pair} are empty", "load a period that has candles")
    if not dates.is_monotonic_increasing or dates.duplicated().any():
        raise ValidationError(
            f"candles for {pair} are not sorted or repeat a date", "sort and de-duplicate them"
        )
    out = data.loc[:, ["date", *OHLCV_COLUMNS]].copy()
    out["date"] = out["date"].astype("datetime64[ms, UTC]")
    for column in OHLCV_COLUMNS:
        out[column] = out[column].astype(np.float64)
    return out


def write_candles(
    candles: Mapping[str, pd.DataFrame], pairs: tuple[str, ...], datadir: Path, timeframe: str
) -> None:
    """Write each pair's candles as a Freqtrade data file (`<datadir>/BTC_USDT-1h.feather`).

    The layout is Freqtrade's FeatherDataHandler's (columns date, open, high, low, close, volume), so
    Freqtrade's own loader reads them, gap-filling and trimming them as it does for downloaded data. The
    files are left uncompressed: they live for one backtest in a temporary folder, and Freqtrade's own
    LZ4 level 9 made writing them ~9× slower (0.36 s vs 0.04 s for 12 pairs × 2 years) for no gain.
    """
    datadir.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        if pair not in candles:
            raise NotFoundError(
                f"no candles given for {pair}",
                f"load candles for every backtested pair; given: {sorted(candles)}",
            )
        rows = check_candles(pair, candles[pair])
        rows.to_feather(datadir / f"{pair_slug(pair)}-{timeframe}.{DATA_FORMAT}", compression="uncompressed")


def prepare_strategy_dir(strategy_file: Path, strategy: StrategyConfig, target_dir: Path) -> Path:
    """Copy the strategy module alone into the new folder `target_dir`, with our own parameter file.

    Copying the module alone means a `<Strategy>.json` left beside the source by an earlier hyperopt is
    never loaded. The buy/sell params of `strategy` are written as the copy's parameter file instead —
    Freqtrade's own mechanism, so our worker, the stock CLI and any other reader see the same values.
    Returns the copied module's path.
    """
    target_dir.mkdir(parents=True)
    target = target_dir / strategy_file.name
    shutil.copyfile(strategy_file, target)
    if strategy.buy_params or strategy.sell_params:
        target.with_suffix(".json").write_text(json.dumps(strategy.hyperopt_params_file(), indent=2))
    return target


def prepare_workspace(
    root: Path,
    strategy_file: Path,
    strategy: StrategyConfig,
    run: BacktestRunConfig,
    candles: Mapping[str, pd.DataFrame],
) -> BacktestWorkspace:
    """Lay out everything one backtest reads under `root` (which must exist and be empty): candle files,
    the strategy folder (`prepare_strategy_dir`), a user-data folder with Freqtrade's empty sub-folders and
    Freqtrade's config file."""
    workspace = BacktestWorkspace(root)
    pairs = resolve_pairs(strategy, run)
    write_candles(candles, pairs, workspace.datadir, strategy.timeframe)
    prepare_strategy_dir(strategy_file, strategy, workspace.strategy_dir)
    workspace.user_data_dir.mkdir()
    for name in FREQTRADE_USER_SUBDIRS:
        (workspace.user_data_dir / name).mkdir()
    workspace.config_path.write_text(json.dumps(build_freqtrade_config(strategy, run), indent=2))
    return workspace
