"""A prompt exit for every process that loads the code location (`dg launch`, a run worker, the daemon),
and fewer garbage collections while it works.

After the last atexit handler, CPython tears its modules down with repeated full garbage collections over
every object still alive: with Dagster, pandas, Freqtrade's strategy API and MLflow loaded (≈ 5,000
modules) that took 2–7 s after RUN_SUCCESS before `dg launch` returned (issue #14, measured with `perf`:
`gc_collect_main`). Freezing the heap at exit moves every existing object out of the collector's sight, so
teardown only frees what reference counts free.

Nothing is lost: every atexit handler still runs (ours is registered when the definitions load, so the
handlers registered later — the shared Freqtrade worker's stop, for one — run before it, and those
registered earlier, such as `logging.shutdown`, after it, as before); a run's events, MLflow records and
ArcticDB writes are committed before RUN_SUCCESS; and Python never promised `__del__` for objects alive
at exit (only reference cycles among them are left to the OS, which reclaims the memory).

While it works, such a process allocates mostly long-lived objects (modules, classes, Dagster's and
MLflow's tables) and few reference cycles; CPython's default threshold (a young collection every 700 net
allocations, each tenth promoting into an older one) spent ≈ 1.5 CPU s in ≈ 1,400 collections of one
`dg launch` of a backtest (issue #14, `python -m bench.launch_cpu --gc`). From the definitions' load on,
young objects are collected every 50,000 net allocations (`COLLECTOR_THRESHOLDS`): ≈ 0.75 s in ≈ 730,
nearly all of them before the load. Unreachable cycles are still collected, only later.
"""

from __future__ import annotations

import atexit
import gc

_registered = False

COLLECTOR_THRESHOLDS = (50_000, 20, 20)
"""`gc.set_threshold` for a process that loads the code location (CPython's default: 700, 10, 10)."""


def tune_collector() -> None:
    """Collect young objects every 50,000 net allocations instead of 700 (see the module's doc)."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def freeze_heap_at_exit() -> None:
    """Register (once per process) `gc.freeze` to run at interpreter exit."""
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
