"""Loading the code location imports no heavy library: each is imported by the asset that uses it, when it
runs. The UI, the daemon, `dg launch` and every run process load the definitions, so each of these
(seconds apiece) would be paid by every one of them, whatever the run does (issue #14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "freqtrade",
    "mlflow",
    "lightgbm",
    "matplotlib",
    "optuna",
    "arcticdb",
    "ccxt",
    "scipy",
    "sklearn",
    "talib",
)
PROBE = """
import json, sys
import tradai.definitions
defs = tradai.definitions.defs
assert defs.resolve_asset_graph() is not None  # the definitions really load, assets and all
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


EXIT_PROBE = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))  # first registered: runs last
import tradai.definitions
print("frozen before exit:", gc.get_freeze_count())
"""


GC_PROBE = """
import gc
before = gc.get_threshold()
import tradai.definitions
print(list(before), list(gc.get_threshold()))
"""


def _run_fresh(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRADAI_")}
    env.update(TRADAI_HOME=str(home), TRADAI_HISTORY_START="2022-07-01", TRADAI_HISTORY_END="2022-10-12")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_loading_the_definitions_imports_no_heavy_library(tmp_path: Path) -> None:
    done = _run_fresh(PROBE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "dagster" in loaded and "tradai" in loaded
    assert loaded.isdisjoint(HEAVY), f"imported when the code location loads: {sorted(loaded & set(HEAVY))}"


def test_a_process_that_loaded_the_definitions_exits_with_its_heap_frozen(tmp_path: Path) -> None:
    """`dg launch` and run workers skip the teardown garbage collections that held them seconds after
    RUN_SUCCESS (tradai/process_exit.py); the heap is frozen only at exit, not while the process works."""
    done = _run_fresh(EXIT_PROBE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    before, at_exit = (int(line.rsplit(":", 1)[1]) for line in done.stdout.strip().splitlines()[-2:])
    assert before == 0
    assert at_exit > 100_000  # every object alive at exit (Dagster and the definitions alone: ~190,000)


def test_a_process_that_loaded_the_definitions_collects_young_objects_less_often(tmp_path: Path) -> None:
    """≈ 1,400 collections (1.5 CPU s) of one `dg launch` became ≈ 730 (0.75 s): tradai/process_exit.py."""
    from tradai.process_exit import COLLECTOR_THRESHOLDS

    done = _run_fresh(GC_PROBE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = json.loads(f"[{done.stdout.strip().splitlines()[-1].replace('] [', '], [')}]")
    assert before == [700, 10, 10] and after == list(COLLECTOR_THRESHOLDS)
