"""`make bench`: every benchmark, each printing ratios against its same-run baseline.

`python -m bench` runs the one-machine benchmarks, then the fault matrix; `python -m bench stack` runs
the production stack's (bench/stack.py: it starts and stops a stack of its own, so it needs Debian's
postgresql and redis-server, `deploy/stack.sh install`).
"""

from __future__ import annotations

import logging
import sys

from bench import backtest, fault_matrix, features, hyperopt, ingest


def main(argv: list[str] | None = None) -> None:
    """Run the stack's benchmark (`stack`), else all one-machine ones in turn, then the fault matrix
    (exit 1 when it lost or silently altered data)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    if argv == ["stack"]:
        from bench import stack

        stack.run()
        return
    if argv:
        raise SystemExit(f"usage: python -m bench [stack]  (not understood: {' '.join(argv)})")
    ingest.run()
    features.run()
    backtest.run()
    hyperopt.run()
    if fault_matrix.run():
        sys.exit(1)


if __name__ == "__main__":
    main()
