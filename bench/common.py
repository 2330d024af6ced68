"""Timing helpers shared by the benchmarks: repeated runs, medians, a printed table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_CANDLES = PROJECT_ROOT.parent / "shared" / "data" / "binance_spot_1h"
DEMO_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"


def candles_dir() -> Path:
    """The 12-pair recorded history when `../shared` is beside the clone, else the bundled demo slice."""
    return SHARED_CANDLES if SHARED_CANDLES.is_dir() else DEMO_CANDLES


def median_seconds(
    fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None
) -> float:
    """Median wall time of `fn` over `repeats` runs, each after an untimed `setup`."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """Print `(case, ours_s, baseline_s, note)` rows with the ratio ours / baseline."""
    print(f"\n## {title}")
    print(f"| {'case':<58} | {'ours (s)':>9} | {'baseline (s)':>12} | {'ratio':>6} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 14}|{'-' * 8}|")
    for case, ours, base, note in rows:
        print(f"| {case:<58} | {ours:>9.3f} | {base:>12.3f} | {ours / base:>6.2f} |  {note}")
