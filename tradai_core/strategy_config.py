"""The strategy config schema: how a strategy is run (pairs, currency, parameter values), frozen.

It sits in the core, below the strategies and every layer that builds a backtest from it, as Freqtrade's
config schema sits below its strategies. Reading and writing the YAML beside a strategy is
`strategies.config`'s job; building Freqtrade's config from it is `tradai_core.backtest_config`'s.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from tradai_core.timeframes import timeframe_seconds

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
"""Semantic Versioning 2.0.0 (the official regular expression from semver.org)."""

STRATEGY_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
"""A strategy's name is its class name: CamelCase, letters and digits, starting with a capital."""


def check_semver(value: str) -> str:
    """Return `value` if it is a semantic version (`1.2.3`, `1.0.0-rc.1`), else raise ValueError."""
    if not SEMVER.match(value):
        raise ValueError(f"version {value!r} is not a semantic version; use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return value


def check_timeframe(value: str) -> str:
    """Return `value` if it is a timeframe like `5m`, `1h` or `1d`, else raise ValueError."""
    try:
        timeframe_seconds(value)
    except Exception as exc:  # tradai_core raises its own ValidationError; pydantic wants ValueError
        raise ValueError(f"timeframe {value!r} is not valid; use e.g. 5m, 1h, 4h or 1d") from exc
    return value


def check_strategy_name(value: str) -> str:
    """Return `value` if it is a strategy class name (CamelCase), else raise ValueError."""
    if not STRATEGY_NAME.match(value):
        raise ValueError(f"name {value!r} must be the strategy's CamelCase class name, e.g. RsiMeanReversion")
    return value


StrategyName = Annotated[str, AfterValidator(check_strategy_name)]
"""A strategy's class name, validated (the strategy config and the strategy's metadata share it)."""
SemVer = Annotated[str, AfterValidator(check_semver)]
"""A semantic version, validated."""
Timeframe = Annotated[str, AfterValidator(check_timeframe)]
"""A candle timeframe, validated."""


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

    name: StrategyName = Field(description="The strategy's class name, e.g. RsiMeanReversion.")
    version: SemVer = Field(description="Semantic version of this config, e.g. 1.0.0.")
    timeframe: Timeframe = Field(description="Candle timeframe, e.g. 5m, 1h, 1d.")
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
