"""Customers' personal data sealed with a per-customer data key (AES-256-GCM), erasable.

A customer's name, address, phone and e-mail never sit in its events in clear: each event holds
them sealed under the customer's own 256-bit data key, bound (associated data) to the customer's
account so a sealed value copied onto another customer fails to open. The data key is kept
outside the events (``commands.customer_keys``), itself sealed under the master key; destroying
it erases every personal value of that customer at once (crypto-shredding) while the events,
their hash chain and replay stay intact.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import Collector
from domain.text import check_text

KEY_BYTES = 32
NONCE_BYTES = 12
SEAL_PREFIX = "v1:"
ERASED = "[erased]"
"""What history and ``stateAt`` show in place of a personal field whose key was destroyed."""

PHONE_RE = re.compile(r"\+?[0-9][0-9 ()./-]{2,31}")
PHONE_RULE = "3..32 digits, spaces or ()./- with an optional leading +"
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}")
EMAIL_RULE = "local@domain.tld, at most 254 characters"


class PersonalData(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's personal fields: sealed in events, erased with the customer's key."""

    name: str
    address: str
    phone: str = ""
    email: str = ""

    def check(self, errors: Collector) -> None:
        """Record every broken rule of the personal fields."""
        check_text(errors, "name", self.name, max_chars=128)
        check_text(errors, "address", self.address, max_chars=500, multiline=True)
        if self.phone and not PHONE_RE.fullmatch(self.phone):
            errors.add("phone", "format", f"phone must be {PHONE_RULE}")
        if self.email and (len(self.email) > 254 or not EMAIL_RE.fullmatch(self.email)):
            errors.add("email", "format", f"email must be {EMAIL_RULE}")


ERASED_DATA = PersonalData(name=ERASED, address=ERASED, phone=ERASED, email=ERASED)


class KeyUnavailable(Exception):
    """A sealed value cannot be opened: its key was destroyed or does not fit."""


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(KEY_BYTES)


def seal(key: bytes, account: str, personal: PersonalData) -> str:
    """``personal`` encrypted under ``key``, bound to ``account``: ``v1:`` + base64."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, msgspec.json.encode(personal), account.encode())
    return SEAL_PREFIX + base64.b64encode(nonce + sealed).decode()


def open_sealed(key: bytes | None, account: str, sealed: str) -> PersonalData:
    """The personal data inside ``sealed``; ``KeyUnavailable`` without the right key."""
    if key is None:
        raise KeyUnavailable(f"the data key of customer {account} is destroyed")
    if not sealed.startswith(SEAL_PREFIX):
        raise KeyUnavailable(f"customer {account}: unknown seal format")
    try:
        raw = base64.b64decode(sealed[len(SEAL_PREFIX) :], validate=True)
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], account.encode())
    except (binascii.Error, ValueError, InvalidTag):
        raise KeyUnavailable(f"customer {account}: the sealed data does not open") from None
    return msgspec.json.decode(plain, type=PersonalData)


def open_or_erased(key: bytes | None, account: str, sealed: str) -> PersonalData:
    """The personal data inside ``sealed``, or every field shown as erased."""
    try:
        return open_sealed(key, account, sealed)
    except KeyUnavailable:
        return ERASED_DATA


def wrap_key(master_key: bytes, account: str, data_key: bytes) -> bytes:
    """The data key sealed under the master key (nonce + ciphertext), bound to ``account``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, b"customer-key:" + account.encode())


def unwrap_key(master_key: bytes, account: str, wrapped: bytes) -> bytes:
    """The data key inside ``wrapped``; ``KeyUnavailable`` under another master key."""
    try:
        return AESGCM(master_key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"customer-key:" + account.encode()
        )
    except (ValueError, InvalidTag):
        raise KeyUnavailable(
            f"the data key of customer {account} does not open under this master key"
        ) from None
