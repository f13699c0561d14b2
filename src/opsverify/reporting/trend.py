"""A metric's trend over recorded points: the least-squares line, its change per 30 days, its projection."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTH = timedelta(days=30)
DAY_S = 86_400.0


@dataclass(frozen=True)
class Sample:
    """One value at one time (a history point, or the current run's measurement)."""

    time: datetime
    value: float


@dataclass(frozen=True)
class Trend:
    """The least-squares line through samples (oldest first): value = start_value + slope_per_day * days."""

    samples: tuple[Sample, ...]
    slope_per_day: float
    start_value: float  # the line's value at the first sample's time

    @property
    def first(self) -> Sample:
        return self.samples[0]

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    @property
    def span(self) -> timedelta:
        return self.last.time - self.first.time

    def change_per(self, period: timedelta = MONTH) -> float:
        """How much the line rises (negative: falls) over ``period``."""
        return self.slope_per_day * period.total_seconds() / DAY_S

    def percent_per(self, period: timedelta = MONTH) -> float | None:
        """The change over ``period`` as a share of the line's value at the first sample (None when that is ≤ 0)."""
        return 100.0 * self.change_per(period) / self.start_value if self.start_value > 0 else None

    def at(self, moment: datetime) -> float:
        """The line's value at ``moment`` (a projection past the last sample)."""
        return self.start_value + self.slope_per_day * (moment - self.first.time).total_seconds() / DAY_S


MIN_POINTS = 3  # a rate is told from at least this many values …
MIN_SPAN = timedelta(days=7)  # … spread over at least this long (two runs a minute apart tell no monthly rate)


def rate_worthy(samples: Sequence[Sample]) -> bool:
    """Enough values over a long enough span for a change per 30 days to mean something."""
    times = sorted(s.time for s in samples)
    return len(times) >= MIN_POINTS and times[-1] - times[0] >= MIN_SPAN


def fit(samples: Sequence[Sample]) -> Trend | None:
    """The trend of ``samples`` (sorted here), or None with fewer than two distinct times."""
    ordered = tuple(sorted(samples, key=lambda s: s.time))
    if len({s.time for s in ordered}) < 2:
        return None
    days = [(s.time - ordered[0].time).total_seconds() / DAY_S for s in ordered]
    slope, intercept = statistics.linear_regression(days, [s.value for s in ordered])
    return Trend(ordered, slope, intercept)
