"""Backtest reports: one partition per strategy found in `strategies/`, gated by blocking checks.

`backtest_plan/<strategy>` resolves what a backtest needs and runs the reference workflow's gates as
blocking checks (the strategy validates; the candle store covers the window, startup included), so
`backtest_report/<strategy>` only runs when both pass. The report runs Freqtrade's own engine on candles
read from ArcticDB through the one backtest path (`tradai_assets.backtest_runner`: plan, gate, run, record
in MLflow's one layout), and shows metrics, plots and the best and worst pairs in the UI. A new strategy
module appears as a new partition when the code location reloads.
"""

from datetime import date
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from strategies.metadata import StrategyCategory
from strategies.validation import STRATEGIES_DIR, StrategyValidationReport
from tradai_assets.backtest_charts import monthly_returns_metadata, trade_charts
from tradai_assets.backtest_runner import (
    execute,
    plan_backtest,
    run_and_record,
    training_overlap,
)
from tradai_assets.hyperopt import load_tuned_parameters
from tradai_assets.keys import ohlcv_key
from tradai_assets.run_shape import IN_PROCESS_TAGS
from tradai_assets.strategy_partitions import source_hash, strategy_partitions
from tradai_core.backtest_charts import draw_backtest_charts
from tradai_core.backtest_config import BacktestCosts
from tradai_core.backtest_plan import (
    BacktestWindow,
    PairSelection,
    describe_day_ranges,
    missing_day_ranges,
    parse_timerange,
    plan_window,
    select_pairs,
)
from tradai_core.backtest_result import BacktestMetrics, BacktestResult
from tradai_core.candles import find_gaps
from tradai_core.errors import NotFoundError, ValidationError
from tradai_core.registry import CHAMPION, default_model_name
from tradai_core.settings import TradAISettings
from tradai_core.statistics import GUARDED_STATISTICS
from tradai_core.strategy_config import StrategyConfig
from tradai_core.timeframes import timeframe_ms
from tradai_core.tuned_params import apply_tuned
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import ChartRequest, FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

BACKTEST_GROUP = "backtests"
PLAN_KEY = AssetKey("backtest_plan")
REPORT_KEY = AssetKey("backtest_report")
MLFLOW_EXPERIMENT = "backtests"
PLAN_CHECKS = {
    "strategy_valid": "The strategy imports, subclasses TradAIStrategy and passes every validator rule.",
    "data_coverage": "Every day of the window (startup candles included) is materialized for every pair.",
    "model_ready": "A machine-learning strategy's model alias exists and the window lies after the "
    "model's training data.",
}


class BacktestConfig(Config, BacktestCosts):
    """Run config shared by the plan and the report (set the same values on both); money and costs
    (`max_open_trades`, `starting_balance`, `fee`) as every backtest has them (`BacktestCosts`)."""

    pairs: list[str] | None = None
    """Pairs to backtest (like `freqtrade backtesting --pairs`), each in the pair universe TRADAI_PAIRS;
    default: the strategy YAML's pairs, less those outside the universe (the plan says which it dropped)."""
    timerange: str | None = None
    """Freqtrade's `YYYYMMDD-YYYYMMDD` (either side may be empty), instead of start/end."""
    start: str | None = None
    """First traded day, YYYY-MM-DD; default: the holdout window's first day."""
    end: str | None = None
    """Day after the last traded day, YYYY-MM-DD; default: the end of the history."""
    model_alias: str | None = None
    """For machine-learning strategies: the model alias to trade with (default: the strategy config's)."""
    tuned_params_run_id: str | None = None
    """MLflow run id of tuned parameters (from `tuned_parameters/<strategy>`) to backtest with; unset: the
    strategy's YAML. Tuned parameters only ever apply when named here."""


def resolve_window(
    settings: TradAISettings, config: BacktestConfig, strategy_config: StrategyConfig, startup: int
) -> BacktestWindow:
    """The backtest window from run config (`timerange`, or `start`/`end`), defaulting to the holdout
    (never trained on) and the end of the history."""
    first, last = config.start, config.end
    if config.timerange is not None:
        if first or last:
            raise ValidationError(
                "run config sets both timerange and start/end", "give either timerange or start/end"
            )
        first, last = parse_timerange(config.timerange)
    try:
        start = date.fromisoformat(first) if first else settings.holdout_start
        end = date.fromisoformat(last) if last else settings.resolved_history_end
    except ValueError as error:
        raise ValidationError(
            f"run config start/end {first!r}/{last!r} is not a date: {error}", "write days as YYYY-MM-DD"
        ) from error
    return plan_window(start, end, strategy_config.timeframe, startup)


def select_backtest_pairs(
    settings: TradAISettings, config: BacktestConfig, strategy_config: StrategyConfig
) -> PairSelection:
    """The pairs a run trades: the run config's, else the strategy's less those outside TRADAI_PAIRS."""
    return select_pairs(config.pairs, strategy_config.pairs, settings.pairs)


def effective_config(
    report: StrategyValidationReport, config: BacktestConfig, mlflow: MLflowResource
) -> StrategyConfig:
    """The strategy config a run uses: the YAML's, with tuned parameters when the run names them, and the
    run's model alias for an ML strategy."""
    assert report.config is not None
    strategy_config = report.config
    if config.tuned_params_run_id:
        tuned = load_tuned_parameters(mlflow, config.tuned_params_run_id, report.name)
        strategy_config = apply_tuned(strategy_config, tuned)
    if config.model_alias and is_machine_learning(report):
        buy_params = {**strategy_config.buy_params, "model_alias": config.model_alias}
        strategy_config = strategy_config.model_copy(update={"buy_params": buy_params})
    return strategy_config


def is_machine_learning(report: StrategyValidationReport) -> bool:
    """Whether the strategy trades on a registered model (its metadata says machine learning)."""
    return report.metadata is not None and report.metadata.category == StrategyCategory.MACHINE_LEARNING


def model_problem(
    mlflow: MLflowResource, strategy_config: StrategyConfig, window: BacktestWindow
) -> tuple[str | None, dict[str, str]]:
    """Why an ML strategy's backtest must not run (no model behind its alias, or a window overlapping the
    model's training data: `backtest_runner.training_overlap`), or None; plus the model lineage to record."""
    name = default_model_name(strategy_config.timeframe)
    alias = str(strategy_config.buy_params.get("model_alias", CHAMPION))
    try:
        version = mlflow.get_version_by_alias(name, alias)
    except NotFoundError as error:
        return str(error), {}
    lineage = {"model": name, "model_alias": alias, "model_version": str(version.version)}
    try:
        return training_overlap(window.start, version), lineage
    except ValidationError as error:  # no holdout tag: its training window is unknown
        return str(error), lineage


def metrics_markdown(result: BacktestResult) -> str:
    """The headline metrics as a two-column markdown table."""
    m = result.metrics
    rows = [
        ("total profit", f"{m.total_profit_abs:,.2f} {result.stake_currency} ({m.total_profit_pct:.2f} %)"),
        ("CAGR", f"{m.cagr * 100:.2f} %"),
        ("Sharpe", m.display("sharpe")),
        ("Sortino", m.display("sortino")),
        ("Calmar", m.display("calmar")),
        ("SQN", m.display("sqn")),
        ("max drawdown", f"{m.max_drawdown_ratio * 100:.2f} % ({m.max_drawdown_abs:,.2f})"),
        ("trades (W/D/L)", f"{m.trade_count} ({m.wins}/{m.draws}/{m.losses})"),
        ("win rate", f"{m.win_rate * 100:.1f} %"),
        ("profit factor", f"{m.profit_factor:.2f}"),
        ("expectancy", f"{m.expectancy:.4f} ({m.expectancy_ratio:.4f})"),
        ("average duration", str(m.avg_duration)),
        ("market exposure", f"{m.market_exposure * 100:.1f} %"),
        ("buy & hold (mean of pairs)", f"{m.market_change * 100:.2f} %"),
    ]
    return "\n".join(["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def statistic_metadata(metrics: BacktestMetrics) -> dict[str, object]:
    """Sharpe, Sortino, Calmar, SQN for Dagster: the number when defined, else text `n/a (why)`."""
    return {
        name: value
        if (value := getattr(metrics, name)) is not None
        else MetadataValue.text(metrics.display(name))
        for name in GUARDED_STATISTICS
    }


def pairs_markdown(result: BacktestResult, top: int = 3) -> str:
    """Best and worst pairs by absolute profit, from Freqtrade's per-pair results."""
    per_pair = [
        row
        for row in result.freqtrade_stats.get("results_per_pair", [])  # type: ignore[union-attr]
        if isinstance(row, dict) and row.get("key") != "TOTAL"
    ]
    if not per_pair:
        return "No per-pair results."
    ranked = sorted(per_pair, key=lambda r: float(r.get("profit_total_abs") or 0.0), reverse=True)
    chosen = ranked if len(ranked) <= 2 * top else ranked[:top] + ranked[-top:]
    lines = ["| pair | trades | profit | win rate |", "|---|---|---|---|"]
    for row in chosen:
        trades = int(row.get("trades") or 0)
        wins = int(row.get("wins") or 0)
        lines.append(
            f"| {row.get('key')} | {trades} | {float(row.get('profit_total_abs') or 0):,.2f} "
            f"({float(row.get('profit_total') or 0) * 100:.2f} %) | "
            f"{(wins / trades * 100 if trades else 0):.1f} % |"
        )
    return "\n".join(lines)


def build_backtest_assets(settings: TradAISettings, folder: Path = STRATEGIES_DIR) -> list[AssetsDefinition]:
    """The plan (with its blocking gates) and the report, partitioned by strategy."""
    partitions = strategy_partitions(folder)
    exchange = settings.exchange_id
    tf = settings.timeframe

    @asset(
        key=PLAN_KEY,
        group_name=BACKTEST_GROUP,
        partitions_def=partitions,
        description="What a strategy's backtest needs: its validated code and config, window and candles. "
        "Its checks gate the report.",
        deps=[AssetDep(ohlcv_key(pair), partition_mapping=AllPartitionMapping()) for pair in settings.pairs],
        check_specs=[
            AssetCheckSpec(name, asset=PLAN_KEY, blocking=True, description=text)
            for name, text in PLAN_CHECKS.items()
        ],
        kinds={"python"},
        op_tags=IN_PROCESS_TAGS,
    )
    def backtest_plan(
        context: AssetExecutionContext,
        config: BacktestConfig,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        name = context.partition_key
        # validated in a worker child that has Freqtrade loaded: this process never imports it
        checked = freqtrade.check_strategy(name, folder)
        report = checked.report
        metadata: dict[str, object] = {
            "strategy": name,
            "validation": MetadataValue.md("```\n" + report.summary() + "\n```"),
        }
        checks = [
            AssetCheckResult(
                check_name="strategy_valid",
                passed=report.ok,
                description=report.summary().splitlines()[0],
                metadata={"issues": MetadataValue.md("```\n" + report.summary() + "\n```")},
            )
        ]
        if not report.ok or report.config is None:
            checks += [
                AssetCheckResult(
                    check_name=name, passed=False, description="not checked: the strategy does not validate"
                )
                for name in ("data_coverage", "model_ready")
            ]
            context.log.error(report.summary())
            return MaterializeResult(metadata=metadata, check_results=checks)
        strategy_config = effective_config(report, config, mlflow)
        window = resolve_window(settings, config, strategy_config, checked.startup_candle_count)
        try:
            selection: PairSelection | None = select_backtest_pairs(settings, config, strategy_config)
        except ValidationError as error:
            selection = None
            context.log.error(str(error))
            checks.append(
                AssetCheckResult(
                    check_name="data_coverage",
                    passed=False,
                    severity=AssetCheckSeverity.ERROR,
                    description=str(error),
                    metadata={"requested_pairs": ", ".join(config.pairs or strategy_config.pairs)},
                )
            )
        if selection is not None:
            if selection.dropped:
                context.log.warning("%s: backtesting %s", name, selection.describe())
            uncovered: dict[str, str] = {}
            for pair in selection.pairs:
                have = context.instance.get_materialized_partitions(ohlcv_key(pair))
                ranges = missing_day_ranges(have, window.data_days)
                if ranges:
                    uncovered[pair] = describe_day_ranges(ranges)
            coverage_text = (
                "every day covered"
                if not uncovered
                else "missing: " + "; ".join(f"{pair}: {text}" for pair, text in uncovered.items())
            )
            checks.append(
                AssetCheckResult(
                    check_name="data_coverage",
                    passed=not uncovered,
                    severity=AssetCheckSeverity.ERROR,
                    description=coverage_text
                    + ("" if not uncovered else " — materialize those ohlcv partitions first"),
                    metadata={
                        "window": f"{window.start} → {window.end}",
                        "data_from": str(window.data_start),
                        "pairs": ", ".join(selection.pairs),
                        "dropped_pairs": MetadataValue.json(selection.dropped),
                        "missing_days": MetadataValue.json(uncovered),
                    },
                )
            )
        problem, lineage = (
            model_problem(mlflow, strategy_config, window) if is_machine_learning(report) else (None, {})
        )
        checks.append(
            AssetCheckResult(
                check_name="model_ready",
                passed=problem is None,
                description=problem
                or (
                    f"{lineage['model']} v{lineage['model_version']} ({lineage['model_alias']})"
                    if lineage
                    else "no model needed"
                ),
                metadata=lineage,
            )
        )
        metadata.update(
            {
                **lineage,
                "window": f"{window.start} → {window.end} (trading), candles from {window.data_start}",
                "timerange": window.timerange,
                "pairs": ", ".join(selection.pairs if selection else config.pairs or strategy_config.pairs),
                "dropped_pairs": MetadataValue.json(selection.dropped if selection else {}),
                "strategy_version": strategy_config.version,
                "source_sha256": source_hash(report),
            }
        )
        return MaterializeResult(metadata=metadata, check_results=checks)

    @asset(
        key=REPORT_KEY,
        group_name=BACKTEST_GROUP,
        partitions_def=partitions,
        deps=[PLAN_KEY],
        description="Freqtrade backtest of one strategy on candles from ArcticDB: metrics, equity, trades; "
        "the full report is stored in MLflow.",
        kinds={"freqtrade", "mlflow"},
        op_tags=IN_PROCESS_TAGS,
    )
    def backtest_report(
        context: AssetExecutionContext,
        config: BacktestConfig,
        candle_store: ArcticDBResource,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        name = context.partition_key
        checked = freqtrade.check_strategy(name, folder)  # in a worker child, as in the plan
        report = checked.report
        report.raise_for_errors()
        startup = checked.startup_candle_count
        strategy_config = effective_config(report, config, mlflow)
        window = resolve_window(settings, config, strategy_config, startup)
        selection = select_backtest_pairs(settings, config, strategy_config)
        if selection.dropped:
            context.log.warning("%s: backtesting %s", name, selection.describe())
        lineage: dict[str, str] = {}
        if is_machine_learning(report):
            problem, lineage = model_problem(mlflow, strategy_config, window)
            if problem:
                raise ValidationError(problem, "see the backtest_plan check model_ready")
        plan = plan_backtest(
            report,
            strategy_config,
            window.start,
            window.end,
            selection.pairs,
            config,
            lineage=lineage,
            startup=startup,
        )
        # the charts are drawn by the backtest's own child, from the indicators it computed; drawn here only
        # if that child could not
        chart_request = ChartRequest(
            trading_start=pd.Timestamp(window.start, tz="UTC"),
            equity_title=f"{name} {window.timerange}",
        )
        backtest = execute(
            plan,
            exchange=exchange,
            timeframe=tf,
            candle_store=candle_store,
            freqtrade=freqtrade,
            mlflow=mlflow,
            pin=(f"tradai.backtest.{context.run.run_id}.{name}", f"backtest {name}"),
            charts=chart_request,
        )
        result, candles, versions = backtest.result, backtest.candles, backtest.data_versions
        drawn = backtest.charts
        if drawn is None:
            context.log.warning(
                "%s: the backtest's worker drew no charts (its log says why); drawing here", name
            )
            drawn = draw_backtest_charts(result, candles, backtest.indicators, *chart_request)
        charts, chart_pages = trade_charts(drawn)
        digest = plan.source_sha256
        gaps = {pair: len(find_gaps(frame.index, timeframe_ms(tf))) for pair, frame in candles.items()}
        metrics = result.metrics
        recorded = run_and_record(
            mlflow,
            backtest,
            experiment=MLFLOW_EXPERIMENT,
            run_name=f"{name}-{window.timerange}",
            purpose="report",
            dagster_run_id=context.run.run_id,
            params={"dropped_pairs": ",".join(selection.dropped) or "none"},
            tags={"tradai.tuned_params_run_id": config.tuned_params_run_id or "none"},
            chart_pages=chart_pages,
            launcher=freqtrade.launcher(),  # written by a child that has MLflow loaded
        )
        context.log.info(
            "%s %s on %s: %d trades, profit %.2f %%, Sharpe %s, max drawdown %.2f %%",
            name,
            window.timerange,
            ", ".join(result.pairs),
            metrics.trade_count,
            metrics.total_profit_pct,
            metrics.display("sharpe"),
            metrics.max_drawdown_ratio * 100,
        )
        return MaterializeResult(
            metadata={
                "metrics": MetadataValue.md(metrics_markdown(result)),
                "equity_and_drawdown": MetadataValue.md(drawn.equity),
                "monthly_returns": monthly_returns_metadata(result),
                "best_and_worst_pairs": MetadataValue.md(pairs_markdown(result)),
                **charts,
                "total_profit_pct": metrics.total_profit_pct,
                **statistic_metadata(metrics),
                "max_drawdown_pct": metrics.max_drawdown_ratio * 100,
                "trade_count": metrics.trade_count,
                "timerange": window.timerange,
                "pairs": ", ".join(result.pairs),
                "dropped_pairs": MetadataValue.json(selection.dropped),
                "freqtrade_version": result.freqtrade_version,
                "source_sha256": digest,
                "data_versions": MetadataValue.json(versions),
                "arcticdb_snapshot": backtest.arcticdb_snapshot,
                "tuned_params_run_id": config.tuned_params_run_id or "none (strategy YAML)",
                **lineage,
                "candle_gaps_in_window": MetadataValue.json(gaps),
                **mlflow.run_metadata(recorded.run_id, recorded.experiment_id),
            }
        )

    return [backtest_plan, backtest_report]
