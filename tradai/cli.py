"""The `tradai` command line: `tradai strategy new|validate|list`, `tradai workers stop`.

    tradai strategy new MyBreakout --category breakout --timeframe 1h
    tradai strategy validate                # every strategy in strategies/
    tradai strategy validate RsiMeanReversion EmaAdxTrend
    tradai strategy list
    tradai workers stop                     # the shared Freqtrade workers (running backtests finish)
    tradai simulate --start 2022-05-02 --end 2022-05-23   # walk-forward: policies never/weekly/monthly/drift

Exit codes: 0 success, 1 a strategy is invalid, 2 bad usage or a refused action (with the reason).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tradai_core.errors import TradAIError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _strategy_new(args: argparse.Namespace) -> int:
    from strategies.metadata import StrategyStatus
    from strategies.scaffold import create_strategy
    from strategies.validation import validate_strategy

    pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip()) if args.pairs else None
    extra = {"pairs": pairs} if pairs else {}
    result = create_strategy(
        args.name,
        args.category,
        args.timeframe,
        folder=args.folder,
        description=args.description,
        stake_currency=args.stake_currency,
        status=StrategyStatus(args.status),
        overwrite=args.force,
        **extra,
    )
    print(f"created {result.module_path}")
    print(f"created {result.config_path}")
    report = validate_strategy(result.name, args.folder)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_INVALID


def _strategy_validate(args: argparse.Namespace) -> int:
    from strategies.validation import validate_all

    reports = validate_all(args.folder, args.names or None)
    if not reports:
        print(f"no strategies found in {args.folder}")
        return EXIT_OK
    for report in reports:
        print(report.summary())
    invalid = [r.name for r in reports if not r.ok]
    print(
        f"{len(reports) - len(invalid)} valid, {len(invalid)} invalid"
        + (f": {', '.join(invalid)}" if invalid else "")
    )
    return EXIT_INVALID if invalid else EXIT_OK


def _strategy_list(args: argparse.Namespace) -> int:
    from strategies.validation import discover_strategies, find_strategy_file

    for name in discover_strategies(args.folder):
        print(f"{name}\t{find_strategy_file(name, args.folder).name}")
    return EXIT_OK


def _workers_stop(args: argparse.Namespace) -> int:
    from tradai_resources.workers.zygote_client import ZygoteError, shared_folder, stop_shared_zygotes

    folder = shared_folder(args.folder)
    try:
        pids = stop_shared_zygotes(folder)  # checks the folder, each lock and each pid before signalling
    except ZygoteError as exc:
        print(f"error: {exc}; nothing was stopped", file=sys.stderr)
        return EXIT_USAGE
    print(f"stopped {len(pids)} shared worker(s) in {folder}" + (f": {pids}" if pids else ""))
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    import uuid

    from tradai.defs.resources import build_resources
    from tradai.model_loop_demo import simulation_text
    from tradai_assets.model_loop_simulation import SimulationConfig, run_simulation
    from tradai_core.settings import TradAISettings

    settings = TradAISettings()
    resources = build_resources(settings)
    config = SimulationConfig(
        start=args.start,
        end=args.end,
        step_days=args.step_days,
        validation_days=args.validation_days,
        train_days=args.train_days,
        pairs=[p.strip() for p in args.pairs.split(",") if p.strip()],
        policies=[p.strip() for p in args.policies.split(",") if p.strip()],
        challenge_looks=args.challenge_looks,
        keep_sandbox=args.keep_sandbox,
        **({"candles_dir": str(args.candles_dir)} if args.candles_dir else {}),
    )
    run_id = f"cli-{uuid.uuid4().hex[:12]}"
    result, metadata = run_simulation(
        settings,
        config,
        resources["freqtrade"],
        resources["mlflow"].process_config_and_initialize(),
        run_id=run_id,
    )
    print(simulation_text(result))
    tracked = metadata.get("mlflow_run_id")
    tracked = getattr(tracked, "value", tracked)
    print(f"sandbox: {metadata['sandbox']}; MLflow run {tracked} (experiment simulation)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The `tradai` argument parser; command groups add themselves as sub-parsers."""
    from strategies.metadata import StrategyCategory, StrategyStatus
    from strategies.validation import STRATEGIES_DIR

    parser = argparse.ArgumentParser(prog="tradai", description="TradAI: crypto trading research on Dagster.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    strategy = groups.add_parser("strategy", help="create, validate and list strategies")
    commands = strategy.add_subparsers(dest="command", required=True, metavar="COMMAND")
    folder_help = f"strategy folder (default: {STRATEGIES_DIR})"

    new = commands.add_parser("new", help="scaffold a strategy module and its YAML config")
    new.add_argument("name", help="class name, e.g. MyBreakout (my_breakout is accepted too)")
    new.add_argument("--category", required=True, choices=[c.value for c in StrategyCategory])
    new.add_argument("--timeframe", required=True, help="candle timeframe, e.g. 5m, 1h, 1d")
    new.add_argument("--description", help="one or two sentences (default: the category's rule)")
    new.add_argument("--pairs", help="comma-separated pairs (default: the platform's pair universe)")
    new.add_argument("--stake-currency", default="USDT")
    new.add_argument(
        "--status", default=StrategyStatus.TESTING.value, choices=[s.value for s in StrategyStatus]
    )
    new.add_argument("--folder", type=Path, default=STRATEGIES_DIR, help=folder_help)
    new.add_argument("--force", action="store_true", help="overwrite existing files of the same name")
    new.set_defaults(handler=_strategy_new)

    validate = commands.add_parser("validate", help="validate strategies without backtesting them")
    validate.add_argument("names", nargs="*", help="strategy names (default: every strategy)")
    validate.add_argument("--folder", type=Path, default=STRATEGIES_DIR, help=folder_help)
    validate.set_defaults(handler=_strategy_validate)

    listing = commands.add_parser("list", help="list the strategies found (without importing them)")
    listing.add_argument("--folder", type=Path, default=STRATEGIES_DIR, help=folder_help)
    listing.set_defaults(handler=_strategy_list)

    workers = groups.add_parser("workers", help="the shared pre-loaded Freqtrade workers")
    worker_commands = workers.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stop = worker_commands.add_parser("stop", help="stop them now (backtests still running finish first)")
    stop.add_argument(
        "--folder", type=Path, default=None, help="socket folder; default: TRADAI_WORKER_DIR or the default"
    )
    stop.set_defaults(handler=_workers_stop)

    simulate = groups.add_parser(
        "simulate", help="walk-forward simulation of the model loop under the retraining policies"
    )
    simulate.add_argument("--start", default="2021-06-07", help="first clock value, YYYY-MM-DD")
    simulate.add_argument("--end", default="2022-09-26", help="last clock value, YYYY-MM-DD")
    simulate.add_argument("--step-days", type=int, default=7)
    simulate.add_argument("--validation-days", type=int, default=7)
    simulate.add_argument("--train-days", type=int, default=180)
    simulate.add_argument("--pairs", default="BTC/USDT,ETH/USDT", help="comma-separated")
    simulate.add_argument(
        "--challenge-looks", type=int, default=4, help="A/B challenge looks after an inconclusive comparison"
    )
    simulate.add_argument("--policies", default="never,weekly,monthly,drift", help="comma-separated")
    simulate.add_argument(
        "--candles-dir", type=Path, default=None, help="recorded candles (default demo_data)"
    )
    simulate.add_argument(
        "--keep-sandbox",
        action="store_true",
        help="keep the run's sandbox (its stores and models) after success; a failed run always keeps it",
    )
    simulate.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tradai` command; returns the exit code (also used as the process exit status)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except TradAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
