"""Which assets may run in the run's own process: the op tag `IN_PROCESS_TAG`.

A step process costs a fresh interpreter that imports the code location (seconds), paid once per step: for
a backtest whose steps take a second or two that is most of the wall time a person waits. An asset tags
its op with `IN_PROCESS_TAG` when running it in the run's process is safe (fork-safety review, issue #14):

- it keeps no process-global state of a library that must stay isolated — Freqtrade runs in a child forked
  from the shared worker (`FreqtradeResource`), never in the step's process; the step only validates the
  strategy (importing its module) and parses the child's JSON result;
- it holds no lock, thread or open handle past its return (ArcticDB reads and MLflow logging close theirs);
- its steps form a chain (plan → report), so a second process would run nothing in parallel.

The code location's default executor (`tradai.deployment.auto_executor`) runs a run in process when every
step of its plan carries the tag, and on the multiprocess executor otherwise.
"""

IN_PROCESS_TAG = "tradai/in_process"
IN_PROCESS_TAGS = {IN_PROCESS_TAG: "true"}
