"""Child process that writes one MLflow run: `python -m tradai_resources.workers.mlflow_run_child JOB`.

A report's run is described whole by the Dagster process (`mlflow_records.RunRecord`: params, metrics,
tags, artifact files) and written here, usually in a child forked from the Freqtrade worker, which imports
MLflow and its SQLAlchemy store while idle (`zygote_server.IDLE_MODULES`): the Dagster process never
imports MLflow for a backtest (≈ 2 s of CPU per launch, issue #14). No strategy code runs here. The job file
is a `jobs.MLflowRunJob`; the result is the `RecordedRun` as JSON. An error names no secret: the store's
URIs and the client's credentials are scrubbed from it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tradai_core.urls import scrub
from tradai_resources.mlflow_records import RecordedRun, offline_mlflow, open_client, write_run
from tradai_resources.workers.jobs import MLflowRunJob, run_job_file, write_atomic

offline_mlflow()  # imported first by the zygote, before MLflow itself


class MLflowRunError(RuntimeError):
    """Writing the run failed; the message is MLflow's, with every secret of the job scrubbed."""


def _write(job: MLflowRunJob) -> Callable[[IO[str]], Any]:
    """Write the job's run; the writer of its `RecordedRun` (JSON)."""
    os.environ.update(job.environment)
    offline_mlflow()  # the environment was replaced when this child was forked
    secrets = job.secrets()

    def created(run: RecordedRun) -> None:  # where the run is, should this process be killed mid-write
        write_atomic(Path(job.created_path), lambda handle: handle.write(run.model_dump_json()))

    try:
        client = open_client(job.tracking_uri, job.registry_uri)
        recorded = write_run(client, job.record, secrets=secrets, on_created=created)
    except Exception as exc:
        raise MLflowRunError(scrub(f"{type(exc).__name__}: {exc}", *secrets)) from None
    return lambda handle: handle.write(recorded.model_dump_json())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "python -m tradai_resources.workers.mlflow_run_child JOB.json"
    return run_job_file(argv, MLflowRunJob, _write, usage)


if __name__ == "__main__":
    sys.exit(main())
