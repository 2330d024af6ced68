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


def test_loading_the_definitions_imports_no_heavy_library(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRADAI_")}
    env.update(TRADAI_HOME=str(tmp_path), TRADAI_HISTORY_START="2022-07-01", TRADAI_HISTORY_END="2022-10-12")
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "dagster" in loaded and "tradai" in loaded
    assert loaded.isdisjoint(HEAVY), f"imported when the code location loads: {sorted(loaded & set(HEAVY))}"
