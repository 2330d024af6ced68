"""The pre-screen's compiled exit simulation: Freqtrade's backtest loop for long-only spot strategies.

Inputs are aligned per pair on one candle grid (`[pair, candle]` arrays; `valid` is False where a pair has no
candle) with entry/exit signals **already shifted** by one candle, as `Backtesting._get_ohlcv_as_lists`
shifts them. What it reproduces, in Freqtrade's order (`Backtesting.backtest_loop`, `IStrategy.should_exit`):

* per candle, pairs with open trades first (in the order the trades opened), then the others in pair order;
* entry at the candle's open when `enter` and not `exit` and the pair has no open trade, a slot is free
  (`max_open_trades`) and it is not the last candle; the stake is Freqtrade's wallet rule (`stake_amount`,
  or "unlimited": the tradable balance split over the slots, capped by what is free), the amount truncated
  to the pair's amount step, the stake recomputed from it;
* on the entry candle and every later one: the stoploss (initial at `open_rate × (1 + stoploss)`, rounded up
  to the tick), the trailing stop (`trailing_stop_positive`, `_offset`, `trailing_only_offset_is_reached`,
  moved with the candle's high), the ROI table (profit at the high against the table entry in force), and
  the exit signal (at the open, unless `enter` is set too, `exit_profit_only` honoured); the first reason in
  Freqtrade's sequence — exit signal, stoploss, ROI, trailing stop — whose exit price is valid wins, with
  Freqtrade's exit prices (stop price or open when the candle opened below it, the worst case for a
  trailing stop hit on the entry candle, the ROI price clamped into the candle, the open when a new ROI
  entry takes effect at the candle's open, no ROI exit on a red entry candle that opened above the entry);
* fees on both sides (`profit_abs = amount × close × (1 − fee) − amount × open × (1 + fee)`);
* trades still open after the last candle are closed at the open of their pair's last candle.

Exit reasons: 1 exit signal, 2 stoploss, 3 ROI, 4 trailing stop, 5 force exit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

EXIT_SIGNAL, STOP_LOSS, ROI, TRAILING_STOP, FORCE_EXIT = 1, 2, 3, 4, 5
EXIT_REASONS = {
    EXIT_SIGNAL: "exit_signal",
    STOP_LOSS: "stop_loss",
    ROI: "roi",
    TRAILING_STOP: "trailing_stop_loss",
    FORCE_EXIT: "force_exit",
}
_EPS = 1e-9


@njit(cache=True)
def _decimals(tick: float) -> int:
    """Decimal places that represent multiples of `tick` exactly (as Freqtrade's string-based rounding)."""
    return max(0, math.ceil(-math.log10(tick) - _EPS)) + 2


@njit(cache=True)
def _round_up(value: float, tick: float) -> float:
    if tick <= 0.0:
        return value
    return round(math.ceil(value / tick - _EPS) * tick, _decimals(tick))


@njit(cache=True)
def _round_nearest(value: float, tick: float) -> float:
    if tick <= 0.0:
        return value
    return round(math.floor(value / tick + 0.5) * tick, _decimals(tick))


@njit(cache=True)
def _truncate(value: float, step: float) -> float:
    if step <= 0.0:
        return value
    return math.floor(value / step + _EPS) * step


@njit(cache=True)
def _profit_ratio(amount: float, open_rate: float, rate: float, fee: float) -> float:
    open_value = amount * open_rate * (1.0 + fee)
    if open_value == 0.0:
        return 0.0
    return round(amount * rate * (1.0 - fee) / open_value - 1.0, 8)


@njit(cache=True)
def _roi_entry(roi_minutes: np.ndarray, duration: int) -> int:
    """Index of the ROI table entry in force after `duration` minutes (the largest key ≤ it), or −1."""
    found = -1
    for k in range(roi_minutes.size):
        if roi_minutes[k] <= duration:
            found = k
    return found


@njit(cache=True)
def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    valid: np.ndarray,
    last_row: np.ndarray,
    roi_minutes: np.ndarray,
    roi_values: np.ndarray,
    stoploss: float,
    trailing_stop: bool,
    trailing_positive: float,
    trailing_offset: float,
    trailing_only_offset: bool,
    use_exit_signal: bool,
    exit_profit_only: bool,
    exit_profit_offset: float,
    ignore_roi_if_entry_signal: bool,
    max_open_trades: int,
    stake_amount: float,
    starting_balance: float,
    tradable_ratio: float,
    fee: float,
    tick: np.ndarray,
    step: np.ndarray,
    timeframe_minutes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the backtest; returns per trade (pair, open candle, close candle, open rate, close rate, amount,
    profit_abs, exit reason), in order of closing. `stake_amount` NaN means "unlimited";
    `trailing_positive` NaN means not set; `max_open_trades` ≤ 0 means no limit; `last_row[p]` is the index
    of pair p's last candle (force exit); `tick[p, c]` the price tick a trade opened at candle c uses (0:
    none), `step[p]` the pair's amount step."""
    n_pairs, n_candles = open_.shape
    cap = n_candles * n_pairs // 2 + 16
    out_pair = np.empty(cap, np.int64)
    out_open = np.empty(cap, np.int64)
    out_close = np.empty(cap, np.int64)
    out_open_rate = np.empty(cap, np.float64)
    out_close_rate = np.empty(cap, np.float64)
    out_amount = np.empty(cap, np.float64)
    out_profit = np.empty(cap, np.float64)
    out_reason = np.empty(cap, np.int64)
    n_out = 0

    is_open = np.zeros(n_pairs, np.bool_)
    t_open = np.zeros(n_pairs, np.int64)
    t_rate = np.zeros(n_pairs, np.float64)
    t_amount = np.zeros(n_pairs, np.float64)
    t_stake = np.zeros(n_pairs, np.float64)
    t_stop = np.zeros(n_pairs, np.float64)
    t_tick = np.zeros(n_pairs, np.float64)
    t_initial_stop = np.zeros(n_pairs, np.float64)
    t_trailing = np.zeros(n_pairs, np.bool_)
    open_order = np.zeros(n_pairs, np.int64)  # sequence number of the trade's opening (processing order)
    sequence = 0
    n_open = 0
    closed_profit = 0.0
    tied_up = 0.0
    order = np.empty(n_pairs, np.int64)
    last_candle = n_candles - 1

    for c in range(n_candles):
        # pairs with open trades first, by opening order; then the rest in pair order
        k = 0
        for p in range(n_pairs):
            if is_open[p]:
                order[k] = p
                k += 1
        for i in range(1, k):  # insertion sort by opening order (few open trades)
            j = i
            while j > 0 and open_order[order[j - 1]] > open_order[order[j]]:
                tmp = order[j - 1]
                order[j - 1] = order[j]
                order[j] = tmp
                j -= 1
        for p in range(n_pairs):
            if not is_open[p]:
                order[k] = p
                k += 1

        for idx in range(n_pairs):
            p = order[idx]
            if not valid[p, c]:
                continue
            o = open_[p, c]
            h = high[p, c]
            lo = low[p, c]
            sig_enter = enter[p, c]
            sig_exit = exit_[p, c]

            # 2. entry
            if (
                c != last_candle
                and sig_enter
                and not sig_exit
                and not is_open[p]
                and (max_open_trades <= 0 or n_open < max_open_trades)
            ):
                free = starting_balance + closed_profit - tied_up
                total = (tied_up + free) * tradable_ratio
                available = min(total - tied_up, free)
                if math.isnan(stake_amount):
                    stake = (available + tied_up) / max_open_trades if max_open_trades > 0 else available
                    stake = min(stake, available)
                else:
                    stake = stake_amount
                if available >= stake and stake > 0.0:
                    stake = min(stake, available)
                    amount = _truncate(stake / o, step[p])
                    if amount > 0.0:
                        is_open[p] = True
                        t_open[p] = c
                        t_rate[p] = o
                        t_amount[p] = amount
                        t_stake[p] = amount * o
                        t_tick[p] = tick[p, c]
                        t_stop[p] = _round_up(o * (1.0 - abs(stoploss)), t_tick[p])
                        t_initial_stop[p] = t_stop[p]
                        t_trailing[p] = False
                        open_order[p] = sequence
                        sequence += 1
                        n_open += 1
                        tied_up += t_stake[p]

            # 4. exits
            if not is_open[p]:
                continue
            rate = t_rate[p]
            amount = t_amount[p]
            duration = (c - t_open[p]) * timeframe_minutes
            profit_open = _profit_ratio(amount, rate, o, fee)
            profit_best = _profit_ratio(amount, rate, h, fee)

            # stoploss adjustment (trailing), then reached?
            if (
                trailing_stop
                and t_stop[p] < lo
                and not (trailing_only_offset and profit_best < trailing_offset)
            ):
                value = stoploss
                if not math.isnan(trailing_positive) and profit_best > trailing_offset:
                    value = trailing_positive
                new_stop = _round_up(h * (1.0 - abs(value)), t_tick[p])
                if new_stop > t_stop[p]:
                    t_stop[p] = new_stop
                    t_trailing[p] = True
            stop_hit = t_stop[p] >= lo

            roi_k = -1
            roi_hit = False
            if not (sig_enter and ignore_roi_if_entry_signal):
                roi_k = _roi_entry(roi_minutes, duration)
                if roi_k >= 0:
                    roi_hit = profit_best > roi_values[roi_k]

            signal_hit = False
            if use_exit_signal and sig_exit and not sig_enter:
                signal_hit = (not exit_profit_only) or profit_open > exit_profit_offset

            close_rate = -1.0
            reason = 0
            if signal_hit:
                close_rate = o
                reason = EXIT_SIGNAL
            if reason == 0 and stop_hit and not t_trailing[p]:
                close_rate = o if t_stop[p] > h else t_stop[p]
                reason = STOP_LOSS
            if reason == 0 and roi_hit:
                roi = roi_values[roi_k]
                open_value = amount * rate * (1.0 + fee)
                roi_rate = (1.0 + roi) * open_value / (amount * (1.0 - fee))
                entry_minutes = roi_minutes[roi_k]
                if (
                    duration > 0
                    and duration == entry_minutes
                    and entry_minutes % timeframe_minutes == 0
                    and (o > roi_rate)
                ):
                    close_rate = o
                    reason = ROI
                elif duration == 0 and o > close[p, c] and rate < o and roi_rate > close[p, c]:
                    reason = 0  # Freqtrade refuses an ROI exit on a red entry candle opened above it
                else:
                    close_rate = min(max(roi_rate, lo), h)
                    reason = ROI
            if reason == 0 and stop_hit and t_trailing[p]:
                reason = TRAILING_STOP
                if t_stop[p] > h:
                    close_rate = o
                elif duration == 0:
                    if (
                        trailing_only_offset
                        and not math.isnan(trailing_positive)
                        and trailing_positive != 0.0
                    ):
                        worst = o * (1.0 + abs(trailing_offset) - abs(trailing_positive))
                    else:
                        worst = o * (1.0 - abs(stoploss))
                    close_rate = max(lo, worst)
                else:
                    close_rate = t_stop[p]
            if reason == 0:
                continue
            close_rate = _round_nearest(close_rate, t_tick[p])
            if not (lo <= close_rate <= h):  # an exit order outside the candle does not fill
                continue
            profit = amount * close_rate * (1.0 - fee) - amount * rate * (1.0 + fee)
            out_pair[n_out] = p
            out_open[n_out] = t_open[p]
            out_close[n_out] = c
            out_open_rate[n_out] = rate
            out_close_rate[n_out] = close_rate
            out_amount[n_out] = amount
            out_profit[n_out] = profit
            out_reason[n_out] = reason
            n_out += 1
            is_open[p] = False
            n_open -= 1
            tied_up -= t_stake[p]
            closed_profit += profit

    # force exit of what is still open, at the open of the pair's last candle, by opening order
    for _ in range(n_open):
        first = -1
        for p in range(n_pairs):
            if is_open[p] and (first < 0 or open_order[p] < open_order[first]):
                first = p
        p = first
        c = last_row[p]
        close_rate = _round_nearest(open_[p, c], t_tick[p])
        amount = t_amount[p]
        profit = amount * close_rate * (1.0 - fee) - amount * t_rate[p] * (1.0 + fee)
        out_pair[n_out] = p
        out_open[n_out] = t_open[p]
        out_close[n_out] = c
        out_open_rate[n_out] = t_rate[p]
        out_close_rate[n_out] = close_rate
        out_amount[n_out] = amount
        out_profit[n_out] = profit
        out_reason[n_out] = FORCE_EXIT
        n_out += 1
        is_open[p] = False

    return (
        out_pair[:n_out],
        out_open[:n_out],
        out_close[:n_out],
        out_open_rate[:n_out],
        out_close_rate[:n_out],
        out_amount[:n_out],
        out_profit[:n_out],
        out_reason[:n_out],
    )
