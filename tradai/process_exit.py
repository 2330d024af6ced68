"""A prompt exit for every process that loads the code location (`dg launch`, a run worker, the daemon).

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
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def freeze_heap_at_exit() -> None:
    """Register (once per process) `gc.freeze` to run at interpreter exit."""
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
