"""The connector's promises, checked on the end state of a run (docs/identity.md, the design's invariants)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandboxes.dataverse.store import WriteRecord
from sync_core.services.runtime import get_runtime
from sync_core.services.status import record_status_view
from tests.convergence.operations import EXCLUDED_JOB_TITLE
from tests.convergence.world import World, norm

ENTITY_RANK = {"contact": 0, "lead": 1, "account": 2}
APPLIED = {"synced", "created", "updated", "conflict_resolved"}
WRITES_PER_CHANGE_LIMIT = 6.0


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.message} (slots {', '.join(map(str, self.slots))})"


def enabled_bits(contact: dict[str, Any]) -> list[int]:
    return [int(p["bit"]) for p in contact["properties"].get("permissions", []) if p.get("enabled")]


def spotler_writes(world: World) -> int:
    return sum(v for k, v in world.sp.call_counts().items() if k.startswith(("POST", "PUT")))


def dataverse_writes(world: World) -> int:
    app_user = world.c.dataverse.app_user_id
    return sum(1 for w in world.dv.writes if w.user_id == app_user)


async def check(
    world: World, *, quiet_writes: tuple[int, int], late_dataverse: Sequence[WriteRecord] = ()
) -> list[Violation]:
    """Every invariant on the settled world; `quiet_writes` are the writes a last idle pull and push made
    (`late_dataverse` the Dataverse ones, to name them)."""
    state = get_runtime().state
    found: list[Violation] = []
    dead = await world.dead_letters()
    dead_records = {str(d.get("recordId")) for d in dead}
    contacts = {c["externalId"]: c for c in world.sp.contacts()}
    linked: dict[str, list[int]] = defaultdict(list)
    views: dict[int, dict[str, Any]] = {}

    for slot, (entity, record_id) in sorted(world.records.items()):
        link = await state.get_link(entity, record_id)  # type: ignore[arg-type]
        view = await record_status_view(state, entity, record_id)  # type: ignore[arg-type]
        if view is not None:
            views[slot] = view
        if link is not None:
            linked[link.external_id].append(slot)
            if link.external_id not in contacts:
                found.append(
                    Violation(
                        "no-link-to-nothing", f"{entity} is linked to an externalId that holds no contact", (slot,)
                    )
                )
        # Nothing silently lost: an outcome on the record, or a visible dead letter.
        reason = view["reason"] if view else None
        if record_id not in dead_records and (reason is None or reason == "transient_error"):
            if reason is None and world.row(slot) is None and link is None:
                continue  # deleted before the connector ever saw it
            found.append(
                Violation("every-outcome-visible", f"{entity} ends as {reason!r} with no dead letter", (slot,))
            )

    # One Spotler contact per address.
    by_address: dict[str, list[str]] = defaultdict(list)
    for contact in contacts.values():
        address = norm(contact["properties"].get("email"))
        if address and not contact["anonymized"]:
            by_address[address].append(contact["externalId"])
    for address, ids in by_address.items():
        if len(ids) > 1:
            slots = tuple(sorted({s for i in ids for s in linked.get(i, [])} | set(world.holders(address))))
            found.append(Violation("one-contact-per-address", f"{len(ids)} Spotler contacts hold one address", slots))

    for external_id, contact in contacts.items():
        slots = tuple(linked.get(external_id, []))
        bits = enabled_bits(contact)
        address = norm(contact["properties"].get("email"))
        people = slots or tuple(world.holders(address))
        # Consent: anonymized or opted-out people have no permission bit on.
        if bits and (contact["anonymized"] or not address):
            found.append(Violation("consent-anonymized-no-permission", f"anonymized contact has bits {bits}", people))
            continue
        if bits and contact.get("optedOut"):
            found.append(Violation("consent-opted-out-no-permission", f"opted-out contact has bits {bits}", people))
            continue
        # Consent: nobody comes back without an explicit opt-in.
        if bits and address in world.ledger.blocked:
            why = world.ledger.blocked[address]
            found.append(
                Violation("consent-no-comeback", f"permission bits {bits} on after {why}, with no opt-in since", people)
            )
        if contact["anonymized"] or contact.get("optedOut") or not address:
            continue
        found.extend(_pair_agrees(world, contact, slots, views))

    # Consent: a contact that opted out in Spotler is not written to (the push writes nothing for it) and is never
    # asked for a permission bit, whatever the sandbox then refuses.
    for breach in world.breaches:
        people = tuple(linked.get(breach.external_id, [])) or tuple(world.holders(breach.address))
        if breach.asked_permission:
            found.append(
                Violation("consent-opted-out-no-permission", "a permission bit was asked for after the opt-out", people)
            )
        else:
            found.append(Violation("opted-out-not-written", "an opted-out contact was written to", people))

    # No ping-pong: once settled, an idle pull and push write nothing.
    spotler_quiet, dataverse_quiet = quiet_writes
    if spotler_quiet or dataverse_quiet:
        named = "; ".join(f"{w.entity} {w.record_id[:8]} {w.message} {', '.join(w.changed)}" for w in late_dataverse)
        found.append(
            Violation(
                "no-ping-pong",
                f"a settled world kept writing: {spotler_quiet} Spotler, {dataverse_quiet} Dataverse writes"
                + (f" ({named})" if named else ""),
                tuple(sorted({s for w in late_dataverse if (s := world.slot_of.get(w.record_id)) is not None})),
            )
        )
    changes = max(1, world.stats.changes)
    if spotler_writes(world) / changes > WRITES_PER_CHANGE_LIMIT:
        found.append(Violation("writes-bounded", f"{spotler_writes(world)} Spotler writes for {changes} changes", ()))
    return found


def _speaks(world: World, slot: int) -> bool:
    """May the slot's record speak for a Spotler contact: live, consenting, in the sync, and its address free.

    An address whose person left the sync (Do Not Email, deactivated, deleted) keeps a tombstone until a new
    opt-in: a record that takes such an address writes nothing, so it speaks for no contact (the one it is
    still linked to is spoken for by the next record, or by nobody).
    """
    row = world.row(slot)
    address = norm(row.get("emailaddress1")) if row is not None else None
    return (
        row is not None
        and row.get("statecode") == 0
        and not row.get("donotemail")
        and address is not None
        and address not in world.ledger.suppressed
        and row.get("jobtitle") != EXCLUDED_JOB_TITLE
    )


def _pair_agrees(
    world: World, contact: dict[str, Any], slots: tuple[int, ...], views: dict[int, dict[str, Any]]
) -> list[Violation]:
    """The record that speaks for the person and its Spotler contact agree per the mapping's directions."""
    speakers = [s for s in slots if _speaks(world, s)]
    if not speakers:
        return []
    speaker = min(speakers, key=lambda s: (ENTITY_RANK[world.records[s][0]], world.records[s][1]))
    if views.get(speaker, {}).get("reason") not in APPLIED:
        return []
    row = world.row(speaker)
    assert row is not None
    entity = world.records[speaker][0]
    props = contact["properties"]
    expected: dict[str, tuple[Any, Any]] = {"email": (norm(row.get("emailaddress1")), norm(props.get("email")))}
    if entity == "account":
        expected["organisation"] = (row.get("name"), props.get("organisation"))
    else:
        expected["firstName"] = (row.get("firstname"), props.get("firstName"))  # two-way
        expected["lastName"] = (row.get("lastname"), props.get("lastName"))
        expected["jobTitle"] = (row.get("jobtitle"), props.get("jobTitle"))
    differ = {k: v for k, v in expected.items() if v[0] != v[1]}
    found = []
    if differ:
        shown = ", ".join(f"{k}: Dataverse {a!r} vs Spotler {b!r}" for k, (a, b) in differ.items())
        found.append(Violation("pair-agrees", f"{entity} and its contact differ: {shown}", (speaker, *slots)))
    if 1 in enabled_bits(contact) and row.get("donotbulkemail"):
        found.append(
            Violation("pair-agrees", f"{entity} has Do Not Bulk Email but its contact's bit 1 is on", (speaker,))
        )
    return found


async def explain(world: World, violation: Violation) -> list[str]:
    """The end state of the records a violation names: the row, the link and the last outcomes (for debugging)."""
    state = get_runtime().state
    lines: list[str] = []
    for slot in dict.fromkeys(violation.slots):
        if slot not in world.records:
            continue
        entity, record_id = world.records[slot]
        row = world.row(slot)
        link = await state.get_link(entity, record_id)  # type: ignore[arg-type]
        shown = (
            "deleted"
            if row is None
            else f"email {row.get('emailaddress1')!r} state {row.get('statecode')} dne {row.get('donotemail')} "
            f"dnbe {row.get('donotbulkemail')} job {row.get('jobtitle')!r}"
        )
        lines.append(f"    slot {slot} {entity} {record_id[:8]}: {shown}")
        if link is not None:
            contact = world.sp.contact(link.external_id)
            held = contact["properties"].get("email") if contact else None
            lines.append(
                f"      link -> {link.external_id[:8]} (holds {held!r}) in_scope {link.in_scope} "
                f"anonymized {link.anonymized} unsubscribed {link.unsubscribed}"
            )
        for entry in sorted(await state.list_status(entity, record_id, limit=6), key=lambda h: h.at):  # type: ignore[arg-type]
            lines.append(f"      {entry.at:%H:%M:%S.%f} {entry.reason.value} {entry.action}: {entry.detail}")
    return lines
