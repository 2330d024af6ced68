"""The job a child process runs, as one model: what every Freqtrade child gets (the `freqtrade` argument
list, the market snapshot, where to write its result or its error), plus what a backtest or a study-worker
adds; or a strategy check (`StrategyCheckJob`: the validator, run where Freqtrade is loaded already). The
parent writes it as a JSON file (`write_job`); the child reads it, runs it, and writes its result
atomically or a short `error.json` (`run_job_file`). Each job file names its `kind`, and `JOB_ENTRIES` the
module whose `main(argv)` runs that kind — in a child forked from the zygote (`backtest_child.become_job`)
or as `python -m MODULE JOB.json`."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from tradai_core.hyperopt import Objective, SearchSpace
from tradai_core.prescreen import PrescreenPlan
from tradai_core.strategy_config import StrategyConfig
from tradai_core.urls import redact_uris_in

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


class BacktestJob(ChildJob):
    """One backtest (`backtest_child`)."""

    kind: Literal["backtest"] = "backtest"
    vectorized_tick_size: bool = True
    indicators_path: str | None = None
    """Where to write, as Feather, the indicator columns the strategy's `populate_indicators` added during
    this very backtest (for the report's charts: the Dagster process never runs the strategy again)."""


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


JOB_ENTRIES: Final[dict[str, str]] = {
    "backtest": "tradai_resources.workers.backtest_child",
    "hyperopt": "tradai_resources.workers.hyperopt_child",
    "strategy_check": "tradai_resources.workers.strategy_check_child",
}
"""Job kind → the module whose `main([job_path])` runs it (a job file without `kind` is a backtest)."""


def job_entry(job_path: str | Path) -> str:
    """The module that runs the job file at `job_path`, by the `kind` it names; ValueError for an unknown
    kind or a file that is no JSON object (the message names the kind, never the file's values)."""
    try:
        job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable job file ({type(exc).__name__})") from None
    kind = job.get("kind", "backtest") if isinstance(job, dict) else None
    if not isinstance(kind, str) or kind not in JOB_ENTRIES:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_ENTRIES)}")
    return JOB_ENTRIES[kind]


def run_job_path(job_path: str) -> int:
    """In a forked child: run the job file at `job_path` with the entry its kind names, as
    `python -m MODULE JOB` would; its exit code (`EXIT_BAD_JOB` for a file naming no known kind)."""
    try:
        module = importlib.import_module(job_entry(job_path))
    except ValueError as exc:
        sys.stderr.write(f"invalid job file {job_path}: {exc}\n")
        return EXIT_BAD_JOB
    sys.argv = [str(module.__file__), job_path]
    code: int = module.main([job_path])
    return code


JobT = TypeVar("JobT", bound=JobFile)


def write_job(job: ChildJob, path: Path) -> Path:
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
