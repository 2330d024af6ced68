"""Optuna's TPE sampler with its truncated-normal log-CDF evaluated on whole arrays.

Optuna (5.0) evaluates `log Φ(a)` for TPE's discrete and bounded kernels one Python call per element
(`optuna.samplers._tpe._truncnorm._log_ndtr`, `np.frompyfunc` over `_log_ndtr_single`). A pre-screen asks
TPE for hundreds of parameter sets in a few seconds, and there this loop is most of the exploration's time.
`vectorized_log_ndtr()` swaps in the same piecewise formula on arrays (erf/erfc above −20, Optuna's own
asymptotic series below, iterated to the same stopping rule): the same sampler, the same draws for the same
seed (`tests/test_prescreen.py` checks a seeded study), several times faster. Used only around the
pre-screen's exploration, and left out (with a log line) when Optuna's private function is not there.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

logger = logging.getLogger(__name__)

_SQRT2 = 2**0.5


def _series(a: np.ndarray) -> np.ndarray:
    """Optuna's asymptotic expansion of log Φ(a) for a ≤ −20, element-wise, each element stopping where
    Optuna's scalar loop stops."""
    log_lhs = -0.5 * a**2 - np.log(-a) - 0.5 * math.log(2 * math.pi)
    last = np.zeros_like(a)
    total = np.ones_like(a)
    numerator = 1.0
    factor = np.ones_like(a)
    cons = 1 / a**2
    sign = 1
    i = 0
    active = np.abs(last - total) > sys.float_info.epsilon
    while active.any():
        i += 1
        sign = -sign
        numerator *= 2 * i - 1
        last = np.where(active, total, last)
        factor = np.where(active, factor * cons, factor)
        total = np.where(active, total + sign * numerator * factor, total)
        active &= np.abs(last - total) > sys.float_info.epsilon
    return log_lhs + np.log(total)


def log_ndtr(a: np.ndarray) -> np.ndarray:
    """log Φ(a), element-wise, by Optuna's piecewise formula."""
    from scipy.special import erf, erfc  # imported by Optuna's TPE user anyway; not at module import

    a = np.asarray(a, dtype=float)
    out = np.empty(a.shape)
    high = a > 6
    low = a <= -20
    middle = ~(high | low)
    if high.any():
        out[high] = -0.5 * erfc(a[high] / _SQRT2)
    if middle.any():
        x = a[middle] / _SQRT2
        ndtr = np.where(
            x < -1 / _SQRT2, 0.5 * erfc(-x), np.where(x < 1 / _SQRT2, 0.5 + 0.5 * erf(x), 1.0 - 0.5 * erfc(x))
        )
        out[middle] = np.log(ndtr)
    if low.any():
        out[low] = _series(a[low])
    return out


@contextmanager
def vectorized_log_ndtr() -> Iterator[bool]:
    """Within the block, Optuna's TPE uses `log_ndtr`; yields whether it could (False: Optuna's own)."""
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:  # pragma: no cover - depends on Optuna's private layout
        logger.info("Optuna's TPE internals moved: the pre-screen samples with Optuna's own log-CDF")
        yield False
        return
    original = getattr(_truncnorm, "_log_ndtr", None)
    if original is None:  # pragma: no cover - depends on Optuna's private layout
        logger.info("Optuna's TPE internals moved: the pre-screen samples with Optuna's own log-CDF")
        yield False
        return
    _truncnorm._log_ndtr = log_ndtr
    try:
        yield True
    finally:
        _truncnorm._log_ndtr = original
