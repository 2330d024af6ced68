"""Binance `exchangeInfo` for the replay server: a recorded snapshot, completed for every served pair.

The snapshot shipped in `demo_data/exchange/` has 7 spot pairs. The server must describe every pair it has
candles for, so a pair missing from the snapshot gets an entry of the same shape (same filters, same
flags) whose tick and step sizes follow from the pair's recorded price, the way Binance sizes them: about
four significant digits of price, and a quantity step worth between 0.1 and 1 unit of the quote asset.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tradai_core.errors import ConfigurationError

EXCHANGE_INFO_FILE = "binance_spot_exchangeInfo.json"


def default_exchange_info_path() -> Path:
    """The exchangeInfo snapshot shipped with the project (`demo_data/exchange/`), so a fresh clone works."""
    return Path(__file__).resolve().parents[1] / "demo_data" / "exchange" / EXCHANGE_INFO_FILE


def load_exchange_info(path: Path | None = None) -> dict[str, Any]:
    """Read an exchangeInfo snapshot (default: the shipped one); fails with a clear error if unusable."""
    path = default_exchange_info_path() if path is None else Path(path)
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the exchangeInfo snapshot {path}: {exc}",
            "pass a saved GET /api/v3/exchangeInfo response, e.g. demo_data/exchange/" + EXCHANGE_INFO_FILE,
        ) from exc
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("symbols"), list):
        raise ConfigurationError(
            f"{path} is not an exchangeInfo response (no 'symbols' list)",
            "save the body of GET /api/v3/exchangeInfo from Binance",
        )
    return snapshot


def pair_to_symbol(pair: str) -> str:
    """Binance market id of a ccxt spot pair: `BTC/USDT` → `BTCUSDT`."""
    base, _, quote = pair.partition("/")
    return f"{base}{quote}"


def _decimal(value: float) -> str:
    """A size printed as Binance does, with 8 decimals."""
    return f"{value:.8f}"


def _magnitude(price: float) -> int:
    return math.floor(math.log10(price))


def derived_tick_size(price: float) -> float:
    """Price tick for a pair trading near `price`: about 4 significant digits, between 1e-8 and 0.01.

    Matches the snapshot: BTC 20,000 → 0.01, LTC 50 → 0.01, XRP 0.5 → 0.0001, DOGE 0.06 → 0.00001.
    """
    if not price > 0:
        return 0.01
    return min(0.01, max(1e-8, 10.0 ** (_magnitude(price) - 3)))


def derived_step_size(price: float) -> float:
    """Quantity step for a pair trading near `price`: one step is worth 0.1–1 quote units, at most 1.

    Matches the snapshot: BTC 20,000 → 0.00001, ETH 1,300 → 0.0001, DOGE 0.06 → 1.
    """
    if not price > 0:
        return 1.0
    return min(1.0, max(1e-8, 10.0 ** (-_magnitude(price) - 1)))


def _template(snapshot: Mapping[str, Any], quote: str) -> dict[str, Any]:
    symbols = [entry for entry in snapshot.get("symbols", []) if isinstance(entry, dict)]
    if not symbols:
        raise ConfigurationError(
            "the exchangeInfo snapshot has no symbols to model missing pairs on",
            "use a snapshot with at least one spot market, e.g. demo_data/exchange/" + EXCHANGE_INFO_FILE,
        )
    same_quote = [entry for entry in symbols if entry.get("quoteAsset") == quote]
    return (same_quote or symbols)[0]


def synthesize_symbol(pair: str, template: Mapping[str, Any], price: float | None) -> dict[str, Any]:
    """An exchangeInfo entry for `pair` shaped like `template`, with sizes derived from `price`.

    Without a price the template's sizes are kept. Price and quantity limits follow the magnitudes of the
    snapshot's markets (BTC: max price 1,000,000 and max quantity 9,000; DOGE: 1,000 and 9,000,000).
    """
    base, _, quote = pair.partition("/")
    entry = copy.deepcopy(dict(template))
    entry.update(symbol=pair_to_symbol(pair), baseAsset=base, quoteAsset=quote, status="TRADING")
    if price is None or not price > 0:
        return entry
    tick = derived_tick_size(price)
    step = derived_step_size(price)
    max_qty = 9.0 * 10.0 ** max(3, min(6, 5 - _magnitude(price)))
    max_price = 10.0 ** max(3, min(6, _magnitude(price) + 3))
    for rule in entry.get("filters", []):
        kind = rule.get("filterType")
        if kind == "PRICE_FILTER":
            rule.update(minPrice=_decimal(tick), maxPrice=_decimal(max_price), tickSize=_decimal(tick))
        elif kind == "LOT_SIZE":
            rule.update(minQty=_decimal(step), maxQty=_decimal(max_qty), stepSize=_decimal(step))
        elif kind == "MARKET_LOT_SIZE":
            rule.update(maxQty=_decimal(max_qty / 10.0))
    return entry


def exchange_info_for(
    pairs: Sequence[str],
    snapshot: Mapping[str, Any],
    reference_prices: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The snapshot restricted to `pairs` (in that order), with an entry made up for each missing pair.

    `reference_prices` (pair → a recent price) sizes the made-up entries' ticks and steps; a pair without
    one copies the template's sizes. Top-level fields (`timezone`, `serverTime`, `rateLimits`, …) are kept.
    """
    prices = reference_prices or {}
    known = {entry.get("symbol"): entry for entry in snapshot.get("symbols", []) if isinstance(entry, dict)}
    info = {key: copy.deepcopy(value) for key, value in snapshot.items() if key != "symbols"}
    symbols = []
    for pair in pairs:
        entry = known.get(pair_to_symbol(pair))
        if entry is not None:
            symbols.append(copy.deepcopy(entry))
        else:
            quote = pair.partition("/")[2]
            symbols.append(synthesize_symbol(pair, _template(snapshot, quote), prices.get(pair)))
    info["symbols"] = symbols
    return info
