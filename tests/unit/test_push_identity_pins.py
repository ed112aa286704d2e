"""Edges of the push service's identity paths that only an outcome tells apart, on the in-memory fakes.

Which contact a record ends up on, the bits it may turn on there, the tombstone it heeds, the link a merge hands
to its master and the address lease a write holds: each test reads what Spotler holds, the links, the tombstones,
the status history and the leases afterwards (docs/identity.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, EntityName, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from sync_core.services.leases import email_lease_name, lease_name
from sync_core.services.push import PushOutcome, RetryLater
from sync_core.spotler.errors import SpotlerTransientError
from sync_core.state.memory import InMemoryStateStore
from tests.unit.domain_builders import T0, hashed
from tests.unit.service_fakes import FakeClock, FakeDataverse
from tests.unit.test_identity_paths import ADA, BOB, C1, C2, L1, Setup

HELD = "; subscriptions stay off until a new opt-in in Dynamics"


# --- the path that plans without the address lease --------------------------------------------------------------------


async def test_a_save_on_the_fast_path_heeds_a_tombstone_of_its_address() -> None:
    s = Setup()
    await s.create(C1, ADA, jobtitle="Analyst")
    before = s.contact(C1)
    # Another record of the address left it a tombstone while this record went on speaking for the contact.
    await s.world.state.put_suppression(Suppression(hashed(ADA), SuppressionCause.ANONYMIZED, "lead", L1, T0))

    outcome = await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"})

    # Nothing of the change is written, and no bit stays on for a person with a tombstone.
    detail = "suppressed (anonymized); needs a new opt-in in Dynamics; its subscriptions turned off"
    assert (outcome.action, outcome.reason, outcome.detail) == ("unsubscribe", ReasonCode.SUPPRESSED, detail)
    after = s.contact(C1)
    assert before.permissions == {1: True, 2: True}
    assert (after.properties, after.permissions) == (before.properties, {1: False, 2: False})
    link = await s.link("contact", C1)
    assert (link.in_scope, link.unsubscribed, link.reason, link.detail) == (False, True, ReasonCode.SUPPRESSED, detail)
    assert await s.world.state.get_suppression(hashed(ADA)) is not None


async def test_a_change_found_by_another_run_says_so_on_the_fast_path_too() -> None:
    s = Setup()
    await s.create(C1, ADA, jobtitle="Analyst")
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"}), complete=False)

    outcome = await s.service().apply_found(event, note="found by the pull")

    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert outcome.detail == "updated in Spotler (found by the pull)"
    assert s.contact(C1).properties["jobTitle"] == "Countess"
    assert (await s.link("contact", C1)).detail == outcome.detail
    assert (await s.details("contact", C1))[0] == outcome.detail


async def test_a_save_of_a_record_that_shares_its_contact_waits_for_the_address_lease() -> None:
    s = Setup()
    await s.create(C1, ADA, jobtitle="Analyst")
    assert (await s.create(L1, ADA, entity="lead")).external_id == C1
    name = email_lease_name(hashed(ADA))
    taken = await s.world.state.acquire_lease(name, owner="contact/other", now=T0, ttl=timedelta(hours=1))
    assert taken is not None
    before = s.contact(C1)

    with pytest.raises(RetryLater) as deferred:
        await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"}, service=s.service(lease_wait=timedelta(0)))

    assert str(deferred.value.__cause__) == "another change of this person's address is being applied"
    assert s.contact(C1) == before
    assert (await s.link("contact", C1)).detail == "created in Spotler"

    await s.world.state.release_lease(name, taken)
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE), idempotency_key="again")
    outcome = await s.service().handle(event, owner="again")
    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert s.contact(C1).properties["jobTitle"] == "Countess"


# --- a contact anonymized while another contact took the address ------------------------------------------------------


async def test_a_live_record_whose_contact_was_anonymized_joins_the_holder_of_its_address_with_its_bits_held() -> None:
    s = Setup()
    await s.create(C1, ADA, firstname="Ada")
    await s.spotler.anonymize_contact(C1)
    # The person signed up again through a Spotler form and left every subscription off.
    s.spotler.seed(SpotlerContact("sp-9", {"email": ADA}, {1: False, 2: False}, created=T0, last_changed=T0))
    anonymized = s.contact(C1)
    s.spotler.writes.clear()

    outcome = await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"})

    assert (outcome.action, outcome.reason, outcome.external_id) == ("update", ReasonCode.UPDATED, "sp-9")
    assert outcome.detail == "updated in Spotler" + HELD  # not "moved": the old contact holds no address to leave
    assert s.spotler.writes == [("update", "sp-9", None, False)]  # the anonymized contact is not written again
    assert s.contact(C1) == anonymized
    joined = s.contact("sp-9")
    assert (joined.properties["firstName"], joined.properties["jobTitle"]) == ("Ada", "Countess")
    assert joined.permissions == {1: False, 2: False}
    link = await s.link("contact", C1)
    assert (link.external_id, link.unsubscribed, link.in_scope, link.detail) == ("sp-9", True, True, outcome.detail)


async def test_a_record_moved_by_its_new_address_turns_on_no_bit_the_contact_there_has_off() -> None:
    s = Setup()
    await s.create(C1, BOB, firstname="Bob")
    s.spotler.seed(SpotlerContact("sp-9", {"email": ADA}, {1: False, 2: False}, created=T0, last_changed=T0))

    outcome = await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": ADA})

    assert (outcome.action, outcome.external_id) == ("update", "sp-9")
    assert outcome.detail == f"updated in Spotler{HELD} (moved to the Spotler contact that holds its new address)"
    assert s.contact("sp-9").permissions == {1: False, 2: False}
    assert s.contact("sp-9").properties["firstName"] == "Bob"
    assert s.contact(C1).permissions == {1: False, 2: False}  # the old contact is given up: unsubscribed
    link = await s.link("contact", C1)
    assert (link.external_id, link.email_hash, link.unsubscribed) == ("sp-9", hashed(ADA), True)


# --- a new contact for an address another record already speaks for ---------------------------------------------------


async def test_a_new_record_of_an_address_whose_contact_went_elsewhere_creates_a_contact_with_its_bits_held() -> None:
    s = Setup()
    assert (await s.create(L1, ADA, entity="lead", new_newsletter=True)).action == "create"
    # The lead's contact took another address in Spotler; the lead's link still says Ada's.
    await s.spotler.update_contact(SpotlerContact(L1, {"email": "lea@example.org"}), purge=False)

    outcome = await s.create(C1, ADA, new_newsletter=False)

    assert (outcome.action, outcome.reason, outcome.external_id) == ("create", ReasonCode.CREATED, C1)
    assert outcome.detail == "created in Spotler" + HELD
    created = s.contact(C1)
    assert (created.email, created.permissions.get(1, False), created.permissions.get(2, False)) == (ADA, False, False)
    link = await s.link("contact", C1)
    assert (link.external_id, link.email_hash, link.unsubscribed) == (C1, hashed(ADA), True)


async def test_a_new_record_of_an_address_nobody_speaks_for_creates_its_contact_subscribed() -> None:
    s = Setup()

    outcome = await s.create(C1, ADA, new_newsletter=False)

    assert (outcome.action, outcome.detail) == ("create", "created in Spotler")
    assert s.contact(C1).permissions == {1: True, 2: False}
    assert (await s.link("contact", C1)).unsubscribed is False


# --- the address lease of a contact created again ---------------------------------------------------------------------


class LeaseTracingState(InMemoryStateStore):
    """The store, keeping in order every address lease taken or given back and every link saved."""

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[tuple[str, str]] = []

    async def acquire_lease(
        self, name: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> str | None:
        token = await super().acquire_lease(name, owner=owner, now=now, ttl=ttl, existing=existing)
        if token is not None and name.startswith("email/"):
            self.trace.append(("take", name))
        return token

    async def release_lease(self, name: str, token: str) -> None:
        if name.startswith("email/"):
            self.trace.append(("give back", name))
        await super().release_lease(name, token)

    async def save_link(self, link: LinkState) -> LinkState:
        self.trace.append(("save link", link.record_id))
        return await super().save_link(link)


async def test_a_contact_created_again_under_the_address_lease_keeps_that_one_lease_until_its_link_is_saved() -> None:
    s = Setup()
    state = LeaseTracingState()
    s.world.state = state
    await s.create(C1, ADA)
    s.spotler.before_next("update_contact", lambda _: s.spotler.remove(C1))
    state.trace.clear()

    outcome = await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": BOB})

    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert s.contact(C1).email == BOB
    first, second = sorted(email_lease_name(hashed(a)) for a in (ADA, BOB))
    assert state.trace == [
        ("take", first),
        ("take", second),
        ("save link", C1),
        ("give back", first),
        ("give back", second),
    ]


# --- a merge whose master is being changed at the same time -----------------------------------------------------------


class ColumnRecordingDataverse(FakeDataverse):
    """The fake, keeping the columns each row read selected."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.selected: list[tuple[str, tuple[str, ...]]] = []

    async def get_row(self, entity: EntityName, record_id: str, columns: Sequence[str]) -> DataverseRow | None:
        self.selected.append((record_id, tuple(columns)))
        return await super().get_row(entity, record_id, columns)


async def merge_c1_into_c2_while_c2_is_busy(s: Setup) -> tuple[LinkState, PushOutcome]:
    """C1 (linked, Ada) is merged into C2 (Ada, never linked) while a change of C2 holds C2's lease; the merged
    record's link as it was before, and the outcome."""
    await s.create(C1, ADA, firstname="Ada")
    source = await s.link("contact", C1)
    s.world.dataverse.put_row("contact", C2, {**s.rows[C1][1], "emailaddress1": ADA.upper(), "firstname": "Ada L."})
    busy = await s.world.state.acquire_lease(
        lease_name("contact", C2), owner="msg-c2", now=s.world.clock.now(), ttl=timedelta(hours=1), existing=True
    )
    assert busy is not None
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE, {"statecode": 1, "statuscode": 2}), merged_into=C2)
    outcome = await s.service(lease_wait=timedelta(0)).handle(event, owner="msg-merge")
    return source, outcome


async def test_a_merge_hands_the_master_a_link_to_the_contact_with_what_the_merged_record_agreed_on() -> None:
    s = Setup()
    source, outcome = await merge_c1_into_c2_while_c2_is_busy(s)
    now = s.world.clock.now()

    assert (outcome.action, outcome.reason, outcome.external_id) == ("relink", ReasonCode.SYNCED, C1)
    master = await s.link("contact", C2)
    assert source.base  # what the merged record agreed on with the contact
    assert master == LinkState(
        entity="contact",
        record_id=C2,
        external_id=C1,
        email_hash=hashed(ADA),
        base=source.base,
        reason=ReasonCode.SYNCED,
        detail=f"took over the Spotler contact of merged contact {C1}",
        last_attempt=now,
        etag=master.etag,
    )
    assert outcome.successor == master
    # The change of C2 that holds its lease writes C2's values; the merge wrote nothing to Spotler.
    assert s.contact(C1).properties["firstName"] == "Ada"
    assert await s.world.state.list_status("contact", C2) == []
    merged = await s.link("contact", C1)
    assert (merged.anonymized, merged.reason, merged.detail) == (
        True,
        ReasonCode.SYNCED,
        f"merged into contact {C2}; Spotler contact relinked",
    )


async def test_a_merge_reads_of_the_master_only_the_columns_the_mapping_names() -> None:
    s = Setup()
    s.world.dataverse = ColumnRecordingDataverse(s.world.clock)
    await merge_c1_into_c2_while_c2_is_busy(s)

    mapping = s.mapping.for_entity("contact")
    assert mapping is not None
    master_reads = [columns for record_id, columns in s.world.dataverse.selected if record_id == C2]
    assert master_reads
    assert set(master_reads) == {tuple(mapping.columns())}


# --- a stale delete after a failed attempt ----------------------------------------------------------------------------


async def test_a_stale_delete_leaves_the_transient_error_of_a_newer_change_as_the_record_s_status() -> None:
    s = Setup()
    await s.create(C1, ADA)
    await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"})
    s.spotler.fail("update_contact", SpotlerTransientError("HTTP 503", status=503))
    with pytest.raises(RetryLater):
        await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Duchess"})
    [failed, *_] = await s.world.state.list_status("contact", C1)
    assert failed.reason is ReasonCode.TRANSIENT_ERROR
    stale = dataclasses.replace(s.event(C1, ChangeKind.DELETE), version=1, modified_on=T0)

    outcome = await s.service().handle(stale, owner="stale")

    assert (outcome.action, outcome.reason, outcome.detail) == ("none", None, "stale event ignored")
    assert (await s.world.state.list_status("contact", C1))[0] == failed
    assert s.contact(C1).email == ADA
    assert await s.world.state.get_suppression(hashed(ADA)) is None
