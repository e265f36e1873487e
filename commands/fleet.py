"""Fleet operations: firmware images, TOU plans and campaigns (application ``fleet``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg import sql

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import Actor, CommandContext
from commands.policy import authorize
from domain.campaign import Campaign, CampaignKind, CampaignSpec, CohortMember, Skip
from domain.errors import Conflict, NotFound
from domain.firmware import FirmwareImage, ImageSpec, describe, image_id
from domain.meta import EventMeta
from domain.tou_calendar import TouCalendar
from domain.tou_plan import TouPlan, tou_plan_id

A = TypeVar("A", bound=Aggregate)
KEYED_CAMPAIGNS = uuid5(NAMESPACE_URL, "urn:hes:campaign-key")
IMAGE_BYTES_TABLE = "firmware_image_bytes"


def authorize_start(actor: Actor, kind: CampaignKind) -> None:
    """Raise ``Forbidden`` unless ``actor`` may start a campaign of ``kind``."""
    authorize(actor, "startFirmwareCampaign" if kind is CampaignKind.FIRMWARE else "startCampaign")


class FleetOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a fleet command did: the aggregate as it now is and its last event's position."""

    aggregate: Aggregate
    notification_id: int | None
    replayed: bool = False


class FleetOperations(Application[UUID]):
    """The write side of firmware images, TOU plans and campaigns."""

    name = "fleet"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    # -- loading -------------------------------------------------------------------

    def image(self, id_: UUID) -> FirmwareImage:
        """A firmware image or ``NotFound``."""
        return self._get(id_, FirmwareImage, "firmware image")

    def tou_plan(self, id_: UUID) -> TouPlan:
        """A TOU plan or ``NotFound``."""
        return self._get(id_, TouPlan, "TOU plan")

    def campaign(self, id_: UUID) -> Campaign:
        """A campaign or ``NotFound``."""
        return self._get(id_, Campaign, "campaign")

    def _get(self, id_: UUID, cls: type[A], what: str) -> A:
        try:
            found: Aggregate = self.repository.get(id_)
        except AggregateNotFoundError:
            raise NotFound(f"no {what} with id {id_}") from None
        if not isinstance(found, cls):
            raise NotFound(f"no {what} with id {id_}")
        return found

    # -- firmware images -----------------------------------------------------------

    def upload_image(
        self, image: bytes, identifier: str, manufacturer: str, model: str, ctx: CommandContext
    ) -> FleetOutcome:
        """Store an image's bytes and record its upload; the same image again is a replay."""
        authorize(ctx.actor, "uploadFirmwareImage")
        spec = describe(image, identifier, manufacturer, model)
        meta = ctx.meta("uploadFirmwareImage", spec)
        id_ = image_id(spec.manufacturer, spec.model, spec.identifier)
        try:
            existing = self.image(id_)
        except NotFound:
            self._store_bytes(id_, spec, image)
            created = FirmwareImage(spec=spec, meta=meta)
            try:
                return FleetOutcome(
                    aggregate=created, notification_id=last_position(self.save(created))
                )
            except IntegrityError:
                existing = self.image(id_)
        if existing.spec == spec and not existing.deleted:
            return FleetOutcome(aggregate=existing, notification_id=None, replayed=True)
        state = "was deleted" if existing.deleted else f"exists with SHA-256 {existing.spec.sha256}"
        raise Conflict(
            f"firmware image {spec.identifier} for {spec.manufacturer} {spec.model} {state}; "
            "upload it under another identifier"
        )

    def delete_image(self, id_: UUID, ctx: CommandContext) -> FleetOutcome:
        """Delete an image and its bytes."""
        authorize(ctx.actor, "deleteFirmwareImage")
        meta = ctx.meta("deleteFirmwareImage", id_)
        try:
            outcome = self._update(
                id_, FirmwareImage, "firmware image", meta, lambda i: i.delete(meta)
            )
        except Conflict:
            self._drop_bytes(id_)  # deleted before, by a process that died before this step
            raise
        self._drop_bytes(id_)
        return outcome

    def image_bytes(self, id_: UUID) -> tuple[ImageSpec, bytes]:
        """An image's metadata and bytes; ``NotFound`` when deleted or never uploaded."""
        image = self.image(id_)
        image.ensure_usable()
        recorder = self._postgres()
        query = sql.SQL("SELECT image FROM {}.{} WHERE image_id = %s").format(
            sql.Identifier(recorder.datastore.schema), sql.Identifier(IMAGE_BYTES_TABLE)
        )
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (id_,))
            row = cursor.fetchone()
        if row is None:
            raise NotFound(f"the bytes of firmware image {image.spec.identifier} are missing")
        return image.spec, bytes(row["image"])

    def _postgres(self) -> PostgresAggregateRecorder:
        recorder = self.recorder
        if not isinstance(recorder, PostgresAggregateRecorder):
            raise RuntimeError("firmware images need the PostgreSQL event store")
        return recorder

    def _store_bytes(self, id_: UUID, spec: ImageSpec, image: bytes) -> None:
        recorder = self._postgres()
        query = sql.SQL(
            "INSERT INTO {}.{} (image_id, sha256, image) VALUES (%s, %s, %s) "
            "ON CONFLICT (image_id) DO UPDATE SET sha256 = EXCLUDED.sha256, image = EXCLUDED.image"
        ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(IMAGE_BYTES_TABLE))
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(query, (id_, spec.sha256, image))

    def _drop_bytes(self, id_: UUID) -> None:
        recorder = self._postgres()
        query = sql.SQL("DELETE FROM {}.{} WHERE image_id = %s").format(
            sql.Identifier(recorder.datastore.schema), sql.Identifier(IMAGE_BYTES_TABLE)
        )
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(query, (id_,))

    # -- TOU plans -----------------------------------------------------------------

    def save_tou_plan(
        self, tariff_plan: str, calendar: TouCalendar, ctx: CommandContext
    ) -> FleetOutcome:
        """Create the tariff plan's TOU plan, or add a version when the calendar changed."""
        authorize(ctx.actor, "createTouPlan")
        meta = ctx.meta("createTouPlan", tariff_plan, calendar)
        id_ = tou_plan_id(tariff_plan)

        def attempt() -> FleetOutcome | Save[FleetOutcome]:
            try:
                plan = self.tou_plan(id_)
            except NotFound:
                plan = TouPlan.create(tariff_plan, calendar, meta)
            else:
                if plan.seen(meta) or not plan.revise(calendar, meta):
                    return FleetOutcome(aggregate=plan, notification_id=None, replayed=True)
            return Save(
                (plan,), lambda r: FleetOutcome(aggregate=plan, notification_id=last_position(r))
            )

        return save_with_retry(self, attempt, f"TOU plan {tariff_plan} is changing too fast")

    # -- campaigns -----------------------------------------------------------------

    def start_campaign(
        self,
        spec: CampaignSpec,
        cohort: list[CohortMember],
        ctx: CommandContext,
    ) -> FleetOutcome:
        """Start a campaign over the resolved ``cohort`` (members the target excludes skipped)."""
        authorize_start(ctx.actor, spec.kind)
        spec.check()
        meta = ctx.meta("startCampaign", spec)
        skipped = self._skips(spec, cohort)
        id_ = (
            uuid5(KEYED_CAMPAIGNS, ctx.idempotency_key)
            if ctx.idempotency_key is not None
            else uuid4()
        )
        try:
            existing = self.campaign(id_)
        except NotFound:
            campaign = Campaign.start(id_, spec, cohort, skipped, meta)
            try:
                return FleetOutcome(
                    aggregate=campaign, notification_id=last_position(self.save(campaign))
                )
            except IntegrityError:
                existing = self.campaign(id_)
        if existing.seen(meta):
            return FleetOutcome(aggregate=existing, notification_id=None, replayed=True)
        raise Conflict(f"idempotency key {ctx.idempotency_key!r} started another campaign")

    def _skips(self, spec: CampaignSpec, cohort: list[CohortMember]) -> list[Skip]:
        if spec.kind is CampaignKind.FIRMWARE:
            assert spec.image_id is not None
            image = self.image(spec.image_id)
            image.ensure_usable()
            target = (image.spec.manufacturer, image.spec.model)
            return [
                Skip(
                    serial=m.serial,
                    reason=f"model {m.manufacturer} {m.model} is not the image's target "
                    f"{target[0]} {target[1]}",
                )
                for m in cohort
                if (m.manufacturer, m.model) != target
            ]
        if spec.kind is CampaignKind.CALENDAR:
            assert spec.tou_plan_id is not None and spec.tou_plan_version is not None
            self.tou_plan(spec.tou_plan_id).calendar(spec.tou_plan_version)
        return []

    def pause_campaign(self, id_: UUID, ctx: CommandContext) -> FleetOutcome:
        """Pause a running campaign."""
        authorize(ctx.actor, "pauseCampaign")
        meta = ctx.meta("pauseCampaign", id_)
        return self._update(id_, Campaign, "campaign", meta, lambda c: c.pause(meta))

    def resume_campaign(self, id_: UUID, ctx: CommandContext) -> FleetOutcome:
        """Resume a paused campaign."""
        authorize(ctx.actor, "resumeCampaign")
        meta = ctx.meta("resumeCampaign", id_)
        return self._update(id_, Campaign, "campaign", meta, lambda c: c.resume(meta))

    def cancel_campaign(self, id_: UUID, reason: str, ctx: CommandContext) -> FleetOutcome:
        """Cancel a campaign: its pending meters are skipped."""
        authorize(ctx.actor, "cancelCampaign")
        meta = ctx.meta("cancelCampaign", id_, reason)
        return self._update(id_, Campaign, "campaign", meta, lambda c: c.cancel(reason, meta))

    def record_campaign(
        self, id_: UUID, step: Callable[[Campaign, EventMeta], object], ctx: CommandContext
    ) -> FleetOutcome:
        """Record one of the runner's steps (start a meter, its outcome) on the campaign."""
        authorize(ctx.actor, "recordCampaignProgress")
        meta = ctx.meta("recordCampaignProgress", id_)
        return self._update(id_, Campaign, "campaign", meta, lambda c: step(c, meta))

    # -- plumbing --------------------------------------------------------------------

    def _update(
        self,
        id_: UUID,
        cls: type[A],
        what: str,
        meta: EventMeta,
        action: Callable[[A], object],
    ) -> FleetOutcome:
        def attempt() -> FleetOutcome | Save[FleetOutcome]:
            found = self._get(id_, cls, what)
            if found.seen(meta):  # type: ignore[attr-defined]
                return FleetOutcome(aggregate=found, notification_id=None, replayed=True)
            action(found)
            return Save(
                (found,), lambda r: FleetOutcome(aggregate=found, notification_id=last_position(r))
            )

        return save_with_retry(self, attempt, f"{what} {id_} is changing too fast; try again")
