"""Scaffolding a new strategy: a module and its YAML config that validate and backtest as generated.

`tradai strategy new MyBreakout --category breakout --timeframe 1h` writes `strategies/my_breakout.py`
(a `TradAIStrategy` with TA-Lib indicators, hyperoptable parameters and metadata) and
`strategies/my_breakout.yaml` (its `StrategyConfig`). Each category starts from a small, working rule
of its kind, for the researcher to replace:

- trend_following: EMA(fast) crossing EMA(slow);
- mean_reversion: RSI leaving oversold / reaching overbought;
- momentum: MACD crossing its signal line with positive rate of change;
- breakout: close above the previous N-candle high (Donchian channel);
- machine_learning: a rule on two model-ready features (returns z-score and RSI), to be replaced by a
  model prediction; it does not enable FreqAI, so it backtests without a trained model.
"""

from __future__ import annotations

import json
import keyword
import logging
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Final

from strategies.config import dump_strategy_config
from strategies.metadata import StrategyCategory, StrategyStatus
from strategies.validation import INFRASTRUCTURE_MODULES, STRATEGIES_DIR, discover_strategies
from tradai_core.errors import ValidationError
from tradai_core.settings import DEFAULT_PAIRS
from tradai_core.strategy_config import STRATEGY_NAME, StrategyConfig, check_timeframe

logger = logging.getLogger(__name__)

INITIAL_VERSION: Final[str] = "0.1.0"
LINE_LENGTH: Final[int] = 110
"""The project's line length; generated modules pass `ruff check` and `ruff format --check` with it."""


@dataclass(frozen=True)
class _Recipe:
    description: str
    tags: tuple[str, ...]
    startup: int
    stoploss: float
    roi: str
    parameters: str
    indicators: tuple[str, ...]
    entry: tuple[str, ...]
    exit: tuple[str, ...]
    buy_params: dict[str, int | float]
    sell_params: dict[str, int | float]
    extra_imports: tuple[str, ...] = ()


RECIPES: Final[dict[StrategyCategory, _Recipe]] = {
    StrategyCategory.TREND_FOLLOWING: _Recipe(
        description="Enters when EMA(fast) crosses above EMA(slow); exits on the reverse cross.",
        tags=("ema", "talib"),
        startup=200,
        stoploss=-0.08,
        roi='{"0": 0.20}',
        parameters=(
            '    buy_ema_fast = IntParameter(5, 30, default=12, space="buy", optimize=False)\n'
            '    buy_ema_slow = IntParameter(30, 120, default=50, space="buy", optimize=False)\n'
        ),
        indicators=(
            'dataframe["ema_fast"] = ta.EMA(dataframe, timeperiod=self.buy_ema_fast.value)',
            'dataframe["ema_slow"] = ta.EMA(dataframe, timeperiod=self.buy_ema_slow.value)',
        ),
        entry=('crossed_above(dataframe["ema_fast"], dataframe["ema_slow"])',),
        exit=('crossed_below(dataframe["ema_fast"], dataframe["ema_slow"])',),
        buy_params={"buy_ema_fast": 12, "buy_ema_slow": 50},
        sell_params={},
        extra_imports=("from technical.qtpylib import crossed_above, crossed_below",),
    ),
    StrategyCategory.MEAN_REVERSION: _Recipe(
        description="Enters when RSI(14) is oversold; exits when it turns overbought.",
        tags=("rsi", "talib"),
        startup=50,
        stoploss=-0.10,
        roi='{"0": 0.06, "360": 0.03, "1440": 0.0}',
        parameters=(
            '    buy_rsi = IntParameter(10, 40, default=30, space="buy")\n'
            '    sell_rsi = IntParameter(55, 90, default=70, space="sell")\n'
        ),
        indicators=('dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)',),
        entry=('dataframe["rsi"] < self.buy_rsi.value',),
        exit=('dataframe["rsi"] > self.sell_rsi.value',),
        buy_params={"buy_rsi": 30},
        sell_params={"sell_rsi": 70},
    ),
    StrategyCategory.MOMENTUM: _Recipe(
        description="Enters when MACD crosses above its signal line with a positive 10-candle rate of "
        "change; exits when MACD crosses back below.",
        tags=("macd", "roc", "talib"),
        startup=100,
        stoploss=-0.08,
        roi='{"0": 0.12, "720": 0.04, "2880": 0.0}',
        parameters='    buy_roc_min = DecimalParameter(0.0, 5.0, default=0.5, decimals=1, space="buy")\n',
        indicators=(
            "macd = ta.MACD(dataframe, fastperiod=12, slowperiod=26, signalperiod=9)",
            'dataframe["macd"] = macd["macd"]',
            'dataframe["macd_signal"] = macd["macdsignal"]',
            'dataframe["roc"] = ta.ROC(dataframe, timeperiod=10)',
        ),
        entry=(
            'crossed_above(dataframe["macd"], dataframe["macd_signal"])',
            'dataframe["roc"] > self.buy_roc_min.value',
        ),
        exit=('crossed_below(dataframe["macd"], dataframe["macd_signal"])',),
        buy_params={"buy_roc_min": 0.5},
        sell_params={},
        extra_imports=("from technical.qtpylib import crossed_above, crossed_below",),
    ),
    StrategyCategory.BREAKOUT: _Recipe(
        description="Enters on a close above the previous N-candle high (Donchian channel); exits on a "
        "close below the previous N/2-candle low.",
        tags=("donchian", "talib"),
        startup=60,
        stoploss=-0.06,
        roi='{"0": 0.10, "720": 0.04, "2880": 0.0}',
        parameters='    buy_channel = IntParameter(10, 50, default=20, space="buy", optimize=False)\n',
        indicators=(
            "channel = self.buy_channel.value",
            "exit_channel = max(channel // 2, 2)",
            'dataframe["channel_high"] = ta.MAX(dataframe, timeperiod=channel, price="high").shift(1)',
            'dataframe["channel_low"] = ta.MIN(dataframe, timeperiod=exit_channel, price="low").shift(1)',
        ),
        entry=('dataframe["close"] > dataframe["channel_high"]',),
        exit=('dataframe["close"] < dataframe["channel_low"]',),
        buy_params={"buy_channel": 20},
        sell_params={},
    ),
    StrategyCategory.MACHINE_LEARNING: _Recipe(
        description="Placeholder for a model-driven strategy: enters when the 24-candle return z-score "
        "and RSI(14) both say oversold; replace the rule with a model prediction.",
        tags=("features", "talib"),
        startup=100,
        stoploss=-0.08,
        roi='{"0": 0.06, "720": 0.02, "2880": 0.0}',
        parameters=(
            '    buy_zscore = DecimalParameter(-3.0, -0.5, default=-1.5, decimals=1, space="buy")\n'
            '    sell_zscore = DecimalParameter(0.0, 3.0, default=1.0, decimals=1, space="sell")\n'
        ),
        indicators=(
            'returns = dataframe["close"].pct_change(24)',
            "window = returns.rolling(72, min_periods=72)",
            'dataframe["return_zscore"] = (returns - window.mean()) / window.std()',
            'dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)',
        ),
        entry=('dataframe["return_zscore"] < self.buy_zscore.value', 'dataframe["rsi"] < 40'),
        exit=('dataframe["return_zscore"] > self.sell_zscore.value',),
        buy_params={"buy_zscore": -1.5},
        sell_params={"sell_zscore": 1.0},
    ),
}

_MODULE_TEMPLATE = Template('''"""$title

$description

Generated by `tradai strategy new`; replace the rule with your own and keep the metadata honest.
"""

from __future__ import annotations

from typing import ClassVar

${imports}

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy


class $name(TradAIStrategy):
    """$class_doc"""

    timeframe = "$timeframe"
    startup_candle_count = $startup
    stoploss = $stoploss
    minimal_roi: ClassVar[dict[str, float]] = $roi

$parameters
    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        """Metadata of this strategy."""
        return StrategyMetadata(
            name="$name",
            version="$version",
            description=$description_literal,
            timeframe="$timeframe",
            category=StrategyCategory.$category,
            status=StrategyStatus.$status,
            tags=$tags,
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Indicators the entry and exit rules read."""
$indicators
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Long entry signal."""
        dataframe.loc[
            $entry,
            ["enter_long", "enter_tag"],
        ] = (1, "$entry_tag")
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Long exit signal."""
        dataframe.loc[
            $exit,
            ["exit_long", "exit_tag"],
        ] = (1, "$exit_tag")
        return dataframe
''')


def _condition(terms: tuple[str, ...]) -> str:
    """A signal condition laid out as ruff format lays it out (one line if it fits, else one term a line)."""
    parts = [f"({term})" for term in (*terms, 'dataframe["volume"] > 0')]
    single = " & ".join(parts)
    if len(" " * 12 + single + ",") <= LINE_LENGTH:
        return single
    return ("\n" + " " * 12 + "& ").join(parts)


def _string_literal(text: str, indent: int) -> str:
    """`text` as a Python string literal, split into implicitly joined lines that fit the line length."""
    one_line = json.dumps(text, ensure_ascii=False)
    if indent + len("description=") + len(one_line) + 1 <= LINE_LENGTH:
        return one_line
    chunks = textwrap.wrap(text, LINE_LENGTH - indent - 8, drop_whitespace=False)
    inner = "\n".join(" " * (indent + 4) + json.dumps(chunk, ensure_ascii=False) for chunk in chunks)
    return "(\n" + inner + "\n" + " " * indent + ")"


def _tags(tags: tuple[str, ...]) -> str:
    items = ", ".join(json.dumps(tag) for tag in tags)
    return f"({items},)" if len(tags) == 1 else f"({items})"


def _imports(recipe: _Recipe) -> str:
    """The third-party import block of a generated module, sorted the way ruff's isort wants it."""
    used = [p for p in ("DecimalParameter", "IntParameter") if f"{p}(" in recipe.parameters]
    lines = ["import talib.abstract as ta"]
    if used:
        lines.append(f"from freqtrade.strategy import {', '.join(used)}")
    lines.append("from pandas import DataFrame")
    lines += recipe.extra_imports
    return "\n".join(lines)


@dataclass(frozen=True)
class ScaffoldResult:
    """What `create_strategy` wrote."""

    name: str
    module_path: Path
    config_path: Path


def class_name_for(name: str) -> str:
    """The strategy class name for a user-given name: `my_breakout` / `my-breakout` → `MyBreakout`."""
    if STRATEGY_NAME.match(name):
        return name
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    candidate = "".join(p[:1].upper() + p[1:] for p in parts)
    if not STRATEGY_NAME.match(candidate):
        raise ValidationError(
            f"strategy name {name!r} cannot become a class name",
            "use letters and digits starting with a letter, e.g. MyBreakout",
        )
    return candidate


def module_name_for(class_name: str) -> str:
    """The module (file stem) for a class name: `MyBreakout` → `my_breakout`, `RSI2Cross` → `rsi2_cross`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()
    return snake


def render_strategy(
    name: str,
    category: StrategyCategory,
    timeframe: str,
    *,
    description: str | None = None,
    pairs: tuple[str, ...] = DEFAULT_PAIRS,
    stake_currency: str = "USDT",
    status: StrategyStatus = StrategyStatus.TESTING,
) -> tuple[str, StrategyConfig]:
    """The source of a new strategy module and its config, from the category's recipe."""
    class_name = class_name_for(name)
    try:
        check_timeframe(timeframe)
    except ValueError as exc:
        raise ValidationError(str(exc), "use e.g. 5m, 1h, 4h or 1d") from exc
    category = StrategyCategory(category)
    recipe = RECIPES[category]
    text = (description or recipe.description).strip()
    source = _MODULE_TEMPLATE.substitute(
        title=f"{class_name}: a {category.value.replace('_', ' ')} strategy.",
        description=textwrap.fill(text, LINE_LENGTH - 10),
        class_doc=f"A {category.value.replace('_', ' ')} strategy scaffolded by `tradai strategy new`.",
        description_literal=_string_literal(text, 12),
        imports=_imports(recipe),
        name=class_name,
        timeframe=timeframe,
        startup=recipe.startup,
        stoploss=recipe.stoploss,
        roi=recipe.roi,
        parameters=recipe.parameters,
        version=INITIAL_VERSION,
        category=category.name,
        status=StrategyStatus(status).name,
        tags=_tags(recipe.tags),
        indicators="\n".join(" " * 8 + line for line in recipe.indicators),
        entry=_condition(recipe.entry),
        exit=_condition(recipe.exit),
        entry_tag=f"{module_name_for(class_name)}_entry",
        exit_tag=f"{module_name_for(class_name)}_exit",
    )
    config = StrategyConfig(
        name=class_name,
        version=INITIAL_VERSION,
        timeframe=timeframe,
        pairs=pairs,
        stake_currency=stake_currency,
        buy_params=recipe.buy_params,
        sell_params=recipe.sell_params,
    )
    return source, config


def create_strategy(
    name: str,
    category: StrategyCategory,
    timeframe: str,
    *,
    folder: Path = STRATEGIES_DIR,
    description: str | None = None,
    pairs: tuple[str, ...] = DEFAULT_PAIRS,
    stake_currency: str = "USDT",
    status: StrategyStatus = StrategyStatus.TESTING,
    overwrite: bool = False,
) -> ScaffoldResult:
    """Write a new strategy module and its YAML config into `folder`; refuses to clobber anything.

    Raises ValidationError for a bad name/timeframe, or when the strategy or its files already exist
    (pass `overwrite=True` to replace the files of the same name).
    """
    source, config = render_strategy(
        name,
        category,
        timeframe,
        description=description,
        pairs=pairs,
        stake_currency=stake_currency,
        status=status,
    )
    module = module_name_for(config.name)
    if module in INFRASTRUCTURE_MODULES or keyword.iskeyword(module) or module.startswith("_"):
        raise ValidationError(f"module name {module!r} is reserved", "choose another strategy name")
    module_path, config_path = folder / f"{module}.py", folder / f"{module}.yaml"
    if not overwrite:
        existing = [p for p in (module_path, config_path) if p.exists()]
        if existing:
            raise ValidationError(
                f"{', '.join(str(p) for p in existing)} already exist(s)",
                "choose another name, or pass --force to overwrite",
            )
        if folder.is_dir() and config.name in discover_strategies(folder):
            raise ValidationError(
                f"a strategy named {config.name} already exists in {folder}", "choose another name"
            )
    folder.mkdir(parents=True, exist_ok=True)
    module_path.write_text(source, encoding="utf-8")
    config_path.write_text(dump_strategy_config(config), encoding="utf-8")
    logger.info("created strategy %s: %s and %s", config.name, module_path, config_path)
    return ScaffoldResult(name=config.name, module_path=module_path, config_path=config_path)
