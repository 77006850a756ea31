"""The history sweep: which already-synced days to check again for events that arrived very late.

Each sync re-reads its recent days for late arrivals (state.py); an event that reaches Mixpanel
after its day has left that stretch (an `/import` backfill, a device offline for weeks) is found
only by the sweep. The state keeps, for the history before the recent stretch, contiguous ranges of
days with the watermark each was last checked at: every event of those days that Mixpanel processed
at or before it has been emitted. A sweep window re-reads one range's days keeping only events
processed after that watermark, so it returns the very late arrivals and nothing already delivered.

Days are grouped in blocks of `block_days` counted from 1970-01-01, and both the recent stretch
(when its old days move into the history, `fold_limit`) and the sweep windows follow the blocks: one
window is one block, and the state holds about one range per sync of a sweep pass however long the
history is. A block the history holds as several ranges (a backfill or a sweep that stopped partway,
each sync's days at its own watermark) is still one window, with each range's watermark for its
days (Window.later_marks), and is one range once read. The windows of a sync are the stalest first,
newest days first among equals, so the sweep moves from newest to oldest and wraps around to the
first stretch it checked; every day is checked again within ceil(blocks of history / windows per
sync) syncs.

Days checked at 0 were never read. With recent_first_days they are the backfill's, which reads them
all, newest first and whole, before the sweep (`unread_spans`; plan.Plan), and the sweep leaves them;
with it off the sweep reads them, whole, as the stalest of all.

All of it is pure (dates and integers), tested without HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .windows import ONE_DAY, Window

EPOCH_DAY = dt.date(1970, 1, 1)
# The most ranges one sweep window reads, each with its own watermark: its `where` grows by about 150
# characters a range, and it travels in the URL. A block cut into more (a sync stopped every day or so,
# with long blocks) costs a request per this many ranges.
MAX_RANGES_PER_WINDOW = 8
# Checked ranges are (through_day, watermark_ms); the first begins at the history's first day and
# each of the others the day after the one before it.
Checked = tuple[dt.date, int]


def block_days(date_window_size: int, attribution_window: int) -> int:
    """Days per block: what one window can hold besides the attribution window and today.

    The recent stretch is read as one window of late arrivals when it fits in `date_window_size`
    days; it spans the attribution window, up to a block before it, and today: so a block is the
    window less those. At least one day.
    """
    return max(1, date_window_size - attribution_window - 1)


def block_start(day: dt.date, block: int) -> dt.date:
    """The first day of the block holding `day`."""
    return day - dt.timedelta(days=(day - EPOCH_DAY).days % block)


def fold_limit(recent_start: dt.date, through: dt.date, block: int) -> dt.date:
    """The first day that stays in the recent stretch once a sync has read everything up to `through`.

    `recent_start` is the first day the next sync must re-read for late arrivals (its watermark less
    the attribution window); the days before it, down to a block boundary, move to the history.
    """
    return block_start(min(recent_start, through + ONE_DAY), block)


def spans(first: dt.date, checked: Sequence[Checked]) -> list[tuple[dt.date, dt.date, int]]:
    """The ranges as (first_day, last_day, watermark_ms)."""
    out = []
    for through, watermark in checked:
        out.append((first, through, watermark))
        first = through + ONE_DAY
    return out


def mark(first: dt.date, checked: Sequence[Checked], low: dt.date, high: dt.date, watermark: int) -> list[Checked]:
    """The ranges after the days `low..high` (within them) were checked at `watermark`.

    Neighbours with the same watermark become one range: the windows of one sync share its
    watermark (state.py), so a sweep pass leaves about one range per sync.
    """
    pieces: list[tuple[dt.date, dt.date, int]] = []
    for a, b, mark_ms in spans(first, checked):
        if b < low or a > high:
            pieces.append((a, b, mark_ms))
            continue
        if a < low:
            pieces.append((a, low - ONE_DAY, mark_ms))
        pieces.append((max(a, low), min(b, high), watermark))
        if b > high:
            pieces.append((high + ONE_DAY, b, mark_ms))
    merged: list[Checked] = []
    for _, b, mark_ms in pieces:
        if merged and merged[-1][1] == mark_ms:
            merged[-1] = (b, mark_ms)
        else:
            merged.append((b, mark_ms))
    return merged


def sweep_windows(
    first: dt.date, checked: Sequence[Checked], days: tuple[dt.date, dt.date], block: int, count: int,
    unread: bool = True, ranges: int = MAX_RANGES_PER_WINDOW,
) -> list[Window]:
    """The sync's `count` sweep windows, stalest first: each the newest unchecked part of the range
    checked longest ago (the newest such range among equals), widened to the days left of its block
    next to it, with each range's own watermark (Window.later_marks); within `days` (start_day and
    end_date). So a block costs one request however many ranges cut it (syncs that stopped partway).
    Days checked at 0 were never read: they are read whole, not for `> 0`, which would leave out events
    without a processing time; with `unread` False they are left to the backfill (`unread_spans`),
    which reads them all, and the sweep checks only days read before. A window reads at most `ranges`
    ranges."""
    low_day, high_day = days
    left = [
        (max(a, low_day), min(b, high_day), mark_ms)
        for a, b, mark_ms in spans(first, checked)
        if b >= low_day and a <= high_day and (unread or mark_ms)
    ]
    windows: list[Window] = []
    while len(windows) < count and left:
        index = min(range(len(left)), key=lambda i: (left[i][2], -left[i][1].toordinal()))
        window, left = _block_window(left, index, block, ranges)
        windows.append(window)
    return windows


def _block_window(
    left: list[tuple[dt.date, dt.date, int]], index: int, block: int, ranges: int
) -> tuple[Window, list[tuple[dt.date, dt.date, int]]]:
    """The window over the newest days of `left[index]`'s block, with the ranges next to them in that
    block (up to `ranges` in all; `left` ascending, its ranges apart or adjacent), and what is left."""
    start = block_start(left[index][1], block)
    end = start + dt.timedelta(days=block - 1)
    low = high = index
    while high - low + 1 < ranges:
        if low > 0 and left[low][0] > start and left[low - 1][1] == left[low][0] - ONE_DAY:
            low -= 1
        elif high + 1 < len(left) and left[high + 1][0] <= end and left[high + 1][0] == left[high][1] + ONE_DAY:
            high += 1
        else:
            break
    parts = [(max(a, start), min(b, end), mark_ms) for a, b, mark_ms in left[low : high + 1]]
    marks = [(a, mark_ms or None) for a, _, mark_ms in parts]
    window = Window(parts[0][0], parts[-1][1], marks[0][1], sweep=True, later_marks=tuple(marks[1:]))
    rest = left[:low]
    if left[low][0] < window.first_day:
        rest.append((left[low][0], window.first_day - ONE_DAY, left[low][2]))
    if left[high][1] > window.last_day:
        rest.append((window.last_day + ONE_DAY, left[high][1], left[high][2]))
    return window, rest + left[high + 1 :]


def unread_spans(
    first: dt.date, checked: Sequence[Checked], days: tuple[dt.date, dt.date]
) -> list[tuple[dt.date, dt.date]]:
    """The days never read (ranges checked at 0) within `days`, as ascending (first_day, last_day): what
    the backfill reads, whole and newest first (plan.Plan), once a sync's own days are read."""
    low_day, high_day = days
    return [
        (max(a, low_day), min(b, high_day))
        for a, b, mark_ms in spans(first, checked)
        if mark_ms == 0 and b >= low_day and a <= high_day
    ]


def history_days(first: dt.date, checked: Sequence[Checked], start_day: dt.date) -> int:
    """How many days of history the sweep checks (those from `start_day` on)."""
    if not checked:
        return 0
    return max(0, (checked[-1][0] - max(first, start_day)).days + 1)


def syncs_per_pass(history: int, block: int, windows: int) -> int | None:
    """How many syncs check every day of `history` days once (None: the sweep is off)."""
    if windows <= 0:
        return None
    if history <= 0:
        return 0
    blocks = -(-(history - 1) // block) + 1  # the most blocks `history` consecutive days can touch
    return -(-blocks // windows)
