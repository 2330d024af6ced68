"""Redaction of URLs and URIs that may carry credentials, before they are shown anywhere."""

from __future__ import annotations

import pytest

from tradai_core.urls import REDACTED, redact_secret_url, redact_uri, redact_uris_in, scrub

SECRET = "Zx9Kq2Lm7Pw4Rt8Yv3"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            f"s3://s3.eu-west-1.amazonaws.com:tradai?region=eu-west-1&access=AKIA{SECRET}&secret={SECRET}",
            "s3://s3.eu-west-1.amazonaws.com:tradai?region=eu-west-1&access=***&secret=***",
        ),
        (f"https://user:{SECRET}@mlflow.example.com:5000/", "https://mlflow.example.com:5000/"),
        (f"https://{SECRET}@mlflow.example.com/", "https://mlflow.example.com/"),
        (
            f"postgresql+psycopg2://optuna:{SECRET}@db:5432/optuna?sslmode=require",
            "postgresql+psycopg2://db:5432/optuna?sslmode=require",
        ),
        (f"sqlite:////srv/mlflow.db?token={SECRET}", "sqlite:////srv/mlflow.db?token=***"),
        (
            f"azure://AccountName=tradai;AccountKey={SECRET}==;EndpointSuffix=core.windows.net",
            "azure://AccountName=tradai;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        (f"https://bucket.s3/x?X-Amz-Signature={SECRET}&X-Amz-Expires=60", None),
        (f"http://host/api?q={SECRET}", "http://host/api?q=***"),  # token-like under any key
        (f"mem://?aws_access_key_id=a&password={SECRET}", "mem://?aws_access_key_id=***&password=***"),
    ],
)
def test_credentials_in_userinfo_and_query_are_redacted(uri: str, shown: str | None) -> None:
    redacted = redact_uri(uri)
    assert SECRET not in redacted
    if shown is not None:
        assert redacted == shown


@pytest.mark.parametrize(
    "uri",
    ["lmdb:///srv/tradai/arcticdb", "lmdb:///srv/a?map_size=2GB", "sqlite:///srv/mlflow.db", "file:///x/y"],
)
def test_uris_without_credentials_are_shown_unchanged(uri: str) -> None:
    assert redact_uri(uri) == uri


@pytest.mark.parametrize("garbage", ["", "not a uri", "://", "s3://:@?&=", "x" * 3])
def test_redacting_never_raises(garbage: str) -> None:
    assert isinstance(redact_uri(garbage), str) and isinstance(redact_secret_url(garbage), str)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://hooks.slack.com/services/T0/B0/{SECRET}", "https://hooks.slack.com/***"),
        (f"https://user:{SECRET}@hooks.example.com:8443/x", "https://hooks.example.com/***"),
        (f"hooks.slack.com/services/T0/B0/{SECRET}", REDACTED),  # no scheme: nothing tells the host
        (f"http://127.0.0.1:9/hook/{SECRET} x", "http://127.0.0.1/***"),
    ],
)
def test_a_webhook_url_shows_only_its_scheme_and_host(url: str, shown: str) -> None:
    assert redact_secret_url(url) == shown


def test_scrub_removes_a_secret_url_and_the_parts_errors_quote() -> None:
    url = f"https://hooks.example.com/services/T0/B0/{SECRET}"
    quoted = f"URL can't contain control characters. '/services/T0/B0/{SECRET}' (found at least ' ')"
    assert SECRET not in scrub(quoted, url)
    assert SECRET not in scrub(f"unknown url type: {url!r}", url)
    uri = f"lmdb:///srv/store?secret={SECRET}"
    assert scrub(f"Invalid value {SECRET}", uri) == f"Invalid value {REDACTED}"
    assert scrub("nothing secret here", None, "") == "nothing secret here"


def test_every_uri_quoted_in_a_text_is_redacted() -> None:
    text = (
        f"cannot open ArcticDB at 's3://h:b?access=AK&secret={SECRET}' nor postgresql://u:{SECRET}@db/x, "
        "see https://docs.example.com/page"
    )
    assert redact_uris_in(text) == (
        "cannot open ArcticDB at 's3://h:b?access=***&secret=***' nor postgresql://db/x, "
        "see https://docs.example.com/page"
    )
