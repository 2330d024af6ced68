"""`model_loop_simulation`: walk the clock through recorded history and measure whether retraining pays.

The asset runs `tradai_assets.simulation_engine` in a fresh sandbox under `<data_dir>/simulation/<run id>`
(its own ArcticDB and MLflow stores; the platform's champion is never touched) with the replay server
serving the recorded candles up to each step's clock, and reports the policy table (never, weekly,
monthly, drift), each policy's champion timeline and equity curve — in its metadata and in the platform's
MLflow (experiment `simulation`). `tradai simulate` runs the same from the command line.
"""

import contextlib
import logging
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from tradai_assets.keys import LIFECYCLE_GROUP
from tradai_assets.simulation_engine import SimulationResult, SimulationSpec, check_policies, simulate
from tradai_core.errors import ValidationError
from tradai_core.plots import equity_and_drawdown_figure, png_bytes, png_markdown
from tradai_core.policy_simulation import POLICIES, SimulationPlan, table_markdown, timeline_markdown
from tradai_core.settings import PROJECT_ROOT, TradAISettings
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

SIMULATION_KEY = AssetKey("model_loop_simulation")
SIMULATION_EXPERIMENT = "simulation"
RECORDED_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"
RECORDED_EXCHANGE_INFO = PROJECT_ROOT / "demo_data" / "exchange" / "binance_spot_exchangeInfo.json"

logger = logging.getLogger(__name__)


class SimulationConfig(Config):
    """Run config of the simulation (the defaults: weekly through mid-2021 → autumn 2022, two pairs)."""

    start: str = "2021-06-07"
    """First clock value (YYYY-MM-DD): the bootstrap model is trained and becomes champion."""
    end: str = "2022-09-26"
    """Last clock value (YYYY-MM-DD): the last step's trading is evaluated up to it."""
    step_days: int = 7
    validation_days: int = 7
    """Days before the clock on which a challenger is compared with the champion."""
    train_days: int = 180
    """Days of the sliding training window (it ends where validation begins)."""
    pairs: list[str] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT"])
    policies: list[str] = Field(default_factory=lambda: list(POLICIES))
    candles_dir: str | None = None
    """Recorded candles the replay server serves; default demo_data/binance_spot_1h."""
    max_open_trades: int = 2
    drift_cooldown_hours: float = 14 * 24
    """The drift policy does not retrain within this many hours of its last retraining."""
    min_trades: int = 10
    """Trades each side needs for the comparison to decide (fewer: inconclusive, the champion stays)."""
    challenge_looks: int = 4
    """An inconclusive comparison becomes an A/B challenge, re-tested with alpha spending at up to this
    many later steps; 0 turns challenges off."""
    keep_sandbox: bool = False
    """Keep the sandbox (its candle and MLflow stores, every model trained in it) after a successful run.
    By default it is removed once the report is in the platform's MLflow; a failed run always keeps it."""


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(f"{what} {text!r} is not a date", "write it as YYYY-MM-DD") from exc


def build_spec(config: SimulationConfig) -> SimulationSpec:
    """The engine's spec from the run config; bad values fail here with what to change."""
    from tradai_core.comparison import ComparisonConfig

    try:
        plan = SimulationPlan(
            start=_day(config.start, "start"),
            end=_day(config.end, "end"),
            step_days=config.step_days,
            validation_days=config.validation_days,
            train_days=config.train_days,
        )
    except ValueError as exc:
        raise ValidationError(
            f"invalid simulation period: {exc}", "fix start, end and the day counts"
        ) from exc
    candles = Path(config.candles_dir) if config.candles_dir else RECORDED_CANDLES
    return SimulationSpec(
        plan=plan,
        pairs=tuple(config.pairs),
        policies=check_policies(config.policies),
        candles_dir=candles,
        exchange_info_path=RECORDED_EXCHANGE_INFO if RECORDED_EXCHANGE_INFO.exists() else None,
        max_open_trades=config.max_open_trades,
        drift_cooldown_hours=config.drift_cooldown_hours,
        comparison=ComparisonConfig(min_trades=config.min_trades, n_iterations=1000),
        challenge_looks=config.challenge_looks,
    )


def equity_curves(result: SimulationResult, starting_balance: float = 1000.0) -> dict[str, pd.Series]:
    """Each policy's compounded out-of-sample equity."""
    return {name: (1.0 + r).cumprod() * starting_balance for name, r in result.returns.items() if len(r)}


def comparisons_markdown(result: SimulationResult) -> str:
    """Every comparison run, as markdown."""
    lines = [
        "| at | champion | challenger | decision | p | ΔSharpe | window |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result.comparisons:
        lines.append(
            f"| {c.at:%Y-%m-%d} | v{c.champion} | v{c.challenger} | {c.decision} | {c.p_value:.4f} | "
            f"{c.sharpe_diff:+.2f} | {c.window[0]:%Y-%m-%d} → {c.window[1]:%Y-%m-%d} |"
        )
    return "\n".join(lines)


def challenges_markdown(result: SimulationResult) -> str:
    """Every A/B challenge and its looks, as markdown."""
    lines = [
        "| policy | challenge | look | bars | ΔSharpe | p | look's alpha | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, challenges in result.challenges.items():
        for c in challenges:
            for look in c.looks:
                lines.append(
                    f"| {name} | v{c.challenger} vs v{c.champion} (from {c.started_at:%Y-%m-%d}) | "
                    f"{look.number}/{c.max_looks} | {look.n_bars} | {look.sharpe_diff:+.2f} | "
                    f"{look.p_value:.4f} | {look.threshold:.4f} | {look.outcome} |"
                )
    return "\n".join(lines)


def simulation_metadata(result: SimulationResult, spec: SimulationSpec) -> dict[str, Any]:
    """The asset's metadata: table, best policy, timelines, comparisons, an equity plot per policy."""
    best = result.best
    metadata: dict[str, Any] = {
        "period": f"{spec.plan.start} → {spec.plan.end}, every {spec.plan.step_days} days",
        "pairs": ", ".join(spec.pairs),
        "steps": len(spec.plan.steps),
        "policy_table": MetadataValue.md(table_markdown(result.rows)),
        "best_policy": best.policy,
        "best_policy_deflated_sharpe": MetadataValue.float(best.deflated)
        if best.deflated is not None
        else MetadataValue.null(),
        "best_policy_note": best.note or "–",
        "comparisons": MetadataValue.md(comparisons_markdown(result)),
        "models_trained": len(result.models),
        "backtests_run": result.backtests_run,
        "backtests_reused": result.backtests_reused,
        "wall_seconds": round(result.wall_seconds, 1),
        "store_reads_checked": len(result.reads),
    }
    for name, timeline in result.timelines.items():
        metadata[f"timeline_{name}"] = MetadataValue.md(timeline_markdown(timeline))
    metadata["challenges"] = MetadataValue.md(challenges_markdown(result))
    for name, equity in equity_curves(result).items():
        figure = equity_and_drawdown_figure(equity, f"policy {name}: champion in force, out of sample")
        metadata[f"equity_{name}"] = MetadataValue.md(png_markdown(figure, f"equity {name}"))
    return metadata


def log_to_mlflow(
    mlflow: MLflowResource, result: SimulationResult, spec: SimulationSpec, dagster_run_id: str | None
) -> tuple[str, str]:
    """The table, timelines, returns and equity plots as one MLflow run; returns (run id, experiment id)."""
    with mlflow.start_run(
        SIMULATION_EXPERIMENT,
        f"walk-forward {spec.plan.start} → {spec.plan.end} ({', '.join(spec.pairs)})",
        dagster_run_id=dagster_run_id,
        tags={"purpose": "simulation", "best_policy": result.best.policy},
    ) as tracked:
        tracked.log_params(
            {
                "start": str(spec.plan.start),
                "end": str(spec.plan.end),
                "step_days": spec.plan.step_days,
                "validation_days": spec.plan.validation_days,
                "train_days": spec.plan.train_days,
                "pairs": ",".join(spec.pairs),
                "policies": ",".join(spec.policies),
            }
        )
        metrics: dict[str, float] = {}
        for row in result.rows:
            metrics.update(
                {
                    f"{row.policy}.total_return": row.total_return,
                    f"{row.policy}.max_drawdown": row.max_drawdown,
                    f"{row.policy}.retrains": float(row.retrains),
                    f"{row.policy}.compute_seconds": row.compute_seconds,
                }
            )
            if row.sharpe is not None:
                metrics[f"{row.policy}.sharpe"] = row.sharpe
            if row.p_value_vs_never is not None:
                metrics[f"{row.policy}.p_value_vs_never"] = row.p_value_vs_never
        if result.best.deflated is not None:
            metrics["best.deflated_sharpe"] = result.best.deflated
        tracked.log_metrics(metrics)
        tracked.log_text(table_markdown(result.rows), "simulation/policy_table.md")
        tracked.log_text(comparisons_markdown(result), "simulation/comparisons.md")
        tracked.log_dict(
            {name: [e.model_dump(mode="json") for e in tl] for name, tl in result.timelines.items()},
            "simulation/timelines.json",
        )
        if result.returns:
            tracked.log_dataframe(pd.DataFrame(result.returns), "simulation/bar_returns.parquet")
        for name, equity in equity_curves(result).items():
            figure = equity_and_drawdown_figure(equity, f"policy {name}")
            tracked.log_image_bytes(png_bytes(figure), f"simulation/equity_{name}.png")
        return tracked.run_id, tracked.experiment_id


@contextlib.contextmanager
def sandbox_folder(
    sandbox: Path, *, keep: bool, log: logging.Logger | Any = logger
) -> Iterator[dict[str, str]]:
    """The sandbox for one run: removed when the block succeeds (unless `keep`), kept — and named in the
    log — when it fails, for diagnosis. Yields the metadata that says where it is or that it is gone."""
    where: dict[str, str] = {}
    try:
        yield where
    except BaseException:
        if sandbox.exists():
            log.error(
                "the simulation failed; its sandbox is kept for diagnosis: %s (remove it when done)", sandbox
            )
        raise
    if keep:
        where["sandbox"] = str(sandbox)
        return
    shutil.rmtree(sandbox, ignore_errors=True)
    where["sandbox"] = "removed after the report (keep_sandbox keeps it)"


def run_simulation(
    settings: TradAISettings,
    config: SimulationConfig,
    freqtrade: FreqtradeResource,
    mlflow: MLflowResource,
    *,
    run_id: str,
    log: logging.Logger | Any = logger,
) -> tuple[SimulationResult, dict[str, Any]]:
    """Run the simulation in `<data_dir>/simulation/<run_id>` and report it to MLflow; returns the result
    and the metadata (the asset's, the CLI prints it). The sandbox goes once the report is recorded
    (`sandbox_folder`)."""
    spec = build_spec(config)
    sandbox = settings.resolved_data_dir / "simulation" / run_id
    with sandbox_folder(sandbox, keep=config.keep_sandbox, log=log) as where:
        result = simulate(spec, sandbox, freqtrade, run_id=run_id, log=log)
        metadata = simulation_metadata(result, spec)
        tracked_run, experiment = log_to_mlflow(mlflow, result, spec, run_id)
        metadata.update(mlflow.run_metadata(tracked_run, experiment))
    metadata.update(where)
    return result, metadata


def build_simulation_asset(settings: TradAISettings) -> AssetsDefinition:
    """`model_loop_simulation`: the model loop stepped through history under each retraining policy."""

    @asset(
        key=SIMULATION_KEY,
        group_name=LIFECYCLE_GROUP,
        description="Walk-forward simulation of the model loop on recorded candles: the clock steps through "
        "a period; at each step the new candles are ingested through the exchange path (replay server), "
        "drift is scored, the sensors' decision functions run, a challenger is trained on the window before "
        "the clock, validation-backtested against the champion and promoted or kept. Policies never, "
        "weekly, monthly and drift are compared on the out-of-sample PnL of the champion in force, with a "
        "paired block-bootstrap p-value against never and the best policy's edge deflated for the choice.",
        kinds={"freqtrade", "lightgbm", "mlflow"},
    )
    def model_loop_simulation(
        context: AssetExecutionContext,
        config: SimulationConfig,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        result, metadata = run_simulation(
            settings, config, freqtrade, mlflow, run_id=context.run.run_id, log=context.log
        )
        context.log.info(
            "policy table:\n%s", "\n".join(f"{r.policy}: {r.total_return:.2%}" for r in result.rows)
        )
        return MaterializeResult(metadata=metadata)

    return model_loop_simulation
