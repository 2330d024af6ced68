"""Notifications: always logged; posted to a webhook and published to SNS when configured; a channel
that fails never fails the run; every failed run is notified by the run-failure sensor."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pytest
from botocore.stub import Stubber
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context, job, op

from sensors.notifications import notify_on_run_failure
from tradai_core.errors import InvalidURLError
from tradai_resources.notifier import Notification, NotifierResource


class Inbox(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []  # noqa: RUF012 - shared by the handler instances of one server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Inbox.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Inbox.received = []
    server = HTTPServer(("127.0.0.1", 0), Inbox)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


DRIFT = Notification(
    kind="drift_warning", severity="warning", title="PSI 0.17 on BTC/USDT", details={"psi": 0.17}
)


def test_a_notification_is_always_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        receipt = NotifierResource().notify(DRIFT)
    assert receipt.delivered == ("log",)
    assert "[WARNING] PSI 0.17 on BTC/USDT" in caplog.text and "- psi: 0.17" in caplog.text


def test_a_configured_webhook_receives_the_notification_as_json(webhook: str) -> None:
    receipt = NotifierResource(webhook_url=webhook).notify(DRIFT)
    assert receipt.delivered == ("log", "webhook")
    [posted] = Inbox.received
    assert posted["kind"] == "drift_warning" and posted["details"] == {"psi": 0.17}
    assert str(posted["text"]).startswith("[WARNING] PSI 0.17")


def test_an_unreachable_webhook_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = NotifierResource(webhook_url="http://127.0.0.1:9/nothing-listens-here", timeout_s=0.5)
    with caplog.at_level(logging.WARNING, logger="tradai.notify"):
        receipt = notifier.notify(DRIFT)
    assert receipt.delivered == ("log",) and "webhook" in receipt.failed
    assert "notification webhook failed" in caplog.text


def test_sns_publishes_a_request_valid_for_the_sns_api() -> None:
    topic = "arn:aws:sns:eu-west-1:123456789012:tradai-alerts"
    notifier = NotifierResource(sns_topic_arn=topic, aws_region="eu-west-1")
    client = boto3.client("sns", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    notifier._sns_client = client
    with Stubber(client) as stub:  # botocore checks the request against the SNS API model
        stub.add_response(
            "publish",
            {"MessageId": "1"},
            {
                "TopicArn": topic,
                "Subject": DRIFT.title,
                "Message": DRIFT.text(),
                "MessageAttributes": {
                    "kind": {"DataType": "String", "StringValue": "drift_warning"},
                    "severity": {"DataType": "String", "StringValue": "warning"},
                },
            },
        )
        receipt = notifier.notify(DRIFT)
        stub.assert_no_pending_responses()
    assert receipt.delivered == ("log", "sns")


@op
def explode() -> None:
    raise RuntimeError("candles exploded")


@job
def doomed() -> None:
    explode()


def test_every_failed_run_is_notified_with_its_error(webhook: str) -> None:
    instance = DagsterInstance.ephemeral()
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    [failure_record] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    failure = failure_record.dagster_event
    context = build_run_status_sensor_context(
        sensor_name="notify_on_run_failure",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"notifier": NotifierResource(webhook_url=webhook)},
    ).for_run_failure()
    notify_on_run_failure(context)
    [posted] = Inbox.received
    assert posted["kind"] == "run_failure" and posted["dagster_run_id"] == result.run_id
    assert "candles exploded" in str(posted["details"])


TOKEN = "Qw7Er4Ty9Ui2Op5As8Df"


@pytest.mark.parametrize(
    "url",
    [
        f"hooks.example.com/services/T0/B0/{TOKEN}",  # the scheme forgotten
        f"http://127.0.0.1:9/services/T0/{TOKEN} B0",  # a space pasted in
        f"file:///services/{TOKEN}",  # not a web address
    ],
)
def test_a_malformed_webhook_url_is_reported_without_its_token(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = NotifierResource(webhook_url=url, timeout_s=0.5)
    with caplog.at_level(logging.DEBUG):
        receipt = notifier.notify(DRIFT)
    assert receipt.delivered == ("log",)
    assert receipt.failed["webhook"].startswith("InvalidURLError: the notification webhook URL")
    assert "TRADAI_WEBHOOK_URL" in receipt.failed["webhook"]
    assert TOKEN not in receipt.failed["webhook"] and TOKEN not in caplog.text


def test_the_malformed_url_error_chains_nothing_that_quotes_the_token() -> None:
    notifier = NotifierResource(webhook_url=f"https://hooks.example.com/x/{TOKEN} y")
    with pytest.raises(InvalidURLError) as raised:
        notifier._post_webhook(DRIFT)
    error = raised.value
    assert error.__cause__ is None and error.__suppress_context__
    assert "https://hooks.example.com/***" in str(error) and TOKEN not in str(error)


def test_an_sns_error_quoting_the_topic_is_reported_without_it(caplog: pytest.LogCaptureFixture) -> None:
    topic = f"arn:aws:sns:eu-west-1:123456789012:alerts-{TOKEN}"
    notifier = NotifierResource(sns_topic_arn=topic, aws_region="eu-west-1")
    client = boto3.client("sns", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    notifier._sns_client = client
    with Stubber(client) as stub, caplog.at_level(logging.DEBUG):
        stub.add_client_error(
            "publish", "AuthorizationError", f"User is not authorized to perform SNS:Publish on {topic}"
        )
        receipt = notifier.notify(DRIFT)
    assert receipt.delivered == ("log",) and "AuthorizationError" in receipt.failed["sns"]
    assert TOKEN not in receipt.failed["sns"] and TOKEN not in caplog.text
    assert TOKEN not in repr(notifier)


def test_credentials_of_uris_quoted_in_a_notification_are_redacted_before_it_is_sent(
    webhook: str, caplog: pytest.LogCaptureFixture
) -> None:
    failure = Notification(
        kind="run_failure",
        severity="critical",
        title="run of features_job failed",
        details={"error": f"StorageError: cannot open ArcticDB at s3://host:bucket?access=AK&secret={TOKEN}"},
    )
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        receipt = NotifierResource(webhook_url=webhook).notify(failure)
    assert receipt.delivered == ("log", "webhook")
    [posted] = Inbox.received
    assert "s3://host:bucket?access=***&secret=***" in str(posted["details"])
    assert TOKEN not in json.dumps(posted) and TOKEN not in caplog.text
