"""DLMS key material of a meter: which kinds exist and the rules a key obeys (never logged)."""

from __future__ import annotations

import enum
import re

from domain.errors import Collector

SUITE0_KEY_BYTES = 16
"""Security suite 0 uses AES-GCM-128: EK and AK are 16 bytes."""
MAX_PASSWORD_CHARS = 32
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")
_HEX = re.compile(r"[0-9A-Fa-f]*\Z")


class KeyKind(enum.StrEnum):
    """A kind of secret the head-end keeps for a meter."""

    LLS = "LLS"
    """Low-level-security password (client 17)."""
    EK = "EK"
    """Global unicast encryption key (block cipher key) of suite 0."""
    AK = "AK"
    """Authentication key of suite 0."""


class MeterKeys:
    """Some or all of a meter's secrets; its repr never shows them."""

    __slots__ = ("ak", "ek", "lls_password")

    def __init__(
        self,
        *,
        lls_password: bytes | None = None,
        ek: bytes | None = None,
        ak: bytes | None = None,
    ) -> None:
        self.lls_password = lls_password
        self.ek = ek
        self.ak = ak

    def __repr__(self) -> str:
        return f"MeterKeys(kinds={[k.value for k in self.kinds]}, material=<redacted>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MeterKeys):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def kinds(self) -> list[KeyKind]:
        """The kinds present, in LLS, EK, AK order."""
        return list(self.as_dict())

    def as_dict(self) -> dict[KeyKind, bytes]:
        """Present secrets by kind."""
        items = ((KeyKind.LLS, self.lls_password), (KeyKind.EK, self.ek), (KeyKind.AK, self.ak))
        return {kind: value for kind, value in items if value is not None}

    @classmethod
    def from_dict(cls, values: dict[KeyKind, bytes]) -> MeterKeys:
        """Keys from secrets by kind."""
        return cls(
            lls_password=values.get(KeyKind.LLS),
            ek=values.get(KeyKind.EK),
            ak=values.get(KeyKind.AK),
        )

    def merged_over(self, older: MeterKeys) -> MeterKeys:
        """These keys, with the kinds they lack taken from ``older``."""
        return MeterKeys.from_dict(older.as_dict() | self.as_dict())

    @classmethod
    def parse(
        cls,
        lls_password: str | None,
        ek_hex: str | None,
        ak_hex: str | None,
        prefix: str = "",
    ) -> MeterKeys:
        """Keys from text input; raise ``ValidationFailed`` naming each field and rule.

        Error messages name the rule only, never the value given.
        """
        errors = Collector()
        password = None
        if lls_password is not None:
            if not 1 <= len(lls_password) <= MAX_PASSWORD_CHARS or not _PRINTABLE.match(
                lls_password
            ):
                errors.add(
                    f"{prefix}llsPassword",
                    "format",
                    f"LLS password must be 1..{MAX_PASSWORD_CHARS} printable ASCII characters "
                    "without spaces",
                )
            else:
                password = lls_password.encode("ascii")
        ek = _key(errors, f"{prefix}ek", ek_hex)
        ak = _key(errors, f"{prefix}ak", ak_hex)
        if (ek is None) != (ak is None) and not errors.errors:
            errors.add(
                f"{prefix}ek" if ek is None else f"{prefix}ak",
                "pair",
                "EK and AK are set together (suite 0 needs both)",
            )
        if password is None and ek is None and ak is None and not errors.errors:
            errors.add(f"{prefix}keys", "required", "give an LLS password, EK and AK, or both")
        errors.raise_if_any()
        return cls(lls_password=password, ek=ek, ak=ak)


def _key(errors: Collector, field: str, text: str | None) -> bytes | None:
    if text is None:
        return None
    cleaned = text.strip()
    if len(cleaned) != 2 * SUITE0_KEY_BYTES or not _HEX.match(cleaned):
        errors.add(
            field,
            "format",
            f"{field.rsplit('.', 1)[-1].upper()} must be {2 * SUITE0_KEY_BYTES} hex digits "
            f"({SUITE0_KEY_BYTES} bytes, suite 0)",
        )
        return None
    return bytes.fromhex(cleaned)
