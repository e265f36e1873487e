"""``hes bench firmware``: a firmware campaign over simulated meters, with the bare TCP transfer
of the same bytes, block by block, measured alongside.

Everything runs in a scratch schema and stream prefix. The simulated meters are a child process
(as real meters are other machines); the campaign runs as in ``hes up``'s DLMS child: the
campaign runner requests each meter's FIRMWARE_UPDATE, the executor transfers, verifies,
activates and reads the active firmware back, every step an event. The collection scheduler
does not run, so the figure is the campaign's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

import msgspec
from rich.console import Console

from benchmarks.dlms import (
    free_port_range,
    raise_file_limit,
    register_simulated_meters,
    start_simulator,
    tear_down,
    wait_listening,
    wait_meter_keys,
    wait_meter_rows,
)
from bootstrap.dlms_process import DlmsService
from bootstrap.dlms_process import dlms_projection as dlms_view_projection
from bootstrap.migrate import migrate
from bootstrap.workers import SupervisedProjection, fleet_projection
from commands.context import SYSTEM, CommandContext
from config.settings import Settings
from domain.campaign import CampaignKind, CampaignLimits, CampaignSpec, CampaignStatus, CohortFilter
from domain.values import SecurityLevel, Transport
from projections.fleet_queries import get_campaign, resolve_cohort

console = Console(stderr=True)

_ACK_SERVER = r"""
import asyncio, struct, sys
async def handle(reader, writer):
    try:
        while True:
            header = await reader.readexactly(4)
            await reader.readexactly(struct.unpack(">I", header)[0])
            writer.write(b"\x00\x01\x00\x01\x00\x01\x00\x04\xc7\x01\xc1\x00")
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


class FirmwareFigures(msgspec.Struct, frozen=True):
    """What one ``hes bench firmware`` run measured."""

    meters: int
    image_bytes: int
    block_size: int
    blocks_per_meter: int
    transport: str
    security: str
    concurrency: int
    campaign_seconds: float
    """From the campaign's start to its last meter confirmed (firmware read back)."""
    meters_per_minute: float
    succeeded: int
    failed: int
    image_megabytes_per_s: float
    baseline_tcp_seconds: float
    """The same bytes over bare loopback TCP, one request/response per block, same concurrency,
    one connection per meter: the floor of any block transfer on this machine."""
    ratio_to_baseline: float
    cpu_count: int
    started_at: str


async def tcp_block_transfer(meters: int, image: int, block: int, concurrency: int) -> float:
    """Seconds to send ``image`` bytes to each of ``meters`` peers in ``block``-byte requests."""
    port = free_port_range(1)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ACK_SERVER, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        await server.stdout.readline()
        payload = struct.pack(">I", block) + os.urandom(block)
        blocks = -(-image // block)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for meter in range(meters):
            queue.put_nowait(meter)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for _ in range(blocks):
                    writer.write(payload)
                    await reader.readexactly(12)
                writer.close()
                await writer.wait_closed()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - started
    finally:
        server.terminate()
        await server.wait()


async def bench_firmware(
    settings: Settings,
    *,
    meters: int,
    image_bytes: int,
    block_size: int,
    concurrency: int,
    transport: Transport,
    security: SecurityLevel,
) -> FirmwareFigures:
    """Run a firmware campaign over ``meters`` simulated meters in a scratch schema; clean up."""
    run = uuid.uuid4().hex[:8]
    s = settings.replace(
        db_schema=f"bench_{run}",
        nats_prefix=f"BENCH{run}_",
        dlms_concurrency=max(concurrency, settings.dlms.concurrency),
    )
    assert s.database.url and s.nats.url
    started_at = datetime.now(UTC).isoformat()
    raise_file_limit(4 * meters + 4096)
    await migrate(s)
    base_port = free_port_range(meters)
    state = tempfile.mkdtemp(prefix="hes-bench-firmware-")
    simulator = await start_simulator(
        meters, base_port, state, f"idis,image-block-size={block_size}"
    )
    workers = [SupervisedProjection(s), dlms_view_projection(s), fleet_projection(s)]
    service = DlmsService(s)
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        console.print(f"registering {meters} meters; {meters} simulated meters starting")
        await asyncio.to_thread(
            register_simulated_meters, s, meters, base_port, transport, security
        )
        for worker in workers:
            worker.start()
        await wait_meter_rows(s, meters)
        if security is not SecurityLevel.NONE:
            await wait_meter_keys(s, meters)
        await wait_listening(base_port + meters - 1)
        await service.open()

        image = random.Random(run).randbytes(image_bytes)
        console.print(
            f"baseline: {meters} x {image_bytes:,} bytes over bare TCP in {block_size}-byte "
            f"requests, {concurrency} at once"
        )
        baseline = await tcp_block_transfer(meters, image_bytes, block_size, concurrency)
        console.print(f"  {baseline:.1f} s")

        ctx = CommandContext(actor=SYSTEM)
        uploaded = await asyncio.to_thread(
            service.fleet.upload_image, image, f"FW-BENCH-{run}", "HES", "Simulated", ctx
        )
        spec = CampaignSpec(
            name=f"bench {run}",
            kind=CampaignKind.FIRMWARE,
            cohort=CohortFilter(model="Simulated"),
            limits=CampaignLimits(concurrency=concurrency, per_cell=concurrency, max_attempts=3),
            image_id=uploaded.aggregate.id,
        )
        cohort = await resolve_cohort(service.pool, s.database.schema, spec.cohort)
        console.print(f"firmware campaign over {len(cohort)} meters, {concurrency} at once")
        running = asyncio.create_task(service.run(stop, listen=False))
        started = time.monotonic()
        outcome = await asyncio.to_thread(service.fleet.start_campaign, spec, cohort, ctx)
        campaign_id = outcome.aggregate.id
        last_report = started
        while True:
            progress = await get_campaign(service.pool, s.database.schema, campaign_id)
            if progress is not None and progress.status is CampaignStatus.COMPLETED:
                break
            if running.done():
                running.result()  # raises what stopped the DLMS side
                raise RuntimeError("the DLMS side stopped before the campaign completed")
            if progress is not None and time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                console.print(
                    f"  {time.monotonic() - started:.0f} s: {progress.succeeded} succeeded, "
                    f"{progress.failed} failed, {progress.running} running, "
                    f"{progress.pending} pending"
                )
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        if progress.failed:
            campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
            reasons = {p.reason for p in campaign.meters.values() if p.reason}
            console.print(f"  [red]{progress.failed} meters failed:[/] {sorted(reasons)[:3]}")
        console.print(
            f"  {seconds:.1f} s: {progress.succeeded} succeeded, {progress.failed} failed"
        )
    finally:
        stop.set()
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 30)
        await tear_down(s, simulator, workers, service, state)
    return FirmwareFigures(
        meters=meters,
        image_bytes=image_bytes,
        block_size=block_size,
        blocks_per_meter=-(-image_bytes // block_size),
        transport=transport.value,
        security=security.value,
        concurrency=concurrency,
        campaign_seconds=round(seconds, 2),
        meters_per_minute=round(progress.succeeded / seconds * 60, 1),
        succeeded=progress.succeeded,
        failed=progress.failed,
        image_megabytes_per_s=round(progress.succeeded * image_bytes / seconds / 1e6, 3),
        baseline_tcp_seconds=round(baseline, 2),
        ratio_to_baseline=round(seconds / baseline, 1),
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )
