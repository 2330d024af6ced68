"""A study-worker's run with the pre-screen: explore with the simulation, check its rank agreement with
Freqtrade on a random sample, then backtest the finalists with Freqtrade — or fall back to plain Freqtrade
trials when the strategy cannot be modelled or the agreement is too low.

Only Freqtrade backtests enter the shared Optuna study (so its best value, the tuned parameters and the
overfitting gate rest on Freqtrade alone); the explored sets are kept in an in-memory study, and every one
Freqtrade did not backtest is reported (its per-day Sharpe ratio) so the Deflated Sharpe Ratio counts it.

With several study-workers (`PrescreenPlan.workers`), all of them explore and all of them confirm:

1. each runs its share of the independent searches (`run_search`: two seeded TPE samplers taking turns on
   one in-memory history, as a study's two workers do on its storage) and publishes every set it scored
   (`WorkerExchange`), so no set is simulated twice and all workers end with the same explored sets;
2. when all are done, every worker holds the same explored sets and draws the same agreement sample and,
   when the agreement holds, the same finalists; worker `i` backtests items `i, i + workers, …` of each
   list, and the agreement is computed once all sample backtests are known.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from tradai_core.hyperopt import worker_shares
from tradai_core.prescreen import (
    PrescreenPlan,
    PrescreenSummary,
    agreement,
    sample_indices,
    sampler_seeds,
    search_sizes,
)
from tradai_resources.workers.fast_tpe import vectorized_log_ndtr
from tradai_resources.workers.jobs import HyperoptJob
from tradai_resources.workers.prescreen_engine import PrescreenEngine, Unmodellable
from tradai_resources.workers.prescreen_exchange import WorkerExchange

logger = logging.getLogger(__name__)

PEER_WAIT_S = 3600.0
"""How long a worker waits for the others (the study's resource stops all workers when one fails)."""

Explored = tuple[dict[str, Any], dict[str, Any]]
"""A scored parameter set: (its Optuna params, the pre-screen's record)."""


def _key(params: dict[str, Any]) -> str:
    return json.dumps(sorted(params.items()))


def _share(total: int, workers: int, index: int) -> int:
    """Worker `index`'s part of `total` (0 when there are fewer items than workers)."""
    shares = worker_shares(total, workers) if total > 0 else []
    return shares[index] if index < len(shares) else 0


def _confirm(
    study: Any,
    objective: Any,
    params: list[dict[str, Any]],
    exchange: WorkerExchange | None,
) -> dict[str, float]:
    """Backtest `params` with Freqtrade, each added to the shared study as a finished trial (with the
    record every trial carries), and published to the other workers; {set key: value}.

    Added, not enqueued: with several workers on one SQLite storage, two of them could pop the same queued
    trial."""
    import optuna

    space = objective.engine.space
    distributions = space.distributions()
    ran: dict[str, float] = {}
    for values in params:
        applied = {spec.name: spec.normalize(values[spec.name]) for spec in space.parameters}
        value, record = objective.run(study, applied, values, "a pre-screen confirmation")
        study.add_trial(
            optuna.trial.create_trial(
                params=values,
                distributions={name: distributions[name] for name in values},
                value=value,
                user_attrs={"record": record},
            )
        )
        ran[_key(values)] = value
        if exchange is not None:
            exchange.publish({"confirmed": values, "value": value})
    return ran


def run_search(
    score: Callable[[Any], float],
    samplers: list[Any],
    n_trials: int,
    timeout: float | None = None,
    started: float | None = None,
) -> Any:
    """One search of the exploration: `samplers` take turns proposing `n_trials` sets on one in-memory
    history, each proposing while the previous proposal is still pending (scored, not yet told), as a
    study's workers do on its storage; returns the search's Optuna study.

    With constant liar, a pending proposal counts as a bad result, so the next one is drawn elsewhere and
    the search stays spread; one sampler proposing one set at a time collapses onto the first good region
    it meets (`tradai_core.prescreen.SAMPLERS_PER_SEARCH`). Deterministic for given seeds: the proposals
    are made and told in a fixed order."""
    import optuna

    started = time.perf_counter() if started is None else started
    search = optuna.create_study(direction="maximize")
    pending: tuple[Any, float] | None = None
    for number in range(n_trials):
        if timeout is not None and time.perf_counter() - started >= timeout:
            break
        search.sampler = samplers[number % len(samplers)]
        trial = search.ask()
        value = score(trial)  # draws the set (the previous one still pending) and scores it
        if pending is not None:
            search.tell(*pending)
        pending = (trial, value)
    if pending is not None:
        search.tell(*pending)
    return search


def _distinct_finalists(explored: list[Explored], skip: set[str], top_k: int) -> list[dict[str, Any]]:
    """The `top_k` best pre-screened sets not in `skip`, one per simulated outcome: sets whose simulated
    trades score alike (same value, trade count and profit; e.g. ROI tables that never bind) would cost
    Freqtrade backtests for one result, so only the first of them (in the fixed order) is kept."""
    ranked = sorted(explored, key=lambda item: (-item[1]["value"], _key(item[0])))
    finalists: list[dict[str, Any]] = []
    outcomes: set[tuple[float, int, float]] = set()
    for params, record in ranked:
        outcome = (float(record["value"]), int(record["trades"]), round(float(record["profit_total"]), 10))
        if _key(params) in skip or outcome in outcomes:
            continue
        outcomes.add(outcome)
        finalists.append(params)
        if len(finalists) == top_k:
            break
    return finalists


def run_prescreened(
    study: Any,
    engine: Any,
    objective: Any,
    job: HyperoptJob,
    timeout: float | None,
    make_sampler: Callable[[int, int], Any],
) -> dict[str, Any]:
    """Run `job` (whose `prescreen` is set) against the shared `study`; return the `PrescreenSummary`."""
    plan = job.prescreen
    assert plan is not None
    index, workers = job.worker_index, plan.workers
    try:
        screen = PrescreenEngine(engine)
    except Unmodellable as exc:
        note = (
            f"pre-screen not used: the simulation cannot model {job.strategy} ({exc}); plain Freqtrade trials"
        )
        logger.warning(note)
        budget = _share(plan.top_k + plan.agreement_sample, workers, index)
        if budget:
            study.optimize(objective, n_trials=budget, timeout=timeout)
        return PrescreenSummary(used=False, note=note).model_dump(mode="json")
    exchange = WorkerExchange(plan.exchange_dir, index, workers) if plan.exchange_dir else None
    try:
        return _run(study, screen, objective, job, plan, timeout, make_sampler, exchange)
    finally:
        if exchange is not None:
            exchange.close()


def _run(
    study: Any,
    screen: PrescreenEngine,
    objective: Any,
    job: HyperoptJob,
    plan: PrescreenPlan,
    timeout: float | None,
    make_sampler: Callable[[int, int], Any],
    exchange: WorkerExchange | None,
) -> dict[str, Any]:
    index, workers = job.worker_index, plan.workers
    space = job.search_space
    started = time.perf_counter()
    scored: dict[str, Explored] = {}
    own = {"trials": 0}
    confirmed: dict[str, float] = {}
    done: dict[int, dict[str, Any]] = {}

    def absorb() -> None:
        if exchange is None:
            return
        for peer, message in exchange.receive():
            if "set" in message:
                scored.setdefault(_key(message["set"]), (message["set"], message["record"]))
            elif "confirmed" in message:
                confirmed[_key(message["confirmed"])] = float(message["value"])
            elif "done" in message:
                done[peer] = message

    def score(trial: Any) -> float:
        values = {spec.name: spec.suggest(trial) for spec in space.parameters}
        own["trials"] += 1
        key = _key(trial.params)
        if key not in scored:
            record = screen.evaluate(values)
            scored[key] = (dict(trial.params), record)
            if exchange is not None:
                exchange.publish({"set": dict(trial.params), "record": record})
        return float(scored[key][1]["value"])

    sizes = search_sizes(plan.explore_trials, plan.searches)
    with vectorized_log_ndtr():
        for search in range(index, len(sizes), workers):  # search j runs on worker j mod workers
            samplers = [make_sampler(s, job.startup_trials) for s in sampler_seeds(plan.seed, search)]
            run_search(score, samplers, sizes[search], timeout, started)
            absorb()
    done[index] = {"done": own["trials"], "signals": screen.signal_computations}
    if exchange is not None:
        exchange.publish(done[index])
        exchange.wait(lambda: len(done) == workers, absorb, "the other workers' exploration", PEER_WAIT_S)
    explore_seconds = time.perf_counter() - started
    explored_count = sum(int(message["done"]) for message in done.values())
    signals = sum(int(message.get("signals", 0)) for message in done.values())
    explored = sorted(scored.values(), key=lambda item: _key(item[0]))  # the same order in every worker
    logger.info(
        "pre-screen explored %d parameter sets (%d distinct) in %.1f s on %d worker(s), %d signal "
        "computations",
        explored_count,
        len(explored),
        explore_seconds,
        workers,
        signals,
    )

    sample = [explored[i] for i in sample_indices(len(explored), plan.agreement_sample, plan.seed)]
    sample_keys = [_key(params) for params, _ in sample]
    confirmed.update(_confirm(study, objective, [params for params, _ in sample[index::workers]], exchange))
    if exchange is not None:
        exchange.wait(
            lambda: all(key in confirmed for key in sample_keys), absorb, "the agreement sample", PEER_WAIT_S
        )
    verdict = agreement(
        [record["value"] for _, record in sample], [confirmed[k] for k in sample_keys], plan.min_spearman
    )
    logger.info("%s", verdict.note)
    backtested = set(sample_keys)
    finalists: list[dict[str, Any]] = []
    if verdict.enabled:
        finalists = _distinct_finalists(explored, backtested, plan.top_k)
        _confirm(study, objective, finalists[index::workers], exchange)
        backtested |= {_key(params) for params in finalists}
    else:
        share = _share(plan.top_k, workers, index)
        if share:
            study.optimize(objective, n_trials=share, timeout=timeout)
    unconfirmed = tuple(
        float(record["daily_sharpe"]) for params, record in explored if _key(params) not in backtested
    )
    return PrescreenSummary(
        used=verdict.enabled,
        note=verdict.note,
        explored=explored_count,
        distinct=len(explored),
        agreement=verdict,
        finalists=len(finalists),
        explore_seconds=explore_seconds,
        signal_computations=signals,
        unconfirmed_daily_sharpes=unconfirmed if verdict.enabled else (),
    ).model_dump(mode="json")
