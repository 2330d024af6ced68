"""The environment a Freqtrade child process (backtest, zygote, hyperopt study-worker) is given.

Children get an explicit allowlist, never the parent's whole environment: the parent holds exchange API
keys, the notification webhook, storage URLs with passwords and cloud credentials, none of which a
backtest needs — and a shared zygote's job request travels over a socket to another process. What is kept:
the interpreter and locale set-up (PATH, HOME, LANG/LC_*, TZ, temp folders, PYTHON*, the native library
path), the thread-count knobs of the numeric libraries, and `TRADAI_HOME` (default locations). No tracking
URI: a model strategy trades a booster file its parent exported into the workspace
(`strategies.model_store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

ALLOWED_NAMES: Final[frozenset[str]] = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "TRADAI_HOME",
    }
)
"""Variables passed to a child by exact name."""

ALLOWED_PREFIXES: Final[tuple[str, ...]] = (
    "LC_",
    "PYTHON",
    "OMP_",
    "OPENBLAS_",
    "MKL_",
    "KMP_",
    "NUMEXPR_",
    "VECLIB_",
)
"""Variables passed by prefix: locale categories, the interpreter's own, numeric libraries' threads."""


def allowed(name: str) -> bool:
    """True if a child process may receive the environment variable `name`."""
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of `env`: what a Freqtrade child process is given (see the module doc)."""
    return {name: value for name, value in env.items() if allowed(name)}


MLFLOW_CLIENT_NAMES: Final[frozenset[str]] = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
    | {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE"}
)
MLFLOW_CLIENT_PREFIXES: Final[tuple[str, ...]] = ("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_", "GCS_")
"""What an MLflow client reads from its environment: its own settings and credentials
(`MLFLOW_TRACKING_USERNAME`/`_PASSWORD`/`_TOKEN`, `MLFLOW_S3_ENDPOINT_URL`, ...), the artifact store's
cloud credentials, proxies and certificate bundles."""


def mlflow_client_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` an MLflow client reads. It may hold credentials: it travels to the child that
    writes a report's run only inside its job file (`jobs.MLflowRunJob`), never as an environment."""
    return {
        name: value
        for name, value in env.items()
        if name in MLFLOW_CLIENT_NAMES or name.startswith(MLFLOW_CLIENT_PREFIXES)
    }
