"""Feature benchmarks (issue: features, walk-forward training, models).

1. Feature throughput: `compute_features` over every pair's whole history, against the same 29 features
   computed by raw TA-Lib calls on the same numpy arrays (no validation, no DataFrame). Target: overhead
   ≤ 1.3×.
2. Incremental update: recomputing and rewriting every day of the history, against the feature asset's
   work for one new day of every pair (read the day plus its warm-up from ArcticDB, compute, write the
   day's window). The ratio is how many times cheaper a daily refresh is than a rebuild: a refresh should
   cost a day, not the history.
3. The price of per-day anchoring: recomputing all history day by day (what the asset stores, independent
   of how runs are cut) against one `compute_features` pass over it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import talib

from bench.common import candles_dir, median_seconds, report
from tradai_assets.keys import features_library
from tradai_core.candles import normalize_candles
from tradai_core.features import WARMUP_BARS, compute_features, compute_window_features
from tradai_core.settings import pair_slug
from tradai_resources.arcticdb_store import ArcticDBResource

TF = "1h"
OHLCV = ("open", "high", "low", "close", "volume")
DAY = pd.Timedelta(days=1)


def _pairs(folder: Path) -> dict[str, pd.DataFrame]:
    files = sorted(folder.glob(f"*-{TF}.parquet"))
    return {f.name.split("-")[0].replace("_", "/"): normalize_candles(pd.read_parquet(f)) for f in files}


def raw_talib_features(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> dict:
    """The 29 features from raw TA-Lib calls (running-sum windows) on plain arrays: the baseline."""
    ln2x4 = 4.0 * math.log(2.0)
    e12, e26, e50 = talib.EMA(c, 12), talib.EMA(c, 26), talib.EMA(c, 50)
    ret1 = talib.LN(talib.ROCR(c, 1))
    k, d = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
    rv24 = talib.STDDEV(ret1, 24) * math.sqrt(24 / 23)
    rv168 = talib.STDDEV(ret1, 168) * math.sqrt(168 / 167)
    hl = talib.LN(h / lo)
    obv = talib.OBV(c, v)
    lv = np.log1p(v)
    return {
        "ema_ratio_12_26": e12 / e26 - 1,
        "close_ema_50": c / e50 - 1,
        "close_sma_200": c / talib.SMA(c, 200) - 1,
        "macd_hist": talib.MACD(c, 12, 26, 9)[2] / c,
        "adx_14": talib.ADX(h, lo, c, 14),
        "di_spread_14": talib.PLUS_DI(h, lo, c, 14) - talib.MINUS_DI(h, lo, c, 14),
        "aroon_osc_25": talib.AROONOSC(h, lo, 25),
        "linreg_slope_24": talib.LINEARREG_SLOPE(talib.LN(c), 24),
        "logret_1": ret1,
        "logret_6": talib.LN(talib.ROCR(c, 6)),
        "logret_24": talib.LN(talib.ROCR(c, 24)),
        "logret_168": talib.LN(talib.ROCR(c, 168)),
        "rsi_14": talib.RSI(c, 14),
        "stoch_k_14": k,
        "stoch_d_14": d,
        "willr_14": talib.WILLR(h, lo, c, 14),
        "cci_20": talib.CCI(h, lo, c, 20),
        "atr_pct_14": talib.ATR(h, lo, c, 14) / c,
        "bb_width_20": (upper - lower) / middle,
        "bb_pos_20": (c - lower) / (upper - lower),
        "rv_24": rv24,
        "rv_168": rv168,
        "rv_ratio_24_168": rv24 / rv168,
        "hl_range": hl,
        "parkinson_24": np.sqrt(talib.SMA(hl * hl, 24) / ln2x4),
        "obv_change_24": talib.MOM(obv, 24) / talib.SUM(v, 24),
        "volume_z_168": (lv - talib.SMA(lv, 168)) / talib.STDDEV(lv, 168),
        "volume_ratio_24_168": talib.SMA(v, 24) / talib.SMA(v, 168),
        "mfi_14": talib.MFI(h, lo, c, v, 14),
    }


def run() -> None:
    """Run the three feature benchmarks and print their ratios."""
    folder = candles_dir()
    source = _pairs(folder)
    rows_total = sum(len(c) for c in source.values())
    print(f"{len(source)} pairs, {rows_total:,} candles from {folder}")
    arrays = {
        pair: tuple(
            np.ascontiguousarray(c[col].to_numpy()) for col in ("open", "high", "low", "close", "volume")
        )
        for pair, c in source.items()
    }

    ours = median_seconds(lambda: [compute_features(c) for c in source.values()], 5)
    base = median_seconds(lambda: [raw_talib_features(*a) for a in arrays.values()], 5)
    throughput = [
        (
            f"features, {len(source)} pairs × all history ({rows_total / ours / 1e6:.2f} M rows/s)",
            ours,
            base,
            "vs raw TA-Lib calls on the same arrays; target ≤ 1.3",
        )
    ]

    work = Path(tempfile.mkdtemp(prefix="tradai-bench-features-"))
    store = ArcticDBResource(uri=f"lmdb://{work / 'arcticdb'}")
    library = features_library("binance", TF)
    spans = {}
    for pair, candles in source.items():
        first, end = candles.index[0].floor("D"), candles.index[-1].floor("D") + DAY
        store.write_window("binance", TF, pair, candles, first, end)
        spans[pair] = (first, end)

    def recompute_all() -> None:
        for pair, (first, end) in spans.items():
            candles = store.read("binance", TF, pair, None, end).candles
            store.write_frame_window(
                library, pair_slug(pair), compute_window_features(candles, first, end), first, end
            )

    def update_last_day() -> None:
        for pair, (_, end) in spans.items():
            day = end - DAY
            candles = store.read(
                "binance", TF, pair, day - 2 * WARMUP_BARS * pd.Timedelta(hours=1), end
            ).candles
            store.write_frame_window(
                library, pair_slug(pair), compute_window_features(candles, day, end), day, end
            )

    full = median_seconds(recompute_all, 1)
    one_day = median_seconds(update_last_day, 7)
    incremental = [
        (
            f"recompute all days × {len(source)} pairs (read, compute, write)",
            full,
            one_day,
            "vs update 1 new day: how much cheaper a refresh is",
        )
    ]

    anchored = median_seconds(lambda: [compute_window_features(c, *spans[p]) for p, c in source.items()], 1)
    one_pass = median_seconds(lambda: [compute_features(c) for c in source.values()], 3)
    anchoring = [
        (f"all history × {len(source)} pairs, day-anchored (stored)", anchored, one_pass, "vs one pass")
    ]
    report("Features", throughput + incremental + anchoring)
