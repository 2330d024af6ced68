"""Platform settings: one pydantic-settings model read from `TRADAI_*` environment variables.

Defaults keep everything (candles, experiments, the Dagster instance) under one git-ignored folder
inside the project, so a fresh clone writes nothing elsewhere unless told to.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tradai_core.timeframes import timeframe_seconds

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".tradai"
DEFAULT_PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT")


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
    backtest_workers: Literal["shared", "prefork", "spawn"] = Field(
        default="shared",
        description="Where backtest processes fork from: one pre-loaded Freqtrade worker shared by every "
        "run and step process of this user (shared), one per process (prefork), or none (spawn).",
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

    @cached_property
    def resolved_history_end(self) -> date:
        """Last day (exclusive) of the history in force: `history_end`, else tomorrow (today included)."""
        return self.history_end or date.today() + timedelta(days=1)

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
