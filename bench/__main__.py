"""`make bench`: every benchmark, each printing ratios against its same-run baseline."""

from __future__ import annotations

import logging

from bench import backtest, ingest


def main() -> None:
    """Run all benchmarks in turn."""
    logging.basicConfig(level=logging.WARNING)
    ingest.run()
    backtest.run()


if __name__ == "__main__":
    main()
