"""Freqtrade's config for one backtest, built from our own schemas (no files written here).

A backtest is fully described by a `StrategyConfig` (what the strategy trades, with which parameter values)
and a `BacktestRunConfig` (which period, which pairs, how much money, what fee). From them this module
builds Freqtrade's config dict; `tradai_resources.freqtrade_workspace` lays out the files Freqtrade reads
(candles, the strategy folder, the config file) and the `freqtrade backtesting` argument list.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradai_core.errors import ValidationError
from tradai_core.registry import ExportedModel
from tradai_core.strategy_config import StrategyConfig

logger = logging.getLogger(__name__)

OHLCV_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")
DATA_FORMAT: Final[str] = "feather"
"""Freqtrade's default candle file format; files are `<datadir>/BTC_USDT-1h.feather`."""

_TIMERANGE = re.compile(r"^(\d{8}|\d{10})?-(\d{8}|\d{10})?$")


class BacktestCosts(BaseModel):
    """Money and costs of a backtest: the one place these fields are declared (frozen).

    Every backtest's run config inherits them, so reports, validation backtests and hyperopt share one set
    of names, defaults and limits; Dagster run configs inherit them too (`class X(Config, BacktestCosts)`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_open_trades: int = Field(default=3, ge=-1, description="-1 means no limit.")
    starting_balance: float = Field(default=1000.0, gt=0, description="Freqtrade's dry_run_wallet.")
    fee: float | None = Field(
        default=0.001,
        ge=0,
        lt=0.1,
        description="Fee ratio per side; None: the exchange's worst-case fee from the market snapshot.",
    )

    def costs(self) -> dict[str, Any]:
        """Just the money-and-cost fields (of a subclass too)."""
        return {name: getattr(self, name) for name in BacktestCosts.model_fields}

    def run(self, timerange: str, pairs: tuple[str, ...] | list[str] | None = None) -> BacktestRunConfig:
        """A backtest run config over `timerange` (and `pairs`) with these money and costs."""
        return BacktestRunConfig(
            timerange=timerange, pairs=tuple(pairs) if pairs is not None else None, **self.costs()
        )


class BacktestRunConfig(BacktestCosts):
    """The run-specific half of a backtest: period, pairs, money and costs (frozen)."""

    timerange: str = Field(
        description="Freqtrade timerange, `YYYYMMDD-YYYYMMDD` (end exclusive); either side may be open."
    )
    pairs: tuple[str, ...] | None = Field(default=None, description="Pairs to trade; None: the config's.")
    stake_amount: float | Literal["unlimited"] = Field(
        default="unlimited", description="Stake per trade in stake currency, or 'unlimited' (equal split)."
    )
    tradable_balance_ratio: float = Field(default=0.99, gt=0, le=1)
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


def build_freqtrade_config(
    strategy: StrategyConfig, run: BacktestRunConfig, *, model: ExportedModel | None = None
) -> dict[str, Any]:
    """Freqtrade's config dict (JSON-ready) for backtesting `strategy` under `run`, offline, spot.

    Paths (data, strategy folder, user-data folder) are not in it: they are command-line arguments, as for
    the stock CLI. Strategy attribute overrides from `strategy.parameters` become top-level keys, which is
    how Freqtrade lets a config override a strategy. The backtest cache is off (it ignores changed data).
    `model`, the booster file a model strategy trades, goes into the platform's own `tradai` section
    (`self.config`; see `strategies.model_store`): a file pinned by version, never a tracking URI.
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
    if model is not None:
        config.update(model.freqtrade_section())
    if strategy.freqai is not None:
        config["freqai"] = strategy.freqai.to_freqtrade()
        config["freqaimodel"] = strategy.freqai.freqaimodel
    return config
