"""`FreqtradeWorkerResource`: what every resource that runs Freqtrade in child processes is configured with
— where its markets and workspaces are, and how its children start (`workers.launch`: forked from the one
pre-loaded Freqtrade worker, or fresh interpreters). Backtests (`FreqtradeResource`) and studies
(`HyperoptResource`) share it, and so share that worker."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from tradai_core.errors import ConfigurationError
from tradai_core.settings import DEFAULT_WORKER_MODE, PROJECT_ROOT, TradAISettings, WorkerMode
from tradai_resources.workers.launch import ChildLauncher

DEFAULT_EXCHANGE_INFO = PROJECT_ROOT / "demo_data" / "exchange" / "binance_spot_exchangeInfo.json"


def work_root(configured: str | None, default_name: str) -> Path:
    """The folder for temporary workspaces: `configured`, else `<data dir>/<default_name>` (created)."""
    root = Path(configured) if configured else TradAISettings().resolved_data_dir / default_name
    root.mkdir(parents=True, exist_ok=True)
    return root


def snapshot_path(configured: str | None, owner: str) -> Path:
    """The exchangeInfo snapshot that answers market requests offline: `configured`, else the bundled one."""
    path = Path(configured) if configured else DEFAULT_EXCHANGE_INFO
    if not path.is_file():
        raise ConfigurationError(
            f"exchangeInfo snapshot {path} does not exist",
            f"set {owner}.exchange_info_path to a saved GET /api/v3/exchangeInfo response",
        )
    return path


class FreqtradeWorkerResource(ConfigurableResource):
    """The configuration shared by resources whose work runs in Freqtrade child processes."""

    WORK_FOLDER: ClassVar[str] = "work"
    """The default workspace folder's name under the data folder."""

    exchange_info_path: str | None = Field(
        default=None,
        description="Binance GET /api/v3/exchangeInfo snapshot answering market requests; "
        "default: the one shipped in demo_data/exchange/.",
    )
    work_dir: str | None = Field(
        default=None,
        description="Folder for the temporary workspaces (each removed after its run); "
        "default: <TRADAI_HOME>/data/<backtests or hyperopt>.",
    )
    python_executable: str | None = Field(
        default=None, description="Interpreter for the child processes; default: the current one."
    )
    start_method: WorkerMode = Field(
        default=DEFAULT_WORKER_MODE,
        description="shared: fork each child (backtest, strategy check, study-worker) from one worker per "
        "user and checkout that imported Freqtrade once, shared by every process on the machine (Dagster "
        "step processes and runs skip its start-up); prefork: from such a worker of this process only; "
        "spawn: a fresh interpreter per child (pays the import time every time).",
    )
    shared_worker_folder: str | None = Field(
        default=None,
        description="start_method=shared: private folder (0700) for the shared worker's socket, lock and "
        "log; default: TRADAI_WORKER_DIR, else $XDG_RUNTIME_DIR/tradai, else <tmp>/tradai-<uid>.",
    )
    shared_worker_idle_seconds: float = Field(
        default=600.0, gt=0, description="start_method=shared: the shared worker stops after this long idle."
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Dagster sets the resource up for a step: start the worker now, so it loads Freqtrade while the
        step reads candles (a step that declares this resource is about to run Freqtrade)."""
        self.prestart()

    def prestart(self) -> None:
        """Start the worker in the background if it is not running. Never raises: if it cannot start,
        children say so in a warning and run in fresh interpreters."""
        self.launcher().prestart()

    def launcher(self) -> ChildLauncher:
        """How this resource's children start (`workers.launch`); the report's MLflow run is written by a
        child started the same way (`MLflowResource.write_run`)."""
        return ChildLauncher(
            python=self.python_executable or sys.executable,
            start_method=self.start_method,
            shared_folder=self.shared_worker_folder,
            shared_idle_seconds=self.shared_worker_idle_seconds,
        )

    def _work_root(self) -> Path:
        return work_root(self.work_dir, self.WORK_FOLDER)

    def _snapshot_path(self) -> Path:
        return snapshot_path(self.exchange_info_path, type(self).__name__)
