"""A meter's association view: the objects one client may see, with their access rights.

It is the ``object_list`` of the current Association LN object (class 15, 0.0.40.0.0.255,
attribute 2) as one client reads it. Access modes follow the association object's version:
versions 0..2 use the Blue Book enumerations (attributes 0 none, 1 read, 2 write, 3 read and
write, 4..6 the same with authentication; methods 0 none, 1 access, 2 authenticated access,
a boolean in version 0), version 3 bit flags (bit 0 read/access, bit 1 write).
"""

from __future__ import annotations

import re

import msgspec

OBIS_TEXT = re.compile(r"^\d{1,3}(\.\d{1,3}){5}\Z")
ASSOCIATION_LN = "0.0.40.0.0.255"
ASSOCIATION_CLASS = 15
_READ_MODES = frozenset({1, 3, 4, 6})
_WRITE_MODES = frozenset({2, 3, 5, 6})


def obis_of(raw: bytes) -> str:
    """The dotted OBIS code of a 6-byte logical name; ``ValueError`` for another length."""
    if len(raw) != 6:
        raise ValueError(f"a logical name has 6 bytes, not {len(raw)}")
    return ".".join(str(b) for b in raw)


class Access(msgspec.Struct, frozen=True, array_like=True):
    """Access right of one attribute or method: its index and access mode."""

    index: int
    mode: int


class CosemObject(msgspec.Struct, frozen=True, kw_only=True):
    """One object of the view: class, version, logical name and access rights."""

    class_id: int
    version: int
    obis: str
    attributes: tuple[Access, ...] = ()
    methods: tuple[Access, ...] = ()

    def attribute_mode(self, index: int) -> int | None:
        """The access mode of attribute ``index`` (None when it is not listed)."""
        return next((a.mode for a in self.attributes if a.index == index), None)

    def method_mode(self, index: int) -> int | None:
        """The access mode of method ``index`` (None when it is not listed)."""
        return next((m.mode for m in self.methods if m.index == index), None)


class AssociationView(msgspec.Struct, frozen=True, kw_only=True):
    """The objects visible to one client of one meter model."""

    version: int
    """Version of the association object, which fixes how access modes are written."""
    objects: tuple[CosemObject, ...]

    def find(self, obis: str) -> CosemObject | None:
        """The object with this logical name."""
        return next((o for o in self.objects if o.obis == obis), None)

    def readable(self, obj: CosemObject, index: int) -> bool:
        """True when the client may read attribute ``index`` (attribute 1 always)."""
        if index == 1:
            return True
        mode = obj.attribute_mode(index)
        if mode is None:
            return False
        return bool(mode & 1) if self.version >= 3 else mode in _READ_MODES

    def writable(self, obj: CosemObject, index: int) -> bool:
        """True when the client may write attribute ``index``."""
        mode = obj.attribute_mode(index)
        if mode is None:
            return False
        return bool(mode & 2) if self.version >= 3 else mode in _WRITE_MODES

    def callable(self, obj: CosemObject, index: int) -> bool:
        """True when the client may invoke method ``index``."""
        mode = obj.method_mode(index)
        if mode is None:
            return False
        return bool(mode & 1) if self.version >= 3 else mode in (1, 2)


class ViewError(ValueError):
    """An object list that is not shaped as the Blue Book says; names the entry."""


def _int(value: object, what: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise ViewError(f"{what} is not an integer")
    return value


def _rights(items: object, what: str) -> tuple[Access, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ViewError(f"{what} is not an array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, list) or len(item) < 2:
            raise ViewError(f"{what}[{i}] is not a structure of index and access mode")
        out.append(Access(_int(item[0], f"{what}[{i}] index"), _int(item[1], f"{what}[{i}] mode")))
    return tuple(out)


def parse_object_list(value: object, version: int) -> AssociationView:
    """The view from a decoded ``object_list`` (array of class, version, name, rights)."""
    if not isinstance(value, list):
        raise ViewError("object_list is not an array")
    objects = []
    for n, entry in enumerate(value):
        what = f"object_list[{n}]"
        if not isinstance(entry, list) or len(entry) != 4:
            raise ViewError(f"{what} is not a structure of 4 elements")
        class_id, obj_version, name, rights = entry
        if not isinstance(name, bytes):
            raise ViewError(f"{what} logical name is not an octet string")
        try:
            obis = obis_of(name)
        except ValueError as exc:
            raise ViewError(f"{what}: {exc}") from None
        if not isinstance(rights, list) or len(rights) != 2:
            raise ViewError(f"{what} ({obis}) access rights are not a structure of 2")
        objects.append(
            CosemObject(
                class_id=_int(class_id, f"{what} class"),
                version=_int(obj_version, f"{what} version"),
                obis=obis,
                attributes=_rights(rights[0], f"{what} ({obis}) attribute access"),
                methods=_rights(rights[1], f"{what} ({obis}) method access"),
            )
        )
    return AssociationView(version=version, objects=tuple(objects))
