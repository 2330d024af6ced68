"""The job a child process runs, as one model: what every Freqtrade child gets (the `freqtrade` argument
list, the market snapshot, where to write its result or its error), plus what a backtest or a study-worker
adds; or a strategy check (`StrategyCheckJob`: the validator, run where Freqtrade is loaded already). The
parent writes it as a JSON file (`write_job`); the child reads it, runs it, and writes its result
atomically or a short `error.json` (`run_job_file`). Each job file names its `kind`, and `JOB_MODULES` the
module whose `main([JOB])` runs that kind — in a child forked from the zygote (`run_job_path`, called by
`backtest_child.become_job`) or as `python -m MODULE JOB` (`job_module`)."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from tradai_core.hyperopt import Objective, SearchSpace
from tradai_core.prescreen import PrescreenPlan
from tradai_core.strategy_config import StrategyConfig
from tradai_core.urls import redact_uris_in
from tradai_resources.mlflow_records import RunRecord

EXIT_OK: Final[int] = 0
EXIT_FAILED: Final[int] = 1
EXIT_BAD_JOB: Final[int] = 2


class JobFile(BaseModel):
    """What every job file holds: where the child writes its result, or its error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result_path: str
    error_path: str


class ChildJob(JobFile):
    """What the parent asks one Freqtrade child process to do (a JSON file in the job's workspace)."""

    argv: tuple[str, ...]
    """The `freqtrade backtesting`/`hyperopt` argument list, parsed by Freqtrade's own parser."""
    strategy: str
    exchange: str
    exchange_info_path: str
    """The recorded exchangeInfo snapshot that answers market requests (no network)."""
    block_network: bool = True


class ChartJob(BaseModel):
    """The report's charts of a backtest, drawn in its child from the result, the candle files it was given
    and the indicators its strategy computed (matplotlib is loaded in the zygote, not in Dagster)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    """Where to write the drawn charts (`BacktestCharts` as JSON); not written if drawing failed."""
    candle_files: dict[str, str]
    """Per pair, in the report's order, the Feather candle file the backtest read."""
    trading_start: datetime
    equity_title: str


class BacktestJob(ChildJob):
    """One backtest (`backtest_child`)."""

    kind: Literal["backtest"] = "backtest"
    vectorized_tick_size: bool = True
    indicators_path: str | None = None
    """Where to write, as Feather, the indicator columns the strategy's `populate_indicators` added during
    this very backtest (for the report's charts: the Dagster process never runs the strategy again)."""
    charts: ChartJob | None = None
    """Draw the report's charts in the child after the backtest, before its result file is written
    (`tradai_core.backtest_charts`)."""


class HyperoptJob(ChildJob):
    """One study-worker's share of a study's trials (`hyperopt_child`)."""

    kind: Literal["hyperopt"] = "hyperopt"

    storage_url: str
    study_name: str
    n_trials: int
    time_budget_seconds: float | None = None
    sampler_seed: int
    startup_trials: int = 10
    worker_index: int = 0
    objective: Objective
    min_trades: int
    search_space: SearchSpace
    prescreen: PrescreenPlan | None = None
    """Explore with the compiled pre-screen and backtest only a sample and the finalists (None: every
    trial is a Freqtrade backtest)."""


class StrategyCheckJob(JobFile):
    """Validate one strategy (`strategy_check_child`): `strategies.validation.check_strategy`, run in a
    child that has Freqtrade loaded, so the Dagster process never imports it (issue #14)."""

    kind: Literal["strategy_check"] = "strategy_check"
    strategy: str
    folder: str
    config: StrategyConfig | None = None
    """The config to check the class against; None: the YAML beside the module."""


MLFLOW_RUN_KIND: Final[str] = "mlflow_run"


class MLflowRunJob(JobFile):
    """Write one MLflow run (`mlflow_run_child`): a report's run, described whole in the parent. The child
    runs no strategy code; the store's URIs and the MLflow client's settings and credentials reach it only
    in this file, readable by its user alone (`write_job`), never in its environment."""

    kind: Literal["mlflow_run"] = "mlflow_run"
    created_path: str
    """Where the child writes the run's id once the run exists (`RecordedRun` as JSON): if the child is
    killed before it ends the run, the parent ends it."""
    tracking_uri: str
    registry_uri: str
    environment: dict[str, str] = {}
    """The parent's MLflow client settings (`env.mlflow_client_environment`), set before MLflow is used."""
    record: RunRecord

    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error: the store URIs, every client setting named like a credential,
        and any other long one (short settings such as `INFO` or `default` would garble the message)."""
        settings = (
            value
            for name, value in self.environment.items()
            if value and (_CREDENTIAL_NAME.search(name) or len(value) >= _LONG_SETTING)
        )
        return (self.tracking_uri, self.registry_uri, *settings)


_CREDENTIAL_NAME: Final = re.compile(
    r"PASSWORD|SECRET|TOKEN|KEY|SESSION|CREDENTIAL|USER|AUTH|CONNECTION", re.I
)
_LONG_SETTING: Final[int] = 8


JOB_MODULES: Final[dict[str, str]] = {
    "backtest": "tradai_resources.workers.backtest_child",
    "hyperopt": "tradai_resources.workers.hyperopt_child",
    "strategy_check": "tradai_resources.workers.strategy_check_child",
    MLFLOW_RUN_KIND: "tradai_resources.workers.mlflow_run_child",
}
"""Job kind → the module running it; each has `main(argv) -> exit code` and runs as `python -m MODULE JOB`."""
KIND_PRELOADS: Final[dict[str, tuple[str, ...]]] = {
    "hyperopt": (
        "sqlalchemy.dialects.sqlite",
        "optuna.storages",
        "optuna.samplers",
        "freqtrade.data.converter",
        "freqtrade.optimize.hyperopt.hyperopt_auto",
        "freqtrade.optimize.hyperopt_tools",
        "freqtrade.util.dry_run_wallet",
        "tradai_resources.workers.hyperopt_child",
        "tradai_core.prescreen_kernel",
    ),
    MLFLOW_RUN_KIND: (
        "tradai_resources.workers.mlflow_run_child",  # first: it turns MLflow's telemetry off
        "sqlalchemy.orm",
        "alembic",
        "mlflow",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
    ),
}
"""What the zygote imports, once, before it forks the first job of a kind, beyond what it preloads at start
(`backtest_child.PRELOAD_MODULES`: backtests and strategy checks). A study-worker's Optuna, Freqtrade's
hyperopt helpers and the pre-screen's Numba kernel (≈ 3 s of LLVM) would otherwise delay every zygote's
start — and so the first backtest of a launch — for studies that may never come. MLflow's (≈ 2 s) is
usually imported earlier, while the zygote is idle (`zygote_server.IDLE_MODULES`)."""
DEFAULT_KIND: Final[str] = "backtest"
"""The kind of a job file that names none (or cannot be read: the backtest worker then says what is wrong)."""


def job_kind(path: str | Path) -> str:
    """The kind the job file `path` names (`JOB_MODULES`). A file that cannot be read or parsed, or names no
    kind, is of the default kind, whose module's `main` reports it as an invalid job file; ValueError for a
    kind no module runs (the message never quotes the file's other values)."""
    try:
        text = Path(path).read_bytes()
    except OSError:
        return DEFAULT_KIND
    return kind_named(text, str(path))


def kind_named(text: bytes, where: str = "the job file") -> str:
    """The kind the job file's contents `text` name (see `job_kind`)."""
    try:
        kind = json.loads(text).get("kind", DEFAULT_KIND)
    except (ValueError, AttributeError):
        kind = DEFAULT_KIND
    if not isinstance(kind, str) or kind not in JOB_MODULES:
        shown = repr(kind[:40]) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise ValueError(f"job file {where} names the kind {shown}; known kinds: {', '.join(JOB_MODULES)}")
    return kind


def job_module(path: str | Path) -> str:
    """The module that runs the job file `path`, by the kind it names (`job_kind`)."""
    return JOB_MODULES[job_kind(path)]


def run_job_path(job_path: str) -> int:
    """In a forked child: run the job file at `job_path` with the module its kind names, as
    `python -m MODULE JOB` would; its exit code (`EXIT_BAD_JOB` for a file naming no known kind)."""
    try:
        module = importlib.import_module(job_module(job_path))
    except ValueError as exc:
        sys.stderr.write(f"invalid job file {job_path}: {exc}\n")
        return EXIT_BAD_JOB
    sys.argv = [str(module.__file__), job_path]
    code: int = module.main([job_path])
    return code


JobT = TypeVar("JobT", bound=JobFile)


def write_job(job: JobFile, path: Path) -> Path:
    """Write `job` to `path`, readable by this user only (a study's storage URL may carry a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(job.model_dump_json(indent=2))
    return path


def write_atomic(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """Write `path` through `write` under a temporary name, then rename: never a half-written file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        write(handle)
    os.replace(partial, path)


def job_error(path: str | Path) -> str:
    """`": TYPE: message"` of the error a child wrote to its job's error path (`run_job_file`), or "" if it
    wrote none: for the parent's message about a failed child."""
    try:
        error = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return f": {error.get('type')}: {error.get('message')}"


def job_file_problem(exc: Exception) -> str:
    """Why a job file was refused, without any of its values: pydantic's message quotes the input (the
    whole job when a field is missing, storage URL and its password included), so only the locations and
    messages are kept, and any URI left in them is redacted."""
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or '(file)'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        )
        return redact_uris_in(f"{exc.error_count()} problem(s): {problems}")
    return redact_uris_in(f"{type(exc).__name__}: {exc}")


def run_job_file(
    argv: list[str], job_type: type[JobT], run: Callable[[JobT], Callable[[IO[str]], Any]], usage: str
) -> int:
    """A child's entry point: read the job file named by the single argument, `run` it, and write what the
    writer `run` returns to the job's result path; return the process exit code.

    A bad argument list or job file exits `EXIT_BAD_JOB`; a failing run writes `{"type", "message"}` to the
    job's error path, prints the traceback to stderr, and exits `EXIT_FAILED`.
    """
    if len(argv) != 1:
        sys.stderr.write(f"usage: {usage}\n")
        return EXIT_BAD_JOB
    try:
        job = job_type.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    except Exception as exc:
        sys.stderr.write(f"invalid job file {argv[0]}: {job_file_problem(exc)}\n")
        return EXIT_BAD_JOB
    try:
        write_atomic(Path(job.result_path), run(job))
    except BaseException as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
        write_atomic(Path(job.error_path), lambda handle: json.dump(error, handle))
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
