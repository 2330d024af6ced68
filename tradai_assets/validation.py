"""Validation backtests of the champion and the challenger, their comparison, and the champion's rolling
performance: the evidence the promotion and rollback sensors act on.

- `validation_backtest/challenger` and `validation_backtest/champion` backtest the ML strategy
  (`LgbmClassifier`, buy param `model_alias`) with each alias on the **same out-of-sample window**: the
  challenger's holdout (tags `tradai.holdout_start`/`tradai.holdout_end`), which neither model trained on.
  A window starting before either model's holdout is refused, naming the version and its training end.
- `model_comparison` runs the platform's test (`tradai_core.comparison`: paired block bootstrap of the
  Sharpe difference on aligned per-bar returns, trade-level tests beside it) and records the decision
  promote / keep / inconclusive with every number in its metadata, in MLflow, and as tags on the
  challenger version. The promotion sensor acts on it.
- `champion_performance` backtests the champion over the last `window_days` days; the rollback sensor
  compares its drawdown and Sharpe ratio with the configured limits.

Per-bar returns come from Freqtrade's realized equity (balance after every closed trade) carried forward
on the candle grid of the window, so both sides of a comparison are on exactly the same bars. The
Freqtrade child process loads models from the MLflow store of this run's `MLflowResource` (named in the
backtest's Freqtrade config), never from whatever the environment happens to say.
"""

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import BaseModel, ConfigDict

from strategies.validation import STRATEGIES_DIR, load_strategy_class
from tradai_assets.backtest_runner import (
    execute,
    holdout_end,
    holdout_start,
    midnight,
    plan_backtest,
    require_after_training,
    run_and_record,
    validated_strategy,
)
from tradai_assets.keys import (
    CHAMPION_MODEL_KEY,
    COMPARISON_KEY,
    LIFECYCLE_GROUP,
    MODEL_KEY,
    PERFORMANCE_KEY,
    VALIDATION_KEYS,
    ohlcv_key,
)
from tradai_core.backtest_config import BacktestCosts
from tradai_core.backtest_result import BacktestMetrics
from tradai_core.comparison import (
    ComparisonConfig,
    ComparisonResult,
    annualized_sharpe,
    compare_champion_challenger,
    periods_per_year_for,
    sharpe_undefined_reason,
)
from tradai_core.errors import ValidationError
from tradai_core.model_lifecycle import ChampionPerformance, RollbackLimits, assess_performance
from tradai_core.plots import equity_and_drawdown_figure, plt, png_markdown
from tradai_core.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_PAIRS,
    default_model_name,
)
from tradai_core.settings import TradAISettings
from tradai_core.statistics import format_statistic
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource, ModelVersionInfo

VALIDATION_EXPERIMENT = "validation"
DEFAULT_STRATEGY = "LgbmClassifier"


# -- what a model backtest produced ------------------------------------------------------------------


class ModelBacktest(BaseModel):
    """A backtest of the ML strategy trading one model version: its bar and trade returns and metrics."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: str
    alias: str
    version: int
    strategy: str
    timeframe: str
    timerange: str
    window_start: datetime
    window_end: datetime
    pairs: tuple[str, ...]
    bar_returns: pd.Series
    trade_returns: tuple[float, ...]
    metrics: BacktestMetrics
    bar_sharpe: float | None
    bar_sharpe_undefined: str | None = None
    mlflow_run_id: str
    mlflow_experiment_id: str
    data_versions: dict[str, int]
    arcticdb_snapshot: str


class BacktestSettings(Config, BacktestCosts):
    """Shared knobs of the model backtests; money and costs as every backtest has them (`BacktestCosts`)."""

    strategy: str = DEFAULT_STRATEGY
    """The ML strategy class in strategies/ (it must load its model by the `model_alias` buy param)."""
    model_name: str | None = None
    """Registered model; default `tradai-lgbm-<timeframe>`."""


class ValidationConfig(BacktestSettings):
    """Run config of both validation backtests (give both the same values)."""

    start: str | None = None
    """First day (YYYY-MM-DD); default the challenger's holdout start. Never before either model's."""
    end: str | None = None
    """Day after the last (YYYY-MM-DD); default the challenger's holdout end."""


class PerformanceConfig(BacktestSettings):
    """Run config of the champion's rolling performance."""

    window_days: int = 30
    end: str | None = None
    """Day after the last (YYYY-MM-DD); default the day after the last stored candle."""


class ComparisonRunConfig(Config):
    """Run config of the comparison (defaults: the platform's policy)."""

    alpha: float = 0.05
    min_trades: int = 30
    n_iterations: int = 2000
    block_length: int | None = None
    seed: int = 0


def model_pairs(version: ModelVersionInfo, settings: TradAISettings) -> tuple[str, ...]:
    """The pairs a model was trained on that the platform trades (tag `tradai.pairs`)."""
    trained = [p for p in version.tags.get(TAG_PAIRS, "").split(",") if p]
    pairs = tuple(p for p in (trained or settings.pairs) if p in settings.pairs)
    if not pairs:
        raise ValidationError(
            f"{version.name} v{version.version} was trained on {trained}, none of which is in the universe",
            "add its pairs to TRADAI_PAIRS",
        )
    return pairs


def run_model_backtest(
    *,
    settings: TradAISettings,
    config: BacktestSettings,
    alias: str,
    version: ModelVersionInfo,
    pairs: tuple[str, ...],
    start: date,
    end: date,
    candle_store: ArcticDBResource,
    freqtrade: FreqtradeResource,
    mlflow: MLflowResource,
    dagster_run_id: str,
    purpose: str,
    strategies_dir: Path = STRATEGIES_DIR,
) -> ModelBacktest:
    """Backtest the ML strategy with `model_alias` = `alias` on `[start, end)` through the one backtest
    path (`backtest_runner`) and record it in MLflow (experiment `validation`)."""
    report = validated_strategy(config.strategy, strategies_dir)
    assert report.config is not None
    strategy_class = load_strategy_class(config.strategy, strategies_dir)
    if not hasattr(strategy_class, "model_alias"):
        raise ValidationError(
            f"strategy {config.strategy} has no buy parameter model_alias",
            "validate models with an ML strategy that loads its model by alias (LgbmClassifier)",
        )
    strategy_config = report.config.model_copy(
        update={"buy_params": {**report.config.buy_params, "model_alias": alias}}
    )
    name = version.name
    lineage = {"model": name, "model_alias": alias, "model_version": str(version.version)}
    plan = plan_backtest(
        report, strategy_config, start, end, pairs, config, timeframe=settings.timeframe, lineage=lineage
    )
    window = plan.window
    backtest = execute(  # the strategy loads both aliases from this run's MLflow store
        plan,
        exchange=settings.exchange_id,
        timeframe=settings.timeframe,
        candle_store=candle_store,
        freqtrade=freqtrade,
        mlflow=mlflow,
        pin=(
            f"tradai.validation.{dagster_run_id}.{alias}",
            f"validation backtest of {version.name} v{version.version} ({alias})",
        ),
    )
    result, returns = backtest.result, backtest.bar_returns
    sharpe_undefined = sharpe_undefined_reason(returns.to_numpy())
    sharpe = (
        None
        if sharpe_undefined
        else annualized_sharpe(returns.to_numpy(), periods_per_year_for(settings.timeframe))
    )
    recorded = run_and_record(
        mlflow,
        backtest,
        experiment=VALIDATION_EXPERIMENT,
        run_name=f"{name} v{version.version} ({alias}) {purpose} {window.timerange}",
        purpose=purpose,
        dagster_run_id=dagster_run_id,
        params={"alias": alias},
        metrics={} if sharpe is None else {"bar_sharpe": sharpe},
        tags={"tradai.undefined.bar_sharpe": sharpe_undefined} if sharpe_undefined else {},
    )
    return ModelBacktest(
        model=name,
        alias=alias,
        version=version.version,
        strategy=config.strategy,
        timeframe=settings.timeframe,
        timerange=window.timerange,
        window_start=midnight(window.start),
        window_end=midnight(window.end),
        pairs=pairs,
        bar_returns=returns,
        trade_returns=tuple(float(t.profit_ratio) for t in result.trades),
        metrics=result.metrics,
        bar_sharpe=sharpe,
        bar_sharpe_undefined=sharpe_undefined,
        mlflow_run_id=recorded.run_id,
        mlflow_experiment_id=recorded.experiment_id,
        data_versions={key: int(value) for key, value in backtest.data_versions.items()},
        arcticdb_snapshot=backtest.arcticdb_snapshot,
    )


def backtest_metadata(backtest: ModelBacktest, mlflow: MLflowResource) -> dict[str, Any]:
    """Dagster metadata of one model backtest."""
    m = backtest.metrics
    return {
        "model_name": backtest.model,
        "model_version": backtest.version,
        "alias": backtest.alias,
        "strategy": backtest.strategy,
        "timerange": backtest.timerange,
        "window_start": MetadataValue.timestamp(backtest.window_start),
        "window_end": MetadataValue.timestamp(backtest.window_end),
        "pairs": ", ".join(backtest.pairs),
        "trade_count": m.trade_count,
        "total_profit": float(m.total_profit_ratio),
        "win_rate": float(m.win_rate),
        "max_drawdown": float(m.max_drawdown_ratio),
        "sharpe": _statistic(backtest.bar_sharpe, backtest.bar_sharpe_undefined),
        "freqtrade_sharpe": _statistic(
            m.sharpe, m.undefined["sharpe"].reason if "sharpe" in m.undefined else None
        ),
        "bars": len(backtest.bar_returns),
        "data_versions": MetadataValue.json(backtest.data_versions),
        "arcticdb_snapshot": backtest.arcticdb_snapshot,
        **mlflow.run_metadata(backtest.mlflow_run_id, backtest.mlflow_experiment_id),
    }


def _statistic(value: float | None, undefined: str | None) -> float | MetadataValue:
    """A statistic as Dagster metadata: the number, or text `n/a (why)` when it is undefined."""
    return float(value) if value is not None else MetadataValue.text(f"n/a ({undefined or 'undefined'})")


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(f"{what} {text!r} is not a date", "write it as YYYY-MM-DD") from exc


# -- validation backtests and the comparison -----------------------------------------------------------


def validation_window(
    config: ValidationConfig, champion: ModelVersionInfo, challenger: ModelVersionInfo
) -> tuple[date, date]:
    """The window both validation backtests trade: the challenger's holdout unless configured; refused
    when it starts before either model's training ended."""
    start = _day(config.start, "start") if config.start else holdout_start(challenger).date()
    end = _day(config.end, "end") if config.end else holdout_end(challenger).date()
    if end <= start:
        raise ValidationError(f"validation window {start} → {end} is empty", "give an end after the start")
    require_after_training(start, [champion, challenger])
    return start, end


def build_validation_backtest_asset(settings: TradAISettings, alias: str) -> AssetsDefinition:
    """`validation_backtest/<alias>`: the ML strategy trading the `alias` model on the validation window."""
    default_model = default_model_name(settings.timeframe)
    key = VALIDATION_KEYS[alias]

    @asset(
        key=key,
        group_name=LIFECYCLE_GROUP,
        deps=[
            MODEL_KEY,
            *(AssetDep(ohlcv_key(pair), partition_mapping=AllPartitionMapping()) for pair in settings.pairs),
        ],
        description=f"Freqtrade backtest of the ML strategy trading the `{alias}` model on the challenger's "
        "holdout, the out-of-sample window neither model trained on (refused otherwise). Both aliases are "
        "backtested on the same window; model_comparison compares them.",
        kinds={"freqtrade", "mlflow"},
    )
    def _validation_backtest(
        context: AssetExecutionContext,
        config: ValidationConfig,
        candle_store: ArcticDBResource,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> Output[ModelBacktest]:
        name = config.model_name or default_model
        champion = mlflow.get_version_by_alias(name, CHAMPION)
        challenger = mlflow.get_version_by_alias(name, CHALLENGER)
        start, end = validation_window(config, champion, challenger)
        version = champion if alias == CHAMPION else challenger
        backtest = run_model_backtest(
            settings=settings,
            config=config,
            alias=alias,
            version=version,
            pairs=model_pairs(challenger, settings),
            start=start,
            end=end,
            candle_store=candle_store,
            freqtrade=freqtrade,
            mlflow=mlflow,
            dagster_run_id=context.run.run_id,
            purpose="validation",
        )
        context.log.info(
            "%s v%s (%s) on %s: %d trades, profit %.2f %%, bar Sharpe %s",
            name,
            version.version,
            alias,
            backtest.timerange,
            backtest.metrics.trade_count,
            backtest.metrics.total_profit_pct,
            format_statistic(backtest.bar_sharpe, None, ".2f")
            if backtest.bar_sharpe is not None
            else f"n/a ({backtest.bar_sharpe_undefined})",
        )
        metadata = backtest_metadata(backtest, mlflow)
        metadata["trained_until"] = MetadataValue.timestamp(holdout_start(version))
        return Output(backtest, metadata=metadata)

    return _validation_backtest


def _show(value: float | None, undefined: str | None) -> str:
    return f"{value:.3f}" if value is not None else f"n/a ({undefined or 'undefined'})"


def comparison_table(result: ComparisonResult, champion: ModelBacktest, challenger: ModelBacktest) -> str:
    """Both sides' numbers side by side, as markdown."""

    def pct(value: float | None) -> str:
        return f"{value * 100:.2f} %" if value is not None else "–"

    rows = [
        ("version", f"v{champion.version}", f"v{challenger.version}"),
        ("trades", str(result.champion.trade_count), str(result.challenger.trade_count)),
        ("total profit (bars)", pct(result.champion.total_profit), pct(result.challenger.total_profit)),
        ("win rate", pct(result.champion.win_rate), pct(result.challenger.win_rate)),
        (
            "Sharpe (annualised, bars)",
            _show(result.champion.sharpe, result.champion.sharpe_undefined),
            _show(result.challenger.sharpe, result.challenger.sharpe_undefined),
        ),
        (
            "mean trade return",
            pct(result.champion.mean_trade_return),
            pct(result.challenger.mean_trade_return),
        ),
        (
            "max drawdown (Freqtrade)",
            pct(champion.metrics.max_drawdown_ratio),
            pct(challenger.metrics.max_drawdown_ratio),
        ),
        (
            "Sharpe (Freqtrade)",
            champion.metrics.display("sharpe", ".3f"),
            challenger.metrics.display("sharpe", ".3f"),
        ),
    ]
    lines = ["| | champion | challenger |", "|---|---|---|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    return "\n".join(lines)


def _equity_figure(champion: ModelBacktest, challenger: ModelBacktest) -> "plt.Figure":
    figure, axes = plt.subplots(figsize=(8, 3.5))
    for backtest, color in ((champion, "#6e7781"), (challenger, "#1f6feb")):
        curve = (1.0 + backtest.bar_returns).cumprod()
        axes.plot(
            curve.index,
            curve.to_numpy(),
            color=color,
            linewidth=1.2,
            label=f"{backtest.alias} v{backtest.version}",
        )
    axes.set_ylabel("equity (× start)")
    axes.set_title(f"validation window {champion.timerange}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.autofmt_xdate()
    return figure


def _optional(value: float | None) -> Any:
    return MetadataValue.float(value) if value is not None and math.isfinite(value) else MetadataValue.null()


def comparison_metadata(
    result: ComparisonResult, champion: ModelBacktest, challenger: ModelBacktest
) -> dict[str, Any]:
    """Every number of the comparison as Dagster metadata."""
    metadata: dict[str, Any] = {
        "decision": result.decision.value,
        "reason": MetadataValue.text(result.reason),
        "model_name": challenger.model,
        "champion_version": champion.version,
        "challenger_version": challenger.version,
        "timerange": challenger.timerange,
        "window_start": MetadataValue.timestamp(challenger.window_start),
        "window_end": MetadataValue.timestamp(challenger.window_end),
        "comparison": MetadataValue.md(comparison_table(result, champion, challenger)),
        "equity": MetadataValue.md(png_markdown(_equity_figure(champion, challenger), "equity")),
        "p_value": result.p_value,
        "sharpe_diff": result.sharpe_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "confidence": result.confidence,
        "alpha": result.alpha,
        "min_trades": result.min_trades,
        "n_bars": result.n_bars,
        "periods_per_year": result.periods_per_year,
        "block_length": result.block_length,
        "n_iterations": result.n_iterations,
        "seed": result.seed,
        "welch_t": _optional(result.welch_t),
        "welch_p_value": _optional(result.welch_p_value),
        "mann_whitney_u": _optional(result.mann_whitney_u),
        "mann_whitney_p_value": _optional(result.mann_whitney_p_value),
        "sharpe_diff_se": _optional(result.sharpe_diff_se),
        "minimum_detectable_difference": _optional(result.minimum_detectable_difference),
        "power": _optional(result.power),
    }
    for side, metrics in (("champion", result.champion), ("challenger", result.challenger)):
        metadata[f"{side}_trade_count"] = metrics.trade_count
        metadata[f"{side}_total_profit"] = metrics.total_profit
        metadata[f"{side}_win_rate"] = _optional(metrics.win_rate)
        metadata[f"{side}_sharpe"] = _statistic(metrics.sharpe, metrics.sharpe_undefined)
        metadata[f"{side}_mean_trade_return"] = _optional(metrics.mean_trade_return)
    return metadata


def comparison_metrics(result: ComparisonResult) -> dict[str, float]:
    """The numbers an audit entry keeps of a comparison."""
    out = {
        "sharpe_diff": result.sharpe_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "n_bars": float(result.n_bars),
        "champion_total_profit": result.champion.total_profit,
        "challenger_total_profit": result.challenger.total_profit,
        "champion_trades": float(result.champion.trade_count),
        "challenger_trades": float(result.challenger.trade_count),
    }
    for side, metrics in (("champion", result.champion), ("challenger", result.challenger)):
        if metrics.win_rate is not None:
            out[f"{side}_win_rate"] = metrics.win_rate
        if metrics.sharpe is not None:  # an undefined Sharpe is no number (the result says why)
            out[f"{side}_sharpe"] = metrics.sharpe
    return out


def build_comparison_asset(settings: TradAISettings) -> AssetsDefinition:
    """`model_comparison`: champion vs challenger on the same out-of-sample window → decision."""
    tf = settings.timeframe

    @asset(
        key=COMPARISON_KEY,
        group_name=LIFECYCLE_GROUP,
        ins={
            "champion": AssetIn(VALIDATION_KEYS[CHAMPION]),
            "challenger": AssetIn(VALIDATION_KEYS[CHALLENGER]),
        },
        description="Champion vs challenger on the same out-of-sample window: minimum trade count, total "
        "profit, win rate, Sharpe, the paired block-bootstrap test of the Sharpe difference (trade-level "
        "Welch and Mann-Whitney beside it) and the decision promote / keep / inconclusive. The promotion "
        "sensor acts on it.",
        kinds={"scipy", "mlflow"},
    )
    def model_comparison(
        context: AssetExecutionContext,
        config: ComparisonRunConfig,
        champion: ModelBacktest,
        challenger: ModelBacktest,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        if champion.model != challenger.model:
            raise ValidationError(
                f"champion backtest is of {champion.model}, challenger's of {challenger.model}",
                "re-run both validation backtests for one model",
            )
        if champion.timerange != challenger.timerange or not champion.bar_returns.index.equals(
            challenger.bar_returns.index
        ):
            raise ValidationError(
                f"the validation backtests cover different windows ({champion.timerange} vs "
                f"{challenger.timerange})",
                "re-run both validation backtests with the same config",
            )
        name = challenger.model
        now = {alias: mlflow.alias_version(name, alias) for alias in (CHAMPION, CHALLENGER)}
        if (now[CHAMPION], now[CHALLENGER]) != (champion.version, challenger.version):
            raise ValidationError(
                f"the aliases moved since the validation backtests (they traded champion v{champion.version} "
                f"and challenger v{challenger.version}; now v{now[CHAMPION]} and v{now[CHALLENGER]})",
                "re-run the validation backtests (the retraining job) before comparing",
            )
        require_after_training(
            challenger.window_start.date(),
            [mlflow.get_version(name, champion.version), mlflow.get_version(name, challenger.version)],
        )
        result = compare_champion_challenger(
            champion.bar_returns,
            challenger.bar_returns,
            list(champion.trade_returns),
            list(challenger.trade_returns),
            timeframe=tf,
            config=ComparisonConfig(
                alpha=config.alpha,
                min_trades=config.min_trades,
                n_iterations=config.n_iterations,
                block_length=config.block_length,
                seed=config.seed,
            ),
        )
        context.log.info("%s v%s vs v%s: %s", name, challenger.version, champion.version, result.reason)
        with mlflow.start_run(
            VALIDATION_EXPERIMENT,
            f"{name} comparison v{challenger.version} vs v{champion.version} {challenger.timerange}",
            dagster_run_id=context.run.run_id,
            tags={
                "model": name,
                "purpose": "comparison",
                "decision": result.decision.value,
                "champion.version": str(champion.version),
                "challenger.version": str(challenger.version),
                "champion.backtest_run": champion.mlflow_run_id,
                "challenger.backtest_run": challenger.mlflow_run_id,
            },
        ) as tracked:
            tracked.log_metrics({"p_value": result.p_value, **comparison_metrics(result)})
            tracked.log_dict(result.model_dump(mode="json"), "comparison/result.json")
            run_id, experiment_id = tracked.run_id, tracked.experiment_id
        for key, value in {
            "tradai.validation.decision": result.decision.value,
            "tradai.validation.p_value": f"{result.p_value:.6g}",
            "tradai.validation.sharpe_diff": f"{result.sharpe_diff:.6g}",
            "tradai.validation.against": f"v{champion.version}",
            "tradai.validation.window": challenger.timerange,
            "tradai.validation.reason": result.reason[:4000],
        }.items():
            mlflow.set_version_tag(name, challenger.version, key, value)
        metadata = comparison_metadata(result, champion, challenger)
        metadata.update(mlflow.run_metadata(run_id, experiment_id))
        return MaterializeResult(metadata=metadata)

    return model_comparison


# -- the champion's rolling performance ----------------------------------------------------------------


def performance_window(
    config: PerformanceConfig, store: ArcticDBResource, settings: TradAISettings, pairs: tuple[str, ...]
) -> tuple[date, date]:
    """`window_days` days ending at `end` (default: the day after the last complete stored day)."""
    end = (
        _day(config.end, "end")
        if config.end
        else store.last_candle_end(
            settings.exchange_id, settings.timeframe, pairs, settings.clock.now()
        ).date()
    )
    return end - timedelta(days=config.window_days), end


def build_champion_performance_asset(
    settings: TradAISettings, limits: RollbackLimits | None = None
) -> AssetsDefinition:
    """`champion_performance`: the champion's backtest over the last `window_days` days, shown against
    the rollback limits (`limits`, default from the environment when it runs)."""
    default_model = default_model_name(settings.timeframe)

    @asset(
        key=PERFORMANCE_KEY,
        group_name=LIFECYCLE_GROUP,
        deps=[
            CHAMPION_MODEL_KEY,
            *(AssetDep(ohlcv_key(pair), partition_mapping=AllPartitionMapping()) for pair in settings.pairs),
        ],
        description="The champion's rolling performance: the ML strategy trading the `champion` model over "
        "the last window_days (default 30) days — drawdown, Sharpe, profit, trades. The rollback sensor "
        "compares it with the rollback limits (TRADAI_ROLLBACK_*).",
        kinds={"freqtrade", "mlflow"},
    )
    def champion_performance(
        context: AssetExecutionContext,
        config: PerformanceConfig,
        candle_store: ArcticDBResource,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        name = config.model_name or default_model
        champion = mlflow.get_version_by_alias(name, CHAMPION)
        pairs = model_pairs(champion, settings)
        start, end = performance_window(config, candle_store, settings, pairs)
        trained_until = holdout_start(champion)
        overlaps = midnight(start) < trained_until
        if overlaps:
            context.log.warning(
                "the window starts %s, inside v%s's training data (up to %s): performance is optimistic",
                start,
                champion.version,
                trained_until.date(),
            )
        backtest = run_model_backtest(
            settings=settings,
            config=config,
            alias=CHAMPION,
            version=champion,
            pairs=pairs,
            start=start,
            end=end,
            candle_store=candle_store,
            freqtrade=freqtrade,
            mlflow=mlflow,
            dagster_run_id=context.run.run_id,
            purpose="performance",
        )
        rules = limits or RollbackLimits()
        assessment = assess_performance(
            ChampionPerformance(
                model=name,
                version=champion.version,
                window_start=backtest.window_start,
                window_end=backtest.window_end,
                trade_count=backtest.metrics.trade_count,
                total_profit=float(backtest.metrics.total_profit_ratio),
                max_drawdown=float(backtest.metrics.max_drawdown_ratio),
                sharpe=backtest.bar_sharpe,
                sharpe_undefined=backtest.bar_sharpe_undefined,
                storage_id=0,
                at=settings.clock.now(),
            ),
            rules,
        )
        equity = (1.0 + backtest.bar_returns).cumprod() * backtest.metrics.starting_balance
        metadata = backtest_metadata(backtest, mlflow)
        metadata.update(
            {
                "trained_until": MetadataValue.timestamp(trained_until),
                "overlaps_training": overlaps,
                "limits": MetadataValue.json(rules.model_dump()),
                "within_limits": not assessment.breached,
                "assessment": assessment.reason,
                "equity_and_drawdown": MetadataValue.md(
                    png_markdown(
                        equity_and_drawdown_figure(equity, f"champion v{champion.version}"), "equity"
                    )
                ),
            }
        )
        return MaterializeResult(metadata=metadata)

    return champion_performance


def build_validation_assets(
    settings: TradAISettings, rollback_limits: RollbackLimits | None = None
) -> list[AssetsDefinition]:
    """Both validation backtests, the comparison, and the champion's rolling performance."""
    return [
        build_validation_backtest_asset(settings, CHALLENGER),
        build_validation_backtest_asset(settings, CHAMPION),
        build_comparison_asset(settings),
        build_champion_performance_asset(settings, rollback_limits),
    ]
