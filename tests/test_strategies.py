"""Strategies: metadata, config, validation, discovery, scaffolding, the CLI, and the absence of lookahead.

Every check here runs without a backtest; the scaffolded strategies' backtests are in the slow test at the
end. The lookahead tests run each shipped strategy through Freqtrade's own strategy loader and analysis on
real recorded candles.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import DEMO_CANDLES, load_recorded
from pydantic import ValidationError as PydanticValidationError

from strategies.base import StrategyCategory, StrategyMetadata, StrategyStatus, TradAIStrategy
from strategies.config import dump_strategy_config, load_strategy_config
from strategies.scaffold import class_name_for, create_strategy, module_name_for, render_strategy
from strategies.validation import (
    STRATEGIES_DIR,
    discover_strategies,
    find_strategy_file,
    load_strategy_class,
    validate_all,
    validate_strategy,
)
from tradai.cli import main as tradai_main
from tradai_core.backtest_config import BacktestRunConfig, build_freqtrade_config
from tradai_core.errors import ConfigurationError, NotFoundError, StrategyValidationError, ValidationError
from tradai_core.strategy_config import StrategyConfig
from tradai_resources.freqtrade_workspace import prepare_strategy_dir

SHIPPED = {
    "BollingerBreakout": StrategyCategory.BREAKOUT,
    "EmaAdxTrend": StrategyCategory.TREND_FOLLOWING,
    "RsiMeanReversion": StrategyCategory.MEAN_REVERSION,
}

STRATEGY_HEADER = """\
from typing import ClassVar

import talib.abstract as ta
from freqtrade.strategy import DecimalParameter, IntParameter
from pandas import DataFrame

from strategies.base import StrategyCategory, StrategyMetadata, TradAIStrategy
"""

GOOD_STRATEGY = (
    STRATEGY_HEADER
    + """

class GoodOne(TradAIStrategy):
    timeframe = "1h"
    stoploss = -0.05
    startup_candle_count = 20
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.05}
    buy_rsi = IntParameter(10, 40, default=30, space="buy")

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        return StrategyMetadata(
            name="GoodOne", version="1.0.0", description="Test strategy.", timeframe="1h",
            category=StrategyCategory.MEAN_REVERSION,
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["rsi"] < self.buy_rsi.value, "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["rsi"] > 70, "exit_long"] = 1
        return dataframe
"""
)

GOOD_CONFIG = """\
name: GoodOne
version: 1.0.0
timeframe: 1h
pairs: [BTC/USDT]
buy_params: {buy_rsi: 25}
"""


def write_strategy(folder: Path, module: str, source: str, config: str | None = None) -> Path:
    """Write a strategy module (and optionally its YAML) into `folder`; returns the module path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    if config is not None:
        path.with_suffix(".yaml").write_text(config, encoding="utf-8")
    return path


def issue_checks(report: Any) -> list[str]:
    return [issue.check for issue in report.errors]


# --- metadata and config schemas ----------------------------------------------------------------------------


def test_metadata_is_frozen_and_validated() -> None:
    meta = StrategyMetadata(
        name="Foo", version="1.2.3-rc.1", description="d", timeframe="4h", category="momentum", tags=("a",)
    )
    assert meta.status is StrategyStatus.TESTING
    assert meta.category is StrategyCategory.MOMENTUM
    with pytest.raises(PydanticValidationError):
        meta.version = "2.0.0"  # type: ignore[misc]
    for bad in (
        {"version": "1.0"},
        {"timeframe": "1hour"},
        {"name": "foo_bar"},
        {"category": "arbitrage"},
        {"status": "live"},
        {"description": "   "},
        {"tags": ("Upper",)},
    ):
        fields = {
            "name": "Foo",
            "version": "1.0.0",
            "description": "d",
            "timeframe": "1h",
            "category": "breakout",
        } | bad
        with pytest.raises(PydanticValidationError):
            StrategyMetadata(**fields)


def test_strategy_config_defaults_and_rules() -> None:
    config = StrategyConfig(name="Foo", version="0.1.0", timeframe="5m", pairs=("BTC/USDT",))
    assert (config.stake_currency, config.exchange, config.freqai) == ("USDT", "binance", None)
    assert config.parameters == {} and config.buy_params == {} and config.sell_params == {}
    with pytest.raises(PydanticValidationError):
        config.pairs = ("ETH/USDT",)  # type: ignore[misc]
    base = {"name": "Foo", "version": "0.1.0", "timeframe": "1h", "pairs": ["BTC/USDT"]}
    for bad in (
        {"version": "one"},
        {"timeframe": "7x"},
        {"pairs": []},
        {"pairs": ["BTC/EUR"]},  # not quoted in the stake currency
        {"pairs": ["BTCUSDT"]},
        {"pairs": ["BTC/USDT", "BTC/USDT"]},
        {"parameters": {"stoploss": 0.1}},
        {"parameters": {"not_a_freqtrade_override": 1}},
        {"exchange": "Binance"},
        {"surprise": 1},
    ):
        with pytest.raises(PydanticValidationError):
            StrategyConfig.model_validate(base | bad)


def test_strategy_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = StrategyConfig(
        name="Foo",
        version="1.0.0",
        timeframe="1h",
        pairs=("BTC/USDT", "ETH/USDT"),
        parameters={"stoploss": -0.05, "minimal_roi": {"0": 0.1}},
        buy_params={"buy_rsi": 30},
        freqai={"identifier": "foo-v1", "freqaimodel": "LightGBMRegressor", "train_period_days": 30},
    )
    path = tmp_path / "foo.yaml"
    path.write_text(dump_strategy_config(config))
    loaded = load_strategy_config(path)
    assert loaded == config
    assert loaded.freqai is not None and loaded.freqai.to_freqtrade()["train_period_days"] == 30


def test_loading_a_bad_yaml_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "foo.yaml"
    path.write_text("name: Foo\nversion: 1.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\nstake_currency: usdt\n")
    with pytest.raises(ConfigurationError, match=r"foo\.yaml.*stake_currency"):
        load_strategy_config(path)
    with pytest.raises(NotFoundError):
        load_strategy_config(tmp_path / "missing.yaml")
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_strategy_config(path)


def test_freqtrade_config_carries_the_strategy_config_and_the_run() -> None:
    config = StrategyConfig(
        name="Foo",
        version="1.0.0",
        timeframe="1h",
        pairs=("BTC/USDT", "ETH/USDT"),
        parameters={"stoploss": -0.05},
    )
    run = BacktestRunConfig(timerange="20210101-20210201", max_open_trades=2, fee=0.002, stake_amount=100)
    ft = build_freqtrade_config(config, run)
    assert ft["exchange"]["pair_whitelist"] == ["BTC/USDT", "ETH/USDT"]
    assert (ft["timeframe"], ft["stake_currency"], ft["stake_amount"]) == ("1h", "USDT", 100)
    assert (ft["max_open_trades"], ft["fee"], ft["stoploss"]) == (2, 0.002, -0.05)
    assert ft["backtest_cache"] == "none"
    assert ft["dry_run"] is True and ft["trading_mode"] == "spot"
    only_btc = build_freqtrade_config(config, run.model_copy(update={"pairs": ("BTC/USDT",)}))
    assert only_btc["exchange"]["pair_whitelist"] == ["BTC/USDT"]
    with pytest.raises(ValidationError, match="stake currency"):
        build_freqtrade_config(config, run.model_copy(update={"pairs": ("BTC/EUR",)}))
    assert BacktestRunConfig.for_dates(pd.Timestamp("2021-01-01"), pd.Timestamp("2021-02-01")).timerange == (
        "20210101-20210201"
    )
    for bad in ("2021-01-01", "20210201-20210101", "-"):
        with pytest.raises(PydanticValidationError):
            BacktestRunConfig(timerange=bad)


# --- the shipped strategies ---------------------------------------------------------------------------------


def test_discovery_finds_the_shipped_strategies() -> None:
    assert set(SHIPPED) <= set(discover_strategies())
    assert find_strategy_file("RsiMeanReversion").name == "rsi_mean_reversion.py"
    with pytest.raises(NotFoundError, match="NoSuchStrategy"):
        find_strategy_file("NoSuchStrategy")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_strategy_is_valid_and_described(name: str) -> None:
    report = validate_strategy(name)
    assert report.ok, report.summary()
    assert report.warnings == ()
    assert report.metadata is not None and report.config is not None
    cls = load_strategy_class(name)
    assert issubclass(cls, TradAIStrategy)
    assert report.metadata.name == name == report.config.name
    assert report.metadata.category is SHIPPED[name]
    assert report.metadata.timeframe == cls.timeframe == report.config.timeframe
    assert report.metadata.version == report.config.version
    assert cls.stoploss < 0
    assert "talib" in report.metadata.tags
    assert set(report.config.pairs) <= {
        p.stem.removesuffix("-1h").replace("_", "/") for p in DEMO_CANDLES.iterdir()
    }


# --- the validator ------------------------------------------------------------------------------------------


def test_validator_collects_every_problem_of_a_strategy(tmp_path: Path) -> None:
    source = (
        STRATEGY_HEADER
        + """

class Sloppy(TradAIStrategy):
    timeframe = "1h"
    stoploss = 0.05
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.05}
    buy_rsi = IntParameter(40, 10, default=30, space="buy")
    buy_factor = DecimalParameter(1.0, 2.0, default=2.5, space="buy")

    @classmethod
    def get_metadata(cls) -> StrategyMetadata:
        return StrategyMetadata(
            name="Sloppy", version="1.0.0", description="x", timeframe="4h",
            category=StrategyCategory.BREAKOUT, status="deprecated",
        )

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        return df
"""
    )
    config = "name: Sloppy\nversion: 2.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\nbuy_params: {buy_nope: 1}\n"
    write_strategy(tmp_path, "sloppy", source, config)
    report = validate_strategy("Sloppy", tmp_path)
    assert not report.ok
    messages = "\n".join(f"{i.check}: {i.message}" for i in report.issues)
    assert "stoploss 0.05 must be negative" in messages
    assert "metadata timeframe '4h' differs from class timeframe '1h'" in messages
    assert "buy_rsi (buy): low 40 must be below high 10" in messages
    assert "buy_factor (buy): default 2.5 outside [1.0, 2.0]" in messages
    assert "populate_entry_trend must take (self, dataframe, metadata)" in messages
    assert "populate_exit_trend(self, dataframe, metadata) is not implemented" in messages
    assert "buy_params.buy_nope is not a buy parameter" in messages
    assert {w.message for w in report.warnings} >= {
        "strategy is deprecated",
        "config version 2.0.0 differs from metadata version 1.0.0",
    }
    with pytest.raises(StrategyValidationError, match="Sloppy is invalid") as caught:
        report.raise_for_errors()
    assert "tradai strategy validate" in str(caught.value)


def test_a_strategy_that_fails_to_import_is_listed_and_reported_without_hiding_others(tmp_path: Path) -> None:
    write_strategy(tmp_path, "good_one", GOOD_STRATEGY, GOOD_CONFIG)
    write_strategy(
        tmp_path,
        "broken_import",
        STRATEGY_HEADER
        + "import package_that_does_not_exist\n\n\nclass BrokenImport(TradAIStrategy):\n    pass\n",
        "name: BrokenImport\nversion: 1.0.0\ntimeframe: 1h\npairs: [BTC/USDT]\n",
    )
    write_strategy(tmp_path, "half_written", "class HalfWritten(TradAIStrategy:\n")

    assert discover_strategies(tmp_path) == ["BrokenImport", "GoodOne", "half_written"]
    reports = {r.name: r for r in validate_all(tmp_path)}
    assert reports["GoodOne"].ok, reports["GoodOne"].summary()
    assert issue_checks(reports["BrokenImport"])[0] == "import"
    assert "No module named 'package_that_does_not_exist'" in reports["BrokenImport"].errors[0].message
    assert issue_checks(reports["half_written"])[0] == "import"
    assert "SyntaxError" in reports["half_written"].errors[0].message
    with pytest.raises(StrategyValidationError, match="does not import"):
        load_strategy_class("BrokenImport", tmp_path)


def test_validator_requires_the_base_class_metadata_and_a_config(tmp_path: Path) -> None:
    write_strategy(
        tmp_path,
        "plain",
        GOOD_STRATEGY.replace("class GoodOne(TradAIStrategy)", "class Plain(IStrategy)")
        .replace('name="GoodOne"', 'name="Plain"')
        .replace(
            "from pandas import DataFrame",
            "from freqtrade.strategy import IStrategy\nfrom pandas import DataFrame",
        ),
    )
    assert issue_checks(validate_strategy("Plain", tmp_path, require_config=False)) == ["base_class"]

    no_metadata = GOOD_STRATEGY.replace("class GoodOne", "class NoMeta").split("    @classmethod")[0] + (
        "    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:\n"
        "        return dataframe\n"
    )
    write_strategy(tmp_path, "no_meta", no_metadata)
    report = validate_strategy("NoMeta", tmp_path)
    checks = issue_checks(report)
    assert "metadata" in checks and "base_class" in checks and "config" in checks
    assert any("get_metadata" in i.message for i in report.errors)

    bad_version = GOOD_STRATEGY.replace('version="1.0.0"', 'version="v1"')
    write_strategy(tmp_path / "v", "good_one", bad_version, GOOD_CONFIG)
    report = validate_strategy("GoodOne", tmp_path / "v")
    assert issue_checks(report) == ["metadata"]
    assert "semantic version" in report.errors[0].message

    wrong_name = GOOD_STRATEGY.replace('name="GoodOne"', 'name="OtherName"')
    write_strategy(tmp_path / "n", "good_one", wrong_name, GOOD_CONFIG.replace("buy_rsi: 25", "buy_rsi: 99"))
    messages = [i.message for i in validate_strategy("GoodOne", tmp_path / "n").errors]
    assert "metadata name 'OtherName' differs from class name 'GoodOne'" in messages
    assert "buy_params.buy_rsi=99 outside [10, 40]" in messages


# --- scaffolding and the CLI --------------------------------------------------------------------------------


def test_names_become_class_and_module_names() -> None:
    assert class_name_for("my_breakout") == class_name_for("my-breakout") == "MyBreakout"
    assert class_name_for("MyBreakout") == "MyBreakout"
    assert module_name_for("MyBreakout") == "my_breakout"
    assert module_name_for("RSI2Cross") == "rsi2_cross"
    with pytest.raises(ValidationError):
        class_name_for("2fast")


@pytest.mark.parametrize("category", list(StrategyCategory))
def test_scaffolded_strategy_validates_as_generated(category: StrategyCategory, tmp_path: Path) -> None:
    result = create_strategy(f"scaffolded_{category.value}", category, "4h", folder=tmp_path)
    assert result.module_path.is_file() and result.config_path.is_file()
    report = validate_strategy(result.name, tmp_path)
    assert report.ok and not report.warnings, report.summary()
    assert report.metadata is not None and report.metadata.category is category
    assert report.metadata.timeframe == "4h" and report.metadata.status is StrategyStatus.TESTING
    assert report.config is not None and report.config.version == report.metadata.version == "0.1.0"


def test_scaffolded_code_is_ruff_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    for category in StrategyCategory:
        create_strategy(f"clean_{category.value}", category, "1h", folder=tmp_path)
    project = Path(__file__).resolve().parents[1]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [ruff, *command, "--config", str(project / "pyproject.toml"), str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=project,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_scaffold_refuses_to_overwrite_or_to_clash(tmp_path: Path) -> None:
    create_strategy("MyTrend", StrategyCategory.TREND_FOLLOWING, "1h", folder=tmp_path)
    with pytest.raises(ValidationError, match="already exist"):
        create_strategy("MyTrend", StrategyCategory.BREAKOUT, "1h", folder=tmp_path)
    create_strategy("MyTrend", StrategyCategory.BREAKOUT, "1h", folder=tmp_path, overwrite=True)
    assert validate_strategy("MyTrend", tmp_path).metadata.category is StrategyCategory.BREAKOUT
    with pytest.raises(ValidationError, match="reserved"):
        create_strategy("Validation", StrategyCategory.BREAKOUT, "1h", folder=tmp_path)
    with pytest.raises(ValidationError, match="timeframe"):
        create_strategy("Other", StrategyCategory.BREAKOUT, "1 hour", folder=tmp_path)
    source, config = render_strategy("Described", StrategyCategory.MOMENTUM, "1d", description='Say "hi".')
    assert 'description="Say \\"hi\\"."' in source and config.timeframe == "1d"


def test_cli_creates_validates_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = ["--folder", str(tmp_path)]
    code = tradai_main(
        ["strategy", "new", "cli_made", "--category", "momentum", "--timeframe", "1h", *folder]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "cli_made.py" in out and "strategy CliMade: valid" in out

    assert tradai_main(["strategy", "validate", *folder]) == 0
    assert "1 valid, 0 invalid" in capsys.readouterr().out

    write_strategy(
        tmp_path,
        "broken_import",
        "import package_that_does_not_exist\n\n\nclass BrokenImport(TradAIStrategy):\n    pass\n",
    )
    assert tradai_main(["strategy", "validate", *folder]) == 1
    assert "1 valid, 1 invalid: BrokenImport" in capsys.readouterr().out

    assert tradai_main(["strategy", "list", *folder]) == 0
    assert "CliMade\tcli_made.py" in capsys.readouterr().out

    assert (
        tradai_main(["strategy", "new", "cli_made", "--category", "momentum", "--timeframe", "1h", *folder])
        == 2
    )
    assert "already exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        tradai_main(["strategy", "new", "x", "--category", "arbitrage", "--timeframe", "1h"])
    assert exit_.value.code == 2


def test_cli_validates_the_shipped_strategies(capsys: pytest.CaptureFixture[str]) -> None:
    assert tradai_main(["strategy", "validate", *sorted(SHIPPED)]) == 0
    assert f"{len(SHIPPED)} valid, 0 invalid" in capsys.readouterr().out


# --- no lookahead -------------------------------------------------------------------------------------------

SIGNAL_COLUMNS = ["enter_long", "exit_long", "enter_tag", "exit_tag"]


def load_with_freqtrade(name: str, folder: Path, work: Path) -> Any:
    """The strategy as Freqtrade's own loader builds it for a backtest, config params applied."""
    from freqtrade.resolvers import StrategyResolver

    config = load_strategy_config(find_strategy_file(name, folder).with_suffix(".yaml"))
    prepare_strategy_dir(find_strategy_file(name, folder), config, work / "strategy")
    (work / "user_data").mkdir()
    ft_config = build_freqtrade_config(config, BacktestRunConfig(timerange="20210101-20210401"))
    ft_config |= {"strategy_path": str(work / "strategy"), "user_data_dir": work / "user_data"}
    strategy = StrategyResolver.load_strategy(ft_config)
    strategy.ft_bot_start()
    return strategy


def analyzed_signals(strategy: Any, candles: pd.DataFrame, pair: str) -> pd.DataFrame:
    frame = candles.reset_index()
    analyzed = strategy.analyze_ticker(frame, {"pair": pair})
    for column in SIGNAL_COLUMNS:
        if column not in analyzed:
            analyzed[column] = None
    return analyzed.loc[:, ["date", *SIGNAL_COLUMNS]].fillna({"enter_long": 0, "exit_long": 0})


def lookahead_cuts(strategy: Any, candles: pd.DataFrame, pair: str, cuts: list[int]) -> list[int]:
    """The cut points t where signals on candles[:t] differ from the same rows computed on all candles."""
    full = analyzed_signals(strategy, candles, pair)
    leaking = []
    for cut in cuts:
        prefix = analyzed_signals(strategy, candles.iloc[:cut], pair)
        if not prefix.equals(full.iloc[:cut].reset_index(drop=True)):
            leaking.append(cut)
    return leaking


@pytest.fixture(scope="module")
def lookahead_candles() -> dict[str, pd.DataFrame]:
    """Three months of real 1h candles (plus warm-up) for two pairs."""
    return {
        pair: load_recorded(DEMO_CANDLES, pair).loc["2020-12-01":"2021-04-01"]
        for pair in ("BTC/USDT", "DOGE/USDT")
    }


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_signals_do_not_change_when_later_candles_are_appended(
    name: str, lookahead_candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    strategy = load_with_freqtrade(name, STRATEGIES_DIR, tmp_path)
    for pair, candles in lookahead_candles.items():
        full = analyzed_signals(strategy, candles, pair)
        assert full["enter_long"].sum() > 0 and full["exit_long"].sum() > 0, "the test needs real signals"
        cuts = [*range(250, len(candles), 97), len(candles) - 1]
        assert lookahead_cuts(strategy, candles, pair, cuts) == []


def test_the_lookahead_check_catches_a_strategy_that_peeks(
    lookahead_candles: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    peeking = GOOD_STRATEGY.replace(
        'dataframe.loc[dataframe["rsi"] < self.buy_rsi.value, "enter_long"] = 1',
        'dataframe.loc[dataframe["close"].shift(-1) > dataframe["close"], "enter_long"] = 1',
    )
    write_strategy(tmp_path / "src", "good_one", peeking, GOOD_CONFIG)
    strategy = load_with_freqtrade("GoodOne", tmp_path / "src", tmp_path)
    candles = lookahead_candles["BTC/USDT"]
    assert lookahead_cuts(strategy, candles, "BTC/USDT", list(range(300, len(candles), 97))) != []


# --- scaffolded strategies backtest as generated ------------------------------------------------------------


@pytest.mark.parametrize(
    "category",
    [
        pytest.param(category, marks=() if category is StrategyCategory.BREAKOUT else pytest.mark.slow)
        for category in StrategyCategory
    ],
)
def test_scaffolded_strategy_backtests_as_generated(category: StrategyCategory, tmp_path: Path) -> None:
    from tradai_resources.freqtrade_backtester import FreqtradeResource

    pairs = ("BTC/USDT", "ETH/USDT")
    result = create_strategy(f"fresh_{category.value}", category, "1h", folder=tmp_path, pairs=pairs)
    candles = {pair: load_recorded(DEMO_CANDLES, pair).loc["2020-12-01":"2021-04-01"] for pair in pairs}
    backtest = FreqtradeResource(work_dir=str(tmp_path / "work")).backtest(
        result.name, tmp_path, candles, BacktestRunConfig(timerange="20210101-20210401")
    )
    assert backtest.strategy == result.name and backtest.pairs == pairs
    assert backtest.metrics.trade_count > 0
    assert list((tmp_path / "work").iterdir()) == []
