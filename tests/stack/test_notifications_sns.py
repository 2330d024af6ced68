"""Notifications published to the stack's SNS topic (moto) arrive at an SQS queue subscribed to it."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest

from tests.stack.stack_control import Stack
from tradai_resources.notifier import Notification, NotifierResource

pytestmark = pytest.mark.stack


def test_a_notification_reaches_a_queue_subscribed_to_the_topic(stack: Stack) -> None:
    topic = stack.env["TRADAI_SNS_TOPIC_ARN"]
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"tradai-notify-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    notifier = NotifierResource(sns_topic_arn=topic, aws_region=stack.env["AWS_REGION"])
    note = Notification(
        kind="drift_alert",
        severity="critical",
        title="severe drift on BTC/USDT",
        details={"median_psi": 0.31},
        dagster_run_id="run-1",
    )
    receipt = notifier.notify(note)
    assert receipt.delivered == ("log", "sns") and receipt.failed == {}

    deadline, bodies = time.monotonic() + 30, []
    while not bodies and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        bodies = [json.loads(m["Body"]) for m in answer.get("Messages", [])]
    [body] = bodies
    assert body["TopicArn"] == topic and body["Subject"] == note.title
    assert body["Message"] == note.text()
    assert body["MessageAttributes"]["kind"]["Value"] == "drift_alert"
    assert stack.env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(body)
