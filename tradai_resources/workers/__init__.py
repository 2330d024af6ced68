"""Process plumbing for Freqtrade: the child processes that run backtests, hyperopt trials and strategy
checks, the pre-forked worker (zygote) they fork from, and what crosses between them. One module per role:

- `jobs`: the job a child runs (`BacktestJob`, `HyperoptJob`, `StrategyCheckJob`), its file, the module
  its `kind` names (`JOB_MODULES`);
- `backtest_child`: one backtest, offline (`python -m ...backtest_child JOB`); `become_job`: a child forked
  from the zygote becomes the job its file names (backtest, study-worker or strategy check);
- `strategy_check_child`: one strategy's validation, where Freqtrade is loaded (`python -m ... JOB`);
- `hyperopt_child`: one study-worker's share of an Optuna study (`python -m ...hyperopt_child JOB`, or
  forked);
- `launch`: run a job in a child as a resource is configured to (shared or private zygote, or spawn);
- `zygote_server`: the zygote, a process's own (`--zygote`) or every process's (`--shared`);
- `zygote_client`: the parent side: start or find a zygote, run a job in it, stop shared ones;
- `protocol`: the fork request and the answers on a job socket;
- `env`: the allowlisted environment a child gets (never a secret);
- `folder`: the shared worker's private folder, held open by descriptor;
- `processes`: /proc facts, peer credentials, `kill_group`, `log_tail`.
"""
