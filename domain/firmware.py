"""Firmware images: what an image is for (manufacturer, model), its identifier and hash."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.text import check_text
from domain.values import check_name

IMAGE_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:firmware-image")
MAX_IMAGE_BYTES = 16 * 1024 * 1024
"""Largest image accepted (meters' images are tens to hundreds of kB)."""
MAX_IDENTIFIER_CHARS = 64


class ImageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An image's metadata; the bytes live in the image store under ``sha256``."""

    identifier: str
    """The image identifier the meter is told (class 18 image_transfer_initiate)."""
    manufacturer: str
    model: str
    sha256: str
    size: int

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every rule this image breaks."""
        errors = Collector()
        check_text(errors, "identifier", self.identifier, max_chars=MAX_IDENTIFIER_CHARS)
        if any(c.isspace() for c in self.identifier):
            errors.add("identifier", "format", "identifier may not contain white space")
        check_name(errors, "manufacturer", self.manufacturer)
        check_name(errors, "model", self.model)
        if not 1 <= self.size <= MAX_IMAGE_BYTES:
            errors.add("image", "size", f"an image has 1..{MAX_IMAGE_BYTES} bytes, got {self.size}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            errors.add("sha256", "format", "sha256 is 64 lower-case hex digits")
        errors.raise_if_any()


def describe(image: bytes, identifier: str, manufacturer: str, model: str) -> ImageSpec:
    """The checked metadata of ``image`` (its SHA-256 and size computed here)."""
    spec = ImageSpec(
        identifier=identifier.strip(),
        manufacturer=manufacturer.strip(),
        model=model.strip(),
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
    )
    spec.check()
    return spec


def image_id(manufacturer: str, model: str, identifier: str) -> UUID:
    """Deterministic id of an image: one identifier per manufacturer and model."""
    return uuid5(IMAGE_NAMESPACE, f"{manufacturer.strip()}/{model.strip()}/{identifier.strip()}")


class FirmwareImage(Aggregate, RemembersCommands):
    """A firmware image uploaded for one meter model, until it is deleted."""

    class Uploaded(Aggregate.Created):
        """An administrator uploaded the image."""

        spec: ImageSpec
        meta: EventMeta

    class Deleted(Aggregate.Event):
        """An administrator deleted the image; campaigns and commands can no longer use it."""

        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the image deleted."""
            aggregate.deleted = True
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(spec: ImageSpec, meta: EventMeta) -> UUID:
        """Derive the id from manufacturer, model and identifier."""
        return image_id(spec.manufacturer, spec.model, spec.identifier)

    @event(Uploaded)
    def __init__(self, spec: ImageSpec, meta: EventMeta) -> None:
        self.spec = spec
        self.deleted = False
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    def delete(self, meta: EventMeta) -> None:
        """Delete the image."""
        self.ensure_usable()
        self.trigger_event(self.Deleted, meta=meta)

    def ensure_usable(self) -> None:
        """Raise ``Conflict`` when the image was deleted."""
        if self.deleted:
            raise Conflict(f"firmware image {self.spec.identifier} was deleted")
