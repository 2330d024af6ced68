"""Child process that validates one strategy: `python -m tradai_resources.workers.strategy_check_child JOB`.

The validator imports the strategy module, and with it Freqtrade's strategy API (ccxt, SciPy: seconds of
CPU). Run here — usually forked from the zygote, which has all of it loaded — the Dagster process that asks
never imports Freqtrade (issue #14), and a strategy module that kills its interpreter takes only this child
with it. The result is `strategies.validation.check_strategy`'s `StrategyCheck` as JSON; the job file is a
`jobs.StrategyCheckJob`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from strategies.validation import check_strategy
from tradai_resources.workers.jobs import StrategyCheckJob, run_job_file


def _check(job: StrategyCheckJob) -> Callable[[IO[str]], Any]:
    """Validate the job's strategy; the writer of its `StrategyCheck` (JSON)."""
    checked = check_strategy(job.strategy, Path(job.folder), config=job.config)
    return lambda handle: handle.write(checked.model_dump_json())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "python -m tradai_resources.workers.strategy_check_child JOB.json"
    return run_job_file(argv, StrategyCheckJob, _check, usage)


if __name__ == "__main__":
    sys.exit(main())
