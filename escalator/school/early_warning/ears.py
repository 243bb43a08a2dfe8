"""EARS C1, C2 and C3 (pure functions; docs/early-warning.md "Methods").

Sources: Hutwagner L et al., Emerg Infect Dis 2005;11(2):314–316 (the methods, 7-day
baseline, C2/C3 with a 2-day guard band); the parameters ``k`` and ``h`` after Qin et al. 2014
(:mod:`escalator.config.early_warning_defaults`). Definitions, for the day ``t`` judged and the
counts of the school days before it (``history``, oldest first; school days only, so a holiday
week is simply absent):

- C1: baseline = the ``baseline`` school days before ``t``; ``z = (x − mean) / max(sd, min_sd)``
  (``sd``: sample standard deviation); statistic ``max(0, z − k)``; signal when it is > ``h``.
- C2: the same with the baseline ``guard`` days earlier (t−9..t−3 for 7 and 2).
- C3: the sum of the C2 statistic over ``t`` and the two school days before it; signal when > ``h``.

Each function returns None when the history is too short for a full baseline (so no series
signals in its first ``baseline`` school days — C1 from the 8th school day, C2 from the 10th,
C3 from the 12th with the defaults).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

METHODS = ("C1", "C2", "C3")


@dataclass(frozen=True)
class Judgement:
    """One method's verdict on one day of one series: ``observed`` (pupils), ``expected`` (the
    baseline mean), ``sd`` (the one used: max(sample sd, min_sd)), ``statistic`` and
    ``threshold`` (``h``), ``signal`` (statistic > threshold). ``limit``: for C1 and C2 the count
    above which it signals, mean + (k + h)·sd; None for C3."""

    method: str
    observed: float
    expected: float
    sd: float
    statistic: float
    threshold: float
    signal: bool
    limit: float | None


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def c_statistic(history: Sequence[float], x: float, *, k: float, min_sd: float,
                baseline: int = 7, guard: int = 0) -> tuple[float, float, float] | None:
    """``(max(0, z − k), mean, sd used)`` for ``x`` against the ``baseline`` values that end
    ``guard`` values before the end of ``history``; None when ``history`` is too short."""
    if len(history) < baseline + guard:
        return None
    end = len(history) - guard
    mean, sd = _mean_sd(history[end - baseline:end])
    used = max(sd, min_sd)
    return max(0.0, (x - mean) / used - k), mean, used


def judge(method: str, history: Sequence[float], x: float, *, k: float, h: float,
          min_sd: float, baseline: int = 7, guard: int = 2) -> Judgement | None:
    """Judge ``x`` (today's count) by ``method`` (``C1``, ``C2``, ``C3``) against ``history``
    (the counts of the school days before today, oldest first). Returns None without a full
    baseline. Raises ``ValueError`` for an unknown method."""
    if method == "C1":
        got = c_statistic(history, x, k=k, min_sd=min_sd, baseline=baseline, guard=0)
        if got is None:
            return None
        stat, mean, sd = got
        return Judgement("C1", x, mean, sd, stat, h, stat > h, mean + (k + h) * sd)
    if method == "C2":
        got = c_statistic(history, x, k=k, min_sd=min_sd, baseline=baseline, guard=guard)
        if got is None:
            return None
        stat, mean, sd = got
        return Judgement("C2", x, mean, sd, stat, h, stat > h, mean + (k + h) * sd)
    if method == "C3":
        if len(history) < baseline + guard + 2:
            return None
        total = 0.0
        today = None
        for back in range(3):  # today, yesterday, the day before (school days)
            past = history[:len(history) - back] if back else history
            value = x if back == 0 else history[len(history) - back]
            got = c_statistic(past, value, k=k, min_sd=min_sd, baseline=baseline, guard=guard)
            assert got is not None
            total += got[0]
            if back == 0:
                today = got
        assert today is not None
        return Judgement("C3", x, today[1], today[2], total, h, total > h, None)
    raise ValueError(f"unknown EARS method {method!r} (C1, C2, C3)")
