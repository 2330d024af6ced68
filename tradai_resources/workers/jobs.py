"""The job a child process runs, as one model: what every Freqtrade child gets (the `freqtrade` argument
list, the market snapshot, where to write its result or its error), plus what a backtest or a study-worker
adds. The parent writes it as a JSON file (`write_job`); the child reads it, runs it, and writes its result
atomically or a short `error.json` (`run_job_file`)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from tradai_core.hyperopt import Objective, SearchSpace
from tradai_core.prescreen import PrescreenPlan
from tradai_core.urls import redact_uris_in

EXIT_OK: Final[int] = 0
EXIT_FAILED: Final[int] = 1
EXIT_BAD_JOB: Final[int] = 2


class ChildJob(BaseModel):
    """What the parent asks one Freqtrade child process to do (a JSON file in the job's workspace)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...]
    """The `freqtrade backtesting`/`hyperopt` argument list, parsed by Freqtrade's own parser."""
    strategy: str
    exchange: str
    exchange_info_path: str
    """The recorded exchangeInfo snapshot that answers market requests (no network)."""
    result_path: str
    error_path: str
    block_network: bool = True


class BacktestJob(ChildJob):
    """One backtest (`backtest_child`)."""

    vectorized_tick_size: bool = True
    indicators_path: str | None = None
    """Where to write, as Feather, the indicator columns the strategy's `populate_indicators` added during
    this very backtest (for the report's charts: the Dagster process never runs the strategy again)."""


class HyperoptJob(ChildJob):
    """One study-worker's share of a study's trials (`hyperopt_child`)."""

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


JobT = TypeVar("JobT", bound=ChildJob)


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
