"""`make bench`: every benchmark, each printing ratios against its same-run baseline."""

from __future__ import annotations

import logging
import sys

from bench import backtest, fault_matrix, features, hyperopt, ingest


def main() -> None:
    """Run all benchmarks in turn, then the fault matrix (exit 1 when it lost or silently altered data)."""
    logging.basicConfig(level=logging.WARNING)
    ingest.run()
    features.run()
    backtest.run()
    hyperopt.run()
    if fault_matrix.run():
        sys.exit(1)


if __name__ == "__main__":
    main()
