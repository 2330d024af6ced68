"""False-alarm rate of the drift verdict on the demo candles (issue #15, part 5).

The demo's champion learns from [2020-10-12, 2022-06-14) (history 2020-10-12 → 2022-10-12 less the
120-day holdout). Its reference is each pair's feature distribution over that period, as the model asset
stores it. Fourteen-day windows *inside* that period cannot have drifted, so every moderate or severe
verdict on them is a false alarm. This scores 9 windows (2021-01 → 2022-05) × 6 pairs with the real
scoring code, with and without the autocorrelation-aware noise floor, and — as a check that the floor does
not blind the monitor — the same windows with every feature shifted by half a reference standard
deviation.

Run: `uv run python -m bench.drift_false_alarms`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from bench.common import DEMO_CANDLES
from tradai_core.drift_calibration import FalseAlarmReport, in_period_false_alarms, score_window
from tradai_core.features import compute_features

TRAIN_START = datetime(2020, 10, 12, tzinfo=UTC)
TRAIN_END = datetime(2022, 6, 14, tzinfo=UTC)
WINDOW_STARTS = tuple(
    datetime(year, month, 1, tzinfo=UTC)
    for year, month in (
        (2021, 1),
        (2021, 3),
        (2021, 5),
        (2021, 7),
        (2021, 9),
        (2021, 11),
        (2022, 1),
        (2022, 3),
        (2022, 5),
    )
)
SHIFT_SD = 0.5
"""Size of the synthetic shift, in reference standard deviations of each feature."""


def load_demo_features() -> dict[str, pd.DataFrame]:
    """Features of every demo pair over its whole history (`tradai_core.features`), indexed by UTC time."""
    features = {}
    for path in sorted(DEMO_CANDLES.glob("*-1h.parquet")):
        pair = path.name.removesuffix("-1h.parquet").replace("_", "/")
        features[pair] = compute_features(pd.read_parquet(path))
    return features


def shifted_alarm_rate(features: dict[str, pd.DataFrame], shift_sd: float = SHIFT_SD) -> float:
    """Share of in-period windows flagged (moderate or severe) once every feature is moved by `shift_sd`
    reference standard deviations: a drift of known size that the verdict must still see."""
    lo, hi = pd.Timestamp(TRAIN_START), pd.Timestamp(TRAIN_END)
    reference = {
        pair: frame.loc[(frame.index >= lo) & (frame.index < hi)] for pair, frame in features.items()
    }
    flagged = total = 0
    for pair, frame in sorted(features.items()):
        moved = frame + shift_sd * reference[pair].std()
        for start in WINDOW_STARTS:
            verdict = score_window(reference, moved, pair, start, 14)
            flagged += verdict.severity.value in ("moderate", "severe")
            total += 1
    return flagged / total


def _line(label: str, report: FalseAlarmReport) -> str:
    c = report.counts
    return (
        f"| {label:<38} | {report.n:>3} | {c['severe']:>6} | {c['moderate']:>8} | {c['none']:>4} | "
        f"{c['insufficient']:>12} | {report.alarm_rate:>6.1%} | {report.severe_rate:>6.1%} |"
    )


def main() -> None:
    """Print the verdict counts before/after and the detection rate of the synthetic shift."""
    features = load_demo_features()
    before = in_period_false_alarms(features, TRAIN_START, TRAIN_END, WINDOW_STARTS, autocorrelation=False)
    after = in_period_false_alarms(features, TRAIN_START, TRAIN_END, WINDOW_STARTS, autocorrelation=True)
    print(
        f"{len(features)} pairs × {len(WINDOW_STARTS)} windows of 14 days inside [{TRAIN_START:%Y-%m-%d}, "
        f"{TRAIN_END:%Y-%m-%d})"
    )
    print(f"| {'noise floor':<38} |   n | severe | moderate | none | insufficient | alarms | severe |")
    print("|---|---|---|---|---|---|---|---|")
    print(_line("independent rows (before)", before))
    print(_line("effective sample size (after)", after))
    print(f"windows shifted by {SHIFT_SD} reference SD, flagged: {shifted_alarm_rate(features):.1%}")


if __name__ == "__main__":
    main()
