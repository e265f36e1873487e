"""Profile generic buffers and their selective access: range (selector 1) and entry (selector 2)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.dlms import axdr
from adapters.dlms.axdr import AxdrError, Data, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime
from adapters.dlms.simulator.apdu import DataAccessResult, Selection

Row = tuple[Data, ...]


@dataclass(frozen=True, slots=True)
class CaptureObject:
    """A capture object definition: class id, logical name, attribute and data index."""

    class_id: int
    obis: bytes
    attribute: int
    data_index: int = 0

    def to_data(self) -> Data:
        """The capture_object_definition structure."""
        return axdr.structure(
            [
                axdr.u16(self.class_id),
                axdr.octets(self.obis),
                axdr.i8(self.attribute),
                axdr.u16(self.data_index),
            ]
        )


def parse_capture_object(data: Data) -> CaptureObject:
    """Read a capture_object_definition structure."""
    items = data.items()
    if data.tag is not Tag.STRUCTURE or len(items) != 4:
        raise AxdrError("capture object definition must be a structure of 4")
    return CaptureObject(
        items[0].integer(), items[1].octets(), items[2].integer(), items[3].integer()
    )


@dataclass(frozen=True, slots=True)
class Buffer:
    """A profile buffer: capture objects, row times (ascending) and a renderer of rows [i, j)."""

    capture: tuple[CaptureObject, ...]
    times: Sequence[float]
    render: Callable[[int, int], list[Row]]


def _as_time(data: Data) -> float:
    if data.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME):
        raise AxdrError(f"range bound must be a date-time, got {data.tag.name}")
    return decode_datetime(data.octets()).timestamp()


def _columns(capture: Sequence[CaptureObject], first: int, last: int) -> list[int]:
    return list(range(first, last))


def _pick(rows: list[Row], columns: list[int] | None) -> Data:
    if columns is None:
        return axdr.array([axdr.structure(r) for r in rows])
    return axdr.array([axdr.structure([r[c] for c in columns]) for r in rows])


def read_buffer(buffer: Buffer, selection: Selection | None) -> Data | DataAccessResult:
    """The buffer attribute, whole or as the selection restricts it."""
    n = len(buffer.times)
    if selection is None:
        return _pick(buffer.render(0, n), None)
    try:
        if selection.selector == 1:
            return _by_range(buffer, selection.parameters)
        if selection.selector == 2:
            return _by_entry(buffer, selection.parameters)
    except (AxdrError, CosemTimeError):
        return DataAccessResult.TYPE_UNMATCHED
    return DataAccessResult.OTHER_REASON


def _by_range(buffer: Buffer, parameters: Data) -> Data | DataAccessResult:
    items = parameters.items()
    if parameters.tag is not Tag.STRUCTURE or len(items) != 4:
        raise AxdrError("range descriptor must be a structure of 4")
    restricting = parse_capture_object(items[0])
    clock = buffer.capture[0]
    if (restricting.class_id, restricting.obis, restricting.attribute) != (
        clock.class_id,
        clock.obis,
        clock.attribute,
    ):
        return DataAccessResult.OBJECT_UNAVAILABLE  # only the clock column restricts
    start, end = _as_time(items[1]), _as_time(items[2])
    columns: list[int] | None = None
    if items[3].items():
        wanted = [parse_capture_object(c) for c in items[3].items()]
        keys = [(c.class_id, c.obis, c.attribute, c.data_index) for c in buffer.capture]
        columns = []
        for w in wanted:
            key = (w.class_id, w.obis, w.attribute, w.data_index)
            if key not in keys:
                return DataAccessResult.OBJECT_UNAVAILABLE
            columns.append(keys.index(key))
    lo = bisect.bisect_left(buffer.times, start)
    hi = bisect.bisect_right(buffer.times, end)
    return _pick(buffer.render(lo, hi) if lo < hi else [], columns)


def _by_entry(buffer: Buffer, parameters: Data) -> Data | DataAccessResult:
    items = parameters.items()
    if parameters.tag is not Tag.STRUCTURE or len(items) != 4:
        raise AxdrError("entry descriptor must be a structure of 4")
    from_entry, to_entry, from_col, to_col = (i.integer() for i in items)
    n, width = len(buffer.times), len(buffer.capture)
    first = max(from_entry, 1)
    last = n if to_entry == 0 else min(to_entry, n)
    col_first = max(from_col, 1)
    col_last = width if to_col == 0 else to_col
    if col_last > width or col_first > col_last or (to_entry and to_entry < from_entry):
        return DataAccessResult.OTHER_REASON
    columns = _columns(buffer.capture, col_first - 1, col_last)
    rows = buffer.render(first - 1, last) if first <= last else []
    return _pick(rows, None if len(columns) == width else columns)
