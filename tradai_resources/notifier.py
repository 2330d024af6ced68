"""`NotifierResource`: tells people what the platform did. Always logs; also posts to a webhook (Slack,
Teams, anything taking JSON) and publishes to an AWS SNS topic when those are configured.

A notification never fails the run that sends it: a channel that cannot be reached is logged as a
warning and reported in the receipt, because losing a drift warning is bad but losing the retraining
run that sent it is worse.

The webhook URL is a secret as a whole (its path is the token) and the topic ARN names the account: both
come from `EnvVar`s, and no message of this module shows more than the webhook's scheme and host.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tradai_core.errors import InvalidURLError, TradAIError
from tradai_core.urls import redact_secret_url, redact_uris_in, scrub

logger = logging.getLogger("tradai.notify")

Severity = Literal["info", "warning", "critical"]
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class Notification(BaseModel):
    """One thing worth telling: what kind, how serious, a title, details, and which run said it."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="e.g. drift_warning, drift_alert, promotion, rollback, run_failure")
    severity: Severity = "info"
    title: str
    details: dict[str, Any] = Field(default_factory=dict)
    dagster_run_id: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(tz=UTC))

    def text(self) -> str:
        """A plain-text rendering for chat and e-mail channels."""
        lines = [f"[{self.severity.upper()}] {self.title}"]
        lines += [f"- {key}: {value}" for key, value in self.details.items()]
        if self.dagster_run_id:
            lines.append(f"- dagster run: {self.dagster_run_id}")
        return "\n".join(lines)


class NotificationReceipt(BaseModel):
    """Which channels took the notification, and which failed (with why)."""

    model_config = ConfigDict(frozen=True)

    delivered: tuple[str, ...]
    failed: dict[str, str] = Field(default_factory=dict)


class NotifierResource(ConfigurableResource):
    """Log always; webhook and SNS when configured (URLs and ARNs from the environment, never logged)."""

    webhook_url: str | None = Field(
        default=None,
        description="POST target for JSON notifications; a secret (EnvVar('TRADAI_WEBHOOK_URL')).",
    )
    sns_topic_arn: str | None = Field(
        default=None, description="AWS SNS topic to publish to (EnvVar('TRADAI_SNS_TOPIC_ARN'))."
    )
    aws_region: str | None = Field(default=None, description="Region of the SNS topic.")
    timeout_s: float = Field(default=5.0, description="Per-channel timeout.")

    _sns_client: Any = PrivateAttr(default=None)

    def __repr__(self) -> str:
        channels = ["log"] + ["webhook"] * bool(self.webhook_url) + ["sns"] * bool(self.sns_topic_arn)
        return f"NotifierResource(channels={channels})"

    __str__ = __repr__

    def notify(self, notification: Notification) -> NotificationReceipt:
        """Send `notification` on every configured channel; never raises for a channel's failure.

        Credentials of any URI quoted in its title or details (e.g. an error naming a store) are redacted
        first, and so are this notifier's own webhook URL and topic."""
        notification = self._redacted(notification)
        logger.log(_LOG_LEVEL[notification.severity], "%s", notification.text())
        delivered, failed = ["log"], {}
        if self.webhook_url:
            try:
                self._post_webhook(notification)
                delivered.append("webhook")
            except (urllib.error.URLError, http.client.HTTPException, OSError, TradAIError) as error:
                failed["webhook"] = self._scrub(f"{type(error).__name__}: {error}")
                logger.warning(
                    "notification webhook failed (%s); the notification was logged only", failed["webhook"]
                )
        if self.sns_topic_arn:
            try:
                self._publish_sns(notification)
                delivered.append("sns")
            except Exception as error:  # botocore raises many types; none may fail the run
                failed["sns"] = self._scrub(f"{type(error).__name__}: {error}")
                logger.warning(
                    "notification to SNS failed (%s); the notification was logged only", failed["sns"]
                )
        return NotificationReceipt(delivered=tuple(delivered), failed=failed)

    def _redacted(self, notification: Notification) -> Notification:
        def clean(value: Any) -> Any:
            return self._scrub(redact_uris_in(value)) if isinstance(value, str) else value

        return notification.model_copy(
            update={
                "title": clean(notification.title),
                "details": {key: clean(value) for key, value in notification.details.items()},
            }
        )

    def _scrub(self, text: str) -> str:
        """`text` (a channel's error) without the webhook URL, its token or the topic ARN."""
        return scrub(text, self.webhook_url, self.sns_topic_arn)

    def _post_webhook(self, notification: Notification) -> None:
        url = (self.webhook_url or "").strip()
        body = json.dumps({"text": notification.text(), **notification.model_dump(mode="json")}).encode()
        try:
            if not url.lower().startswith(("https://", "http://")):
                raise ValueError("not an http(s) URL")
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                if response.status >= 300:
                    raise urllib.error.URLError(f"webhook answered HTTP {response.status}")
        except (ValueError, http.client.InvalidURL):  # their messages quote the URL, token and all
            raise InvalidURLError(
                f"the notification webhook URL ({redact_secret_url(url)}) is malformed",
                "set TRADAI_WEBHOOK_URL to the whole https://… URL the chat tool gave for the webhook",
            ) from None

    def sns_client(self) -> Any:
        """The boto3 SNS client (credentials from the standard AWS chain: environment, profile, role)."""
        if self._sns_client is None:
            import boto3

            self._sns_client = boto3.client("sns", region_name=self.aws_region)
        return self._sns_client

    def _publish_sns(self, notification: Notification) -> None:
        self.sns_client().publish(
            TopicArn=self.sns_topic_arn,
            Subject=notification.title[:99],
            Message=notification.text(),
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": notification.kind},
                "severity": {"DataType": "String", "StringValue": notification.severity},
            },
        )
