"""The job a child process runs, as one model: what every Freqtrade child gets (the `freqtrade` argument
list, the market snapshot, where to write its result or its error), plus what a backtest or a study-worker
adds. The parent writes it as a JSON file (`write_job`); the child reads it, runs it, and writes its result
atomically or a short `error.json` (`run_job_file`).

A job file names its `kind`, and `JOB_MODULES` maps each kind to the module that runs it: the one
`python -m MODULE JOB` starts, and whose `main([JOB])` a child forked from the zygote calls (`job_module`)."""

from __future__ import annotations

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


JobT = TypeVar("JobT", bound=ChildJob)

JOB_MODULES: Final[dict[str, str]] = {
    "backtest": "tradai_resources.workers.backtest_child",
    "hyperopt": "tradai_resources.workers.hyperopt_child",
}
"""Job kind → the module running it; each has `main(argv) -> exit code` and runs as `python -m MODULE JOB`."""
DEFAULT_KIND: Final[str] = "backtest"
"""The kind of a job file that names none (or cannot be read: the backtest worker then says what is wrong)."""


def job_module(path: Path) -> str:
    """The module that runs the job file `path`, by the `kind` it names (`JOB_MODULES`). A file that cannot
    be read or parsed, or names no kind, goes to the default kind's module, whose `main` reports it as an
    invalid job file; ValueError for a kind no module runs."""
    try:
        kind = json.loads(Path(path).read_text(encoding="utf-8")).get("kind", DEFAULT_KIND)
    except (OSError, ValueError, AttributeError):
        kind = DEFAULT_KIND
    if not isinstance(kind, str) or kind not in JOB_MODULES:
        shown = repr(kind[:40]) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise ValueError(f"job file {path} names the kind {shown}; known kinds: {', '.join(JOB_MODULES)}")
    return JOB_MODULES[kind]


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
