"""Run-failure notifications: every failed run of the code location reaches the notifier."""

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor
from dagster._utils.error import SerializableErrorInfo

from tradai_resources.notifier import Notification, NotifierResource


@run_failure_sensor(
    name="notify_on_run_failure",
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends every failed run (job, partition, error) to the notifier: log, webhook, SNS.",
)
def notify_on_run_failure(context: RunFailureSensorContext, notifier: NotifierResource) -> None:
    """Tell people a run failed, with what failed and the first line of why."""
    run = context.dagster_run
    message = context.failure_event.message or "no error message"
    step_errors = [
        _root_cause(event.step_failure_data.error)
        for event in context.get_step_failure_events()
        if event.step_failure_data and event.step_failure_data.error
    ]
    notifier.notify(
        Notification(
            kind="run_failure",
            severity="critical",
            title=f"run of {run.job_name} failed",
            details={
                "partition": run.tags.get("dagster/partition", "-"),
                "error": step_errors[0] if step_errors else message,
                "steps_failed": len(step_errors),
            },
            dagster_run_id=run.run_id,
        )
    )


def _root_cause(error: SerializableErrorInfo) -> str:
    """The innermost error's message (what the user's code raised), not Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
