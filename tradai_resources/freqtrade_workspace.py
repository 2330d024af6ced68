"""The folder one Freqtrade backtest runs in: candle files, the strategy alone, the config file, argv.

Lays out the files Freqtrade reads — candles as Freqtrade data files, the strategy module copied alone into
a fresh folder (so no stray `<Strategy>.json` parameter file from hyperopt is ever picked up), the
parameter file we write ourselves from the config's buy/sell params, and Freqtrade's config file — and
gives the exact `freqtrade backtesting` argument list for them. Our worker parses that very list with
Freqtrade's own `Arguments` class, and the stock CLI can run on the same workspace, which is how the two
are shown to agree (tests/test_freqtrade_cli_equivalence). The workspace is private (a `mkdtemp` folder)
and removed after each run by its owner, the backtester or the hyperopt resource.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tradai_core.backtest_config import (
    DATA_FORMAT,
    OHLCV_COLUMNS,
    BacktestRunConfig,
    build_freqtrade_config,
    resolve_pairs,
)
from tradai_core.errors import NotFoundError, ValidationError
from tradai_core.registry import ExportedModel
from tradai_core.settings import pair_slug
from tradai_core.strategy_config import StrategyConfig

FREQTRADE_USER_SUBDIRS: tuple[str, ...] = (
    "backtest_results",
    "data",
    "hyperopts",
    "hyperopt_results",
    "logs",
    "notebooks",
    "plot",
    "strategies",
    "freqaimodels",
)
"""The folders Freqtrade's `create_userdata_dir` makes in a user-data folder (pinned by a contract test).
Made up front, so parallel workers on one workspace never race to create them (a FileExistsError)."""


@dataclass(frozen=True)
class BacktestWorkspace:
    """The files one backtest reads and writes, all under one folder that is removed afterwards."""

    root: Path

    @property
    def datadir(self) -> Path:
        """Candle files, one per pair (`BTC_USDT-1h.feather`)."""
        return self.root / "data"

    @property
    def strategy_dir(self) -> Path:
        """A fresh folder holding the strategy module alone (plus our own parameter file)."""
        return self.root / "strategy"

    @property
    def user_data_dir(self) -> Path:
        """Freqtrade's user-data folder (export directory, logs); only its empty sub-folders at start."""
        return self.root / "user_data"

    @property
    def config_path(self) -> Path:
        """Freqtrade's config file."""
        return self.root / "config.json"

    @property
    def model_dir(self) -> Path:
        """The booster a model strategy trades, exported by the parent (`copy_model`)."""
        return self.root / "model"

    def backtest_argv(self, strategy: str, timerange: str, *, export: str = "none") -> list[str]:
        """The `freqtrade` argument list for this workspace (the stock CLI takes exactly these)."""
        return [
            "backtesting",
            "--config",
            str(self.config_path),
            "--strategy",
            strategy,
            "--strategy-path",
            str(self.strategy_dir),
            "--datadir",
            str(self.datadir),
            "--userdir",
            str(self.user_data_dir),
            "--timerange",
            timerange,
            "--data-format-ohlcv",
            DATA_FORMAT,
            "--cache",
            "none",
            "--export",
            export,
        ]


def check_candles(pair: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` as Freqtrade candle rows (`date` column + float OHLCV), or raise ValidationError.

    Accepts our store's shape (a tz-aware UTC DatetimeIndex named `date`) or a `date` column.
    """
    data = frame.reset_index() if "date" not in frame.columns else frame.reset_index(drop=True)
    missing = [c for c in ("date", *OHLCV_COLUMNS) if c not in data.columns]
    if missing:
        raise ValidationError(
            f"candles for {pair} lack columns {missing}",
            "pass frames indexed by a UTC DatetimeIndex named 'date' with open/high/low/close/volume",
        )
    dates = data["date"]
    if not isinstance(dates.dtype, pd.DatetimeTZDtype) or str(dates.dt.tz) != "UTC":
        raise ValidationError(
            f"candles for {pair} are not dated in UTC", "convert the index with tz_convert('UTC')"
        )
    if data.empty:
        raise ValidationError(f"candles for {pair} are empty", "load a period that has candles")
    if not dates.is_monotonic_increasing or dates.duplicated().any():
        raise ValidationError(
            f"candles for {pair} are not sorted or repeat a date", "sort and de-duplicate them"
        )
    out = data.loc[:, ["date", *OHLCV_COLUMNS]].copy()
    out["date"] = out["date"].astype("datetime64[ms, UTC]")
    for column in OHLCV_COLUMNS:
        out[column] = out[column].astype(np.float64)
    return out


def write_candles(
    candles: Mapping[str, pd.DataFrame], pairs: tuple[str, ...], datadir: Path, timeframe: str
) -> None:
    """Write each pair's candles as a Freqtrade data file (`<datadir>/BTC_USDT-1h.feather`).

    The layout is Freqtrade's FeatherDataHandler's (columns date, open, high, low, close, volume), so
    Freqtrade's own loader reads them, gap-filling and trimming them as it does for downloaded data. The
    files are left uncompressed: they live for one backtest in a temporary folder, and Freqtrade's own
    LZ4 level 9 made writing them ~9× slower (0.36 s vs 0.04 s for 12 pairs × 2 years) for no gain.
    """
    datadir.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        if pair not in candles:
            raise NotFoundError(
                f"no candles given for {pair}",
                f"load candles for every backtested pair; given: {sorted(candles)}",
            )
        rows = check_candles(pair, candles[pair])
        rows.to_feather(candle_file(datadir, pair, timeframe), compression="uncompressed")


def candle_file(datadir: Path, pair: str, timeframe: str) -> Path:
    """Where a pair's candle file is in a Freqtrade data folder (`<datadir>/BTC_USDT-1h.feather`)."""
    return datadir / f"{pair_slug(pair)}-{timeframe}.{DATA_FORMAT}"


def prepare_strategy_dir(strategy_file: Path, strategy: StrategyConfig, target_dir: Path) -> Path:
    """Copy the strategy module alone into the new folder `target_dir`, with our own parameter file.

    Copying the module alone means a `<Strategy>.json` left beside the source by an earlier hyperopt is
    never loaded. The buy/sell params of `strategy` are written as the copy's parameter file instead —
    Freqtrade's own mechanism, so our worker, the stock CLI and any other reader see the same values.
    Returns the copied module's path.
    """
    target_dir.mkdir(parents=True)
    target = target_dir / strategy_file.name
    shutil.copyfile(strategy_file, target)
    if strategy.buy_params or strategy.sell_params:
        target.with_suffix(".json").write_text(json.dumps(strategy.hyperopt_params_file(), indent=2))
    return target


def prepare_workspace(
    root: Path,
    strategy_file: Path,
    strategy: StrategyConfig,
    run: BacktestRunConfig,
    candles: Mapping[str, pd.DataFrame],
    *,
    model: ExportedModel | None = None,
) -> BacktestWorkspace:
    """Lay out everything one backtest reads under `root` (which must exist and be empty): candle files,
    the strategy folder (`prepare_strategy_dir`), a user-data folder with Freqtrade's empty sub-folders,
    for a model strategy the booster it trades (`model`, copied into the workspace: `copy_model`), and
    Freqtrade's config file (naming that copy, see `build_freqtrade_config`)."""
    workspace = BacktestWorkspace(root)
    pairs = resolve_pairs(strategy, run)
    write_candles(candles, pairs, workspace.datadir, strategy.timeframe)
    prepare_strategy_dir(strategy_file, strategy, workspace.strategy_dir)
    workspace.user_data_dir.mkdir()
    for name in FREQTRADE_USER_SUBDIRS:
        (workspace.user_data_dir / name).mkdir()
    if model is not None:
        model = copy_model(model, workspace.model_dir)
    config = build_freqtrade_config(strategy, run, model=model)
    workspace.config_path.write_text(json.dumps(config, indent=2))
    return workspace


def copy_model(model: ExportedModel, folder: Path) -> ExportedModel:
    """Copy an exported booster into `folder` (created), checking its digest; the copy. ValidationError
    when the file is missing or is not the file exported (altered, cut short): nothing is traded then."""
    try:
        data = model.path.read_bytes()
    except OSError as exc:
        raise ValidationError(
            f"the exported model file of {model.name} v{model.version} cannot be read: {exc}",
            "export the model version again (run the backtest again)",
        ) from exc
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ValidationError(
            f"the exported model file of {model.name} v{model.version} ({model.path}) is not the file "
            "that was exported (its SHA-256 differs)",
            "export the model version again (run the backtest again)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{model.name}-v{model.version}.txt"
    target.write_bytes(data)
    return model.moved_to(target)
