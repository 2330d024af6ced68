"""CPU seconds of one `dg launch` of a backtest, and where they go (issue #14).

`uv run python -m bench.launch_cpu [--repeat N] [--strategy NAME] [--importtime FILE] [--profile FILE]`

Launches `dg launch --assets backtest_plan,backtest_report --partition NAME` exactly as `bench.user_path`
does (its lab: the 6 pairs × 120-day holdout ingested through the real market-data assets; bytecode cached,
`bench.common.child_env`), one at a time, and prints per launch: wall seconds, the CPU seconds of the `dg`
process (with every child it waited for) and of the shared Freqtrade worker (with its forked children), and
the run's phases from its own event log, counted from the spawn. CPU seconds hardly depend on the machine's
load, so they compare before/after on a busy machine where wall seconds do not.

The lab (candles, MLflow, Dagster instance) is kept in `--lab` (default under /tmp) so repeated calls skip
the ingest; the first launch after a start is an untimed warm-up (bytecode, MLflow's store, the worker).
`--importtime FILE` writes the launch's `python -X importtime` log and prints the heaviest top-level
imports; `--profile FILE` runs the launch under cProfile (pstats file); `--gc` adds to each row the CPU
seconds the `dg` process spent in garbage collections, their number and how many were full (through a
`sitecustomize` on the launch's path that times `gc.callbacks`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from bench.common import PROJECT_ROOT, candles_dir, run_checked
from bench.user_path import DG, Lab, worker_cpu

DEFAULT_LAB = Path("/tmp") / f"tradai-launch-cpu-{os.getuid()}"
GC_PROBE = """
import atexit, gc, os, time
_path = os.environ.get("TRADAI_BENCH_GC_REPORT")
if os.environ.get("TRADAI_BENCH_GC_THRESHOLD"):  # an experiment: thresholds from the process's start
    gc.set_threshold(*map(int, os.environ["TRADAI_BENCH_GC_THRESHOLD"].split(",")))
if _path:
    _started, _totals = [0.0], [0.0, 0, 0]

    def _timed(phase, info):
        if phase == "start":
            _started[0] = time.process_time()
        else:
            _totals[0] += time.process_time() - _started[0]
            _totals[1] += 1
            _totals[2] += info["generation"] == 2

    gc.callbacks.append(_timed)
    atexit.register(lambda: open(_path, "w").write(" ".join(map(str, _totals))))  # first in: runs last
"""


def lab_at(root: Path) -> Lab:
    """The lab in `root`, ingested once (a marker file says it was)."""
    lab = Lab(root, candles_dir())
    marker = root / ".ingested"
    if not marker.is_file():
        lab.ingest()
        marker.touch()
    return lab


def phases(lab: Lab, spawned: float) -> dict[str, float]:
    """Seconds from the spawn to each phase of the newest run (from the instance's event log)."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(lab.dagster_home)) as instance:
        [record] = instance.get_run_records(limit=1)
        logs = instance.all_logs(record.dagster_run.run_id)
    out: dict[str, float] = {}
    for entry in logs:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        step = event.step_key or ""
        if kind in (DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
            out[kind.value] = entry.timestamp - spawned
        elif kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
            out[f"{kind.value} {step}"] = entry.timestamp - spawned
    return out


def launch_once(
    lab: Lab, name: str, extra_env: dict[str, str], prefix: list[str], gc_probe: bool = False
) -> dict[str, object]:
    """One `dg launch`; its wall, `dg` CPU, worker CPU, phases, stderr (and its collections' CPU)."""
    argv = [*prefix, DG, "launch", "--assets", "backtest_plan,backtest_report", "--partition", name]
    env = {**lab.env, **extra_env}
    probe = lab.root / "gc-probe"  # one folder: the shared worker is keyed by the import path
    if gc_probe:
        probe.mkdir(exist_ok=True)
        site = probe / "sitecustomize.py"
        if not site.is_file() or site.read_text() != GC_PROBE:  # rewritten, the shared worker restarts
            site.write_text(GC_PROBE)
        (probe / "gc.txt").unlink(missing_ok=True)
        env["PYTHONPATH"] = os.pathsep.join((str(probe), env["PYTHONPATH"]))
        env["TRADAI_BENCH_GC_REPORT"] = str(probe / "gc.txt")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_before = worker_cpu(lab.worker_dir)
    spawned = time.time()
    started = time.perf_counter()
    done = run_checked(argv, PROJECT_ROOT, env, f"dg launch of {name}")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    dg_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    collected = (probe / "gc.txt").read_text().split() if gc_probe else []
    return {
        "gc": (float(collected[0]), int(collected[1]), int(collected[2])) if collected else None,
        "wall": wall,
        "dg_cpu": dg_cpu,
        "worker_cpu": worker_cpu(lab.worker_dir) - worker_before,
        "phases": phases(lab, spawned),
        "stderr": done.stderr,
    }


def heaviest_imports(log: str, top: int = 25) -> list[tuple[int, str]]:
    """The `top` heaviest top-level imports (cumulative µs) of a `-X importtime` log."""
    rows: list[tuple[int, str]] = []
    for line in log.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]  # one space, then two per nesting level
        if not name.startswith(" "):
            rows.append((int(parts[1]), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strategy", default="EmaAdxTrend")
    parser.add_argument("--lab", type=Path, default=DEFAULT_LAB)
    parser.add_argument("--importtime", type=Path)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--cold", action="store_true", help="stop the shared worker before each launch")
    parser.add_argument("--gc", action="store_true", help="time the dg process's garbage collections")
    parser.add_argument("--gc-threshold", help="with --gc: gc.set_threshold(A,B,C) at the process's start")
    args = parser.parse_args(argv)
    args.lab.mkdir(parents=True, exist_ok=True)
    lab = lab_at(args.lab)
    knobs = {"TRADAI_BENCH_GC_THRESHOLD": args.gc_threshold} if args.gc_threshold else {}
    launch_once(lab, args.strategy, knobs, [], gc_probe=args.gc)  # untimed warm-up
    load = [os.getloadavg()[0]]
    rows = []
    for _ in range(args.repeat):
        if args.cold:
            lab.stop_worker()
        rows.append(launch_once(lab, args.strategy, knobs, [], gc_probe=args.gc))
        load.append(os.getloadavg()[0])
        r = rows[-1]
        collected = r["gc"]
        print(
            f"wall {r['wall']:6.2f} s  dg CPU {r['dg_cpu']:6.2f} s  worker CPU {r['worker_cpu']:5.2f} s  "
            + (f"GC {collected[0]:.2f} s in {collected[1]} ({collected[2]} full)  " if collected else "")  # type: ignore[index]
            + "  ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())  # type: ignore[attr-defined]
        )
    for key in ("wall", "dg_cpu", "worker_cpu") if rows else ():
        values = [float(r[key]) for r in rows]  # type: ignore[arg-type]
        print(f"{key:>10}: median {statistics.median(values):.2f} min {min(values):.2f}")
    print(f"1-min load average during: {min(load):.1f}–{max(load):.1f} on {os.cpu_count()} cores")
    if args.importtime:
        r = launch_once(lab, args.strategy, {}, [sys.executable, "-X", "importtime"])
        args.importtime.write_text(str(r["stderr"]))
        for us, name in heaviest_imports(str(r["stderr"])):
            print(f"{us / 1e6:7.3f} s  {name}")
    if args.profile:
        launch_once(lab, args.strategy, {}, [sys.executable, "-m", "cProfile", "-o", str(args.profile)])
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
