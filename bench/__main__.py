"""`make bench`: every benchmark, each printing ratios against its same-run baseline."""

from __future__ import annotations

import logging

from bench import backtest, features, hyperopt, ingest


def main() -> None:
    """Run all benchmarks in turn."""
    logging.basicConfig(level=logging.WARNING)
    ingest.run()
    features.run()
    backtest.run()
    hyperopt.run()


if __name__ == "__main__":
    main()
