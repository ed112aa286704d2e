"""The push decision: what one Dataverse change means for Spotler — create, update, anonymize or skip, and why.

`plan_push` is pure: everything it needs (the row, the link, the current Spotler contact, the tombstone,
the other rows that share the contact, the time) comes in as arguments, and the plan says what to write
and what to remember. The push service only carries the plan out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sync_core.domain.consent import email_hash, normalize_email
from sync_core.domain.convert import ConversionError, canonical, hasher, is_blank, to_spotler, value_hash
from sync_core.domain.eligibility import (
    excluded_by,
    is_active,
    is_qualified_lead,
    wants_no_bulk_email,
    wants_no_email,
)
from sync_core.domain.mapping import Direction, EntityMapping, FieldMapping, PermissionMapping
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, ChangeKind, EntityName, PropValue, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause

# Which table's row speaks for a person when several rows share one Spotler contact (see docs/identity.md).
ENTITY_PRECEDENCE: Mapping[EntityName, int] = {"contact": 0, "lead": 1, "account": 2}


class PushAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ANONYMIZE = "anonymize"
    RELINK = "relink"
    UNSUBSCRIBE = "unsubscribe"  # every mapped permission bit off; the contact and its data stay
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PushOptions:
    """Settings that shape push decisions."""

    hash_key: bytes
    anonymize_on_deactivate: bool = True
    purge_when_not_set: bool = False
    conflict_winner: Literal["dynamics", "most_recent"] = "dynamics"
    on_leaving_scope: Literal["unsubscribe", "anonymize", "keep"] = "unsubscribe"


@dataclass(frozen=True, slots=True)
class PushInput:
    """Everything known about one Dataverse change when it is planned.

    `attributes` is None when the row no longer exists. `spotler` is the contact at the linked (or the
    record's own) externalId; `email_match` a contact found by e-mail when neither exists; `peers` the
    other links that share the Spotler contact; `master_attributes` the surviving row of a merge.
    """

    entity: EntityName
    record_id: str
    kind: ChangeKind
    attributes: Mapping[str, AttrValue] | None
    now: datetime
    changed: frozenset[str] = frozenset()
    modified_on: datetime | None = None
    version: int | None = None
    link: LinkState | None = None
    spotler: SpotlerContact | None = None
    email_match: SpotlerContact | None = None
    suppression: Suppression | None = None
    peers: Sequence[LinkState] = ()  # the other records on the contact (never the record itself)
    merged_into: str | None = None
    master_attributes: Mapping[str, AttrValue] | None = None
    moved: bool = False  # the record's new address moved it onto the existing contact `spotler`
    left: SpotlerContact | None = None  # with `moved`: the contact it left (still holding its old address)
    # Other records whose last synced address is this record's (looked up only when no contact exists for it).
    address_peers: Sequence[LinkState] = ()


@dataclass(frozen=True, slots=True)
class PushPlan:
    """What to do in Spotler and what to remember afterwards.

    `record_status` is False for events that say nothing new about the record (stale or duplicate
    deliveries): they leave its status alone. `link` is None when nothing is to be remembered.
    """

    action: PushAction
    reason: ReasonCode
    detail: str
    external_id: str | None = None
    contact: SpotlerContact | None = None
    link: LinkState | None = None
    suppress: Suppression | None = None
    lift_suppression: str | None = None
    relink_to: str | None = None
    conflicts: tuple[str, ...] = ()
    record_status: bool = True
    purge: bool = False  # send with Spotler's purge flag: properties the contact does not carry are cleared


@dataclass(slots=True)
class _Desired:
    properties: dict[str, PropValue] = field(default_factory=dict)
    permissions: dict[int, bool] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    held: bool = False  # a permission bit Dynamics asks for stays off (no new opt-in yet)


def _skip(
    reason: ReasonCode, detail: str, inp: PushInput, *, link: LinkState | None = None, in_scope: bool = False
) -> PushPlan:
    """Write nothing to Spotler; remember the outcome (and whether the record still qualifies) on its link."""
    current = link if link is not None else inp.link
    new_link = (
        dataclasses.replace(
            current,
            reason=reason,
            detail=detail,
            last_attempt=inp.now,
            failures=0,
            next_retry=None,
            in_scope=in_scope,
        )
        if current is not None
        else None
    )
    return PushPlan(
        PushAction.NONE, reason, detail, external_id=current.external_id if current else None, link=new_link
    )


def _opt_out_tombstone(inp: PushInput, contact: SpotlerContact, options: PushOptions) -> Suppression | None:
    """The tombstone of a person who opted out in Spotler, unless the one they have already says so.

    Left by the push as well as the pull, so that a record deactivated, deleted or moved before the next pull
    still finds the opt-out (a reactivation is no opt-in for it).
    """
    address = normalize_email(contact.email)
    if address is None:
        return None
    tomb_hash = email_hash(options.hash_key, address)
    known = inp.suppression
    if known is not None and known.email_hash == tomb_hash and known.cause is SuppressionCause.OPTED_OUT:
        return None
    return Suppression(tomb_hash, SuppressionCause.OPTED_OUT, inp.entity, inp.record_id, inp.now)


def _peers_of_address(inp: PushInput, my_hash: str | None) -> list[LinkState]:
    """The live peers that keep the shared contact for the person of `my_hash`: a peer that moved to another
    address (and follows the contact silently) is not that person, and keeps nothing for them."""
    return [p for p in _active_peers(inp) if my_hash is None or p.email_hash is None or p.email_hash == my_hash]


def _left_from_elsewhere(
    inp: PushInput,
    options: PushOptions,
    my_hash: str | None,
    reason: ReasonCode,
    what: str,
    cause: SuppressionCause,
) -> PushPlan | None:
    """A record leaves while its linked contact holds another address than the record's (the record that spoke
    for the contact took it to its new address): the contact is not this person's and is left alone.

    The person at the record's address has no contact then; when no other live record of that address remains,
    the address gets its tombstone all the same, so that nobody brings the person back without an opt-in.
    """
    contact = inp.spotler
    if contact is None or contact.email is None or my_hash is None or inp.link is None:
        return None
    held = email_hash(options.hash_key, contact.email)
    if held in (my_hash, inp.link.email_hash):
        return None  # the contact is this record's (its address changed with this very change): the usual rules
    detail = f"{what}; its Spotler contact holds another address, left alone"
    link = dataclasses.replace(
        _advance(inp.link, inp),
        in_scope=False,
        anonymized=inp.kind is ChangeKind.DELETE or inp.attributes is None,
        email_hash=my_hash,
        reason=reason,
        detail=detail,
        failures=0,
        next_retry=None,
    )
    plan = PushPlan(PushAction.NONE, reason, detail, external_id=inp.link.external_id, link=link)
    if any(p.email_hash == my_hash for p in _active_peers(inp)):
        return plan  # another live record of the address goes on; the last one leaves the tombstone
    known = inp.suppression
    if known is not None and known.email_hash == my_hash:
        return plan
    return dataclasses.replace(plan, suppress=Suppression(my_hash, cause, inp.entity, inp.record_id, inp.now))


def _carried_withdrawals(inp: PushInput, mapping: EntityMapping, joined: SpotlerContact | None) -> list[int]:
    """The bits a record that moved onto `joined` had off on the contact it left, which `joined` has on.

    Two people's records that come to share one address are one person in Spotler: an unsubscribe either of
    them made stands, whichever push reaches the address first (without this the outcome would depend on it).
    """
    left = inp.left
    if left is None or joined is None:  # `left` is given with `moved` only
        return []
    return [
        p.bit
        for p in mapping.permissions
        if p.direction.pushes and joined.permissions.get(p.bit, False) and left.permissions.get(p.bit) is False
    ]


def _joins_existing_contact(inp: PushInput) -> bool:
    """Does this change link the record to a Spotler contact it did not speak for before?"""
    if inp.moved:
        return True
    if inp.link is None and inp.email_match is None:
        # A new contact for a person another live record of the address already speaks for in Dynamics (its
        # contact went with another address): the person's choice lives on that record, a new row is no opt-in.
        # So is the record's own contact found without a link (an earlier attempt created it, bits held, and
        # failed before its link was saved): the retry holds what that attempt held.
        return any(
            not p.anonymized and p.in_scope and (p.entity, p.record_id) != (inp.entity, inp.record_id)
            for p in inp.address_peers
        )
    # Paired by e-mail: with no link, `email_match` is set here (see above), and never beside `spotler`.
    return inp.link is None


def _is_stale(inp: PushInput) -> bool:
    link = inp.link
    if link is None:
        return False
    if inp.version is not None and link.dv_version is not None and inp.version < link.dv_version:
        return True
    return inp.modified_on is not None and link.dv_modified_on is not None and inp.modified_on < link.dv_modified_on


def _advance(link: LinkState, inp: PushInput) -> LinkState:
    """The link with the event's ordering data applied.

    Only `plan_push` comes here, after `_is_stale` dropped an event older than the link by either ordering value:
    the event's values, where it has them, are never behind the link's.
    """
    version = inp.version if inp.version is not None else link.dv_version
    modified = inp.modified_on if inp.modified_on is not None else link.dv_modified_on
    # What dataclasses.replace does, spelled out (it runs on every decision); _LINK_FIELDS keeps it complete.
    return LinkState(
        entity=link.entity,
        record_id=link.record_id,
        external_id=link.external_id,
        email_hash=link.email_hash,
        dv_version=version,
        dv_modified_on=modified,
        spotler_last_changed=link.spotler_last_changed,
        base=link.base,
        anonymized=link.anonymized,  # pragma: no mutate - every caller sets it, or (_leave) has a live link
        in_scope=link.in_scope,
        unsubscribed=link.unsubscribed,
        reason=link.reason,
        detail=link.detail,
        last_attempt=inp.now,
        failures=link.failures,
        next_retry=link.next_retry,
        failed_change=link.failed_change,
        etag=link.etag,
    )


_LINK_FIELDS = [
    "entity",
    "record_id",
    "external_id",
    "email_hash",
    "dv_version",
    "dv_modified_on",
    "spotler_last_changed",
    "base",
    "anonymized",
    "in_scope",
    "unsubscribed",
    "reason",
    "detail",
    "last_attempt",
    "failures",
    "next_retry",
    "failed_change",
    "etag",
]
if [f.name for f in dataclasses.fields(LinkState)] != _LINK_FIELDS:  # pragma: no cover - a new field needs _advance
    raise ImportError("LinkState's fields changed: copy the new ones in plan._advance")


def _owner_peer(inp: PushInput) -> LinkState | None:
    """A live peer that outranks this record for the shared Spotler contact, if any."""
    mine = (ENTITY_PRECEDENCE[inp.entity], inp.record_id)
    for peer in sorted(_active_peers(inp), key=lambda p: (ENTITY_PRECEDENCE[p.entity], p.record_id)):
        # Two records never share a key, so `<` and `<=` agree here.
        if (ENTITY_PRECEDENCE[peer.entity], peer.record_id) < mine:  # pragma: no mutate
            return peer
    return None


def live_peers(peers: Sequence[LinkState]) -> list[LinkState]:
    """The peers (the other records on a shared Spotler contact) that still speak for a live, consenting person."""
    return [p for p in peers if not p.anonymized and p.in_scope]


def _active_peers(inp: PushInput) -> list[LinkState]:
    return live_peers(inp.peers)


@dataclass(frozen=True, slots=True)
class Departure:
    """What giving up a Spotler contact means: write nothing, unsubscribe it, or anonymize it."""

    action: PushAction
    detail: str
    contact: SpotlerContact | None = None  # for UNSUBSCRIBE: the permission bits to turn off


def plan_departure(
    contact: SpotlerContact, peers: Sequence[LinkState], mapping: EntityMapping, options: PushOptions
) -> Departure:
    """A record stops speaking for the person on `contact` (`peers`: the other live records on it).

    The contact is kept while another live, consenting record shares it; otherwise ON_LEAVING_SCOPE decides.
    """
    if peers:
        return Departure(PushAction.NONE, f"Spotler contact kept for {peers[0].entity} {peers[0].record_id}")
    if options.on_leaving_scope == "keep":
        return Departure(PushAction.NONE, "Spotler contact kept (ON_LEAVING_SCOPE=keep)")
    if options.on_leaving_scope == "anonymize":
        return Departure(PushAction.ANONYMIZE, "Spotler contact anonymized")
    bits = {p.bit: False for p in mapping.permissions if p.direction.pushes and contact.permissions.get(p.bit)}
    if not bits:
        return Departure(PushAction.NONE, "unsubscribed")
    return Departure(
        PushAction.UNSUBSCRIBE, "unsubscribed", SpotlerContact(external_id=contact.external_id, permissions=bits)
    )


def _leave(inp: PushInput, reason: ReasonCode, detail: str, mapping: EntityMapping, options: PushOptions) -> PushPlan:
    """A linked record stops qualifying for a reason that does not anonymize by itself: ON_LEAVING_SCOPE applies."""
    link = inp.link
    contact = inp.spotler
    if link is None or link.anonymized or contact is None:
        return _skip(reason, detail, inp)  # nothing in Spotler speaks for it
    departure = plan_departure(contact, _active_peers(inp), mapping, options)
    text = f"{detail}; {departure.detail}"
    if departure.action is PushAction.ANONYMIZE:
        plan = _anonymize(inp, text, SuppressionCause.ANONYMIZED, link.external_id)
        assert plan.link is not None
        return dataclasses.replace(plan, reason=reason, link=dataclasses.replace(plan.link, reason=reason))
    if departure.action is PushAction.NONE and not departure.detail.startswith("unsubscribed"):
        return _skip(reason, text, inp)
    base = dict(link.base)
    for p in mapping.permissions:
        if p.direction.pushes:
            base[p.key] = value_hash(options.hash_key, False)
    new_link = dataclasses.replace(
        _advance(link, inp),
        base=base,
        in_scope=False,
        unsubscribed=True,
        reason=reason,
        detail=text,
        failures=0,
        next_retry=None,
    )
    return PushPlan(
        departure.action, reason, text, external_id=link.external_id, contact=departure.contact, link=new_link
    )


def _silenced(plan: PushPlan, inp: PushInput, mapping: EntityMapping, options: PushOptions, email: str) -> PushPlan:
    """A suppressed record whose own linked contact holds its address with bits on: they go off.

    The record reached Spotler before the tombstone of its address was known (the person's opt-out or leave was
    applied after the record's create or move, when their changes came out of order): no bit stays on for a
    person with a tombstone, whichever change was applied first.
    """
    link, contact = inp.link, inp.spotler
    if link is None or link.anonymized or contact is None or contact.email is None:
        return plan
    if contact.email.casefold() != email.casefold():
        return plan
    return _bits_off(plan, inp, mapping, options, "its subscriptions turned off")


def _kept_for_later_joiners(
    plan: PushPlan, inp: PushInput, peers: Sequence[LinkState], mapping: EntityMapping, options: PushOptions
) -> PushPlan:
    """The record leaves a shared contact that only records which joined it after this change keep.

    Such a record joined without an opt-in of its own (its link is held unsubscribed) and, in Dynamics' order,
    after the person left: the contact stays for it, but the bits the leaving person's consent kept on go off,
    as they would have had the changes been applied in the order they were made.
    """
    when = inp.modified_on
    if when is None or inp.spotler is None:
        return plan
    if not all(p.unsubscribed and p.dv_modified_on is not None and p.dv_modified_on > when for p in peers):
        return plan
    return _bits_off(plan, inp, mapping, options, "its subscriptions turned off: the records that keep it joined later")


def _bits_off(plan: PushPlan, inp: PushInput, mapping: EntityMapping, options: PushOptions, note: str) -> PushPlan:
    """`plan`, also turning off the pushed permission bits the linked contact has on (if any)."""
    contact = inp.spotler
    if contact is None or plan.link is None or plan.external_id is None:
        return plan
    on = [p.bit for p in mapping.permissions if p.direction.pushes and contact.permissions.get(p.bit, False)]
    if not on:
        return plan
    base = dict(plan.link.base)
    for p in mapping.permissions:
        if p.direction.pushes:
            base[p.key] = value_hash(options.hash_key, False)
    detail = f"{plan.detail}; {note}"
    return dataclasses.replace(
        plan,
        action=PushAction.UNSUBSCRIBE,
        detail=detail,
        contact=SpotlerContact(external_id=plan.external_id, properties={}, permissions=dict.fromkeys(on, False)),
        link=dataclasses.replace(plan.link, base=base, unsubscribed=True, detail=detail),
    )


def _permission_value(perm: PermissionMapping, mapping: EntityMapping, attrs: Mapping[str, AttrValue]) -> bool:
    if wants_no_bulk_email(mapping, attrs):
        return False  # Do Not Bulk Email turns every mapped permission off.
    if perm.source == "not_donotbulkemail":
        return True
    # A `column` permission always names its column (the mapping checks it): `is not None` only narrows the type.
    return perm.dataverse is not None and attrs.get(perm.dataverse) is True


def explicit_opt_in(
    inp: PushInput, mapping: EntityMapping, attrs: Mapping[str, AttrValue], cause: SuppressionCause
) -> bool:
    """Did this very event, made in Dynamics, opt the person back in?

    Clearing Do Not Email / Do Not Bulk Email or ticking a mapped subscription column counts; for a
    tombstone left by deactivation, reactivating the record counts too. Replays and backfills do not.
    """
    if inp.kind not in (ChangeKind.UPDATE, ChangeKind.SET_STATE, ChangeKind.CREATE):
        return False
    if wants_no_email(mapping, attrs):
        return False
    changed = inp.changed
    if inp.kind is ChangeKind.CREATE:
        # A new row submits every column, the do-not flags at their defaults: only a ticked subscription counts.
        return any(
            p.dataverse in changed and attrs.get(p.dataverse) is True
            for p in mapping.permissions
            if p.dataverse and not wants_no_bulk_email(mapping, attrs)
        )
    if mapping.donotemail_attribute in changed or (
        mapping.donotbulkemail_attribute in changed and not wants_no_bulk_email(mapping, attrs)
    ):
        return True
    if not wants_no_bulk_email(mapping, attrs) and any(
        p.dataverse in changed and attrs.get(p.dataverse) is True for p in mapping.permissions if p.dataverse
    ):
        return True  # a ticked subscription, unless Do Not Bulk Email still turns every subscription off
    return cause is SuppressionCause.ANONYMIZED and "statecode" in changed and is_active(attrs)


_TEXT, _EMAIL, _DATE, _OTHER = range(4)
_Step = tuple[FieldMapping, str, str, str, int, bool, bool, bool, bool]
_STEPS_KEPT = 64
_steps_memo: dict[tuple[int, bool], tuple[EntityMapping, tuple[_Step, ...], tuple[PermissionMapping, ...]]] = {}


def _compiled(mapping: EntityMapping, options: PushOptions) -> tuple[tuple[_Step, ...], tuple[PermissionMapping, ...]]:
    """The mapping's pushed fields as flat steps, worked out once per mapping and blank policy.

    A step is (field, column, property, link key, kind, create only, both ways, set property, blank kept): the
    field's properties that `_desired` would otherwise look up on every change.
    """
    memo_key = (id(mapping), options.purge_when_not_set)
    found = _steps_memo.get(memo_key)
    if found is not None and found[0] is mapping:
        return found[1], found[2]
    steps: list[_Step] = []
    for f in mapping.fields:
        if f.direction is Direction.TO_DYNAMICS:
            continue
        kind = {"string": _TEXT, "email": _EMAIL, "date": _DATE, "birthdate": _DATE}.get(f.type, _OTHER)
        keep_blank = not f.is_set and not _clears(f, options)
        steps.append(
            (f, f.dataverse, f.spotler, f.key, kind, f.create_only, f.direction is Direction.BOTH, f.is_set, keep_blank)
        )
    pushed = tuple(p for p in mapping.permissions if p.direction.pushes)
    if len(_steps_memo) >= _STEPS_KEPT:
        _steps_memo.clear()
    _steps_memo[memo_key] = (mapping, tuple(steps), pushed)  # holds the mapping, so its id is not reused meanwhile
    return tuple(steps), pushed


def _desired(
    inp: PushInput,
    mapping: EntityMapping,
    options: PushOptions,
    attrs: Mapping[str, AttrValue],
    current: SpotlerContact | None,
    creating: bool,
    *,
    hold: bool,
    carried: Sequence[int] = (),
) -> _Desired:
    """The Spotler values this row asks for, restricted by direction, blank policy and the three-way merge.

    With `hold`, no permission bit is turned on (the person was unsubscribed and has not opted in again); the
    `carried` bits are turned off (an unsubscribe the record brings from the contact it left).
    Text, e-mail and date values take a short way to the same canonical forms `to_spotler` and `canonical` give.
    """
    out = _Desired()
    out_base = out.base
    properties = out.properties
    base: Mapping[str, str] = inp.link.base if inp.link is not None else {}
    hash_of = hasher(options.hash_key)
    current_props: Mapping[str, PropValue] = current.properties if current is not None else {}
    dynamics_wins = options.conflict_winner == "dynamics"
    spotler_newer = (
        current is not None
        and current.last_changed is not None
        and inp.modified_on is not None
        and current.last_changed > inp.modified_on
    )
    steps, pushed = _compiled(mapping, options)

    for f, column, prop, fkey, kind, create_only, both, _set, keep_blank in steps:
        if create_only and not creating:
            continue
        value = attrs.get(column)
        have = current_props.get(prop)
        want: PropValue
        want_c: object
        have_c: object
        if kind is _TEXT or kind is _EMAIL:  # pragma: no mutate - the short way; the general one gives the same
            if value is None:
                want = None
            elif type(value) is str:  # pragma: no mutate - the short way to what to_spotler gives a text
                want = value.strip() or None
            else:
                want = to_spotler(f, value)  # a number or a flag in a text column: its text (never fails)
            if want is None:
                if keep_blank:
                    continue  # blank and the policy keeps Spotler's value
                want_c = None
            else:
                want_c = want.casefold() if kind is _EMAIL and isinstance(want, str) else want
            if have is None:
                have_c = None
            elif type(have) is str:  # pragma: no mutate - the short way to what canonical gives a text
                stripped = have.strip()
                have_c = (stripped.casefold() if kind is _EMAIL else stripped) if stripped else None
            else:
                have_c = canonical(f, have)
        else:
            try:
                want = to_spotler(f, value)
            except ConversionError:
                out.conflicts.append(f"{column}: value cannot be converted; not sent")
                continue
            if keep_blank and is_blank(want):
                continue  # blank and the policy keeps Spotler's value
            want_c = canonical(f, want)
            have_c = canonical(f, have)
        want_h = hash_of(want_c)  # hashed once, and only where a hash is stored or compared
        if want_c == have_c:
            out_base[fkey] = want_h
            continue
        if both and not creating:
            old = base.get(fkey)
            dynamics_changed = old is None or want_h != old
            spotler_changed = old is not None and hash_of(have_c) != old
            if not dynamics_changed and spotler_changed:
                continue  # Spotler changed it; the pull brings it to Dynamics.
            if dynamics_changed and spotler_changed:
                out.conflicts.append(prop)
                if not dynamics_wins and spotler_newer:
                    continue
        if isinstance(want, dict):  # a set property (only those convert to bits)
            existing = properties.get(prop)
            merged = dict(existing) if isinstance(existing, dict) else {}
            merged.update(want)
            properties[prop] = merged
        else:
            properties[prop] = want
        out_base[fkey] = want_h

    for p in pushed:
        want_on = _permission_value(p, mapping, attrs) and p.bit not in carried
        have_on = current.permissions.get(p.bit, False) if current is not None else False
        want_h = hash_of(want_on)
        if hold and want_on and not have_on:
            out.held = True
            continue
        if creating or want_on != have_on:
            if not creating and want_on and p.direction is Direction.BOTH:
                old = base.get(p.key)
                if old is not None and want_h == old:
                    continue  # Dynamics did not ask to subscribe; Spotler's opt-out stands (the pull applies it).
            out.permissions[p.bit] = want_on
        out.base[p.key] = want_h
    return out


def _purge_body(
    mapping: EntityMapping, current: SpotlerContact, desired: _Desired
) -> tuple[dict[str, PropValue], dict[int, bool]]:
    """The whole contact for an update sent with `purge`: Spotler then holds exactly this.

    Every mapped property is carried: what Dynamics sends (a blank that clears is left out, so the purge clears
    it), and for every other mapped property Spotler's current value, so that the purge never erases what
    Spotler owns (⬅ fields, 🔁 fields Spotler changed, a blank the field's policy keeps). Set properties and
    permissions carry every bit: the ones Dynamics sets overlaid on Spotler's current bits.
    """
    have = current.properties
    body: dict[str, PropValue] = {}
    for f in mapping.fields:
        if f.spotler in body:
            continue
        current_value = have.get(f.spotler)
        if f.spotler in desired.properties:
            wanted = desired.properties[f.spotler]
            if isinstance(wanted, dict):
                base = dict(current_value) if isinstance(current_value, dict) else {}
                base.update(wanted)
                body[f.spotler] = base
            elif wanted is not None:
                body[f.spotler] = wanted
        elif not is_blank(current_value):
            body[f.spotler] = dict(current_value) if isinstance(current_value, dict) else current_value
    permissions = dict(current.permissions)
    permissions.update(desired.permissions)
    return body, permissions


def _clears(f: FieldMapping, options: PushOptions) -> bool:
    return f.blank == "clear" if f.blank is not None else options.purge_when_not_set


def _anonymize(
    inp: PushInput, detail: str, cause: SuppressionCause, external_id: str, *, email_h: str | None = None
) -> PushPlan:
    """Anonymize the contact; the tombstone is `email_h`'s, else the link's (the last address synced)."""
    link = inp.link or LinkState(entity=inp.entity, record_id=inp.record_id, external_id=external_id)
    new_link = dataclasses.replace(
        _advance(link, inp),
        anonymized=True,
        in_scope=False,
        base={},
        email_hash=email_h or link.email_hash,
        reason=ReasonCode.ANONYMIZED,
        detail=detail,
        failures=0,
        next_retry=None,
    )
    tomb_hash = email_h or link.email_hash
    known = inp.suppression
    if known is not None and known.email_hash == tomb_hash and known.cause is SuppressionCause.OPTED_OUT:
        cause = SuppressionCause.OPTED_OUT  # the person's own opt-out is never weakened into "anonymized by us"
    tomb = Suppression(tomb_hash, cause, inp.entity, inp.record_id, inp.now) if tomb_hash is not None else None
    already = inp.link is not None and inp.link.anonymized
    # A linked contact that holds no address was anonymized already: anonymizing it again gives the person nothing,
    # and, read before a record of another address wrote that address back, would wipe that record's contact.
    exists = inp.spotler is not None and not (inp.link is not None and inp.spotler.email is None)
    action = PushAction.ANONYMIZE if exists and not already else PushAction.NONE
    return PushPlan(action, ReasonCode.ANONYMIZED, detail, external_id=external_id, link=new_link, suppress=tomb)


def plan_push(inp: PushInput, mapping: EntityMapping, options: PushOptions) -> PushPlan:
    """Decide what a Dataverse change means for Spotler."""
    if _is_stale(inp):
        return PushPlan(PushAction.NONE, ReasonCode.SYNCED, "stale event ignored", record_status=False)

    link = inp.link
    external_id = (
        link.external_id
        if link is not None
        else (inp.email_match.external_id if inp.email_match is not None and inp.spotler is None else inp.record_id)
    )
    attrs = inp.attributes

    # Deleted: anonymize unless another live record still uses the Spotler contact.
    if attrs is None or inp.kind is ChangeKind.DELETE:
        if link is None and inp.spotler is None:
            return PushPlan(PushAction.NONE, ReasonCode.SYNCED, "deleted; never synced", record_status=False)
        elsewhere = _left_from_elsewhere(
            inp, options, link.email_hash if link else None, ReasonCode.SYNCED, "deleted", SuppressionCause.ANONYMIZED
        )
        if elsewhere is not None:
            return elsewhere
        peers = _peers_of_address(inp, link.email_hash if link else None)
        if peers:
            detail = f"deleted; Spotler contact kept for {peers[0].entity} {peers[0].record_id}"
            unlinked = dataclasses.replace(_advance(link, inp), anonymized=True) if link else None
            plan = PushPlan(PushAction.NONE, ReasonCode.SYNCED, detail, external_id=external_id, link=unlinked)
            return _kept_for_later_joiners(plan, inp, peers, mapping, options)
        # The tombstone needs the address: from the link, else the delete's pre-image, else Spotler's contact.
        known = link.email_hash if link is not None else None
        gone_email = normalize_email(attrs.get(mapping.email_attribute)) if attrs is not None else None
        if gone_email is None and inp.spotler is not None:
            gone_email = normalize_email(inp.spotler.email)
        gone_h = known or (email_hash(options.hash_key, gone_email) if gone_email else None)
        return _anonymize(inp, "record deleted", SuppressionCause.ANONYMIZED, external_id, email_h=gone_h)

    email = normalize_email(attrs.get(mapping.email_attribute))
    email_h = email_hash(options.hash_key, email) if email else None

    # Merged away: the master carries the person on when it holds the same e-mail.
    if inp.merged_into is not None and inp.master_attributes is not None:
        master_email = normalize_email(inp.master_attributes.get(mapping.email_attribute))
        if email and master_email and master_email.casefold() == email.casefold():
            detail = f"merged into {inp.entity} {inp.merged_into}; Spotler contact relinked"
            moved = (
                dataclasses.replace(_advance(link, inp), anonymized=True, reason=ReasonCode.SYNCED, detail=detail)
                if link
                else None
            )
            return PushPlan(
                PushAction.RELINK,
                ReasonCode.SYNCED,
                detail,
                external_id=external_id,
                link=moved,
                relink_to=inp.merged_into,
            )

    if wants_no_email(mapping, attrs):
        elsewhere = _left_from_elsewhere(
            inp, options, email_h, ReasonCode.SUPPRESSED, "Do Not Email is set", SuppressionCause.OPTED_OUT
        )
        if elsewhere is not None:
            return elsewhere
        peers = _peers_of_address(inp, email_h)
        if peers and (inp.spotler is not None or (link is not None and not link.anonymized)):
            # The shared contact stays for another live, consenting record of the person.
            kept = f"Do Not Email is set; Spotler contact kept for {peers[0].entity} {peers[0].record_id}"
            return _kept_for_later_joiners(_skip(ReasonCode.SUPPRESSED, kept, inp), inp, peers, mapping, options)
        if inp.spotler is not None or (link is not None and not link.anonymized):
            return _anonymize(inp, "Do Not Email is set", SuppressionCause.OPTED_OUT, external_id, email_h=email_h)
        tomb = Suppression(email_h, SuppressionCause.OPTED_OUT, inp.entity, inp.record_id, inp.now) if email_h else None
        plan = _skip(ReasonCode.SUPPRESSED, "Do Not Email is set; not sent to Spotler", inp)
        return dataclasses.replace(plan, suppress=tomb)

    if not is_active(attrs):
        if is_qualified_lead(inp.entity, attrs) and not mapping.anonymize_closed_leads:
            return _skip(ReasonCode.INACTIVE, "qualified lead; the person lives on as a contact", inp)
        if options.anonymize_on_deactivate and (inp.spotler is not None or link is not None):
            elsewhere = _left_from_elsewhere(
                inp, options, email_h, ReasonCode.INACTIVE, "inactive", SuppressionCause.ANONYMIZED
            )
            if elsewhere is not None:
                return elsewhere
            peers = _peers_of_address(inp, email_h)
            if peers:
                kept = f"inactive; Spotler contact kept for {peers[0].entity} {peers[0].record_id}"
                return _kept_for_later_joiners(_skip(ReasonCode.INACTIVE, kept, inp), inp, peers, mapping, options)
            return _anonymize(inp, "record deactivated", SuppressionCause.ANONYMIZED, external_id, email_h=email_h)
        return _leave(inp, ReasonCode.INACTIVE, "record is inactive", mapping, options)

    exclusion = excluded_by(mapping, attrs)
    if exclusion is not None:
        return _leave(inp, ReasonCode.EXCLUDED_BY_FILTER, exclusion.description, mapping, options)
    if email is None:
        return _leave(inp, ReasonCode.NO_VALID_EMAIL, "no valid e-mail address", mapping, options)

    current = inp.spotler if inp.spotler is not None else inp.email_match
    if current is not None and current.opted_out:
        plan = _skip(ReasonCode.OPTED_OUT_IN_SPOTLER, "opted out in Spotler; nothing is written", inp)
        return dataclasses.replace(plan, suppress=_opt_out_tombstone(inp, current, options))
    if (
        link is not None
        and not link.anonymized
        and inp.spotler is not None
        and inp.spotler.email is None
        and not explicit_opt_in(inp, mapping, attrs, SuppressionCause.ANONYMIZED)
    ):
        # The contact we linked holds no address any more: it was anonymized (for a record that shared it, or in
        # Spotler). Writing to it would bring the person back without asking.
        return _skip(ReasonCode.SUPPRESSED, "the Spotler contact was anonymized; needs a new opt-in in Dynamics", inp)
    if link is not None and link.base and inp.spotler is not None and (inp.spotler.email is None or not link.in_scope):
        # The contact was anonymized (for another record, or in Spotler): nothing agreed on it stands, so the
        # record's values are all written again, not taken for Spotler's news. So for a record coming back to the
        # sync: while it was out, the contact may have been anonymized and its address written back by another
        # record (its blanks are no news either), and a record that comes back gets its data synced again.
        link = dataclasses.replace(link, base={})
        inp = dataclasses.replace(inp, link=link)

    lift: str | None = None
    tombstone = inp.suppression
    if tombstone is not None:
        if not explicit_opt_in(inp, mapping, attrs, tombstone.cause):
            detail = f"suppressed ({tombstone.cause.value}); needs a new opt-in in Dynamics"
            return _silenced(_skip(ReasonCode.SUPPRESSED, detail, inp), inp, mapping, options, email)
        lift = tombstone.email_hash
    elif link is not None and link.anonymized and not explicit_opt_in(inp, mapping, attrs, SuppressionCause.ANONYMIZED):
        return _skip(ReasonCode.SUPPRESSED, "anonymized; needs a new opt-in in Dynamics", inp)

    # Joining a contact that already exists (paired by e-mail, or moved onto it by a new address): the bits the
    # contact has off are the person's own choice in Spotler; a record that joins turns none on without a new,
    # explicit opt-in.
    joining = _joins_existing_contact(inp)
    carried = _carried_withdrawals(inp, mapping, current)
    owner = _owner_peer(inp)
    if owner is not None:
        # Linked but silent: the row follows the shared contact (pulls update it) without writing its values.
        detail = f"shares its Spotler contact with {owner.entity} {owner.record_id}, which takes precedence"
        follower = link or LinkState(entity=inp.entity, record_id=inp.record_id, external_id=external_id)
        follower = dataclasses.replace(
            _advance(follower, inp),
            email_hash=email_h,
            anonymized=False,
            unsubscribed=follower.unsubscribed or joining,
        )
        plan = _skip(ReasonCode.SYNCED, detail, inp, link=follower, in_scope=True)
        if not carried:
            return plan
        # Silent, but its person's unsubscribe comes along: the shared contact's bits it had off go off.
        return dataclasses.replace(
            plan,
            action=PushAction.UPDATE,
            detail=f"{detail}; its unsubscribe carried over",
            contact=SpotlerContact(external_id=external_id, properties={}, permissions=dict.fromkeys(carried, False)),
        )

    # Unsubscribed when it left the sync (or joined an existing contact): its data flows, but no bit is turned on
    # without a new, explicit opt-in.
    hold = ((link is not None and link.unsubscribed) or joining) and not explicit_opt_in(
        inp, mapping, attrs, SuppressionCause.ANONYMIZED
    )

    creating = current is None
    desired = _desired(inp, mapping, options, attrs, current, creating, hold=hold, carried=carried)
    base_link = link or LinkState(entity=inp.entity, record_id=inp.record_id, external_id=external_id)
    # An anonymized record's old agreements do not stand: it comes back with all its values.
    merged_base = {} if link is not None and link.anonymized else dict(base_link.base)
    merged_base.update(desired.base)

    if creating:
        action, reason, detail = PushAction.CREATE, ReasonCode.CREATED, "created in Spotler"
    elif desired.properties or desired.permissions:
        action, reason, detail = PushAction.UPDATE, ReasonCode.UPDATED, "updated in Spotler"
        if inp.email_match is not None and link is None and inp.spotler is None:
            detail = "paired by e-mail with an existing Spotler contact; updated"
    else:
        action, reason, detail = PushAction.NONE, ReasonCode.SYNCED, "already in sync"
    if desired.held:
        detail += "; subscriptions stay off until a new opt-in in Dynamics"
    if desired.conflicts and any(c for c in desired.conflicts if ":" not in c):
        reason = ReasonCode.CONFLICT_RESOLVED
        detail = "both sides changed " + ", ".join(c for c in desired.conflicts if ":" not in c)

    purge = action is PushAction.UPDATE and options.purge_when_not_set
    if purge:
        assert current is not None  # an update has a contact to update
        properties, permissions = _purge_body(mapping, current, desired)
    else:
        properties, permissions = desired.properties, desired.permissions
    contact = (
        SpotlerContact(external_id=external_id, properties=properties, permissions=permissions)
        if action in (PushAction.CREATE, PushAction.UPDATE)
        else None
    )
    new_link = dataclasses.replace(
        _advance(base_link, inp),
        email_hash=email_h,
        base=merged_base,
        anonymized=False,
        in_scope=True,
        unsubscribed=hold,
        reason=reason,
        detail=detail,
        failures=0,
        next_retry=None,
    )
    return PushPlan(
        action,
        reason,
        detail,
        external_id=external_id,
        contact=contact,
        link=new_link,
        lift_suppression=lift,
        conflicts=tuple(desired.conflicts),
        purge=purge,
    )
