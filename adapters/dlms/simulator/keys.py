"""Per-meter secrets derived from the simulator seed, as the DLMS contract fixes them."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from adapters.dlms.cipher import Keys

DEFAULT_SEED = "hes-sim"


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """What a head-end needs to talk to one simulated meter."""

    serial: str
    lls_password: bytes
    ek: bytes
    ak: bytes
    system_title: bytes

    @property
    def keys(self) -> Keys:
        """The global key set (EK, AK) for suite-0 ciphering."""
        return Keys(self.ek, self.ak)

    def csv_row(self) -> str:
        """``serial,lls_password,ek_hex,ak_hex,system_title_hex``."""
        return ",".join(
            (
                self.serial,
                self.lls_password.decode("ascii"),
                self.ek.hex(),
                self.ak.hex(),
                self.system_title.hex(),
            )
        )


CSV_HEADER = "serial,lls_password,ek_hex,ak_hex,system_title_hex"


def serial_of(index: int) -> str:
    """Serial number of meter ``index``: ``SIM`` and 7 digits."""
    if not 0 <= index <= 9_999_999:
        raise ValueError(f"meter index {index} outside 0..9999999")
    return f"SIM{index:07d}"


def system_title_of(index: int) -> bytes:
    """System title of meter ``index``: ``HES`` and the index as 5 bytes big-endian."""
    return b"HES" + index.to_bytes(5, "big")


def _secret(seed: str, serial: str, kind: str) -> bytes:
    return hmac.new(seed.encode(), f"{serial}:{kind}".encode(), hashlib.sha256).digest()


def simulated_keys(serial: str, seed: str = DEFAULT_SEED) -> MeterKeys:
    """LLS password, EK, AK and system title of the simulated meter with this serial."""
    if not (serial.startswith("SIM") and len(serial) == 10 and serial[3:].isdigit()):
        raise ValueError(f"serial {serial!r} is not a simulated meter serial (SIM + 7 digits)")
    return MeterKeys(
        serial=serial,
        lls_password=_secret(seed, serial, "lls").hex()[:16].encode("ascii"),
        ek=_secret(seed, serial, "ek")[:16],
        ak=_secret(seed, serial, "ak")[:16],
        system_title=system_title_of(int(serial[3:])),
    )
