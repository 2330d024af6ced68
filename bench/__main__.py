"""`make bench`: every benchmark, each printing ratios against its same-run baseline.

`python -m bench` runs the one-machine benchmarks, then the fault matrix; `python -m bench NAME [NAME ...]`
runs the named ones (e.g. `user_path`, the headline: a backtest launched by a person against the stock CLI).
`python -m bench stack` runs the production stack's (bench/stack.py: it starts and stops a stack of its
own, so it needs Debian's postgresql and redis-server, `deploy/stack.sh install`); it is not in the default
run. Figures that carry medians and minimums of interleaved repetitions are also merged into
`.tradai/bench/results.json` (name, ours, baseline, ratio, unit, commit, cores), whichever way they were run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def _modules() -> dict[str, Callable[[], object]]:
    from bench import backtest, fault_matrix, features, hyperopt, ingest, prescreen, stack, user_path

    return {
        "user_path": user_path.run,
        "ingest": ingest.run,
        "features": features.run,
        "backtest": backtest.run,
        "hyperopt": hyperopt.run,
        "prescreen": prescreen.run,
        "fault_matrix": fault_matrix.run,
        "stack": stack.run,
    }


DEFAULT_RUN = ("user_path", "ingest", "features", "backtest", "hyperopt", "prescreen", "fault_matrix")
"""What `python -m bench` runs: every one-machine benchmark (the stack's needs its own services)."""


def main(argv: list[str]) -> None:
    """Run the named benchmarks (all by default); exit 1 when the fault matrix lost or altered data."""
    logging.basicConfig(level=logging.WARNING)
    modules = _modules()
    unknown = [name for name in argv if name not in modules]
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(modules)}")
    failed = False
    for name in argv or DEFAULT_RUN:
        outcome = modules[name]()
        failed |= name == "fault_matrix" and bool(outcome)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
