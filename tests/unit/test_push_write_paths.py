"""The push service's Spotler write when the contact vanished between its read and its write, on the in-memory
fakes: the contact is created again under the same externalId, and only while the push holds the address."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind
from sync_core.services.leases import email_lease_name
from sync_core.services.push import RetryLater
from tests.unit.domain_builders import T0, hashed
from tests.unit.test_identity_paths import ADA, C1, Setup

NEW = "ada.new@example.com"


async def lease_is_free(s: Setup, address: str) -> bool:
    name = email_lease_name(hashed(address))
    return await s.world.state.acquire_lease(name, owner="next", now=T0, ttl=timedelta(seconds=1)) is not None


@pytest.mark.parametrize(
    ("changes", "address"),
    [({"jobtitle": "Countess"}, ADA), ({"emailaddress1": NEW}, NEW)],
    ids=["same-address", "new-address"],
)
async def test_a_contact_removed_before_the_update_is_created_again_under_its_externalid(
    changes: dict[str, str], address: str
) -> None:
    s = Setup()
    await s.create(C1, ADA, jobtitle="Analyst")
    s.spotler.writes.clear()
    s.spotler.before_next("update_contact", lambda _: s.spotler.remove(C1))

    outcome = await s.push(C1, ChangeKind.UPDATE, changes)

    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert s.spotler.writes == [("update", C1, None, False), ("insert", C1, True, False)]
    wanted = {"jobTitle": "Countess"} if "jobtitle" in changes else {"email": NEW}
    assert wanted.items() <= s.contact(C1).properties.items()  # the update's values, written by the insert
    link = await s.link("contact", C1)
    assert (link.external_id, link.email_hash, link.reason) == (C1, hashed(address), ReasonCode.UPDATED)
    assert await lease_is_free(s, address)


async def test_a_contact_removed_before_the_update_waits_while_another_push_holds_the_address() -> None:
    s = Setup()
    await s.create(C1, ADA)
    s.spotler.writes.clear()
    name = email_lease_name(hashed(ADA))
    taken = await s.world.state.acquire_lease(name, owner="contact/other", now=T0, ttl=timedelta(hours=1))
    assert taken is not None
    s.spotler.before_next("update_contact", lambda _: s.spotler.remove(C1))

    with pytest.raises(RetryLater) as deferred:
        await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"}, service=s.service(lease_wait=timedelta(0)))

    assert str(deferred.value.__cause__) == "another change of this person's address is being applied"
    assert s.spotler.writes == [("update", C1, None, False)]
    assert s.spotler.contact(C1) is None
