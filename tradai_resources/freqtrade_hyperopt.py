"""`HyperoptResource`: Optuna studies over real Freqtrade backtests, in parallel, persistent and resumable.

    report = HyperoptResource().optimize("RsiMeanReversion", STRATEGIES_DIR, candles, run, StudySpec())

How a study runs:
1. the strategy is validated and its search space read from the class (`tradai_core.hyperopt`);
2. the study is created in the Optuna storage, or loaded when it exists (a new run continues it). Its
   user attributes pin what makes trials comparable — search space, strategy source, config, window,
   costs, objective — and a study whose pins differ is refused rather than silently mixed;
3. one workspace is laid out (`tradai_resources.freqtrade_workspace`: candles as Freqtrade files, the
   strategy copied alone into a fresh folder, Freqtrade's config), shared read-only by the workers;
4. `workers` study-worker processes (`tradai_resources.workers.hyperopt_child`) start at once, each
   building Freqtrade's `Backtesting` once and then evaluating its share of the trials against the shared
   storage (see the worker's docstring); a failing worker stops the others. Like a backtest, each is
   forked from the pre-loaded Freqtrade worker (`start_method`, `workers.launch`: the same zygote the
   backtester forks from, so it starts in milliseconds instead of importing Freqtrade, ccxt, SciPy and
   pandas), or started as a fresh interpreter (`spawn`, and the fallback); the child gets the allowlisted
   environment only: the storage URL, which may carry a password, travels in its 0600 job file;
5. the finished trials are read back from the storage: best trial, Deflated Sharpe Ratio over every
   distinct trial, parameter importances;
6. the workspace is removed in every case.

Storage: `sqlite:///<TRADAI_HOME>/optuna.db` by default, or any SQLAlchemy URL (`storage_url`, e.g. from
`EnvVar("TRADAI_OPTUNA_STORAGE")` for a shared PostgreSQL) so that machines work on one study together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pandas as pd
from pydantic import Field

from strategies.validation import find_strategy_file, load_strategy_class, validate_strategy
from tradai_core.backtest_config import BacktestRunConfig, resolve_pairs
from tradai_core.errors import BacktestError, ConfigurationError, NotFoundError, ValidationError
from tradai_core.hyperopt import (
    SearchSpace,
    StudyReport,
    StudySpec,
    TrialRecord,
    best_trial,
    default_study_name,
    study_deflated_sharpe,
    study_fingerprint,
    worker_seed,
    worker_shares,
)
from tradai_core.prescreen import PrescreenPlan, PrescreenSummary, searches_for
from tradai_core.registry import ExportedModel
from tradai_core.settings import TradAISettings
from tradai_core.strategy_config import StrategyConfig
from tradai_replay.markets import load_exchange_info
from tradai_resources.freqtrade_backtester import backtest_exchange_info
from tradai_resources.freqtrade_workers import FreqtradeWorkerResource
from tradai_resources.freqtrade_workspace import BacktestWorkspace, prepare_workspace
from tradai_resources.hyperopt_space import search_space
from tradai_resources.mlflow_tracking import redact_uri
from tradai_resources.workers.backtest_child import SNAPSHOT_EXCHANGES
from tradai_resources.workers.hyperopt_child import make_storage
from tradai_resources.workers.jobs import HyperoptJob, job_error, write_job
from tradai_resources.workers.launch import (
    ChildLostError,
    ChildTimeoutError,
    InterpreterError,
    child_env,
)
from tradai_resources.workers.processes import log_tail
from tradai_resources.workers.protocol import ForkRequest

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 30
FINGERPRINT_ATTR = "tradai.fingerprint"
PINS_ATTR = "tradai.pins"
PRESCREEN_ATTR = "tradai.prescreen.unconfirmed_daily_sharpes"
"""Study attribute: per-day Sharpe of every set a pre-screen explored and Freqtrade never backtested."""
FREQTRADE_LOSS = "SharpeHyperOptLoss"


def default_storage_url(settings: TradAISettings | None = None) -> str:
    """`sqlite:///<TRADAI_HOME>/optuna.db`."""
    return f"sqlite:///{(settings or TradAISettings()).home / 'optuna.db'}"


def hyperopt_argv(
    workspace: BacktestWorkspace,
    strategy: str,
    timerange: str,
    spaces: tuple[str, ...],
    *,
    epochs: int,
    jobs: int,
    seed: int,
    min_trades: int,
    loss: str = FREQTRADE_LOSS,
) -> list[str]:
    """The `freqtrade hyperopt` argument list for a workspace: our workers parse exactly this list with
    Freqtrade's own parser, and the stock CLI runs it unchanged (which is how the benchmark compares)."""
    return [
        "hyperopt",
        "--config",
        str(workspace.config_path),
        "--strategy",
        strategy,
        "--strategy-path",
        str(workspace.strategy_dir),
        "--datadir",
        str(workspace.datadir),
        "--userdir",
        str(workspace.user_data_dir),
        "--timerange",
        timerange,
        "--data-format-ohlcv",
        "feather",
        "--hyperopt-loss",
        loss,
        "--spaces",
        *spaces,
        "--epochs",
        str(epochs),
        "--job-workers",
        str(jobs),
        "--random-state",
        str(max(seed, 1)),  # Freqtrade accepts positive seeds only
        "--min-trades",
        str(max(min_trades, 1)),
    ]


def trial_records(study: Any) -> list[TrialRecord]:
    """Every finished trial of an Optuna study that carries a TradAI record, by trial number."""
    from optuna.trial import TrialState

    records = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = trial.user_attrs.get("record")
        if record is None or trial.value is None:
            continue
        records.append(
            TrialRecord.model_validate(
                {**record, "number": trial.number, "value": trial.value, "params": trial.params}
            )
        )
    return sorted(records, key=lambda r: r.number)


class _Worker(NamedTuple):
    """One study-worker to launch: its index, its fork request, where it writes its summary or its error."""

    index: int
    request: ForkRequest
    result_path: Path
    error_path: Path


class HyperoptResource(FreqtradeWorkerResource):
    """Runs Optuna studies whose trials are Freqtrade backtests, one process per core, offline."""

    WORK_FOLDER: ClassVar[str] = "hyperopt"

    storage_url: str | None = Field(
        default=None,
        description="Optuna storage (SQLAlchemy URL); default sqlite:///<TRADAI_HOME>/optuna.db. Point "
        "several machines at one PostgreSQL URL (e.g. from an EnvVar) to share a study.",
    )
    timeout_seconds: float = Field(default=6 * 3600.0, gt=0, description="A study run longer is killed.")

    # -- plumbing

    def resolved_storage_url(self) -> str:
        """Storage URL in force (may hold credentials: never log it, use `redacted_storage_url`)."""
        url = self.storage_url or default_storage_url()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return url

    def redacted_storage_url(self) -> str:
        """Storage URL without user name or password, for logs and the UI."""
        return redact_uri(self.resolved_storage_url())

    # -- studies

    def load_study(self, study_name: str) -> Any:
        """The Optuna study `study_name` from the storage; NotFoundError when there is none."""
        import optuna

        try:
            return optuna.load_study(study_name=study_name, storage=make_storage(self.resolved_storage_url()))
        except KeyError as exc:
            raise NotFoundError(
                f"no Optuna study {study_name!r} in {self.redacted_storage_url()}",
                "run the hyperopt_study asset (or HyperoptResource.optimize) first",
            ) from exc

    def trials(self, study_name: str) -> list[TrialRecord]:
        """Every finished trial of a study."""
        return trial_records(self.load_study(study_name))

    def param_importances(self, study_name: str, seed: int = 0) -> dict[str, float]:
        """fANOVA parameter importances (Optuna's default evaluator, seeded); {} when the study has too
        few distinct trials to tell."""
        import optuna

        study = self.load_study(study_name)
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
            )
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            logger.info("no parameter importances for %s: %s", study_name, exc)
            return {}
        return {name: float(value) for name, value in importances.items()}

    def delete_study(self, study_name: str) -> None:
        """Remove a study and its trials from the storage."""
        import optuna

        optuna.delete_study(study_name=study_name, storage=make_storage(self.resolved_storage_url()))

    def _open_study(self, name: str, pins: dict[str, Any]) -> Any:
        """Create the study, or load it when it exists and its pins match; refuse it when they differ."""
        import optuna

        storage = make_storage(self.resolved_storage_url())
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "[I ...] A new study created" line
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
        fingerprint = study_fingerprint(pins)
        existing = study.user_attrs.get(FINGERPRINT_ATTR)
        if existing is None:
            if study.get_trials(deepcopy=False):
                raise ConfigurationError(
                    f"Optuna study {name!r} in {self.redacted_storage_url()} was not made by TradAI",
                    "give the study another name (study_name in the run config)",
                )
            study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
            study.set_user_attr(PINS_ATTR, json.loads(json.dumps(pins, default=str)))
        elif existing != fingerprint:
            before = study.user_attrs.get(PINS_ATTR, {})
            now = json.loads(json.dumps(pins, default=str))
            changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
            raise ConfigurationError(
                f"Optuna study {name!r} exists with different settings ({', '.join(changed)} changed); "
                "resuming it would mix trials that measured different things",
                "set study_name in the run config to start a new study, or restore the old settings",
            )
        return study

    def optimize(
        self,
        strategy_name: str,
        strategy_dir: Path,
        candles: Mapping[str, pd.DataFrame],
        run: BacktestRunConfig,
        spec: StudySpec,
        *,
        strategy_config: StrategyConfig | None = None,
        importance_seed: int | None = None,
        model: ExportedModel | None = None,
    ) -> StudyReport:
        """Run `spec.n_trials` more trials of the study of `strategy_name` on `run.timerange` (in-sample).

        `candles` cover the timerange plus the strategy's startup candles, as for a backtest. Raises
        `model` is the booster a model strategy trades (as for `FreqtradeResource.backtest`). Raises
        StrategyValidationError for an invalid strategy, ConfigurationError for an untunable strategy or
        a study whose settings changed, BacktestError when a worker fails or the run times out.
        """
        strategy_dir = Path(strategy_dir)
        self.launcher().prestart()  # the zygote loads Freqtrade while the study and workspace are set up
        report = validate_strategy(strategy_name, strategy_dir, config=strategy_config)
        report.raise_for_errors()
        config = strategy_config or report.config
        if config is None:  # pragma: no cover - validate_strategy reports a missing config
            raise ConfigurationError(f"strategy {strategy_name} has no config", "add its YAML")
        if config.exchange not in SNAPSHOT_EXCHANGES:
            raise ConfigurationError(
                f"strategy {strategy_name} trades on {config.exchange}; offline studies have market "
                f"snapshots for {', '.join(SNAPSHOT_EXCHANGES)} only",
                "set exchange: binance in the strategy's YAML",
            )
        strategy_file = find_strategy_file(strategy_name, strategy_dir)
        space = search_space(load_strategy_class(strategy_name, strategy_dir), spec.spaces, config.timeframe)
        pairs = resolve_pairs(config, run)
        name = spec.study_name or default_study_name(strategy_name, run.timerange, spec.objective)
        pins = {
            "strategy": strategy_name,
            "source_sha256": hashlib.sha256(strategy_file.read_bytes()).hexdigest(),
            "search_space": space.fingerprint(),
            "strategy_config": config.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "objective": spec.objective.value,
            "min_trades": spec.min_trades,
        }
        if model is not None:  # trials of another model version measured another strategy
            pins["model"] = {"name": model.name, "version": model.version}
        study = self._open_study(name, pins)
        trials_before = len(trial_records(study))
        snapshot = self._snapshot_path()
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix=f"ho-{strategy_name}-", dir=self._work_root()))
        try:
            workspace = prepare_workspace(root, strategy_file, config, run, candles, model=model)
            markets = backtest_exchange_info(load_exchange_info(snapshot), pairs, candles)
            if markets is not None:  # pairs the snapshot lacks get markets, as for a backtest
                snapshot = root / "exchange_info.json"
                snapshot.write_text(json.dumps(markets), encoding="utf-8")
            summaries = self._run_workers(workspace, config, run, spec, space, name, trials_before, snapshot)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        seconds = time.monotonic() - started
        loaded = self.load_study(name)
        records = trial_records(loaded)
        best = best_trial(records)
        prescreen = next((s["prescreen"] for s in summaries if s.get("prescreen")), None)
        summary = PrescreenSummary.model_validate(prescreen) if prescreen else None
        unconfirmed = [float(v) for v in loaded.user_attrs.get(PRESCREEN_ATTR, [])]
        if summary is not None and summary.unconfirmed_daily_sharpes:
            unconfirmed += [round(v, 8) for v in summary.unconfirmed_daily_sharpes]
            loaded.set_user_attr(PRESCREEN_ATTR, unconfirmed)  # a resumed study still counts them
        dsr, problem = None, None
        try:
            dsr = study_deflated_sharpe(records, best, unconfirmed)
        except ValidationError as exc:
            problem = exc.what
        static = sorted({p for s in summaries for p in s.get("static_parameters", [])})
        result = StudyReport(
            study_name=name,
            storage=self.redacted_storage_url(),
            spec=spec,
            search_space=space,
            timerange=run.timerange,
            pairs=pairs,
            trials_before=trials_before,
            trials=tuple(records),
            best=best,
            dsr=dsr,
            dsr_problem=problem,
            importances=self.param_importances(
                name, spec.seed if importance_seed is None else importance_seed
            ),
            indicators_once=all(s.get("indicators_once", False) for s in summaries),
            static_parameters=tuple(static),
            seconds=seconds,
            prescreen=summary,
            prescreened_total=len(unconfirmed),
        )
        logger.info(
            "study %s: %d trials this run (%d in total) in %.1f s (%.1f/min); best trial %d value %.4f",
            name,
            result.trials_run,
            result.trials_total,
            seconds,
            result.trials_per_minute,
            best.number,
            best.value,
        )
        return result

    def _run_workers(
        self,
        workspace: BacktestWorkspace,
        config: StrategyConfig,
        run: BacktestRunConfig,
        spec: StudySpec,
        space: SearchSpace,
        study_name: str,
        trials_before: int,
        snapshot: Path,
    ) -> list[dict[str, Any]]:
        """Start one study-worker per share of the trials, wait for all; stop all when one fails."""
        plan = None
        if spec.prescreen:  # every worker explores, then backtests its part of the sample and finalists
            exchange = workspace.root / "prescreen"
            exchange.mkdir()
            plan = PrescreenPlan(
                explore_trials=spec.prescreen_trials,
                top_k=spec.n_trials,
                agreement_sample=spec.agreement_sample,
                seed=worker_seed(spec.seed, 0, trials_before),
                searches=searches_for(spec.prescreen_trials, spec.workers),
                workers=spec.workers,
                exchange_dir=str(exchange),
            )
        shares = [spec.n_trials] * spec.workers if plan else worker_shares(spec.n_trials, spec.workers)
        env = child_env()
        argv = hyperopt_argv(
            workspace,
            config.name,
            run.timerange,
            space.spaces,
            epochs=spec.n_trials,
            jobs=len(shares),
            seed=spec.seed,
            min_trades=spec.min_trades,
        )
        logger.info(
            "study %s: %d trials on %d worker(s) over %s, storage %s",
            study_name,
            spec.n_trials,
            len(shares),
            run.timerange,
            self.redacted_storage_url(),
        )
        workers: list[_Worker] = []
        for index, share in enumerate(shares):
            folder = workspace.root / f"worker-{index}"
            folder.mkdir()
            job = HyperoptJob(
                argv=tuple(argv),
                strategy=config.name,
                exchange=config.exchange,
                exchange_info_path=str(snapshot),
                storage_url=self.resolved_storage_url(),
                study_name=study_name,
                n_trials=share,
                time_budget_seconds=spec.time_budget_seconds,
                sampler_seed=worker_seed(spec.seed, index, trials_before),
                startup_trials=spec.startup_trials,
                worker_index=index,
                objective=spec.objective,
                min_trades=spec.min_trades,
                search_space=space,
                prescreen=plan,
                result_path=str(folder / "result.json"),
                error_path=str(folder / "error.json"),
            )
            job_path = write_job(job, folder / "job.json")  # 0600: the storage URL may carry a password
            request = ForkRequest(
                job_path=str(job_path),
                cwd=str(folder),
                stdout_path=str(folder / "worker.stdout"),
                stderr_path=str(folder / "worker.stderr"),
                env=env,  # allowlisted: a study-worker never sees a secret (the URL is in the 0600 job)
            )
            workers.append(_Worker(index, request, folder / "result.json", folder / "error.json"))
        return self._launch(config.name, study_name, workers)

    def _launch(self, strategy: str, study_name: str, workers: list[_Worker]) -> list[dict[str, Any]]:
        """Run every study-worker at once, each a child process of its own forked from the zygote (else a
        fresh interpreter); return their summaries. The first that fails, or the time limit, stops all."""
        launcher = self.launcher()
        stop = threading.Event()
        summaries: dict[int, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="study-worker") as pool:
            running = {pool.submit(launcher.run, w.request, self.timeout_seconds, stop): w for w in workers}
            try:
                for future in as_completed(running):
                    worker = running[future]
                    try:
                        done = future.result()
                    except ChildTimeoutError:
                        raise BacktestError(
                            f"study {study_name} timed out after {self.timeout_seconds:g} s and was stopped; "
                            "finished trials are kept in the storage",
                            "run it again to continue, or raise HyperoptResource.timeout_seconds",
                        ) from None
                    except ChildLostError as exc:
                        raise BacktestError(
                            f"a hyperopt worker for {strategy} was lost: {exc}",
                            "run the study again (finished trials are kept); if it repeats, set "
                            "HyperoptResource.start_method='spawn'",
                        ) from exc
                    except InterpreterError as exc:
                        raise ConfigurationError(
                            f"cannot start the hyperopt worker's interpreter: {exc}",
                            "set HyperoptResource.python_executable to a Python with the project installed",
                        ) from exc
                    stderr_path = Path(worker.request.stderr_path)
                    if done.returncode != 0 or not worker.result_path.is_file():
                        raise self._worker_error(strategy, done.returncode, worker.error_path, stderr_path)
                    logger.info(
                        "study-worker %d used %.1f s of CPU, %.0f MB at most",
                        worker.index,
                        done.cpu_seconds,
                        done.max_rss_mb,
                    )
                    summaries[worker.index] = json.loads(worker.result_path.read_text(encoding="utf-8"))
            finally:
                stop.set()  # the others are killed (each with its process group) before the pool closes
        return [summaries[worker.index] for worker in workers]

    @staticmethod
    def _worker_error(strategy: str, code: int, error_path: Path, stderr_path: Path) -> BacktestError:
        reason = job_error(error_path)
        return BacktestError(
            f"a hyperopt worker for {strategy} failed (exit code {code}){reason}\n"
            f"--- last lines of its log ---\n{log_tail(stderr_path, STDERR_TAIL_LINES)}",
            "read the log above and fix the strategy or the data; finished trials are kept, so a new run "
            "continues the study",
        )
