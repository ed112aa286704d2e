"""One person, one Spotler contact: Spotler merges by e-mail address, and the connector's links follow.

Pushes run concurrently here (the local host hands a batch of queued changes to the worker at once), so two
records that share an address race exactly as they would on several Functions instances.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.e2e.conftest import Connector
from tests.e2e.support import permission, reason, spotler_contact, status

ADDRESS = "kim.de.vries@example.nl"
CONTACT = {"firstname": "Kim", "lastname": "de Vries", "emailaddress1": ADDRESS, "jobtitle": "Inkoper"}
LEAD = {"firstname": "Kim", "lastname": "de Vries", "emailaddress1": ADDRESS, "subject": "Demo", "companyname": "KdV"}


def holders(connector: Connector, address: str) -> list[dict[str, Any]]:
    """Every Spotler contact whose address is `address` (case-insensitive)."""
    return [
        c
        for c in connector.spotler.store.contacts()
        if str(c["properties"].get("email", "")).casefold() == address.casefold()
    ]


async def linked_contact(connector: Connector, entity: str, record_id: str) -> dict[str, Any]:
    """The Spotler contact the record's link points at; it must exist."""
    external_id = (await status(connector, entity, record_id))["spotlerExternalId"]
    contact = connector.spotler.store.contact(external_id)
    assert contact is not None, f"{entity} {record_id} is linked to {external_id}, which holds no contact"
    return contact


async def test_a_contact_and_a_lead_created_together_with_one_address_end_as_one_spotler_contact(
    connector: Connector,
) -> None:
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()  # both changes are handled in one concurrent batch

    assert len(holders(connector, ADDRESS)) == 1
    shared = holders(connector, ADDRESS)[0]
    assert (await linked_contact(connector, "contact", contact_id))["externalId"] == shared["externalId"]
    assert (await linked_contact(connector, "lead", lead_id))["externalId"] == shared["externalId"]
    assert await reason(connector, "contact", contact_id) in ("created", "updated")
    assert await reason(connector, "lead", lead_id) in ("created", "updated", "synced")


async def test_three_contacts_created_together_with_one_address_in_different_case_share_one_contact(
    connector: Connector,
) -> None:
    dv = connector.dataverse.sandbox
    ids = [
        dv.create("contact", {**CONTACT, "emailaddress1": address})
        for address in (ADDRESS, ADDRESS.upper(), "Kim.De.Vries@Example.NL")
    ]
    await connector.deliver()

    assert len(holders(connector, ADDRESS)) == 1
    targets = {(await linked_contact(connector, "contact", record_id))["externalId"] for record_id in ids}
    assert targets == {holders(connector, ADDRESS)[0]["externalId"]}


async def test_an_address_changed_to_one_another_record_holds_moves_the_record_and_gives_up_its_old_contact(
    connector: Connector,
) -> None:
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    lead_id = dv.create("lead", {**LEAD, "emailaddress1": "kim.work@example.nl"})
    await connector.deliver()
    assert spotler_contact(connector, lead_id)["properties"]["email"] == "kim.work@example.nl"

    dv.edit("lead", lead_id, {"emailaddress1": ADDRESS, "companyname": "KdV Holding"})
    await connector.deliver()

    assert len(holders(connector, ADDRESS)) == 1  # never two contacts with one address
    assert (await linked_contact(connector, "lead", lead_id))["externalId"] == contact_id
    old = spotler_contact(connector, lead_id)  # the lead's first contact: nobody speaks for it any more
    assert permission(connector, lead_id, 1) is False
    assert old["properties"]["email"] == "kim.work@example.nl"
    view = await status(connector, "lead", lead_id)
    assert "moved to the Spotler contact that holds its new address" in view["detail"]

    # The lead's later changes are applied on the contact it moved to (the contact row speaks for the person).
    dv.edit("lead", lead_id, {"jobtitle": "Directeur"})
    await connector.deliver()
    assert await reason(connector, "lead", lead_id) == "synced"
    assert (await linked_contact(connector, "lead", lead_id))["externalId"] == contact_id
    # Once the contact row is gone, the lead speaks for the person and its values reach Spotler.
    dv.delete("contact", contact_id)
    await connector.deliver()
    dv.edit("lead", lead_id, {"jobtitle": "Eigenaar"})
    await connector.deliver()
    assert spotler_contact(connector, contact_id)["properties"]["jobTitle"] == "Eigenaar"
    assert spotler_contact(connector, contact_id)["anonymized"] is False


async def test_a_shared_contact_stays_while_one_record_is_live_and_is_anonymized_when_the_last_leaves(
    connector: Connector,
) -> None:
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()
    assert len(holders(connector, ADDRESS)) == 1

    dv.deactivate("lead", lead_id)
    await connector.deliver()
    shared = spotler_contact(connector, contact_id)
    assert shared["anonymized"] is False
    assert permission(connector, contact_id, 1) is True

    dv.deactivate("contact", contact_id)
    await connector.deliver()
    assert spotler_contact(connector, contact_id)["anonymized"] is True
    assert not any(p["enabled"] for p in spotler_contact(connector, contact_id)["properties"]["permissions"])

    # No permission bit reaches the anonymized contact afterwards: not from a pull, not from a later save.
    await asyncio.sleep(0.05)
    await connector.host.run_timer()
    dv.edit("lead", lead_id, {"statecode": 2, "statuscode": 5})
    await connector.deliver()
    assert spotler_contact(connector, contact_id)["anonymized"] is True
    assert not any(p["enabled"] for p in spotler_contact(connector, contact_id)["properties"]["permissions"])
    assert dv.row("lead", lead_id)["donotbulkemail"] is False  # our anonymization is not the person unsubscribing


async def test_do_not_email_on_the_last_live_record_anonymizes_the_shared_contact(connector: Connector) -> None:
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()

    dv.edit("lead", lead_id, {"donotemail": True})
    await connector.deliver()
    assert spotler_contact(connector, contact_id)["anonymized"] is False  # the contact row still consents
    assert await reason(connector, "lead", lead_id) == "suppressed"

    dv.edit("contact", contact_id, {"donotemail": True})
    await connector.deliver()
    assert spotler_contact(connector, contact_id)["anonymized"] is True


async def test_anonymize_finds_the_contact_that_holds_the_address_after_a_404(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    # Someone merges the contact into another one in Spotler: the externalId we linked no longer exists.
    sp.seed([{"externalId": "crm-import-77", "properties": {"email": ADDRESS.upper(), "firstName": "K."}}])
    sp.merge_duplicates(contact_id, "crm-import-77")
    assert sp.contact(contact_id) is None

    dv.edit("contact", contact_id, {"donotemail": True})
    await connector.deliver()

    survivor = sp.contact("crm-import-77")
    assert survivor is not None
    assert survivor["anonymized"] is True
    assert holders(connector, ADDRESS) == []
    view = await status(connector, "contact", contact_id)
    assert view["reason"] == "anonymized"
    assert view["spotlerExternalId"] == "crm-import-77"


async def test_when_the_record_that_speaks_for_a_shared_contact_leaves_the_next_one_s_values_reach_spotler(
    connector: Connector,
) -> None:
    # Found by the convergence run: twins, an edit of the contact, then the contact deactivated; the lead,
    # never saved again, spoke for the person while Spotler kept the departed contact's job title.
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    lead_id = dv.create("lead", {**LEAD, "jobtitle": "Inkoper"})
    await connector.deliver()
    dv.edit("contact", contact_id, {"jobtitle": "Directeur"})
    await connector.deliver()
    shared = await linked_contact(connector, "lead", lead_id)
    assert shared["properties"]["jobTitle"] == "Directeur"  # the contact row speaks for the person

    dv.deactivate("contact", contact_id)
    await connector.deliver()

    shared = await linked_contact(connector, "lead", lead_id)
    assert shared["anonymized"] is False
    assert shared["properties"]["jobTitle"] == "Inkoper"  # the lead speaks for the person now
    assert "speaks for the person now" in (await status(connector, "lead", lead_id))["detail"]


async def test_when_the_record_that_speaks_for_a_shared_contact_is_deleted_the_next_one_s_values_reach_spotler(
    connector: Connector,
) -> None:
    # A delete keeps the contact for the live lead, so the lead must speak for the person at once.
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", {**CONTACT, "jobtitle": "Directeur"})
    await connector.deliver()
    lead_id = dv.create("lead", {**LEAD, "jobtitle": "Inkoper"})
    await connector.deliver()
    assert (await linked_contact(connector, "lead", lead_id))["properties"]["jobTitle"] == "Directeur"

    dv.delete("contact", contact_id)
    await connector.deliver()

    shared = await linked_contact(connector, "lead", lead_id)
    assert shared["anonymized"] is False
    assert shared["properties"]["jobTitle"] == "Inkoper"
    assert "speaks for the person now" in (await status(connector, "lead", lead_id))["detail"]


async def test_two_records_reactivated_together_on_their_anonymized_contacts_end_on_one_contact(
    connector: Connector,
) -> None:
    # Each record was anonymized on a contact of its own (the second came after the first was anonymized);
    # reactivated at the same moment, both would bring their own contact back with the one address.
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    dv.deactivate("contact", contact_id)
    await connector.deliver()
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()
    dv.deactivate("lead", lead_id)
    await connector.deliver()
    assert holders(connector, ADDRESS) == []

    dv.activate("contact", contact_id)
    dv.activate("lead", lead_id)
    await connector.deliver()

    assert len(holders(connector, ADDRESS)) == 1
    assert (await linked_contact(connector, "contact", contact_id))["externalId"] == (
        await linked_contact(connector, "lead", lead_id)
    )["externalId"]


async def test_the_last_record_of_an_address_leaves_a_tombstone_when_its_contact_went_with_another_address(
    connector: Connector,
) -> None:
    # The contact row that spoke for the shared contact took it to its new address; the lead stayed on the old
    # one. When the lead is deactivated, the person of the old address is gone: a new record with that address
    # is no opt-in and must not be mailed.
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()
    dv.edit("contact", contact_id, {"emailaddress1": "kim.new@example.nl"})
    await connector.deliver()
    assert holders(connector, ADDRESS) == []  # the shared contact went along with the contact row

    dv.deactivate("lead", lead_id)
    await connector.deliver()
    assert (await linked_contact(connector, "contact", contact_id))["anonymized"] is False  # left alone
    again = dv.create("lead", {**LEAD, "subject": "Again"})
    await connector.deliver()

    assert await reason(connector, "lead", again) == "suppressed"
    assert not [c for c in holders(connector, ADDRESS) if any(p["enabled"] for p in c["properties"]["permissions"])]
