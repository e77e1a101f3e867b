"""Aggregates over a time bucket: one vocabulary, each name meaning one thing wherever offered.

A resource offers the aggregates its storage query can compute (``device_readings.AGGS``
for a device's readings, ``history_queries.METRIC_AGGS`` for a park metric); the API
accepts only those and its OpenAPI document lists only those.
"""

from __future__ import annotations

from enum import StrEnum


class Agg(StrEnum):
    """An aggregate of a series over each time bucket."""

    # The mean of the series asked for over the bucket: a device's readings; a park's
    # total (the sum over its devices of their mean) over the bucket's minutes with data.
    AVG = "avg"
    # The mean of every reading behind the series (for one device, the same as avg).
    MEAN = "mean"
    MIN = "min"  # the smallest reading
    MAX = "max"  # the largest reading
    SUM = "sum"  # of the readings
    COUNT = "count"  # readings (with a state given: readings in that state)
    FIRST = "first"  # the bucket's first reading
    LAST = "last"  # the bucket's last reading
    INCREASE = "increase"  # counters: the sum of the devices' increases
