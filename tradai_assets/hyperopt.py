"""Hyperopt assets: an Optuna study per strategy, an overfitting gate, and the tuned parameters it lets on.

`hyperopt_study/<strategy>` runs (or continues) an Optuna study over the strategy's Freqtrade hyperoptable
parameters on an **in-sample** window, backtests the best parameters again on an **out-of-sample** window
right after it, computes the **Deflated Sharpe Ratio** of the best trial given every distinct trial, and
stores everything in an MLflow run of experiment `hyperopt` (the tuned values as `tuned/<Strategy>.json`,
trials, importances, an optimization-history plot). Its blocking check `overfitting_gate` refuses the
parameters when the DSR is below the threshold or out-of-sample performance collapsed, so
`tuned_parameters/<strategy>` — the record of which tuned version backtests may use — only materializes
for parameters that passed.

Windows (days, UTC; see `tradai_core.hyperopt.hyperopt_windows`):

    … ─ in-sample (in_sample_days) ─┬─ out-of-sample (oos_days) ─┬─ holdout (TRADAI_HOLDOUT_DAYS) ─ end
                                    oos_start                    settings.holdout_start

Neither window overlaps the other or the holdout, which stays untouched for the backtest reports.
Backtests use tuned parameters only when their run config names them (`load_tuned_parameters` +
`tradai_core.tuned_params.apply_tuned`); nothing is ever written beside a strategy.
"""

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    Config,
    DagsterInstance,
    DataVersion,
    ExecuteInProcessResult,
    MaterializeResult,
    MetadataValue,
    asset,
    materialize,
)
from pydantic import Field

from strategies.validation import STRATEGIES_DIR, load_strategy_class, validate_strategy
from tradai_assets.backtest_runner import (
    ExecutedBacktest,
    execute,
    export_strategy_model,
    plan_backtest,
    record,
)
from tradai_assets.hyperopt_prescreen import prescreen_metadata, prescreen_sentence
from tradai_assets.keys import ohlcv_key
from tradai_assets.strategy_partitions import source_hash, strategy_partitions
from tradai_core.backtest_config import BacktestCosts
from tradai_core.backtest_plan import plan_window
from tradai_core.errors import ConfigurationError, NotFoundError, TradAIError, ValidationError
from tradai_core.hyperopt import (
    MIN_TRADES_PENALTY,
    GateDecision,
    HyperoptWindows,
    Objective,
    OOSRule,
    SearchSpace,
    StudyReport,
    StudySpec,
    TrialRecord,
    hyperopt_windows,
    overfitting_gate,
)
from tradai_core.lazy import LazyModule
from tradai_core.plots import plt, png_markdown
from tradai_core.settings import TradAISettings
from tradai_core.strategy_config import StrategyConfig
from tradai_core.tuned_params import TunedParameters, apply_values, tuned_artifact_path
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource
from tradai_resources.mlflow_tracking import MLflowResource, redact_uri

HYPEROPT_GROUP = "hyperopt"
STUDY_KEY = AssetKey("hyperopt_study")
TUNED_KEY = AssetKey("tuned_parameters")
GATE_CHECK = "overfitting_gate"
MLFLOW_EXPERIMENT = "hyperopt"
TAG_STRATEGY = "strategy"
TAG_TUNED_VERSION = "tradai.tuned.version"
TAG_GATE = "tradai.gate"
_MISSING_ARTIFACT_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
"""MLflow error codes meaning "the run has no such artifact" (anything else is a real failure)."""

_mlflow_exceptions = LazyModule("mlflow.exceptions")  # imported on first use


class HyperoptConfig(Config, BacktestCosts):
    """Run config of `hyperopt_study` (the study, its windows and its gate); money and costs as every
    backtest has them (`BacktestCosts`, whose `run(timerange)` builds a backtest run config)."""

    n_trials: int = Field(default=50, ge=1, description="Trials to add to the study in this run.")
    workers: int = Field(default=2, ge=1, description="Study-worker processes (one per core).")
    seed: int = Field(default=42, ge=0, description="Seed of the TPE sampler (and of the importances).")
    objective: str = Field(default="sharpe", description="sharpe | sortino | profit | calmar.")
    min_trades: int = Field(default=10, ge=0, description="In-sample trials with fewer trades are penalised.")
    spaces: list[str] | None = Field(
        default=None,
        description="Spaces to tune (buy, sell, roi, stoploss); default: what the strategy declares.",
    )
    startup_trials: int = Field(default=10, ge=1, description="Random trials before TPE models the space.")
    prescreen: bool = Field(
        default=False,
        description="Explore prescreen_trials sets with the compiled pre-screen; Freqtrade backtests a "
        "random sample (rank agreement, ≥ 0.9 or the pre-screen switches off) and the n_trials best.",
    )
    prescreen_trials: int = Field(default=500, ge=1, description="Sets the pre-screen explores.")
    agreement_sample: int = Field(default=10, ge=3, description="Explored sets Freqtrade checks.")
    study_name: str | None = Field(
        default=None, description="Default: <Strategy>-<in-sample timerange>-<objective>."
    )
    in_sample_days: int = Field(default=180, ge=7, description="Days of the in-sample window.")
    oos_days: int = Field(
        default=60, ge=7, description="Days of the out-of-sample window (before the holdout)."
    )
    dsr_threshold: float = Field(default=0.95, ge=0, le=1, description="The gate refuses a lower DSR.")
    oos_min_sharpe: float = Field(default=0.0, description="The gate refuses an OOS Sharpe below this.")
    oos_min_fraction: float = Field(
        default=0.25, ge=0, le=1, description="…or below this fraction of the in-sample Sharpe."
    )
    oos_min_trades: int = Field(default=1, ge=0, description="…or fewer OOS trades than this.")

    def spec(self) -> StudySpec:
        """The study part of this config."""
        if self.objective not in {o.value for o in Objective}:
            raise ConfigurationError(
                f"objective {self.objective!r} is not known",
                f"use one of {', '.join(o.value for o in Objective)}",
            )
        return StudySpec(
            n_trials=self.n_trials,
            workers=self.workers,
            seed=self.seed,
            objective=Objective(self.objective),
            min_trades=self.min_trades,
            spaces=tuple(self.spaces) if self.spaces else None,
            startup_trials=self.startup_trials,
            study_name=self.study_name,
            prescreen=self.prescreen,
            prescreen_trials=self.prescreen_trials,
            agreement_sample=self.agreement_sample,
        )

    def oos_rule(self) -> OOSRule:
        """The out-of-sample collapse rule of this config."""
        return OOSRule(
            min_sharpe=self.oos_min_sharpe, min_fraction=self.oos_min_fraction, min_trades=self.oos_min_trades
        )


# -- pure helpers for metadata


def params_markdown(space: SearchSpace, best: TrialRecord) -> str:
    """The best trial's values as a table with each parameter's space and range."""
    rows = ["| parameter | space | value | searched |", "|---|---|---|---|"]
    for spec in space.parameters:
        searched = (
            ", ".join(map(str, spec.choices or ()))
            if spec.kind == "categorical"
            else f"{spec.low:g} … {spec.high:g}" + (f" step {spec.step:g}" if spec.step else "")
        )
        rows.append(f"| {spec.name} | {spec.space} | {best.params.get(spec.name)} | {searched} |")
    if best.roi is not None:
        rows.append(f"| → minimal_roi | roi | {best.roi} | |")
    return "\n".join(rows)


def importances_markdown(importances: dict[str, float]) -> str:
    """Parameter importances as a table (largest first)."""
    if not importances:
        return "Not enough distinct trials to estimate importances."
    rows = ["| parameter | importance |", "|---|---|"]
    rows += [
        f"| {name} | {value:.3f} |" for name, value in sorted(importances.items(), key=lambda kv: -kv[1])
    ]
    return "\n".join(rows)


def optimization_history_figure(trials: tuple[TrialRecord, ...], title: str) -> "plt.Figure":
    """Every trial's objective (trials below the minimum trade count apart) and the best so far."""
    figure, axis = plt.subplots(figsize=(8, 3.8))
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    scored = [(n, v) for n, v in zip(numbers, values, strict=True) if v > MIN_TRADES_PENALTY / 2]
    penalised = [n for n, v in zip(numbers, values, strict=True) if v <= MIN_TRADES_PENALTY / 2]
    if scored:
        axis.scatter(*zip(*scored, strict=True), s=14, color="#1f6feb", alpha=0.7, label="trial")
        best_so_far = pd.Series([v for _, v in scored], index=[n for n, _ in scored]).cummax()
        axis.step(
            best_so_far.index, best_so_far.to_numpy(), where="post", color="#d1242f", label="best so far"
        )
    if penalised and scored:
        floor = min(v for _, v in scored)
        axis.scatter(penalised, [floor] * len(penalised), marker="x", color="#8c959f", label="too few trades")
    axis.set_xlabel("trial")
    axis.set_ylabel("objective")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    return figure


def trials_frame(trials: tuple[TrialRecord, ...]) -> pd.DataFrame:
    """One row per trial: number, value, statistics and parameter values."""
    rows = []
    for t in trials:
        rows.append(
            {
                "number": t.number,
                "value": t.value,
                "trades": t.trades,
                "sharpe": t.sharpe,
                "sortino": t.sortino,
                "calmar": t.calmar,
                "profit_total": t.profit_total,
                "max_drawdown": t.max_drawdown,
                "daily_sharpe": t.daily.sharpe,
                "duplicate_of": t.duplicate_of,
                "worker": t.worker,
                "seconds": t.seconds,
                **{f"param.{k}": v for k, v in t.params.items()},
            }
        )
    return pd.DataFrame(rows)


def _startup_candles(name: str, folder: Path) -> int:
    return int(getattr(load_strategy_class(name, folder), "startup_candle_count", 0))


def _next_version(mlflow: MLflowResource, strategy: str) -> int:
    """1 + the highest tuned-parameters version of `strategy` recorded in the hyperopt experiment."""
    client = mlflow.client()
    experiment_id = mlflow.ensure_experiment(MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment_id], f"tags.{TAG_STRATEGY} = '{strategy}'", max_results=5000)
    versions = [int(r.data.tags[TAG_TUNED_VERSION]) for r in runs if TAG_TUNED_VERSION in r.data.tags]
    return max(versions, default=0) + 1


# -- reading tuned parameters back (for backtests)


def load_tuned_parameters(
    mlflow: MLflowResource, run_id: str, strategy: str | None = None, *, allow_refused: bool = False
) -> TunedParameters:
    """The tuned parameters a hyperopt MLflow run stored, for a backtest that names them explicitly.

    Raises NotFoundError only when MLflow says the run has no such artifact; ValidationError when the
    artifact is not a tuned-parameters record, belongs to another strategy or (unless `allow_refused`) the
    overfitting gate refused it; TradAIError when MLflow fails otherwise (store unreachable, misconfigured
    artifact location) — that is not "no tuned parameters" and must not be mistaken for it.
    """
    run = mlflow.get_run(run_id)
    name = strategy or run.data.tags.get(TAG_STRATEGY)
    if not name:
        raise NotFoundError(f"MLflow run {run_id} is not a hyperopt run", "name a run of experiment hyperopt")
    artifact = tuned_artifact_path(name)
    try:
        raw = mlflow.load_dict(run_id, artifact)
    except _mlflow_exceptions.MlflowException as exc:
        code = str(getattr(exc, "error_code", ""))
        if code in _MISSING_ARTIFACT_CODES:
            raise NotFoundError(
                f"MLflow run {run_id} holds no tuned parameters for {name} ({artifact})",
                "name the MLflow run id a hyperopt_study materialization shows (mlflow_run_id)",
            ) from exc
        raise TradAIError(
            f"could not read the tuned parameters {artifact} of MLflow run {run_id} from "
            f"{redact_uri(mlflow.tracking_uri)}: MLflow failed ({code or type(exc).__name__})",
            "check that the MLflow tracking server and the run's artifact store are reachable and "
            "configured (see the chained error), then re-run",
        ) from exc
    except ValueError as exc:  # the artifact is there but is not JSON
        raise ValidationError(
            f"MLflow run {run_id} has an unreadable {artifact}: {exc}",
            "re-run the hyperopt study to record the tuned parameters again",
        ) from exc
    try:
        tuned = TunedParameters.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            f"{artifact} of MLflow run {run_id} is not a tuned-parameters record "
            f"({exc.error_count()} problems, first: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']})",
            "re-run the hyperopt study to record the tuned parameters again",
        ) from exc
    if tuned.strategy != name:
        raise ValidationError(f"run {run_id} tuned {tuned.strategy}, not {name}", f"name a run of {name}")
    if not tuned.gate_passed and not allow_refused:
        raise ValidationError(
            f"the overfitting gate refused the tuned parameters of run {run_id}: {tuned.gate_summary}",
            "use parameters that passed the gate (tuned_parameters shows them), or pass allow_refused",
        )
    return tuned


def latest_tuned_run_id(instance: DagsterInstance, strategy: str) -> str | None:
    """MLflow run id of the latest `tuned_parameters/<strategy>` materialization (gate passed), if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=TUNED_KEY, asset_partitions=[strategy]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("mlflow_run_id")
    return None if value is None else str(value.value)


# -- the assets


def build_hyperopt_assets(settings: TradAISettings, folder: Path = STRATEGIES_DIR) -> list[AssetsDefinition]:
    """`hyperopt_study` (with its blocking `overfitting_gate`) and `tuned_parameters`, per strategy."""
    partitions = strategy_partitions(folder)
    exchange = settings.exchange_id
    tf = settings.timeframe

    @asset(
        key=STUDY_KEY,
        group_name=HYPEROPT_GROUP,
        partitions_def=partitions,
        deps=[AssetDep(ohlcv_key(pair), partition_mapping=AllPartitionMapping()) for pair in settings.pairs],
        check_specs=[
            AssetCheckSpec(
                GATE_CHECK,
                asset=STUDY_KEY,
                blocking=True,
                description="The best parameters' Deflated Sharpe Ratio, given every trial, reaches the "
                "threshold, and their out-of-sample performance did not collapse.",
            )
        ],
        description="Optuna study over the strategy's hyperoptable parameters, scored by Freqtrade backtests "
        "on an in-sample window; best parameters re-tested out-of-sample; everything in MLflow.",
        kinds={"optuna", "freqtrade", "mlflow"},
    )
    def hyperopt_study(
        context: AssetExecutionContext,
        config: HyperoptConfig,
        candle_store: ArcticDBResource,
        hyperopt: HyperoptResource,
        freqtrade: FreqtradeResource,
        mlflow: MLflowResource,
    ) -> MaterializeResult:
        name = context.partition_key
        report = validate_strategy(name, folder)
        report.raise_for_errors()
        assert report.config is not None and report.path is not None
        strategy_config = report.config
        windows = hyperopt_windows(settings.holdout_start, config.in_sample_days, config.oos_days)
        startup = _startup_candles(name, folder)
        data_start = plan_window(windows.in_sample_start, windows.oos_start, tf, startup).data_start
        candles, versions = candle_store.read_pairs(
            exchange, tf, strategy_config.pairs, data_start, pd.Timestamp(windows.oos_end, tz="UTC")
        )
        context.log.info(
            "study of %s: in-sample %s, out-of-sample %s, %d trials on %d workers",
            name,
            windows.in_sample_timerange,
            windows.oos_timerange,
            config.n_trials,
            config.workers,
        )
        # a model strategy's study and its confirmation trade one version, exported from here once
        with tempfile.TemporaryDirectory(prefix="tradai-model-") as exported:
            lineage, model = export_strategy_model(strategy_config, {}, mlflow, Path(exported))
            study = hyperopt.optimize(
                name,
                folder,
                candles,
                config.run(windows.in_sample_timerange),
                config.spec(),
                strategy_config=strategy_config,
                model=model,
            )
        pin = candle_store.pin_versions(  # the candle versions this study names stay readable
            f"tradai.hyperopt.{context.run.run_id}.{name}", versions, note=f"hyperopt study {name}"
        )
        best = study.best
        tuned_config = apply_values(
            strategy_config, best.buy_params, best.sell_params, best.roi, best.stoploss
        )
        # the confirmation backtest takes the one backtest path, on the candles the study read
        plan = plan_backtest(
            report,
            tuned_config,
            windows.oos_start,
            windows.oos_end,
            None,
            config,
            timeframe=tf,
            lineage=lineage,
        )
        oos_candles = {
            pair: frame.loc[pd.Timestamp(plan.window.data_start) :] for pair, frame in candles.items()
        }
        confirmation = execute(
            plan,
            exchange=exchange,
            timeframe=tf,
            candle_store=candle_store,
            freqtrade=freqtrade,
            mlflow=mlflow,
            pin=pin.name,
            candles=(oos_candles, versions),
        )
        oos = confirmation.result
        gate = overfitting_gate(
            study.dsr,
            config.dsr_threshold,
            best.sharpe,
            oos.metrics.sharpe,
            oos.metrics.trade_count,
            config.oos_rule(),
            study.dsr_problem,
            oos.metrics.undefined["sharpe"].reason if "sharpe" in oos.metrics.undefined else None,
        )
        (context.log.info if gate.passed else context.log.warning)("overfitting gate %s", gate.summary())
        digest = source_hash(report)
        figure = optimization_history_figure(
            study.trials, f"{study.study_name} ({study.trials_total} trials)"
        )
        tuned, run_id, experiment_id = _log_to_mlflow(
            mlflow,
            context.run.run_id,
            name,
            study,
            windows,
            confirmation,
            gate,
            strategy_config,
            digest,
            versions,
            figure,
        )
        plot = png_markdown(figure, "optimization history")
        m = oos.metrics
        metadata: dict[str, Any] = {
            "study": study.study_name,
            "storage": study.storage,
            "trials_this_run": study.trials_run,
            "trials_total": study.trials_total,
            "distinct_trials": study.distinct_trials,
            "trials_per_minute": round(study.trials_per_minute, 1),
            "indicators_once": study.indicators_once,
            "objective": study.spec.objective.value,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": MetadataValue.md(params_markdown(study.search_space, best)),
            "importances": MetadataValue.md(importances_markdown(study.importances)),
            "optimization_history": MetadataValue.md(plot),
            "in_sample": f"{windows.in_sample_timerange}: Sharpe {best.sharpe:.2f}, {best.trades} trades, "
            f"profit {best.profit_total * 100:.2f} %",
            "out_of_sample": f"{windows.oos_timerange}: Sharpe {m.display('sharpe')}, "
            f"{m.trade_count} trades, "
            f"profit {m.total_profit_pct:.2f} %, max drawdown {m.max_drawdown_ratio * 100:.2f} %",
            "oos_sharpe": m.sharpe if m.sharpe is not None else MetadataValue.text(m.display("sharpe")),
            "dsr": MetadataValue.float(study.dsr.dsr) if study.dsr else MetadataValue.text("n/a"),
            "dsr_threshold": config.dsr_threshold,
            "gate": gate.summary(),
            "tuned_version": tuned.version,
            "source_sha256": digest,
            "data_versions": MetadataValue.json(versions),
            "arcticdb_snapshot": pin.name,
            **prescreen_metadata(study),
            **mlflow.run_metadata(run_id, experiment_id),
        }
        check = AssetCheckResult(
            check_name=GATE_CHECK,
            passed=gate.passed,
            severity=AssetCheckSeverity.ERROR,
            description=gate.summary(),
            metadata={
                "dsr": MetadataValue.float(study.dsr.dsr) if study.dsr else MetadataValue.text("n/a"),
                "dsr_threshold": config.dsr_threshold,
                "n_trials": study.distinct_trials,
                "expected_max_sharpe_per_day": study.dsr.expected_max_sharpe if study.dsr else 0.0,
                "in_sample_sharpe": best.sharpe,
                "oos_sharpe": m.sharpe if m.sharpe is not None else MetadataValue.text(m.display("sharpe")),
                "oos_collapsed": gate.oos_collapsed,
                "mlflow_run_id": run_id,
            },
        )
        return MaterializeResult(metadata=metadata, check_results=[check], data_version=DataVersion(run_id))

    @asset(
        key=TUNED_KEY,
        group_name=HYPEROPT_GROUP,
        partitions_def=partitions,
        deps=[STUDY_KEY],
        description="The tuned-parameter version backtests may use (MLflow run id), only for parameters "
        "that passed the overfitting gate.",
        kinds={"mlflow"},
    )
    def tuned_parameters(context: AssetExecutionContext, mlflow: MLflowResource) -> MaterializeResult:
        name = context.partition_key
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=STUDY_KEY, asset_partitions=[name]), limit=1
        ).records
        if not records or records[0].asset_materialization is None:
            raise NotFoundError(
                f"no hyperopt_study of {name} yet", f"materialize hyperopt_study/{name} first"
            )
        run_id = str(records[0].asset_materialization.metadata["mlflow_run_id"].value)
        tuned = load_tuned_parameters(mlflow, run_id, name)  # refuses gate-refused parameters
        values = "\n".join(
            ["| space | parameter | value |", "|---|---|---|"]
            + [
                f"| {space} | {key} | {value} |"
                for space, group in tuned.values().items()
                for key, value in (group.items() if isinstance(group, dict) else [("stoploss", group)])
            ]
        )
        context.log.info("tuned parameters of %s: version %d (MLflow run %s)", name, tuned.version, run_id)
        return MaterializeResult(
            metadata={
                "version": tuned.version,
                "values": MetadataValue.md(values),
                "study": tuned.study,
                "trials": tuned.trials,
                "dsr": MetadataValue.float(tuned.dsr) if tuned.dsr is not None else MetadataValue.text("n/a"),
                "oos_sharpe": tuned.oos_sharpe,
                "use_in_backtests": MetadataValue.md(
                    f"run config of backtest_report: `tuned_params_run_id: {run_id}`"
                ),
                **mlflow.run_metadata(run_id),
            },
            data_version=DataVersion(run_id),
        )

    return [hyperopt_study, tuned_parameters]


def _log_to_mlflow(
    mlflow: MLflowResource,
    dagster_run_id: str,
    strategy: str,
    study: StudyReport,
    windows: HyperoptWindows,
    confirmation: ExecutedBacktest,
    gate: GateDecision,
    config: StrategyConfig,
    digest: str,
    versions: dict[str, str],
    figure: "plt.Figure",
) -> tuple[TunedParameters, str, str]:
    """One run in experiment `hyperopt`: the tuned parameters as `tuned/<Strategy>.json`, the study's
    trials, importances and history plot, the out-of-sample confirmation backtest in the one backtest layout
    (`backtest_runner.record`); returns (tuned, run id, experiment)."""
    best = study.best
    oos = confirmation.result
    version = _next_version(mlflow, strategy)
    with mlflow.start_run(
        MLFLOW_EXPERIMENT,
        f"{strategy}-v{version}",
        dagster_run_id=dagster_run_id,
        data_versions=versions,
        tags={
            TAG_STRATEGY: strategy,
            TAG_TUNED_VERSION: str(version),
            TAG_GATE: "passed" if gate.passed else "refused",
            "study": study.study_name,
            "source_sha256": digest,
        },
    ) as tracked:
        tuned = TunedParameters(
            strategy=strategy,
            version=version,
            buy_params=best.buy_params,
            sell_params=best.sell_params,
            roi=best.roi,
            stoploss=best.stoploss,
            objective=study.spec.objective.value,
            best_value=best.value,
            study=study.study_name,
            storage=study.storage,
            trials=study.trials_total,
            distinct_trials=study.distinct_trials,
            dsr=study.dsr.dsr if study.dsr else None,
            dsr_threshold=gate.dsr_threshold,
            gate_passed=gate.passed,
            gate_summary=gate.summary(),
            in_sample_timerange=windows.in_sample_timerange,
            oos_timerange=windows.oos_timerange,
            oos_sharpe=oos.metrics.sharpe,
            oos_profit_ratio=oos.metrics.total_profit_ratio,
            oos_trades=oos.metrics.trade_count,
            pairs=study.pairs,
            strategy_config_version=config.version,
            source_sha256=digest,
            mlflow_run_id=tracked.run_id,
            created_at=datetime.now(tz=UTC),
        )
        tracked.log_params(
            {
                "study": study.study_name,
                "storage": study.storage,
                "objective": study.spec.objective.value,
                "seed": study.spec.seed,
                "workers": study.spec.workers,
                "n_trials_run": study.trials_run,
                "min_trades": study.spec.min_trades,
                "spaces": ",".join(study.search_space.spaces),
                "in_sample": windows.in_sample_timerange,
                "out_of_sample": windows.oos_timerange,
                "pairs": ",".join(study.pairs),
                "dsr_threshold": gate.dsr_threshold,
                **{f"best.{key}": value for key, value in best.params.items()},
            }
        )
        metrics = {
            "trials_total": study.trials_total,
            "trials_run": study.trials_run,
            "distinct_trials": study.distinct_trials,
            "trials_per_minute": study.trials_per_minute,
            "best_value": best.value,
            "in_sample_sharpe": best.sharpe,
            "in_sample_trades": best.trades,
            "in_sample_profit_ratio": best.profit_total,
            **{f"oos_{k}": v for k in ("sharpe", "sortino") if (v := getattr(oos.metrics, k)) is not None},
            "oos_profit_ratio": oos.metrics.total_profit_ratio,
            "oos_trades": oos.metrics.trade_count,
            "oos_max_drawdown": oos.metrics.max_drawdown_ratio,
            "gate_passed": float(gate.passed),
            **{f"importance.{key}": value for key, value in study.importances.items()},
        }
        if study.dsr is not None:
            metrics.update(
                dsr=study.dsr.dsr,
                psr=study.dsr.psr,
                expected_max_sharpe_per_day=study.dsr.expected_max_sharpe,
                best_sharpe_per_day=study.dsr.sharpe,
            )
        tracked.log_metrics(metrics)
        tracked.set_tags({f"tradai.undefined.oos_{k}": v.reason for k, v in oos.metrics.undefined.items()})
        tracked.log_dict(tuned.model_dump(mode="json"), tuned_artifact_path(strategy))
        tracked.log_dataframe(trials_frame(study.trials), "study/trials.parquet")
        tracked.log_dict(study.importances, "study/importances.json")
        tracked.log_dict(study.search_space.model_dump(mode="json"), "study/search_space.json")
        tracked.log_dict(
            study.dsr.model_dump() if study.dsr else {"problem": study.dsr_problem}, "study/dsr.json"
        )
        tracked.log_figure(figure, "study/optimization_history.png")
        tracked.log_dict(gate.model_dump(mode="json"), "gate.json")
        record(tracked, confirmation)
        return tuned, tracked.run_id, tracked.experiment_id


# -- the demo's short study


def run_demo_study(
    settings: TradAISettings,
    resources: dict[str, Any],
    instance: DagsterInstance,
    strategy: str = "RsiMeanReversion",
    n_trials: int = 24,
    workers: int = 2,
    folder: Path = STRATEGIES_DIR,
    config: dict[str, Any] | None = None,
    loggers: dict[str, Any] | None = None,
    prescreen: bool = False,
) -> ExecuteInProcessResult:
    """A short study of one strategy (study, gate, and tuned parameters when the gate passes) in one run.

    `resources` must hold `candle_store`, `hyperopt`, `freqtrade` and `mlflow`; the candles of the
    in-sample and out-of-sample windows must be materialized. A refusing gate is an outcome, not a
    failure: the run then stops before `tuned_parameters`, and `summarize_demo_study` says why. `config`
    sets any other `HyperoptConfig` field (e.g. shorter windows); `loggers` is the run's logger config;
    `prescreen` explores with the compiled pre-screen and has Freqtrade confirm `n_trials` finalists.
    """
    run_config = {**(config or {}), "n_trials": n_trials, "workers": workers, "prescreen": prescreen}
    return materialize(
        build_hyperopt_assets(settings, folder),
        resources=resources,
        instance=instance,
        partition_key=strategy,
        run_config={"ops": {"hyperopt_study": {"config": run_config}}, "loggers": loggers or {}},
        raise_on_error=False,
    )


def summarize_demo_study(result: ExecuteInProcessResult) -> str:
    """One paragraph the demo prints about a `run_demo_study` run."""
    studies = result.asset_materializations_for_node("hyperopt_study")
    if not studies:
        return f"hyperopt study FAILED (see run {result.run_id} in the UI)"
    meta = {key: value.value for key, value in studies[0].metadata.items()}
    tuned = result.asset_materializations_for_node("tuned_parameters")
    outcome = (
        f"tuned parameters v{meta['tuned_version']} handed on (MLflow run {meta['mlflow_run_id']})"
        if tuned
        else "parameters not handed on"
    )
    dsr = meta["dsr"]
    dsr_text = f"{dsr:.3f}" if isinstance(dsr, float) else str(dsr)
    return (
        f"{meta['study']}: {meta['trials_this_run']} trials this run ({meta['trials_total']} in total, "
        f"{meta['trials_per_minute']} trials/min), {prescreen_sentence(meta)}"
        f"best {meta['objective']} {meta['best_value']:.2f} "
        f"in-sample; out-of-sample {meta['out_of_sample']}; DSR {dsr_text}; gate {meta['gate']} → {outcome}"
    )
