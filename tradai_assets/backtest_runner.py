"""The one backtest path: plan, gate, run, record — for reports, validation backtests and the hyperopt
confirmation alike.

- `plan_backtest`: the strategy validates, its config and startup candles give the window, the run config
  carries the window, the pairs and the money and costs (`BacktestCosts`).
- `training_overlap` / `require_after_training`: the one check that a window lies after a model's
  training data (tag `tradai.holdout_start`), for a report's gate and for the validation window.
- `execute`: candles from ArcticDB (or the caller's, when it already read them), Freqtrade's engine, the
  candle versions pinned, per-bar returns on the window's grid.
- `record` writes a backtest into an MLflow run in one layout; `run_and_record` describes that run whole,
  then writes it:

      backtest/trades.parquet  equity.parquet  bar_returns.parquet  freqtrade_stats.json
      backtest/strategy_config.json  run_config.json  data_versions.json  source/<module>.py
      backtest/charts/<pair>.html          (when the caller charts the trades: reports)

  with the params `timerange`, `pairs` and the costs, every defined metric, and `tradai.undefined.<name>`
  tags for a statistic that is no number. Reports and validation backtests each own a run; the hyperopt
  confirmation is recorded in its study's run, beside the parameters it confirms (that run names its own
  metrics, `oos_*`).

An MLflow run is opened only after the engine succeeded, so a crash leaves no run behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from strategies.validation import StrategyValidationReport, load_strategy_class, validate_strategy
from tradai_assets.strategy_partitions import source_hash
from tradai_core.backtest_charts import BacktestCharts
from tradai_core.backtest_config import BacktestCosts, BacktestRunConfig
from tradai_core.backtest_plan import BacktestWindow, plan_window
from tradai_core.backtest_result import BacktestMetrics, BacktestResult
from tradai_core.comparison import returns_on_grid
from tradai_core.errors import ValidationError
from tradai_core.registry import (
    CHAMPION,
    TAG_ARCTICDB_PIN,
    TAG_HOLDOUT_END,
    TAG_HOLDOUT_START,
    ExportedModel,
    default_model_name,
)
from tradai_core.strategy_config import StrategyConfig
from tradai_core.timeframes import timeframe_delta
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import ChartedBacktest, ChartRequest, FreqtradeResource
from tradai_resources.mlflow_records import RecordedRun, RunSheet
from tradai_resources.mlflow_tracking import MLflowResource, ModelVersionInfo, TrackedRun
from tradai_resources.workers.launch import ChildLauncher

ARTIFACT_DIR = "backtest"
"""Where every backtest's artifacts sit in its MLflow run."""
LAYOUT = tuple(
    f"{ARTIFACT_DIR}/{name}"
    for name in (
        "trades.parquet",
        "equity.parquet",
        "bar_returns.parquet",
        "freqtrade_stats.json",
        "strategy_config.json",
        "run_config.json",
        "data_versions.json",
        "source",
    )
)
"""The artifacts every recorded backtest has (charts come on top for reports)."""


def chart_artifact(pair_slug: str) -> str:
    """Where a backtest's interactive chart of one pair sits in its MLflow run."""
    return f"{ARTIFACT_DIR}/charts/{pair_slug}.html"


def midnight(day: date) -> datetime:
    """UTC midnight at the start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# -- plan ----------------------------------------------------------------------------------------------


class BacktestPlan(BaseModel):
    """What one backtest trades: which strategy (validated), with which config, on which window and pairs,
    with which money and costs, and which model it trades (for a model strategy)."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    folder: Path
    source: Path
    source_sha256: str
    strategy_config: StrategyConfig
    window: BacktestWindow
    run: BacktestRunConfig
    lineage: dict[str, str] = {}
    """`model`, `model_alias`, `model_version` of the model a model strategy trades."""

    @property
    def pairs(self) -> tuple[str, ...]:
        return self.run.pairs or self.strategy_config.pairs


def validated_strategy(name: str, folder: Path) -> StrategyValidationReport:
    """The strategy's validation report; raises StrategyValidationError when it does not validate."""
    report = validate_strategy(name, folder)
    report.raise_for_errors()
    assert report.config is not None and report.path is not None
    return report


def startup_candles(name: str, folder: Path) -> int:
    """How many candles before the window the strategy needs (its `startup_candle_count`)."""
    return int(getattr(load_strategy_class(name, folder), "startup_candle_count", 0))


def plan_backtest(
    report: StrategyValidationReport,
    strategy_config: StrategyConfig,
    start: date,
    end: date,
    pairs: tuple[str, ...] | list[str] | None,
    costs: BacktestCosts,
    *,
    timeframe: str | None = None,
    lineage: Mapping[str, str] | None = None,
    startup: int | None = None,
) -> BacktestPlan:
    """The plan of a backtest of a validated strategy over `[start, end)`, startup candles added before.
    `pairs` None: the strategy config's; `timeframe` defaults to the strategy config's; `startup` (the
    class's `startup_candle_count`, from a `StrategyCheck`) is read off the class when not given."""
    assert report.path is not None
    folder = Path(report.path).parent
    if startup is None:
        startup = startup_candles(report.name, folder)
    window = plan_window(start, end, timeframe or strategy_config.timeframe, startup)
    return BacktestPlan(
        strategy=report.name,
        folder=folder,
        source=Path(report.path),
        source_sha256=source_hash(report),
        strategy_config=strategy_config,
        window=window,
        run=costs.run(window.timerange, pairs),
        lineage=dict(lineage or {}),
    )


# -- the gate: a window after the model's training data ------------------------------------------------


def holdout_start(version: ModelVersionInfo) -> datetime:
    """Where a model version's holdout starts (its training data ends), from its tags."""
    raw = version.tags.get(TAG_HOLDOUT_START)
    if not raw:
        raise ValidationError(
            f"{version.name} v{version.version} has no {TAG_HOLDOUT_START} tag: its training window is "
            "unknown",
            "retrain it with the model asset, which records the holdout",
        )
    return datetime.fromisoformat(raw).astimezone(UTC)


def holdout_end(version: ModelVersionInfo) -> datetime:
    """Where a model version's holdout ends, from its tags."""
    raw = version.tags.get(TAG_HOLDOUT_END)
    if not raw:
        raise ValidationError(
            f"{version.name} v{version.version} has no {TAG_HOLDOUT_END} tag",
            "retrain it with the model asset",
        )
    return datetime.fromisoformat(raw).astimezone(UTC)


def training_overlap(start: date, version: ModelVersionInfo) -> str | None:
    """Why a backtest starting on `start` would score `version` on data it was trained on, or None."""
    trained_until = holdout_start(version)
    if midnight(start) >= trained_until:
        return None
    alias = f" ({', '.join(version.aliases)})" if version.aliases else ""
    return (
        f"{version.name} v{version.version}{alias} was trained on data up to "
        f"{version.tags[TAG_HOLDOUT_START]}; a backtest from {start} would score it on data it was trained "
        f"on — start the window on or after {trained_until:%Y-%m-%d}"
    )


def require_after_training(start: date, versions: list[ModelVersionInfo]) -> None:
    """Raise ValidationError unless a window starting on `start` lies after every version's training data."""
    for version in versions:
        problem = training_overlap(start, version)
        if problem:
            raise ValidationError(problem, "start the window after the model's training data (its holdout)")


# -- run -----------------------------------------------------------------------------------------------


class ExecutedBacktest(BaseModel):
    """A finished backtest: its plan, Freqtrade's result, the candles and their pinned versions, and the
    per-bar returns of its realized equity on the window's grid."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    plan: BacktestPlan
    result: BacktestResult
    candles: dict[str, pd.DataFrame]
    indicators: dict[str, pd.DataFrame]
    charts: BacktestCharts | None = None
    """The report's charts as the backtest's worker drew them (None when not asked or not drawn)."""
    data_versions: dict[str, str]
    arcticdb_snapshot: str
    bar_returns: pd.Series


def bar_returns(result: BacktestResult, window: BacktestWindow, timeframe: str) -> pd.Series:
    """Per-bar returns of the realized equity carried forward on the candle grid of `[start, end)`, every
    bar of the window included (`returns_on_grid`)."""
    grid = pd.date_range(
        midnight(window.start), midnight(window.end), freq=timeframe_delta(timeframe), inclusive="left"
    )
    equity = result.equity_frame()["equity"]
    equity.index = pd.DatetimeIndex(equity.index).tz_convert("UTC")
    return returns_on_grid(equity, grid, result.metrics.starting_balance)


def export_strategy_model(
    strategy_config: StrategyConfig, lineage: Mapping[str, str], mlflow: MLflowResource, folder: Path
) -> tuple[dict[str, str], ExportedModel | None]:
    """For a model strategy (a `model_alias` buy parameter, or a lineage naming a model): the version
    `lineage` names — else the one its alias names now, looked up once here — exported into `folder`, and
    the lineage naming that version. `(lineage, None)` for any other strategy. NotFoundError when the
    alias or the version is missing."""
    alias = strategy_config.buy_params.get("model_alias") or lineage.get("model_alias")
    if alias is None and "model" not in lineage:
        return dict(lineage), None
    alias = str(alias or CHAMPION)
    name = lineage.get("model") or default_model_name(strategy_config.timeframe)
    if "model_version" in lineage:
        version = int(lineage["model_version"])
    else:
        version = mlflow.get_version_by_alias(name, alias).version
    model = mlflow.export_booster(name, version, folder, alias=alias)
    return {**lineage, "model": name, "model_alias": alias, "model_version": str(version)}, model


def model_to_trade(
    plan: BacktestPlan, mlflow: MLflowResource, folder: Path
) -> tuple[BacktestPlan, ExportedModel | None]:
    """The model a plan trades, exported into `folder` (`export_strategy_model`), and the plan whose
    lineage names the version exported: `(plan, None)` for a strategy that trades no model."""
    lineage, model = export_strategy_model(plan.strategy_config, plan.lineage, mlflow, folder)
    return (plan if model is None else plan.model_copy(update={"lineage": lineage})), model


def execute(
    plan: BacktestPlan,
    *,
    exchange: str,
    timeframe: str,
    candle_store: ArcticDBResource,
    freqtrade: FreqtradeResource,
    mlflow: MLflowResource,
    pin: tuple[str, str] | str,
    charts: ChartRequest | None = None,
    candles: tuple[dict[str, pd.DataFrame], Mapping[str, str]] | None = None,
) -> ExecutedBacktest:
    """Run `plan` with Freqtrade's engine on candles of `exchange`/`timeframe`.

    Candles are read from ArcticDB over the window (startup included) unless the caller gives the frames
    and versions it read already (`candles`). `pin` is `(name, note)` of the ArcticDB pin that keeps the
    candle versions readable, or the name of a pin the caller took already. With `charts`, the strategy's
    indicators from the backtest come back, with the report's charts drawn by the backtest's worker. A
    model strategy trades the booster of the version its plan names, exported here from this run's MLflow
    store into the backtest's workspace (`model_to_trade`): the child never sees the tracking URI, and the
    executed plan's lineage is the version that traded.
    """
    if candles is None:
        frames, versions = candle_store.read_pairs(
            exchange, timeframe, plan.pairs, plan.window.data_start, midnight(plan.window.end)
        )
    else:
        frames, versions = candles[0], dict(candles[1])
    with tempfile.TemporaryDirectory(prefix="tradai-model-") as folder:
        plan, model = model_to_trade(plan, mlflow, Path(folder))
        if charts is None:
            result = freqtrade.backtest(
                plan.strategy,
                plan.folder,
                frames,
                plan.run,
                strategy_config=plan.strategy_config,
                model=model,
            )
            charted = ChartedBacktest(result, indicators={}, charts=None)
        else:
            charted = freqtrade.backtest_charted(
                plan.strategy,
                plan.folder,
                frames,
                plan.run,
                charts,
                strategy_config=plan.strategy_config,
                model=model,
            )
    # the candle versions this backtest names stay readable
    snapshot = pin if isinstance(pin, str) else candle_store.pin_versions(pin[0], versions, note=pin[1]).name
    return ExecutedBacktest(
        plan=plan,
        result=charted.result,
        candles=dict(frames),
        indicators=charted.indicators,
        charts=charted.charts,
        data_versions={str(key): str(value) for key, value in versions.items()},
        arcticdb_snapshot=snapshot,
        bar_returns=bar_returns(charted.result, plan.window, timeframe),
    )


# -- record --------------------------------------------------------------------------------------------


def undefined_tags(metrics: BacktestMetrics, prefix: str = "") -> dict[str, str]:
    """MLflow tags `tradai.undefined.<prefix><statistic>` = why, for statistics logged as no metric."""
    return {f"tradai.undefined.{prefix}{name}": stat.reason for name, stat in metrics.undefined.items()}


def run_params(backtest: ExecutedBacktest) -> dict[str, object]:
    """The params of a backtest's own run: window, pairs, money and costs."""
    run = backtest.plan.run
    return {
        "timerange": run.timerange,
        "pairs": ",".join(backtest.plan.pairs),
        **run.model_dump(exclude={"pairs", "timerange"}),
    }


def record(
    tracked: TrackedRun | RunSheet,
    backtest: ExecutedBacktest,
    *,
    chart_pages: Mapping[str, str] | None = None,
) -> None:
    """Write `backtest`'s artifacts into `tracked` in the one layout (`LAYOUT`, plus any chart pages)."""
    result, plan = backtest.result, backtest.plan
    tracked.log_dataframe(result.trades_frame(), f"{ARTIFACT_DIR}/trades.parquet")
    tracked.log_dataframe(result.equity_frame(), f"{ARTIFACT_DIR}/equity.parquet")
    tracked.log_dataframe(backtest.bar_returns.to_frame("return"), f"{ARTIFACT_DIR}/bar_returns.parquet")
    tracked.log_dict(result.freqtrade_stats, f"{ARTIFACT_DIR}/freqtrade_stats.json")
    tracked.log_dict(plan.strategy_config.model_dump(mode="json"), f"{ARTIFACT_DIR}/strategy_config.json")
    tracked.log_dict(plan.run.model_dump(mode="json"), f"{ARTIFACT_DIR}/run_config.json")
    tracked.log_dict(backtest.data_versions, f"{ARTIFACT_DIR}/data_versions.json")
    tracked.log_file(plan.source, f"{ARTIFACT_DIR}/source")
    for artifact_file, page in (chart_pages or {}).items():
        tracked.log_text(page, artifact_file)


def run_and_record(
    mlflow: MLflowResource,
    backtest: ExecutedBacktest,
    *,
    experiment: str,
    run_name: str,
    purpose: str,
    dagster_run_id: str,
    params: Mapping[str, object] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    chart_pages: Mapping[str, str] | None = None,
    launcher: ChildLauncher | None = None,
) -> RecordedRun:
    """Record `backtest` as a new run in `experiment`: the layout, the params of `run_params` (plus
    `params`), every defined metric (plus `metrics`), and the lineage tags (strategy, version, source hash,
    purpose, ArcticDB pin, model; plus `tags`). The run is described whole first, then written — by a child
    of `launcher` when it forks, so this process need not load MLflow (`MLflowResource.write_run`)."""
    plan = backtest.plan
    lineage = {
        "strategy": plan.strategy,
        "strategy.version": plan.strategy_config.version,
        "source_sha256": plan.source_sha256,
        "purpose": purpose,
        TAG_ARCTICDB_PIN: backtest.arcticdb_snapshot,
        **{f"tradai.{key}": value for key, value in plan.lineage.items()},
        **(tags or {}),
    }
    with tempfile.TemporaryDirectory(prefix="tradai-run-") as folder:
        sheet = RunSheet(Path(folder))
        sheet.log_params({**run_params(backtest), **(params or {})})
        sheet.log_metrics({**backtest.result.metrics.defined_numbers(), **(metrics or {})})
        sheet.set_tags(undefined_tags(backtest.result.metrics))
        record(sheet, backtest, chart_pages=chart_pages)
        name, location = mlflow.experiment_location(experiment)
        run_tags = mlflow.run_tags(dagster_run_id, backtest.data_versions, lineage)
        return mlflow.write_run(sheet.record(name, location, run_name, run_tags), launcher)
