"""RFC 3339 times as the contract writes them, with nanosecond precision.

Read models keep times as integer nanoseconds since the epoch (sortable, exact);
the API writes them as RFC3339Nano in UTC (``Z``, fraction trimmed of zeros).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Stored times are 64-bit nanoseconds (years 1677 to 2262).
NS_MIN, NS_MAX = -(2**63), 2**63 - 1
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def to_ns(moment: datetime) -> int:
    """A timezone-aware datetime → nanoseconds since the epoch."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    """Nanoseconds since the epoch → UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1_000)


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch → ``2025-03-01T10:04:05.123456789Z`` (fraction trimmed)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = _whole_seconds(seconds)
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


@lru_cache(maxsize=65_536)
def _whole_seconds(seconds: int) -> str:
    # Every answer listing rows formats two times per row; the date part is what costs (a tenth as much
    # from this cache), and the times of one page, and of one busy second, repeat.
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def format_datetime(moment: datetime) -> str:
    return format_ns(to_ns(moment))


def parse_ns(text: str) -> int:
    """RFC 3339 with a zone designator (fraction up to 9 digits) → nanoseconds. ValueError if invalid."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
    return to_ns(moment) + int((fraction or "").ljust(9, "0"))


def clamp_ns(ns: int) -> int:
    """A time bound (cursor, window edge) brought into the range stored times can have."""
    return min(max(ns, NS_MIN), NS_MAX)
