"""Fault matrix (issue #11 item 5): every way the exchange or the machine fails, against the real code path,
each judged by comparing the store with the recorded source, never by trusting the code's own claims.

Rows:
- every fault kind and variant of the replay server (`supported_faults()`), injected once (transient, on
  the first request: the market list) into a re-materialization of a good day already stored, and on every
  candle-page request (outlasting the client's retries) into the materialization of a new day: Dagster
  `materialize` of `ohlcv/BTC_USDT` → `ExchangeResource` (ccxt over HTTP to the loopback replay server) →
  `ArcticDBResource` on LMDB in a temp folder;
- a `kill -9` in the middle of a multi-day backfill (one Dagster run per day in a subprocess), then a re-run;
- two processes writing one symbol at once, and a `kill -9` in the middle of a big ArcticDB write, through
  the writer processes of tests/test_write_safety.py (`tests.arcticdb_writers`).

Outcomes:
- survived: the run succeeded and the store holds exactly the recorded candles (or differs only at
  candles a failing/warning check named, e.g. a 1000x spike the `outliers` check flagged);
- failed cleanly: the run failed with an error naming the pair and the store is exactly as before;
- failed unclearly: the run failed, lost and altered nothing, but its error does not name the pair, or it
  left the store changed (never the target either);
- lost data: the store lacks candles it had before, or candles the exchange served without an error;
- silently altered: stored candles differ from the source and no check said so.

`uv run python -m bench.fault_matrix` prints one row per case and the counts; it exits 1 when anything
was lost, silently altered or failed unclearly.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bench.common import PROJECT_ROOT, candles_dir
from tradai_assets.market_data import build_market_data_assets
from tradai_core.candles import OHLCV_COLUMNS, normalize_candles
from tradai_core.settings import TradAISettings, pair_slug
from tradai_replay import FAULT_KINDS, supported_faults
from tradai_replay.faults import KLINES_PATH, Fault
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource

PAIR = "BTC/USDT"
TF = "1h"
GOOD_FIRST, GOOD_LAST = "2021-05-01", "2021-05-02"  # stored before every fault case
REMATERIALIZED = "2021-05-02"  # a day already stored, fetched again under a fault
NEW_DAY = "2021-05-03"  # a day not stored yet, fetched under a fault
BACKFILL_FIRST, BACKFILL_LAST = "2021-05-01", "2021-05-10"
KILL_AFTER_DAYS = 3  # the backfill is killed during the run after this many days are done
PERSISTENT = 99  # requests a persistent fault applies to: more than the client's retries
OUTCOMES = ("survived", "failed cleanly", "failed unclearly", "lost data", "silently altered")
BAD_OUTCOMES = ("failed unclearly", "lost data", "silently altered")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    case: str
    outcome: str
    detail: str


def _settings() -> TradAISettings:
    return TradAISettings(pairs=(PAIR,), history_start=date(2021, 4, 1), history_end=date(2021, 6, 1))


def _exchange(base_url: str) -> ExchangeResource:
    return ExchangeResource(base_url=base_url, backoff_base_s=0.01, max_retries=2, timeout_ms=2000)


def _day(day: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day, tz="UTC")
    return start, start + pd.Timedelta(days=1)


def materialize_days(uri: str, base_url: str, first: str, last: str) -> ExecuteInProcessResult:
    """One Dagster run of `ohlcv/BTC_USDT` over the partitions `first..last` (a single-run range)."""
    return materialize(
        build_market_data_assets(_settings()),
        resources={"exchange": _exchange(base_url), "candle_store": ArcticDBResource(uri=uri)},
        instance=DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        raise_on_error=False,
    )


def stored(uri: str) -> pd.DataFrame | None:
    """Every candle of the pair in the store (None: the symbol does not exist)."""
    store = ArcticDBResource(uri=uri)
    if not store.open_library(store.library_name("binance", TF)).has_symbol(pair_slug(PAIR)):
        return None
    return store.read("binance", TF, PAIR).candles


def _failure_text(result: ExecuteInProcessResult) -> str:
    """The error each failed step raised (under Dagster's wrapper, without the causes it chains), one per
    line."""
    messages = []
    for event in result.all_events:
        if event.event_type != DagsterEventType.STEP_FAILURE:
            continue
        error = event.step_failure_data.error
        while error.cls_name and error.cls_name.startswith("Dagster") and error.cause is not None:
            error = error.cause
        messages.append(" ".join(error.message.split()))
    return "\n".join(messages)


def _flagged(result: ExecuteInProcessResult) -> dict[pd.Timestamp, list[str]]:
    """Timestamps named by a check that did not pass, with the checks naming them."""
    flagged: dict[pd.Timestamp, list[str]] = {}
    for event in result.all_events:
        if event.event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        data = event.asset_check_evaluation_data
        if data.passed:
            continue
        offending = data.metadata.get("offending_timestamps")
        for stamp in offending.value if offending is not None else []:
            flagged.setdefault(pd.Timestamp(stamp), []).append(data.check_name)
    return flagged


def _first_line(text: str, limit: int = 170) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def same(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    """Exactly equal: index, columns, dtypes and every value (NaN equal to NaN); index freq and pandas'
    internal block layout (which `DataFrame.equals` compares) do not matter."""
    try:
        pd.testing.assert_frame_equal(left, right, check_exact=True, check_freq=False)
    except AssertionError:
        return False
    return True


def _changed(expected: pd.DataFrame, actual: pd.DataFrame) -> list[pd.Timestamp]:
    """Timestamps in both frames whose candle differs (exact equality, NaN equal to NaN)."""
    common = expected.index.intersection(actual.index)
    left = expected.loc[common, list(OHLCV_COLUMNS)]
    right = actual.loc[common, list(OHLCV_COLUMNS)]
    differs = ~((left == right) | (left.isna() & right.isna())).all(axis=1)
    return list(common[differs.to_numpy()])


def classify(
    result_ok: bool,
    before: pd.DataFrame | None,
    after: pd.DataFrame | None,
    source: pd.DataFrame,
    window: tuple[pd.Timestamp, pd.Timestamp],
    error: str,
    flagged: dict[pd.Timestamp, list[str]],
    names: tuple[str, ...] = (PAIR,),
) -> tuple[str, str]:
    """Outcome and detail of one run, from the store before and after it and the recorded source; a
    failure is clean only when its error contains one of `names` (the pair, or words naming the fault)."""
    empty = source.iloc[:0]
    before = empty if before is None else before
    after = empty if after is None else after
    start, end = window
    served = source[(source.index >= start) & (source.index < end)]
    lost_before = before.index.difference(after.index)
    if len(lost_before):
        return "lost data", f"{len(lost_before)} candles stored before are gone (first {lost_before[0]})"
    outside = [t for t in _changed(before, after) if not (start <= t < end)]
    outside += [t for t in after.index.difference(before.index) if not (start <= t < end)]
    if outside:
        return "silently altered", f"{len(outside)} candles outside the window changed or appeared"
    if not result_ok:
        if not same(after, before):
            return "failed unclearly", "the run failed but changed the store"
        if not any(name in error for name in names):
            return (
                "failed unclearly",
                f"store unchanged; error names neither pair nor fault: {_first_line(error)}",
            )
        return "failed cleanly", f"store unchanged; {_first_line(error)}"
    inside = after[(after.index >= start) & (after.index < end)]
    missing = served.index.difference(inside.index)
    if len(missing):
        return "lost data", f"{len(missing)} served candles not stored (first {missing[0]})"
    extra = inside.index.difference(served.index)
    changed = sorted(set(_changed(served, inside)) | set(extra))
    if not changed:
        return "survived", f"{len(inside)} candles stored, equal to the recorded source"
    unflagged = [t for t in changed if t not in flagged]
    if unflagged:
        return "silently altered", f"{len(unflagged)} candles differ from the source, no check said so"
    named = sorted({name for t in changed for name in flagged[t]})
    first = changed[0]
    ratio = f" x{inside.loc[first, 'close'] / served.loc[first, 'close']:g}" if first in served.index else ""
    return "survived", (
        f"stored as sent ({len(changed)} candle(s){ratio} at {first:%Y-%m-%d %H:%M}); "
        f"{', '.join(named)} warned"
    )


# Words by which an error names an injected fault (ccxt's exception or the status the server answered).
FAULT_WORDS: dict[str, tuple[str, ...]] = {
    "latency": ("RequestTimeout",),
    "timeout": ("RequestTimeout",),
    "http_429": ("429",),
    "http_418": ("418",),
    "http_5xx": ("503", "-1001"),
    "malformed": (),  # a bad candle must be named with its pair, timestamp and rule
    "truncated": ("unreadable", "NetworkError"),
    "stale_page": ("stale", "repeated", "never arrived"),
}


def _fault_label(fault: Fault) -> str:
    return fault.kind if fault.variant is None else f"{fault.kind}/{fault.variant}"


def fault_cases(work: Path, server: ReplayServer, source: pd.DataFrame) -> list[Case]:
    """Every replay fault, transient on a re-materialization and persistent on a new day."""
    template = work / "good"
    good = materialize_days(f"lmdb://{template}", server.base_url, GOOD_FIRST, GOOD_LAST)
    good_window = (_day(GOOD_FIRST)[0], _day(GOOD_LAST)[1])
    good_stored = stored(f"lmdb://{template}")
    recorded = source[(source.index >= good_window[0]) & (source.index < good_window[1])]
    if not good.success or good_stored is None or not same(good_stored, recorded):
        raise RuntimeError(f"the good window did not materialize as recorded: {_failure_text(good)}")
    faults = supported_faults()
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    cases = []
    for n, fault in enumerate(faults):
        runs = (
            (REMATERIALIZED, 1, None, "re-run, once"),  # any path: the first request is the market list
            (NEW_DAY, PERSISTENT, KLINES_PATH, "new day, klines always"),  # the candle pages
        )
        for day, count, path, how in runs:
            folder = work / f"case-{n}-{day}"
            shutil.copytree(template, folder)
            uri = f"lmdb://{folder}"
            before = stored(uri)
            server.clear_faults()
            server.inject(fault.model_copy(update={"count": count, "path_prefix": path}))
            started = time.perf_counter()
            try:
                result = materialize_days(uri, server.base_url, day, day)
            finally:
                server.clear_faults()
            outcome, detail = classify(
                result.success,
                before,
                stored(uri),
                source,
                _day(day),
                _failure_text(result),
                _flagged(result),
                (PAIR, *FAULT_WORDS[fault.kind]),
            )
            label = f"{_fault_label(fault)} ({how})"
            cases.append(Case(label, outcome, f"{detail} [{time.perf_counter() - started:.1f} s]"))
            log.info("%s: %s", label, outcome)
            shutil.rmtree(folder, ignore_errors=True)
    return cases


def _python(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_line(process: subprocess.Popen[str], prefix: str, times: int, timeout: float) -> list[str]:
    """Lines the process printed until the `times`-th line starting with `prefix` (it must still run)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while sum(line.startswith(prefix) for line in lines) < times:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the process ended early: {process.communicate()[1][-2000:]}")
        lines.append(line.strip())
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {prefix!r} x{times} within {timeout:g} s")
    return lines


def _kill(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate(timeout=60)
    return out


def backfill_main(uri: str, base_url: str, first: str, last: str) -> None:
    """Subprocess body: one Dagster run per day `first..last`, printing `DONE <day>` after each."""
    for day in pd.date_range(first, last, freq="D"):
        key = f"{day:%Y-%m-%d}"
        print(f"START {key}", flush=True)
        result = materialize_days(uri, base_url, key, key)
        print(f"{'DONE' if result.success else 'FAILED'} {key}", flush=True)


def crash_mid_backfill(work: Path, server: ReplayServer, source: pd.DataFrame) -> Case:
    """`kill -9` a day-by-day backfill mid-way (during a run), over a good window stored before."""
    folder = work / "backfill"
    uri = f"lmdb://{folder}"
    if not materialize_days(uri, server.base_url, GOOD_FIRST, GOOD_LAST).success:
        raise RuntimeError("the good window did not materialize")
    before = stored(uri)
    assert before is not None
    process = _python(
        "-m", "bench.fault_matrix", "backfill", uri, server.base_url, BACKFILL_FIRST, BACKFILL_LAST
    )
    printed: list[str] = []
    try:
        printed += _wait_line(process, "DONE", KILL_AFTER_DAYS, timeout=600)
        printed += _wait_line(process, "START", 1, timeout=120)
        time.sleep(0.3)  # inside the next day's run: fetching or writing
    finally:
        printed += _kill(process).splitlines()
    done = [line.split()[1] for line in printed if line.startswith("DONE")]
    after = stored(uri)
    after = before.iloc[:0] if after is None else after
    lost = before.index.difference(after.index)
    if len(lost):
        return Case("kill -9 mid-backfill", "lost data", f"{len(lost)} candles stored before are gone")
    partial = []
    for day in pd.date_range(BACKFILL_FIRST, BACKFILL_LAST, freq="D", tz="UTC"):
        window = (day, day + pd.Timedelta(days=1))
        got = after[(after.index >= window[0]) & (after.index < window[1])]
        was = before[(before.index >= window[0]) & (before.index < window[1])]
        recorded = source[(source.index >= window[0]) & (source.index < window[1])]
        if not (same(got, was) or same(got, recorded)):
            partial.append(f"{day:%Y-%m-%d}")
    if partial:
        return Case(
            "kill -9 mid-backfill", "silently altered", f"days neither as before nor complete: {partial}"
        )
    rerun = materialize_days(uri, server.base_url, BACKFILL_FIRST, BACKFILL_LAST)
    window = (_day(BACKFILL_FIRST)[0], _day(BACKFILL_LAST)[1])
    outcome, detail = classify(
        rerun.success, after, stored(uri), source, window, _failure_text(rerun), _flagged(rerun)
    )
    if outcome != "survived":
        return Case("kill -9 mid-backfill, then re-run", outcome, detail)
    return Case(
        "kill -9 mid-backfill, then re-run",
        "survived",
        f"killed in day run {len(done) + 1}: {len(after) // 24} whole days stored "
        f"({len(before) // 24} before), none partial; re-run: {detail}",
    )


def concurrent_writers(work: Path) -> Case:
    """Two processes write their own days and one shared day into one symbol at the same moment."""
    from tests.arcticdb_writers import LIBRARY, OWN_DAYS, SHARED_DAY, SYMBOL, day_frame, own_day

    folder = work / "writers"
    folder.mkdir()
    uri = f"lmdb://{folder / 'arctic'}"
    go = folder / "go"
    writers = [_python("-m", "tests.arcticdb_writers", "windows", uri, str(k), str(go)) for k in (0, 1)]
    try:
        deadline = time.monotonic() + 300
        while not all((folder / f"go.ready{k}").exists() for k in (0, 1)):
            if time.monotonic() > deadline or any(w.poll() is not None for w in writers):
                raise RuntimeError("a writer did not get ready")
            time.sleep(0.01)
        go.touch()
        codes = [w.wait(timeout=600) for w in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                _kill(writer)
    if any(codes):
        errors = [w.communicate()[1][-300:] for w in writers]
        return Case("two writers, one symbol", "failed unclearly", f"a writer failed: {errors}")
    frame = ArcticDBResource(uri=uri).read_frame(LIBRARY, SYMBOL).frame
    lost = 0
    for k in (0, 1):
        for i in range(OWN_DAYS):
            day = own_day(k, i)
            if not same(frame.loc[day : day + pd.Timedelta("23h")], day_frame(day, float(k))):
                lost += 1
    shared = frame.loc[SHARED_DAY : SHARED_DAY + pd.Timedelta("23h")]
    mixed = len(shared) != 24 or shared["value"].nunique() != 1 or not frame.index.is_unique
    if lost:
        return Case("two writers, one symbol", "lost data", f"{lost} of {2 * OWN_DAYS} written days wrong")
    if mixed:
        return Case("two writers, one symbol", "silently altered", "the shared day mixes both writers")
    return Case(
        "two writers, one symbol",
        "survived",
        f"all {2 * OWN_DAYS} own days exact; shared day wholly writer {int(shared['value'].iloc[0])}'s",
    )


def crash_mid_write(work: Path) -> Case:
    """`kill -9` a writer while ArcticDB writes the segments of a million-row replace."""
    from tests.arcticdb_writers import BIG_ROWS, LIBRARY, SYMBOL

    folder = work / "big"
    uri = f"lmdb://{folder}"
    store = ArcticDBResource(uri=uri)
    index = pd.date_range("2021-01-01", periods=24, freq="h", tz="UTC")
    previous = pd.DataFrame({"value": [float(h) for h in range(24)]}, index=index)
    store.write_frame_window(LIBRARY, SYMBOL, previous, index[0], index[-1] + pd.Timedelta("1h"))
    data = folder / Path(*LIBRARY.split(".")) / "data.mdb"
    size = data.stat().st_size
    writer = _python("-m", "tests.arcticdb_writers", "big", uri)
    try:
        deadline = time.monotonic() + 300
        while data.stat().st_size < size + 8 * 2**20:  # some MB of segments written, the version not yet
            if writer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the writer never started writing: {writer.communicate()[1][-500:]}")
            time.sleep(0.002)
    finally:
        out = _kill(writer)
    if "DONE" in out:
        return Case("kill -9 mid-write", "failed unclearly", "the write finished before the kill")
    after = store.read_frame(LIBRARY, SYMBOL)
    if after.version != 0 or not same(after.frame, previous):
        return Case("kill -9 mid-write", "lost data", f"previous version not intact (now v{after.version})")
    rerun = _python("-m", "tests.arcticdb_writers", "big", uri)
    out, err = rerun.communicate(timeout=600)
    repaired = store.read_frame(LIBRARY, SYMBOL)
    if rerun.returncode or len(repaired.frame) != BIG_ROWS or not repaired.frame.index.is_unique:
        return Case(
            "kill -9 mid-write, then re-run", "failed unclearly", f"re-run did not repair: {err[-300:]}"
        )
    return Case(
        "kill -9 mid-write, then re-run",
        "survived",
        f"previous version intact after the kill; re-run wrote v{repaired.version}, {BIG_ROWS:,} rows",
    )


def counts_line(cases: list[Case]) -> str:
    counts = Counter(case.outcome for case in cases)
    shown = [f"{name} {counts[name]}" for name in OUTCOMES if name != "failed unclearly" or counts[name]]
    text = ", ".join(shown).replace("lost data", "lost")
    return f"fault matrix: {len(cases)} cases — {text}"


def print_table(cases: list[Case]) -> None:
    width = max(len(case.case) for case in cases)
    print(f"\n## Fault matrix ({PAIR} {TF}, replay server → ccxt → Dagster → ArcticDB/LMDB)")
    print(f"| {'case':<{width}} | {'outcome':<16} | detail")
    print(f"|{'-' * (width + 2)}|{'-' * 18}|{'-' * 40}")
    for case in cases:
        print(f"| {case.case:<{width}} | {case.outcome:<16} | {case.detail}")
    print(counts_line(cases))


def run_matrix() -> list[Case]:
    """Every case of the matrix, in order."""
    folder = candles_dir()
    source = normalize_candles(pd.read_parquet(folder / f"{PAIR.replace('/', '_')}-{TF}.parquet"))
    work = Path(tempfile.mkdtemp(prefix="tradai-fault-matrix-"))
    try:
        with ReplayServer(folder) as server:
            cases = fault_cases(work, server, source)
            cases.append(crash_mid_backfill(work, server, source))
        cases.append(concurrent_writers(work))
        cases.append(crash_mid_write(work))
        return cases
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run() -> int:
    """Run the matrix, print it; 1 when anything was lost, silently altered or failed unclearly."""
    cases = run_matrix()
    print_table(cases)
    return 1 if any(case.outcome in BAD_OUTCOMES for case in cases) else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["backfill"]:
        backfill_main(*argv[1:5])
        return 0
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dagster").setLevel(logging.ERROR)  # a failing run per case is expected here
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
