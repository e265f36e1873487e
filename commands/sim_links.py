"""The meter template's ``simCard`` column resolved to the SIM inventory during a meter import."""

from __future__ import annotations

from commands.context import CommandContext
from commands.meter_csv import RowError
from commands.meters import MeterRegistry
from commands.sims import SimInventory
from domain.errors import Collector, DomainError, NotFound
from domain.sim_rules import check_iccid


class SimLinks:
    """Installs each imported meter's inventory SIM, counting and reporting what happened.

    A ``simCard`` that is not a well-formed ICCID, or an ICCID the inventory does not hold, is
    kept as the meter's free text (as before the inventory existed) and installs nothing. A
    card the inventory holds is installed like ``installSim``: it must be active and in no other
    meter, and the meter must hold no other card; a refusal is reported on the row (field
    ``simCard``) while the meter itself stays registered.
    """

    def __init__(self, sims: SimInventory, registry: MeterRegistry, ctx: CommandContext) -> None:
        self.sims = sims
        self.registry = registry
        self.ctx = ctx
        self.installed = 0
        self.errors: list[RowError] = []
        self.position: int | None = None

    def install(self, line: int, serial: str, sim_card: str | None) -> None:
        """Install the row's card when ``sim_card`` names one the inventory holds."""
        if sim_card is None or not _is_iccid(sim_card):
            return
        try:
            self.sims.get(sim_card)
        except NotFound:
            return  # free text: a SIM the inventory does not know (yet)
        try:
            outcome = self.sims.install_sim(self.registry, serial, sim_card, self.ctx)
        except DomainError as exc:
            reason = f"meter registered, SIM not installed: {exc.message}"
            self.errors.append(RowError(line, "simCard", reason, serial))
            return
        self.installed += 1
        self.position = outcome.notification_id or self.position


def _is_iccid(text: str) -> bool:
    errors = Collector()
    check_iccid(errors, text)
    return not errors.errors
