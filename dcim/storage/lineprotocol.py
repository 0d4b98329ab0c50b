"""Line protocol and query-language quoting: pure functions shared by the InfluxDB backends."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, compress
from operator import itemgetter, not_
from typing import cast

from dcim.storage.base import Quality, Sample, SampleColumns, SeriesKey

# Line protocol escaping (InfluxDB 1.x and 2.x): measurements escape comma and space;
# tag keys, tag values and field keys also escape the equals sign. Backslash needs no escape.
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})

# Quality is written as an integer field; the lookup also rejects unknown codes.
_QUALITY_FIELD: dict[int, str] = {int(q): f"{int(q)}i" for q in Quality}
# The same after a value (",quality=0i ") and alone ("0i "), each followed by the timestamp.
_AFTER_VALUE: dict[int, str] = {q: f",quality={f} " for q, f in _QUALITY_FIELD.items()}
_QUALITY_ONLY: dict[int, str] = {q: f"{f} " for q, f in _QUALITY_FIELD.items()}
_FLOAT = {float}
_VALUE_HEAD = itemgetter(1)  # of a head row: prefix + " value="
# Identity caches are cleared when they reach this many keys (callers that build a new
# SeriesKey per sample would otherwise grow them without bound).
IDENTITY_CACHE_MAX = 1 << 18
# The text of recently written values, cleared when it reaches this many. repr() of a float
# costs 0.1-1 us; telemetry repeats its values (states, set points, temperatures in tenths),
# and a hit costs a dict lookup.
VALUE_TEXT_CACHE_MAX = 1 << 14


class InvalidSeriesKey(ValueError):
    """A series key that line protocol cannot carry (empty part, newline, trailing backslash)."""


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol."""
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_tag(text: str) -> str:
    """Escape a tag key or tag value (or field key) for line protocol."""
    return text.translate(_TAG_ESCAPES)


def validate_series_key(series: SeriesKey) -> None:
    """Raise InvalidSeriesKey when a part of the key is empty or cannot be written."""
    for part, text in (("measurement", series.measurement), ("device", series.device),
                       ("point", series.point)):
        if not text:
            raise InvalidSeriesKey(f"{part} is empty in {series!r}")
        if "\n" in text or "\r" in text:
            raise InvalidSeriesKey(f"{part} contains a line break in {series!r}")
        if text.endswith("\\"):
            # "a\" followed by the separator would read as an escaped separator.
            raise InvalidSeriesKey(f"{part} ends with a backslash in {series!r}")


def line_prefix(series: SeriesKey, site_id: str) -> str:
    """Measurement and tag set of one series, tags sorted by key as InfluxDB prefers."""
    validate_series_key(series)
    return (
        f"{escape_measurement(series.measurement)}"
        f",device={escape_tag(series.device)}"
        f",point={escape_tag(series.point)}"
        f",site={escape_tag(site_id)}"
    )


class LineBuilder:
    """Builds line protocol for samples, caching the escaped prefix of each series."""

    def __init__(self, site_id: str) -> None:
        if not site_id or "\n" in site_id or site_id.endswith("\\"):
            raise InvalidSeriesKey(f"site id {site_id!r} cannot be a tag value")
        self.site_id = site_id
        self._prefixes: dict[SeriesKey, str] = {}
        # id(series) -> (series, prefix + " value=", prefix + " quality="). Looked up by
        # identity (collectors reuse their key objects), which skips SeriesKey's Python-level
        # __hash__; the entry holds the key, so its id cannot be reused while cached.
        self._heads: dict[int, tuple[SeriesKey, str, str]] = {}
        # value -> repr(value) for finite non-zero floats (0.0 == -0.0, but they print apart)
        self._texts: dict[float, str] = {}

    def prefix(self, series: SeriesKey) -> str:
        """The cached line prefix of one series."""
        prefix = self._prefixes.get(series)
        if prefix is None:
            prefix = self._prefixes[series] = line_prefix(series, self.site_id)
        return prefix

    def _head(self, series: SeriesKey) -> tuple[SeriesKey, str, str]:
        prefix = self.prefix(series)
        if len(self._heads) >= IDENTITY_CACHE_MAX:
            self._heads.clear()
        head = self._heads[id(series)] = (series, f"{prefix} value=", f"{prefix} quality=")
        return head

    def build(self, samples: Sequence[Sample]) -> str:
        """Line protocol for a batch: value as float, quality as integer, time in ns.

        Each line is put together from four columns of text built by C-level maps (head,
        value, quality, time): a batch of thousands of samples costs a few C loops instead
        of a Python loop iteration per sample.
        """
        columns = SampleColumns.of(samples)
        n = len(columns)
        if not n:
            return ""
        keys, values = columns.keys, columns.values
        heads = self._heads
        try:  # key objects seen before: C-level lookups by identity (see __init__)
            head_rows = list(map(heads.__getitem__, map(id, keys)))
        except KeyError:
            head_rows = [heads.get(id(key)) or self._head(key) for key in keys]
        if not {*map(type, values)} <= _FLOAT:  # bool, int, numpy scalars: repr would not do
            values = [float(value) for value in values]
        texts = self._texts
        value_texts: list[str | None] = list(map(texts.get, values))
        head_texts = list(map(_VALUE_HEAD, head_rows))
        quality_texts = list(map(_AFTER_VALUE.__getitem__, columns.qualities))
        for i in compress(range(n), map(not_, value_texts)):  # not cached (or not finite)
            value = values[i]
            # value - value is 0.0 only for finite numbers; NaN and infinities cannot be
            # written, so such samples carry their quality alone and read back as NaN.
            if value - value == 0.0:
                text = value_texts[i] = repr(value)
                if value:  # 0.0 == -0.0, but they print apart
                    if len(texts) >= VALUE_TEXT_CACHE_MAX:
                        texts.clear()
                    texts[value] = text
            else:
                value_texts[i] = ""
                head_texts[i] = head_rows[i][2]
                quality_texts[i] = _QUALITY_ONLY[columns.qualities[i]]
        times = columns.times
        # a poll's samples share their time: format each distinct time once
        time_texts = list(map({t: f"{t}\n" for t in set(times)}.__getitem__, times))
        time_texts[-1] = time_texts[-1][:-1]  # no newline after the last line
        filled = cast("list[str]", value_texts)  # every None was replaced above
        return "".join(chain.from_iterable(zip(head_texts, filled, quality_texts, time_texts)))


def influxql_ident(name: str) -> str:
    """Quote an InfluxQL identifier (measurement, tag key, retention policy)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_string(text: str) -> str:
    """Quote an InfluxQL string literal (tag values in WHERE)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def flux_string(text: str) -> str:
    """Quote a Flux string literal; '${' would start interpolation, so its dollar is escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'

