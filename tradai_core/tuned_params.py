"""Tuned parameters: what a hyperopt study hands on, and the one explicit way a backtest uses them.

A study's best parameters are stored as a versioned artifact (`tuned/<Strategy>.json` in an MLflow run of
the `hyperopt` experiment), never as Freqtrade's `<Strategy>.json` beside a strategy, which Freqtrade
would load silently into every later backtest. A backtest uses tuned parameters only when its run config
names them (by MLflow run id); `apply_tuned` then layers them over the strategy's YAML config, and the
result is an ordinary `StrategyConfig`, so the backtest's own lineage shows exactly which values it ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from strategies.config import ParamValue, StrategyConfig
from tradai_core.errors import ValidationError

TUNED_ARTIFACT_DIR: Final[str] = "tuned"


def tuned_artifact_path(strategy: str) -> str:
    """Where a hyperopt run stores a strategy's tuned parameters: `tuned/<Strategy>.json`."""
    return f"{TUNED_ARTIFACT_DIR}/{strategy}.json"


class TunedParameters(BaseModel):
    """The parameter values a study selected for one strategy, with where they came from (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    version: int = Field(ge=1, description="1 for a strategy's first tuned parameters, then 2, 3, …")
    buy_params: dict[str, ParamValue] = Field(default_factory=dict)
    sell_params: dict[str, ParamValue] = Field(default_factory=dict)
    roi: dict[str, float] | None = Field(default=None, description="Freqtrade minimal_roi, when tuned.")
    stoploss: float | None = Field(default=None, description="Stoploss ratio, when tuned.")
    objective: str
    best_value: float
    study: str = Field(description="Optuna study name.")
    storage: str = Field(description="Optuna storage URL, without credentials.")
    trials: int = Field(ge=1, description="Finished trials of the study when these were selected.")
    distinct_trials: int = Field(ge=1, description="Trials with a parameter set of their own (DSR's N).")
    dsr: float | None = Field(description="Deflated Sharpe Ratio of the best trial given the trials.")
    dsr_threshold: float
    gate_passed: bool
    gate_summary: str
    in_sample_timerange: str
    oos_timerange: str
    oos_sharpe: float | None
    oos_profit_ratio: float
    oos_trades: int
    pairs: tuple[str, ...]
    strategy_config_version: str
    source_sha256: str
    mlflow_run_id: str
    created_at: datetime

    @field_validator("stoploss")
    @classmethod
    def _check_stoploss(cls, value: float | None) -> float | None:
        if value is not None and not -1 <= value < 0:
            raise ValueError(f"stoploss {value} must be a negative ratio in [-1, 0)")
        return value

    def values(self) -> dict[str, Any]:
        """The tuned values alone, by space (what a person compares between versions)."""
        out: dict[str, Any] = {"buy": dict(self.buy_params), "sell": dict(self.sell_params)}
        if self.roi is not None:
            out["roi"] = dict(self.roi)
        if self.stoploss is not None:
            out["stoploss"] = self.stoploss
        return out


def apply_values(
    config: StrategyConfig,
    buy_params: dict[str, ParamValue] | None = None,
    sell_params: dict[str, ParamValue] | None = None,
    roi: dict[str, float] | None = None,
    stoploss: float | None = None,
) -> StrategyConfig:
    """`config` with parameter values layered over it: buy/sell params merged (the given ones win), and
    a ROI table and stoploss set as Freqtrade strategy overrides when given. Validated like any config."""
    data = config.model_dump(mode="json")
    data["buy_params"] = {**config.buy_params, **(buy_params or {})}
    data["sell_params"] = {**config.sell_params, **(sell_params or {})}
    parameters = dict(config.parameters)
    if roi is not None:
        parameters["minimal_roi"] = dict(roi)
    if stoploss is not None:
        parameters["stoploss"] = stoploss
    data["parameters"] = parameters
    return StrategyConfig.model_validate(data)


def apply_tuned(config: StrategyConfig, tuned: TunedParameters) -> StrategyConfig:
    """`config` with `tuned`'s values layered over it (see `apply_values`).

    Raises ValidationError when the tuned parameters belong to another strategy.
    """
    if tuned.strategy != config.name:
        raise ValidationError(
            f"tuned parameters {tuned.mlflow_run_id} are for {tuned.strategy}, not {config.name}",
            f"name tuned parameters of {config.name} in the run config",
        )
    return apply_values(config, tuned.buy_params, tuned.sell_params, tuned.roi, tuned.stoploss)
