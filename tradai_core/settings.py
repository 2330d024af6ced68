"""Platform settings: one pydantic-settings model read from `TRADAI_*` environment variables.

Defaults keep everything (candles, experiments, the Dagster instance) under one git-ignored folder
inside the project, so a fresh clone writes nothing elsewhere unless told to.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tradai_core.clock import Clock, as_utc
from tradai_core.timeframes import timeframe_seconds

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".tradai"
DEFAULT_PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT")

WorkerMode = Literal["shared", "prefork", "spawn"]
"""Where a backtest process forks from: one pre-loaded Freqtrade worker per user and checkout (`shared`),
one per process (`prefork`), or none: a fresh interpreter each time (`spawn`)."""
DEFAULT_WORKER_MODE: Final[WorkerMode] = "shared"
"""The one default, for the settings and `FreqtradeResource` alike: Dagster runs every step in a process of
its own, so only a worker shared across processes saves every step but the first Freqtrade's start-up."""


class TradAISettings(BaseSettings):
    """Everything a deployment may change; every field can be set as `TRADAI_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="TRADAI_", frozen=True, extra="ignore")

    home: Path = Field(default=DEFAULT_HOME, description="Folder holding all local state by default.")
    exchange_id: str = Field(default="binance", description="Any ccxt exchange id.")
    exchange_base_url: str | None = Field(
        default=None, description="Override of the exchange's REST base URL, e.g. the replay server."
    )
    trading_mode: Literal["spot", "futures"] = "spot"
    pairs: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_PAIRS, description="The pair universe, comma-separated in the environment."
    )
    timeframe: str = "1h"
    history_start: date = Field(default=date(2020, 10, 12), description="First day of market data.")
    history_end: date | None = Field(
        default=None,
        description="Last day (exclusive) of market data; None means up to today. The offline demo sets "
        "it to the end of the recorded candles.",
    )
    now: datetime | None = Field(
        default=None,
        description="The platform's clock (ISO timestamp, UTC unless an offset is given); None means real "
        "time. The history in force ends at it, whatever `history_end` says (tradai_core.clock).",
    )
    holdout_days: int = Field(
        default=120,
        ge=1,
        description="Days at the end of the history kept out of model training; backtests default to this "
        "window, so a model is never scored on data it was trained on.",
    )
    # The two URIs may carry credentials (S3 keys, a database password): kept out of the repr, shown only
    # through `tradai_core.urls.redact_uri`, and bound to resources as EnvVars by the code location.
    arcticdb_uri: str | None = Field(
        default=None, repr=False, description="Default: lmdb://<home>/arcticdb. May hold credentials."
    )
    mlflow_uri: str | None = Field(
        default=None, repr=False, description="Default: sqlite:///<home>/mlflow.db. May hold credentials."
    )
    arcticdb_keep_versions: int = Field(
        default=24,
        ge=1,
        description="Versions kept per ArcticDB symbol: the newest N, plus every version an ArcticDB "
        "snapshot holds (models and backtest reports pin what they read); older ones are pruned at write.",
    )
    data_dir: Path | None = Field(default=None, description="Default: <home>/data (scratch files).")
    backtest_workers: WorkerMode = Field(
        default=DEFAULT_WORKER_MODE,
        description="Where backtest and hyperopt study-worker processes fork from: one pre-loaded Freqtrade "
        "worker shared by every run and step process of this user (shared), one per process (prefork), or "
        "none (spawn).",
    )
    worker_dir: Path | None = Field(
        default=None,
        description="Private folder for the shared worker's socket; default: $XDG_RUNTIME_DIR/tradai, "
        "else <tmp>/tradai-<uid>.",
    )

    @field_validator("pairs", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("pairs")
    @classmethod
    def _check_pairs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pair in value:
            base, sep, quote = pair.partition("/")
            if not (sep and base and quote):
                raise ValueError(f"pair {pair!r} must look like BASE/QUOTE, e.g. BTC/USDT")
        if len(set(value)) != len(value):
            raise ValueError("pairs must not repeat")
        return value

    @field_validator("timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value

    @field_validator("now")
    @classmethod
    def _utc_now(cls, value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None

    @cached_property
    def clock(self) -> Clock:
        """The platform's clock: `now` when set, else real time."""
        return Clock(fixed=self.now)

    @cached_property
    def resolved_history_end(self) -> date:
        """Last day (exclusive) of the history in force: `history_end`, but never after the clock's day
        (included: its candles up to now exist)."""
        up_to_clock = self.clock.today() + timedelta(days=1)
        return min(self.history_end, up_to_clock) if self.history_end is not None else up_to_clock

    @cached_property
    def training_history_end(self) -> date | None:
        """Last day (exclusive) a training window may reach: `history_end`, never past the clock's day
        (whose candles are still arriving); None in real time with an open history (today, then)."""
        if self.clock.is_real_time:
            return self.history_end
        today = self.clock.today()
        return min(self.history_end, today) if self.history_end is not None else today

    @cached_property
    def holdout_start(self) -> date:
        """First day of the holdout window `[holdout_start, resolved_history_end)`."""
        return self.resolved_history_end - timedelta(days=self.holdout_days)

    @cached_property
    def resolved_arcticdb_uri(self) -> str:
        """ArcticDB URI in force: the configured one, else LMDB under `home`."""
        return self.arcticdb_uri or f"lmdb://{self.home / 'arcticdb'}"

    @cached_property
    def resolved_mlflow_uri(self) -> str:
        """MLflow tracking URI in force: the configured one, else SQLite under `home`."""
        return self.mlflow_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @cached_property
    def resolved_data_dir(self) -> Path:
        """Scratch folder in force: the configured one, else `<home>/data`."""
        return self.data_dir or self.home / "data"


def pair_slug(pair: str) -> str:
    """File- and key-safe name of a pair: `BTC/USDT` → `BTC_USDT`."""
    return pair.replace("/", "_").replace(":", "_")
