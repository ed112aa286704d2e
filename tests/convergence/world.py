"""Run a list of operations against the real connector (function_app.py on the local host, Azurite, sandboxes).

The runner resolves each abstract operation against the live Dataverse rows, keeps a consent ledger (who opted
out, who opted in again, and when), arms faults on both systems, and at the end lets everything settle: the
queue drains, dead letters are replayed, two pulls run and, where the connector has one, a reconciliation run.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import wait_exponential_jitter

from sandboxes.dataverse.store import SandboxError
from sandboxes.spotler.store import ApiError
from sync_core.services.runtime import get_runtime
from sync_core.services.status import dead_letter_view
from tests.convergence.operations import EXCLUDED_JOB_TITLE, Op
from tests.e2e.conftest import WEBHOOK_KEY, Connector

MERGE_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "webhooks" / "merge.json"
SPOTLER_TIMEOUT = 0.5
BATCH = 32  # messages the host hands to the queue trigger at once (host.json batchSize)


def norm(address: object) -> str | None:
    return address.strip().casefold() if isinstance(address, str) and "@" in address else None


@dataclass
class Ledger:
    """Per normalized address: the operation that last took consent away, if no opt-in came after it."""

    blocked: dict[str, str] = field(default_factory=dict)
    opted_in: dict[str, str] = field(default_factory=dict)
    # The blocked addresses whose person left Dynamics' sync altogether (Do Not Email, deactivated, deleted,
    # merged away): the connector keeps a tombstone, and a record that takes the address waits for an opt-in.
    suppressed: set[str] = field(default_factory=set)

    def block(self, address: str | None, why: str, *, suppress: bool = False) -> None:
        if address:
            self.blocked[address] = why
            self.opted_in.pop(address, None)
            if suppress:
                self.suppressed.add(address)

    def moved(self, old: str | None, new: str | None, *, stays: list[int], fresh: bool) -> None:
        """A record's address changed from `old` to `new`.

        An unsubscribe that is no tombstone (a permission turned off in Spotler, Do Not Bulk Email) lives on the
        Spotler contact, and the contact follows its last record to a fresh address: so does the ledger's entry.
        An address that no live record holds any more carries no such unsubscribe. Tombstones stay with the
        address whatever moves.
        """
        if not old or old not in self.blocked or old in self.suppressed or stays:
            return
        why = self.blocked.pop(old)
        if fresh and new:
            self.blocked[new] = why

    def opt_in(self, address: str | None, why: str) -> None:
        if address:
            self.blocked.pop(address, None)
            self.suppressed.discard(address)
            self.opted_in[address] = why


@dataclass(frozen=True)
class Breach:
    """A write the connector sent to a contact that had opted out in Spotler (seen as Spotler received it)."""

    external_id: str
    address: str | None
    asked_permission: bool  # it asked for a permission bit on (Spotler refuses that with CONTACT_OPTOUT)


@dataclass
class Stats:
    changes: int = 0  # operations that really changed something in either system
    skipped: int = 0
    spotler_faults: int = 0
    dataverse_faults: int = 0
    webhooks_duplicated: int = 0
    webhooks_reordered: int = 0
    webhooks_dropped: int = 0
    pulls: int = 0
    pulls_cut: int = 0
    pulls_failed: int = 0
    reconciled: int = 0  # records the reconciliation run applied
    crashes: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)


class World:
    """One run: the connector, the slots' records, the ledger and what happened to whom."""

    def __init__(self, connector: Connector, *, seed: int, faults: bool, fault_rate: float = 0.2) -> None:
        self.c = connector
        self.dv = connector.dataverse.sandbox
        self.sp = connector.spotler.store
        self.rng = random.Random(seed * 7919 + 1)
        self.faults = faults
        self.fault_rate = fault_rate
        self.records: dict[int, tuple[str, str]] = {}
        self.slot_of: dict[str, int] = {}
        self.emails: dict[int, list[str]] = defaultdict(list)
        self.ledger = Ledger()
        self.stats = Stats()
        self.touched: dict[int, list[Op]] = defaultdict(list)
        self._held = False
        self._crash_armed = False
        self._armed_spotler: list[Any] = []
        self._armed_dataverse: list[Any] = []
        self.breaches: list[Breach] = []
        self.resolved: dict[int, str] = {}  # operation number -> the address an abstract pick resolved to
        self._watch_opted_out_writes()

    def _watch_opted_out_writes(self) -> None:
        """Record every API write that reaches a contact after its opt-out in Spotler.

        The sandbox, like Spotler, refuses to turn a bit on for such a contact, so the end state alone cannot show
        a connector that ignores the opt-out; what it asked for can.
        """
        store = self.sp
        store.__dict__.pop("_write", None)
        original = store._write
        breaches = self.breaches

        def write(stored: Any, data: dict[str, Any], **kw: Any) -> Any:
            # An anonymized contact shows no opt-out (it has no address, docs/identity.md): what the connector
            # cannot see, it cannot honour; a new opt-in in Dynamics is what brings such a person back.
            watched = kw.get("source") == "api" and stored is not None and stored.opted_out and not stored.anonymized
            address = norm(stored.properties.get("email")) if watched else None
            try:
                outcome = original(stored, data, **kw)
            except ApiError as exc:
                if watched and exc.error_type == "CONTACT_OPTOUT":
                    breaches.append(Breach(stored.external_id, address, True))
                raise
            if watched and outcome.changed:
                breaches.append(Breach(stored.external_id, address, False))
            return outcome

        store.__dict__["_write"] = write

    # ------------------------------------------------------------------ rows

    def row(self, slot: int) -> dict[str, Any] | None:
        if slot not in self.records:
            return None
        entity, record_id = self.records[slot]
        return self.dv.row(entity, record_id)

    def live(self, slot: int) -> bool:
        row = self.row(slot)
        return row is not None and row.get("statecode") == 0

    def consenting(self, slot: int) -> bool:
        row = self.row(slot)
        return row is not None and row.get("statecode") == 0 and not row.get("donotemail")

    def subscribed(self, slot: int) -> bool:
        row = self.row(slot)
        return self.consenting(slot) and row is not None and not row.get("donotbulkemail")

    def holders(self, address: str | None) -> list[int]:
        """Slots whose record (any state) has `address`."""
        if not address:
            return []
        return [s for s in self.records if (row := self.row(s)) and norm(row.get("emailaddress1")) == address]

    def address(self, slot: int) -> str | None:
        row = self.row(slot)
        return norm(row.get("emailaddress1")) if row else None

    def _create(self, slot: int, entity: str, address: str, extra: dict[str, Any] | None = None) -> None:
        name = f"P{slot}"
        attrs: dict[str, Any]
        if entity == "account":
            attrs = {"name": f"Firma {slot}", "emailaddress1": address}
        else:
            attrs = {"firstname": "Anna", "lastname": name, "emailaddress1": address, "jobtitle": "Inkoper"}
            if entity == "lead":
                attrs |= {"subject": "Demo", "companyname": f"Firma {slot}"}
        attrs |= extra or {}
        record_id = self.dv.create(entity, attrs)
        self.records[slot] = (entity, record_id)
        self.slot_of[record_id] = slot
        self.emails[slot].append(address)

    def _edit(self, slot: int, changes: dict[str, Any]) -> bool:
        entity, record_id = self.records[slot]
        try:
            self.dv.edit(entity, record_id, changes)
        except SandboxError:
            return False  # e.g. a closed row is read-only, as in Dataverse
        return True

    def _leaving(self, slots: list[int], why: str, act: Any) -> bool:
        """Apply `act`; if the addresses involved lose their last live consenting record, the person is gone."""
        addresses = {a for s in slots if (a := self.address(s))}
        before = {a: [s for s in self.holders(a) if self.consenting(s)] for a in addresses}
        done = bool(act())
        for a in addresses:
            if before[a] and not [s for s in self.holders(a) if self.consenting(s)]:
                self.ledger.block(a, why, suppress=True)
        return done

    # ------------------------------------------------------------------ operations

    async def apply(self, op: Op) -> None:
        for s in op.slots:
            self.touched[s].append(op)
        handler = getattr(self, f"_op_{op.kind}")
        started = time.monotonic()
        changed = await handler(op)
        self.stats.seconds[op.kind] += time.monotonic() - started
        self.stats.by_kind[op.kind] += 1
        if changed is True:
            self.stats.changes += 1
        elif changed is False:
            self.stats.skipped += 1

    async def _op_create(self, op: Op) -> bool:
        self._create(op.slot, op.entity, op.value)
        return True

    async def _op_twins(self, op: Op) -> bool:
        # A contact and a lead with one address, saved at the same moment: both pushes race.
        self._create(op.slot, "contact", op.value)
        self._create(op.other, "lead", op.value)
        return True

    async def _op_edit(self, op: Op) -> bool:
        if not self.live(op.slot):
            return False
        entity = self.records[op.slot][0]
        column = "address1_city" if entity == "account" else "jobtitle"
        return self._edit(op.slot, {column: op.value})

    async def _set_email(self, slot: int, address: str) -> bool:
        old, new = self.address(slot), norm(address)
        if not self.live(slot) or old == new:
            return False
        fresh = new is not None and not self.holders(new)
        if not self._edit(slot, {"emailaddress1": address}):
            return False
        self.emails[slot].append(address)
        self.ledger.moved(old, new, stays=[s for s in self.holders(old) if self.consenting(s)], fresh=fresh)
        return True

    async def _op_email_fresh(self, op: Op) -> bool:
        return await self._set_email(op.slot, op.value)

    async def _op_email_shared(self, op: Op) -> bool:
        row = self.row(op.other)
        if row is None or not row.get("emailaddress1") or op.other == op.slot:
            return False
        # Another record's address, in other letter case: Spotler compares addresses without case.
        address = str(row["emailaddress1"])
        return await self._set_email(op.slot, address.upper() if op.seq % 2 else address)

    async def _op_email_converge(self, op: Op) -> bool:
        """Two records get one fresh address at the same moment: their pushes race on that address."""
        if op.other == op.slot or not self.live(op.slot) or not self.live(op.other):
            return False
        first = await self._set_email(op.slot, op.value)
        second = await self._set_email(op.other, op.value.upper())
        return first or second

    def _blocked_address(self, pick: str) -> str | None:
        """One of the addresses that lost their consent (chosen by `pick`), if any."""
        blocked = sorted(self.ledger.blocked)
        return blocked[int(pick) % len(blocked)] if blocked else None

    async def _op_email_blocked(self, op: Op) -> bool:
        """A record takes an address whose person opted out or was anonymized: that is no opt-in."""
        address = self._blocked_address(op.value)
        if address is None:
            return False
        self.resolved[op.seq] = address
        return await self._set_email(op.slot, address)

    async def _op_create_again(self, op: Op) -> bool:
        """A new record for a person who opted out or was anonymized (a new lead, say): that is no opt-in."""
        address = self._blocked_address(op.value) or f"again{op.seq}@example.nl"
        self.resolved[op.seq] = address
        self._create(op.slot, op.entity, address)
        return True

    async def _op_email_back(self, op: Op) -> bool:
        history = self.emails.get(op.slot, [])
        return len(history) >= 2 and await self._set_email(op.slot, history[-2])

    async def _flag(self, slot: int, column: str, value: bool) -> bool:
        row = self.row(slot)
        if row is None or row.get("statecode") != 0 or bool(row.get(column)) == value:
            return False
        address = self.address(slot)
        if value and column == "donotemail":
            return self._leaving([slot], f"Do Not Email set on slot {slot}", lambda: self._edit(slot, {column: True}))
        done = self._edit(slot, {column: value})
        if done and value and not [s for s in self.holders(address) if self.subscribed(s)]:
            # The last live record that wanted mail says no: the person's permission goes off.
            self.ledger.block(address, f"Do Not Bulk Email set on slot {slot}")
        elif done:
            self.ledger.opt_in(address, f"{column} cleared on slot {slot}")
        return done

    async def _op_dne_on(self, op: Op) -> bool:
        return await self._flag(op.slot, "donotemail", True)

    async def _op_dne_off(self, op: Op) -> bool:
        return await self._flag(op.slot, "donotemail", False)

    async def _op_dnbe_on(self, op: Op) -> bool:
        return await self._flag(op.slot, "donotbulkemail", True)

    async def _op_dnbe_off(self, op: Op) -> bool:
        return await self._flag(op.slot, "donotbulkemail", False)

    def _deactivate(self, slot: int) -> bool:
        entity, record_id = self.records[slot]
        try:
            self.dv.deactivate(entity, record_id)
        except SandboxError:
            return False
        return True

    def _activate(self, slot: int) -> bool:
        entity, record_id = self.records[slot]
        try:
            self.dv.activate(entity, record_id)
        except SandboxError:
            return False
        self.ledger.opt_in(self.address(slot), f"slot {slot} reactivated")
        return True

    async def _op_deactivate(self, op: Op) -> bool:
        if not self.live(op.slot):
            return False
        return self._leaving([op.slot], f"slot {op.slot} deactivated", lambda: self._deactivate(op.slot))

    async def _op_activate(self, op: Op) -> bool:
        row = self.row(op.slot)
        if row is None or row.get("statecode") == 0:
            return False
        return self._activate(op.slot)

    async def _op_deactivate_person(self, op: Op) -> bool:
        """Deactivate every live record that shares the slot's address (so every record of the Spotler contact)."""
        slots = [s for s in self.holders(self.address(op.slot)) if self.live(s)]
        if not slots:
            return False
        return self._leaving(
            slots,
            f"every record of slot {op.slot}'s person deactivated",
            lambda: all(self._deactivate(s) for s in slots),
        )

    async def _op_reactivate_person(self, op: Op) -> bool:
        slots = [s for s in self.holders(self.address(op.slot)) if not self.live(s)]
        return bool(slots) and all(self._activate(s) for s in slots)

    async def _op_delete(self, op: Op) -> bool:
        if op.slot not in self.records or self.row(op.slot) is None:
            return False
        entity, record_id = self.records[op.slot]

        def delete() -> bool:
            self.dv.delete(entity, record_id)
            return True

        return self._leaving([op.slot], f"slot {op.slot} deleted", delete)

    async def _op_merge(self, op: Op) -> bool:
        """Dataverse Merge: the subordinate (slot) is deactivated into the master (other) of the same table."""
        if op.slot == op.other or not self.live(op.slot) or not self.live(op.other):
            return False
        entity, subordinate = self.records[op.slot]
        master_entity, master = self.records[op.other]
        if entity != master_entity or entity == "lead":
            return False
        # Dataverse sends the Merge message (registered by `dataverse setup`); its SetState is not a separate change.
        self.dv.set_webhook_options(drop=self.dv.sender.options.drop + 1)
        done = self._leaving(
            [op.slot], f"slot {op.slot} merged into slot {op.other}", lambda: self._deactivate(op.slot)
        )
        if not done:
            self.dv.set_webhook_options(drop=max(0, self.dv.sender.options.drop - 1))
            return False
        context = json.loads(MERGE_TEMPLATE.read_text())
        context["InputParameters"][0]["value"]["Id"] = master
        context["InputParameters"][0]["value"]["LogicalName"] = entity
        context["InputParameters"][1]["value"] = subordinate
        context["InputParameters"][2]["value"]["LogicalName"] = entity
        context["InputParameters"][2]["value"]["Attributes"] = []
        context["PreEntityImages"] = []
        context["PrimaryEntityId"] = master
        context["PrimaryEntityName"] = entity
        context["OperationId"] = str(uuid.uuid4())
        context["CorrelationId"] = str(uuid.uuid4())
        headers = {"x-ms-dynamics-entity-name": entity, "x-ms-dynamics-request-name": "Merge"}
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{self.c.host.url}/api/dynamics/webhook?code={WEBHOOK_KEY}", json=context, headers=headers
            )
        assert response.status_code in (200, 202), response.text
        return True

    async def _op_qualify(self, op: Op) -> bool:
        """A lead is qualified: it closes, and a contact with its name and address is created at the same moment."""
        row = self.row(op.slot)
        if row is None or self.records[op.slot][0] != "lead" or row.get("statecode") != 0:
            return False
        address = str(row.get("emailaddress1") or "")
        if not self._edit(op.slot, {"statecode": 1, "statuscode": 3}):
            return False
        if address:
            flags = {k: bool(row.get(k)) for k in ("donotemail", "donotbulkemail")}
            self._create(op.other, "contact", address, flags)
        return True

    async def _op_disqualify(self, op: Op) -> bool:
        if self.records.get(op.slot, ("",))[0] != "lead" or not self.live(op.slot):
            return False
        return self._leaving(
            [op.slot],
            f"lead slot {op.slot} disqualified",
            lambda: self._edit(op.slot, {"statecode": 2, "statuscode": 4}),
        )

    async def _op_filter_out(self, op: Op) -> bool:
        if self.records.get(op.slot, ("account",))[0] == "account" or not self.live(op.slot):
            return False
        return self._edit(op.slot, {"jobtitle": EXCLUDED_JOB_TITLE})

    async def _op_filter_in(self, op: Op) -> bool:
        row = self.row(op.slot)
        if row is None or row.get("jobtitle") != EXCLUDED_JOB_TITLE or row.get("statecode") != 0:
            return False
        return self._edit(op.slot, {"jobtitle": "Inkoper"})

    async def spotler_contact(self, slot: int) -> dict[str, Any] | None:
        """The live (not anonymized) Spotler contact the slot's record is linked to."""
        if slot not in self.records:
            return None
        entity, record_id = self.records[slot]
        link = await get_runtime().state.get_link(entity, record_id)  # type: ignore[arg-type]
        contact = self.sp.contact(link.external_id) if link is not None else None
        return contact if contact and not contact["anonymized"] and contact["properties"].get("email") else None

    async def _op_sp_edit(self, op: Op) -> bool:
        contact = await self.spotler_contact(op.slot)
        if contact is None:
            return False
        self.sp.profile_edit(contact["externalId"], properties={"firstName": op.value})
        return True

    async def _op_sp_permission_off(self, op: Op) -> bool:
        contact = await self.spotler_contact(op.slot)
        if contact is None:
            return False
        self.sp.profile_edit(contact["externalId"], permissions={1: False})
        self.ledger.block(norm(contact["properties"]["email"]), f"permission turned off in Spotler for slot {op.slot}")
        return True

    async def _op_sp_permission_on(self, op: Op) -> bool:
        contact = await self.spotler_contact(op.slot)
        if contact is None:
            return False
        self.sp.profile_edit(contact["externalId"], permissions={1: True})
        self.ledger.opt_in(norm(contact["properties"]["email"]), f"permission turned on in Spotler for slot {op.slot}")
        return True

    async def _op_sp_opt_out(self, op: Op) -> bool:
        contact = await self.spotler_contact(op.slot)
        if contact is None:
            return False
        self.sp.profile_edit(contact["externalId"], opt_out=True)
        # A global opt-out is a tombstone keyed by the address the contact holds (docs/identity.md): the connector
        # writes nothing to the opted-out contact, so it does not follow a record to a fresh address, and the
        # ledger's entry stays with the address too (the record itself carries Do Not Bulk Email from the pull).
        self.ledger.block(
            norm(contact["properties"]["email"]), f"global opt-out in Spotler for slot {op.slot}", suppress=True
        )
        return True

    # ------------------------------------------------------------------ the network and the connector

    async def _op_net_duplicate_webhooks(self, op: Op) -> None:
        self.dv.set_webhook_options(duplicate=True)
        self.stats.webhooks_duplicated += 1

    async def _op_net_hold_webhooks(self, op: Op) -> None:
        self.dv.set_webhook_options(hold=True)
        self._held = True

    async def _op_net_drop_webhook(self, op: Op) -> None:
        self.dv.set_webhook_options(drop=self.dv.sender.options.drop + 1)
        self.stats.webhooks_dropped += 1

    async def _op_net_crash_after_spotler_write(self, op: Op) -> None:
        self._crash_armed = True
        arm_crash(self)

    async def _op_deliver(self, op: Op) -> None:
        await self.deliver()

    async def _op_pull(self, op: Op) -> None:
        await self.deliver()
        if op.value == "cut" and self.faults:
            # The feed answers the first page, then the connection breaks: the pull stops mid-way.
            self._armed_spotler.append(
                self.sp.inject_fault("GET /contact/updates/list", "error", status=503, after=1, times=2)
            )
            self.stats.pulls_cut += 1
        await self.pull()

    def _count_fault_hits(self) -> None:
        for fault in self._armed_spotler:
            self.stats.spotler_faults += fault.times == 0
        for dv_fault in self._armed_dataverse:
            self.stats.dataverse_faults += dv_fault.times == 0
        self._armed_spotler, self._armed_dataverse = [], []

    def clear_faults(self) -> None:
        self._count_fault_hits()
        self.sp.clear_faults()
        self.dv.faults.clear()

    def arm_faults(self) -> None:
        """About `fault_rate` of the calls that follow fail: 429 with Retry-After, 5xx, timeouts, lost answers."""
        self.clear_faults()
        if not self.faults:
            return
        for _ in range(60):
            gap = 0
            while self.rng.random() > self.fault_rate:
                gap += 1
            roll = self.rng.random()
            if roll < 0.35:
                fault = self.sp.inject_fault("*", "rate_limit", retry_after=0, after=gap)
            elif roll < 0.7:
                fault = self.sp.inject_fault("*", "error", status=self.rng.choice((500, 502, 503)), after=gap)
            elif roll < 0.85:
                fault = self.sp.inject_fault("*", "drop", after=gap)
            else:  # the write lands, but its answer comes after the client gave up
                fault = self.sp.inject_fault("*", "delay", delay=SPOTLER_TIMEOUT + 0.2, after=gap)
            self._armed_spotler.append(fault)
        for _ in range(self.rng.randrange(3)):
            status = self.rng.choice((429, 503))
            dv_fault = self.dv.inject_fault("*", status=status, times=1, retry_after=0 if status == 429 else None)
            self._armed_dataverse.append(dv_fault)

    def fast_retries(self) -> None:
        """Client retries with the test fixtures' short backoff, so a run spends its time on work, not on sleeps."""
        runtime = get_runtime()
        spotler: Any = runtime.spotler
        dataverse: Any = runtime.dataverse
        spotler._backoff = wait_exponential_jitter(multiplier=0.01, max=0.1, jitter=0.01)
        dataverse._backoff_base = 0.01

    async def deliver(self) -> None:
        self.arm_faults()
        if self._held:
            await asyncio.to_thread(self.dv.sender.drain, timeout=30.0)
            self.dv.set_webhook_options(hold=False)
            self.stats.webhooks_reordered += self.dv.release(order="reverse")
            self._held = False
        self.dv.set_webhook_options(duplicate=False)
        await self.run_queue()

    async def run_queue(self) -> None:
        await asyncio.to_thread(self.dv.drain, timeout=30.0)
        await self.c.host.run_queue(idle_rounds=2, poll_seconds=0.05, batch_size=BATCH)

    async def pull(self) -> None:
        await asyncio.sleep(0.02)  # the feed is read up to the moment the pull starts
        self.stats.pulls += 1
        try:
            await self.c.host.run_timer()
        except Exception:
            if not self.faults:
                raise
            # A timer run that fails is run again in 15 minutes; its watermark stays where the last page ended.
            self.stats.pulls_failed += 1

    async def settle(self, *, reconcile: Any | None) -> None:
        """The faults stop; the queue drains, dead letters are replayed, two pulls and a reconciliation run."""
        self.faults = False
        self.clear_faults()
        self.dv.set_webhook_options(drop=0, duplicate=False)
        disarm_crash()
        await self.deliver()
        for _ in range(2):
            await self.c.host.run_poison_queue()
            await self.replay_dead_letters()
            await self.run_queue()
        if reconcile is not None:
            await reconcile(self)
            await self.run_queue()
        for _ in range(2):
            await self.pull()
            await self.run_queue()
        await self.replay_dead_letters()
        await self.run_queue()

    async def replay_dead_letters(self) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            response = await http.post(f"{self.c.host.url}/api/deadletters/replay")
        assert response.status_code == 200, response.text

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter as the operators' view shows it (the route lists the first 200)."""
        letters = await get_runtime().state.list_dead_letters(limit=100_000)
        return [dead_letter_view(d) for d in letters]


_CRASH: dict[str, Any] = {}


class SimulatedCrash(Exception):
    """The process died between the Spotler write and saving the link."""


def arm_crash(world: World) -> None:
    """The next push that writes to Spotler dies before its link is saved (once)."""
    runtime = get_runtime()
    state, spotler = runtime.state, runtime.spotler
    wrote = {"flag": False}
    originals = {
        "save_link": state.save_link,
        "insert_contact": spotler.insert_contact,
        "update_contact": spotler.update_contact,
    }

    def wrap_write(name: str) -> Any:
        async def write(*args: Any, **kwargs: Any) -> Any:
            result = await originals[name](*args, **kwargs)
            wrote["flag"] = True
            return result

        return write

    async def save_link(link: Any) -> Any:
        if wrote["flag"]:
            disarm_crash()
            world.stats.crashes += 1
            raise SimulatedCrash("crashed after the Spotler write, before the state save")
        return await originals["save_link"](link)

    setattr(state, "save_link", save_link)  # noqa: B010
    setattr(spotler, "insert_contact", wrap_write("insert_contact"))  # noqa: B010
    setattr(spotler, "update_contact", wrap_write("update_contact"))  # noqa: B010
    _CRASH.update(state=state, spotler=spotler)


def disarm_crash() -> None:
    for name in ("save_link",):
        if "state" in _CRASH:
            _CRASH["state"].__dict__.pop(name, None)
    for name in ("insert_contact", "update_contact"):
        if "spotler" in _CRASH:
            _CRASH["spotler"].__dict__.pop(name, None)
    _CRASH.clear()
