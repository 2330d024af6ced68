"""Per-strategy configuration: one frozen schema, read from a YAML file beside the strategy.

`strategies/rsi_mean_reversion.py` is configured by `strategies/rsi_mean_reversion.yaml`. The schema is
the platform's single strategy-config contract (name; semantic version; timeframe; pairs; stake currency;
exchange; parameters; buy/sell params; optional FreqAI block). A backtest's Freqtrade config is built from
it plus a run config (see `tradai_core.backtest_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from strategies.metadata import STRATEGY_NAME, check_semver, check_timeframe
from tradai_core.errors import ConfigurationError, NotFoundError

STRATEGY_OVERRIDES: Final[frozenset[str]] = frozenset(
    {
        "minimal_roi",
        "stoploss",
        "trailing_stop",
        "trailing_stop_positive",
        "trailing_stop_positive_offset",
        "trailing_only_offset_is_reached",
        "use_custom_stoploss",
        "process_only_new_candles",
        "order_types",
        "order_time_in_force",
        "unfilledtimeout",
        "use_exit_signal",
        "exit_profit_only",
        "ignore_roi_if_entry_signal",
        "exit_profit_offset",
        "disable_dataframe_checks",
        "ignore_buying_expired_candle_after",
        "position_adjustment_enable",
        "max_entry_position_adjustment",
    }
)
"""Strategy attributes Freqtrade lets a config override (its StrategyResolver's list, minus the ones a run
config owns: timeframe, stake, startup candles, max open trades)."""

ParamValue = int | float | bool | str


class FreqAIConfig(BaseModel):
    """The optional FreqAI block; passed to Freqtrade as its `freqai` config section.

    Only the keys the platform relies on are typed; any other FreqAI setting is kept as given and handed
    to Freqtrade unchanged.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    enabled: bool = True
    identifier: str = Field(min_length=1, description="Names the model folder; change it to retrain.")
    freqaimodel: str = Field(min_length=1, description="FreqAI model class, e.g. LightGBMRegressor.")
    feature_parameters: dict[str, JsonValue] = Field(default_factory=dict)
    data_split_parameters: dict[str, JsonValue] = Field(default_factory=dict)
    model_training_parameters: dict[str, JsonValue] = Field(default_factory=dict)

    def to_freqtrade(self) -> dict[str, Any]:
        """Freqtrade's `freqai` section (everything except `freqaimodel`, which is a top-level key)."""
        return self.model_dump(mode="json", exclude={"freqaimodel"})


class StrategyConfig(BaseModel):
    """How a strategy is run: which pairs, which currency, which parameter values (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The strategy's class name, e.g. RsiMeanReversion.")
    version: str = Field(description="Semantic version of this config, e.g. 1.0.0.")
    timeframe: str = Field(description="Candle timeframe, e.g. 5m, 1h, 1d.")
    pairs: tuple[str, ...] = Field(min_length=1, description="Pairs traded, e.g. ('BTC/USDT',).")
    stake_currency: str = "USDT"
    exchange: str = "binance"
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Overrides of Freqtrade strategy attributes, e.g. stoploss or minimal_roi.",
    )
    buy_params: dict[str, ParamValue] = Field(default_factory=dict, description="Buy-space parameter values.")
    sell_params: dict[str, ParamValue] = Field(
        default_factory=dict, description="Sell-space parameter values."
    )
    freqai: FreqAIConfig | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not STRATEGY_NAME.match(value):
            raise ValueError(f"name {value!r} must be the strategy's CamelCase class name")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        return check_semver(value)

    @field_validator("timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        return check_timeframe(value)

    @field_validator("stake_currency")
    @classmethod
    def _check_stake(cls, value: str) -> str:
        if not value or value != value.upper() or not value.isalnum():
            raise ValueError(f"stake currency {value!r} must be an upper-case currency code, e.g. USDT")
        return value

    @field_validator("exchange")
    @classmethod
    def _check_exchange(cls, value: str) -> str:
        if not value or value != value.lower() or not value.replace("_", "").isalnum():
            raise ValueError(f"exchange {value!r} must be a lower-case ccxt id, e.g. binance")
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        unknown = sorted(set(value) - STRATEGY_OVERRIDES)
        if unknown:
            raise ValueError(
                f"unknown parameters {unknown}; allowed are Freqtrade strategy overrides: "
                f"{sorted(STRATEGY_OVERRIDES)}"
            )
        stoploss = value.get("stoploss")
        if stoploss is not None and not (isinstance(stoploss, int | float) and -1 <= stoploss < 0):
            raise ValueError(f"stoploss {stoploss!r} must be a negative ratio in [-1, 0), e.g. -0.1")
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> StrategyConfig:
        for pair in self.pairs:
            base, sep, quote = pair.partition("/")
            if not (sep and base and quote):
                raise ValueError(f"pair {pair!r} must look like BASE/QUOTE, e.g. BTC/USDT")
            if quote != self.stake_currency:
                raise ValueError(
                    f"pair {pair!r} is not quoted in the stake currency {self.stake_currency}; "
                    "Freqtrade only trades pairs quoted in the stake currency"
                )
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError("pairs must not repeat")
        return self

    def hyperopt_params_file(self) -> dict[str, Any]:
        """The buy/sell parameter values as a Freqtrade parameter file (`<Strategy>.json`) body.

        This is Freqtrade's own mechanism for setting hyperoptable values, so the stock CLI and our
        backtests read the same values the same way; the file is written by us into a fresh strategy
        folder, never picked up from beside the source.
        """
        params: dict[str, Any] = {}
        if self.buy_params:
            params["buy"] = dict(self.buy_params)
        if self.sell_params:
            params["sell"] = dict(self.sell_params)
        return {"strategy_name": self.name, "params": params, "ft_stratparam_v": 1}


def config_path_for(strategy_file: Path) -> Path:
    """The YAML config beside a strategy module: `foo.py` → `foo.yaml`."""
    return strategy_file.with_suffix(".yaml")


def load_strategy_config(path: Path) -> StrategyConfig:
    """Read and validate a strategy YAML; raises ConfigurationError saying which file and which field."""
    if not path.is_file():
        raise NotFoundError(
            f"strategy config {path} does not exist",
            "create it beside the strategy module (`tradai strategy new` writes one)",
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"strategy config {path} is not valid YAML: {exc}", "fix the YAML") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"strategy config {path} must be a mapping", "see strategies/*.yaml")
    try:
        return StrategyConfig.model_validate(raw)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(
            f"strategy config {path} is invalid: {problems}", "fix the listed fields"
        ) from exc


def dump_strategy_config(config: StrategyConfig) -> str:
    """The YAML text of a strategy config (fields in schema order, empty optional blocks left out)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["pairs"] = list(config.pairs)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
