"""The pull decision: what a Spotler change means for one linked Dataverse row (a three-way merge).

For each field mapped ⬅ or 🔁 the base is the value both sides agreed on at the last sync (a keyed hash
in the link). Only a side that moved away from the base has news: Spotler's news is written to Dynamics,
an echo of our own write (Spotler still equal to the base) writes nothing, and when both sides moved on a
🔁 field the configured winner decides and the conflict is recorded with both values' field names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sync_core.domain.consent import email_hash, normalize_email
from sync_core.domain.convert import ConversionError, canonical, hasher, is_blank, to_dataverse, to_spotler
from sync_core.domain.mapping import Direction, EntityMapping, FieldMapping
from sync_core.domain.plan import PushOptions
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, DataverseRow, PropValue, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause


@dataclass(frozen=True, slots=True)
class PullPlan:
    """Columns to PATCH on the Dataverse row, a correction to send back to Spotler, and the new link."""

    changes: Mapping[str, AttrValue]
    reason: ReasonCode
    detail: str
    link: LinkState
    etag: str | None = None
    spotler_fix: SpotlerContact | None = None
    suppress: Suppression | None = None
    conflicts: tuple[str, ...] = ()
    skipped: bool = False
    status_changed: bool = False  # the record's reason code differs from what its link said


def _holds_another_address(contact: SpotlerContact, row: DataverseRow, mapping: EntityMapping) -> bool:
    """The row's address differs from the contact's, and the mapping does not bring Spotler's address back."""
    if any(f.dataverse == mapping.email_attribute and f.direction.pulls for f in mapping.fields):
        return False
    mine = normalize_email(row.attributes.get(mapping.email_attribute))
    theirs = normalize_email(contact.email)
    return mine is not None and theirs is not None and mine.casefold() != theirs.casefold()


@dataclass(slots=True)
class _Acc:
    changes: dict[str, AttrValue] = field(default_factory=dict)
    fix_props: dict[str, PropValue] = field(default_factory=dict)
    fix_perms: dict[int, bool] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)


def plan_pull(
    contact: SpotlerContact,
    link: LinkState,
    row: DataverseRow | None,
    mapping: EntityMapping,
    options: PushOptions,
    now: datetime,
) -> PullPlan:
    """Decide which Dataverse columns a Spotler change updates for one linked row."""
    if row is None or link.anonymized:
        why = "record no longer exists" if row is None else "anonymized; Spotler changes are not pulled"
        return PullPlan({}, link.reason or ReasonCode.SYNCED, why, link, skipped=True)
    if contact.email is None:
        # Anonymized (for a record that shared it): its bits read off, but that is not the person unsubscribing.
        why = "the Spotler contact holds no address (anonymized); nothing is pulled"
        return PullPlan({}, link.reason or ReasonCode.SYNCED, why, link, skipped=True)
    if not link.in_scope and _holds_another_address(contact, row, mapping):
        # The record left the contact for another address (it waits for an opt-in there): it is not the person
        # this contact holds any more, so nothing of theirs is written to it.
        why = "the record's e-mail address is not the Spotler contact's; nothing is pulled"
        return PullPlan({}, link.reason or ReasonCode.SYNCED, why, link, skipped=True)
    if (
        link.spotler_last_changed is not None
        and contact.last_changed is not None
        and contact.last_changed < link.spotler_last_changed
    ):
        return PullPlan({}, link.reason or ReasonCode.SYNCED, "older Spotler change ignored", link, skipped=True)

    key = options.hash_key
    hash_of = hasher(key)
    attrs = row.attributes
    acc = _Acc()
    spotler_newer = (
        contact.last_changed is not None and row.modified_on is not None and contact.last_changed > row.modified_on
    )
    dynamics_wins = options.conflict_winner == "dynamics" or not spotler_newer

    for f in mapping.fields:
        if not f.direction.pulls:
            continue
        sp_value = contact.properties.get(f.spotler)
        try:
            sp_c = canonical(f, sp_value)
            dv_c = canonical(f, to_spotler(f, attrs.get(f.dataverse)))
        except ConversionError:
            acc.conflicts.append(f"{f.spotler}: value cannot be converted; not pulled")
            continue
        sp_h, dv_h = hash_of(sp_c), hash_of(dv_c)
        old = link.base.get(f.key)
        if sp_h == old or sp_c == dv_c:
            if sp_c == dv_c:
                acc.base[f.key] = sp_h
            continue  # Spotler has no news for this field (an echo of our own write, or already equal).
        if old is None and _holds_nothing(f, sp_value):
            continue  # Never agreed and Spotler holds nothing (a contact we created without it): no news.
        if is_blank(sp_value) and not f.is_set and f.blank != "clear":
            continue  # Spotler blanked it; only the field's own `blank: clear` lets that clear Dynamics.
        dynamics_changed = old is not None and dv_h != old
        if f.direction is Direction.BOTH and dynamics_changed:
            acc.conflicts.append(f.spotler)
            if dynamics_wins:
                acc.fix_props[f.spotler] = to_spotler(f, attrs.get(f.dataverse))
                acc.base[f.key] = dv_h
                continue
        try:
            acc.changes[f.dataverse] = to_dataverse(f, sp_value)
        except ConversionError:
            acc.conflicts.append(f"{f.spotler}: value cannot be converted; not pulled")
            continue
        acc.base[f.key] = sp_h

    email = normalize_email(attrs.get(mapping.email_attribute))
    person_hash = email_hash(key, email) if email else link.email_hash
    tomb = _permissions(contact, link, mapping, attrs, options, acc, now, row)

    new_base = dict(link.base)
    new_base.update(acc.base)
    real_conflicts = tuple(c for c in acc.conflicts if ":" not in c)
    if contact.opted_out:
        # The person's own opt-out in Spotler is the reason this record is not mailed, whatever else moved.
        reason, detail = ReasonCode.OPTED_OUT_IN_SPOTLER, "opted out in Spotler"
        if acc.changes:
            detail += "; Dynamics updated: " + ", ".join(sorted(acc.changes))
    elif real_conflicts:
        reason, detail = ReasonCode.CONFLICT_RESOLVED, "both sides changed " + ", ".join(real_conflicts)
    elif acc.changes:
        reason, detail = ReasonCode.UPDATED, "updated in Dynamics from Spotler: " + ", ".join(sorted(acc.changes))
    else:
        reason, detail = link.reason or ReasonCode.SYNCED, link.detail or "already in sync"
    last_changed = contact.last_changed or link.spotler_last_changed
    new_link = dataclasses.replace(
        link,
        base=new_base,
        spotler_last_changed=last_changed,
        email_hash=person_hash,
        reason=reason,
        detail=detail,
        last_attempt=now,
    )
    fix = (
        SpotlerContact(external_id=link.external_id, properties=acc.fix_props, permissions=acc.fix_perms)
        if acc.fix_props or acc.fix_perms
        else None
    )
    return PullPlan(
        acc.changes,
        reason,
        detail,
        new_link,
        etag=row.etag,
        spotler_fix=fix,
        suppress=tomb,
        conflicts=tuple(acc.conflicts),
        status_changed=reason != link.reason,
    )


def _holds_nothing(f: FieldMapping, sp_value: PropValue) -> bool:
    """True when the Spotler contact carries no value at all for the field (not even a cleared bit)."""
    if f.is_set:
        mapped = [f.bit] if f.type == "boolean" else list((f.bits or {}).values())
        return not isinstance(sp_value, dict) or not any(bit in sp_value for bit in mapped)
    return is_blank(sp_value)


def _permissions(
    contact: SpotlerContact,
    link: LinkState,
    mapping: EntityMapping,
    attrs: Mapping[str, AttrValue],
    options: PushOptions,
    acc: _Acc,
    now: datetime,
    row: DataverseRow,
) -> Suppression | None:
    """Subscriptions flow back: an opt-out in Spotler always wins; an opt-in there is the person's own act."""
    key = options.hash_key
    hash_of = hasher(key)
    dnbe = attrs.get(mapping.donotbulkemail_attribute) is True
    for p in mapping.permissions:
        if not p.direction.pulls:
            continue
        sp_on = False if contact.opted_out else contact.permissions.get(p.bit, False)
        # A `column` permission always names its column (the mapping checks it): `is not None` only narrows the type.
        column_on = p.dataverse is not None and attrs.get(p.dataverse) is True
        dv_on = not dnbe and (p.source == "not_donotbulkemail" or column_on)
        sp_h = hash_of(sp_on)
        old = link.base.get(p.key)
        if old is None and not contact.opted_out and p.bit not in contact.permissions:
            continue  # Never agreed and Spotler carries no such bit: no news.
        if sp_h == old or sp_on == dv_on:
            if sp_on == dv_on:
                acc.base[p.key] = sp_h
            continue
        # With no agreed value (the record just joined the contact, or moved onto it) neither side is known to
        # be the newer: Do Not Bulk Email ticked is the person's explicit no, never overruled by Spotler's bit
        # (an unticked subscription column is only the default, and Spotler's bit is news for it).
        dynamics_changed = hash_of(dv_on) != old if old is not None else dnbe
        if dynamics_changed and sp_on and p.direction is Direction.BOTH:
            # Dynamics withdrew consent while Spotler still shows it: the opt-out wins, Spotler is corrected.
            acc.conflicts.append(f"permission {p.bit}")
            acc.fix_perms[p.bit] = False
            acc.base[p.key] = hash_of(False)
            continue
        if p.source == "not_donotbulkemail":
            acc.changes[mapping.donotbulkemail_attribute] = not sp_on
        elif p.dataverse:
            acc.changes[p.dataverse] = sp_on
        acc.base[p.key] = sp_h
    if contact.opted_out and contact.email is not None:  # an opt-out always has an address; this narrows the type
        # The person who opted out is the contact's address (the row may have moved onto the contact just now).
        return Suppression(email_hash(key, contact.email), SuppressionCause.OPTED_OUT, row.entity, row.id, now)
    return None
