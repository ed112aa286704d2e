"""Consent and identity rules end to end: function_app.py's handlers on Azurite and both sandboxes over HTTP.

The connector runs with a mapping file of its own (names two-way, the rest to Spotler, two subscriptions),
so these tests hold whatever directions the shipped default mapping gives its fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import permission, spotler_contact, spotler_writes, status

NEWSLETTER = 2
FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"},
]
PERMISSIONS = [
    {"bit": 1, "source": "not_donotbulkemail", "direction": "both"},
    {"bit": NEWSLETTER, "source": "column", "dataverse": "sync_newsletter", "direction": "both"},
]
NOOR = {
    "firstname": "Noor",
    "lastname": "Visser",
    "emailaddress1": "noor.visser@example.nl",
    "jobtitle": "Inkoper",
    "sync_newsletter": True,
}


@pytest.fixture
async def connector(connector_factory: ConnectorFactory, tmp_path: Path) -> AsyncIterator[Connector]:
    # Accounts have no person columns: they keep the e-mail only (the live mapping check refuses the rest).
    account = [f for f in FIELDS if f["dataverse"] == "emailaddress1"]
    mapping = {
        "version": 1,
        "entities": {
            "contact": {"fields": FIELDS, "permissions": PERMISSIONS},
            "lead": {"fields": FIELDS, "permissions": PERMISSIONS},
            "account": {"fields": account, "permissions": PERMISSIONS},
        },
    }
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping), encoding="utf-8")
    async with connector_factory(MAPPING_FILE=str(path)) as running:
        yield running


async def created(connector: Connector, entity: str = "contact", **extra: Any) -> str:
    record_id = connector.dataverse.sandbox.create(entity, {**NOOR, **extra})
    await connector.deliver()
    return record_id


def bits(connector: Connector, external_id: str) -> dict[int, bool]:
    """Every permission bit of Spotler's catalogue as the contact holds it."""
    items = spotler_contact(connector, external_id)["properties"].get("permissions", [])
    return {int(item["bit"]): bool(item["enabled"]) for item in items}


def mapped_bits(connector: Connector, external_id: str) -> dict[int, bool]:
    return {bit: on for bit, on in bits(connector, external_id).items() if bit in (1, NEWSLETTER)}


@pytest.mark.parametrize("how", ["do_not_email", "deactivate", "delete"])
async def test_anonymize_leaves_no_permission_bit_on_in_spotler(connector: Connector, how: str) -> None:
    dv = connector.dataverse.sandbox
    record_id = await created(connector)
    assert (permission(connector, record_id, 1), permission(connector, record_id, NEWSLETTER)) == (True, True)
    if how == "do_not_email":
        dv.edit("contact", record_id, {"donotemail": True})
    elif how == "deactivate":
        dv.deactivate("contact", record_id)
    else:
        dv.delete("contact", record_id)
    await connector.deliver()
    anonymized = spotler_contact(connector, record_id)
    assert anonymized["anonymized"] is True
    assert bits(connector, record_id), "the contact must still list its permission bits"
    assert not any(bits(connector, record_id).values()), bits(connector, record_id)
    assert set(anonymized["properties"]) <= {"permissions"}
    assert (await status(connector, "contact", record_id))["reason"] == "anonymized"


async def test_pairing_by_email_ignores_letter_case(connector: Connector) -> None:
    sp = connector.spotler.store
    [existing] = sp.seed(
        [{"externalId": "sp-noor", "properties": {"email": "Noor.Visser@Example.NL", "firstName": "Noor"}}]
    )
    record_id = await created(connector, emailaddress1="NOOR.visser@example.nl")
    view = await status(connector, "contact", record_id)
    assert view["spotlerExternalId"] == existing
    assert view["detail"] == "paired by e-mail with an existing Spotler contact; updated"
    assert [c["externalId"] for c in sp.contacts()] == [existing]
    assert spotler_contact(connector, existing)["properties"]["jobTitle"] == "Inkoper"


async def test_opted_out_spotler_contact_found_by_email_is_left_alone(connector: Connector) -> None:
    sp = connector.spotler.store
    [existing] = sp.seed(
        [{"externalId": "sp-noor", "properties": {"email": "noor.visser@example.nl"}, "optedOut": True}]
    )
    before = sp.contact(existing)
    sp.reset_call_counts()
    record_id = await created(connector)
    assert (await status(connector, "contact", record_id))["reason"] == "opted_out_in_spotler"
    assert sp.contact(existing) == before
    assert spotler_writes(connector) == {}
    assert sp.contact(record_id) is None


@pytest.mark.parametrize("leaving", ["contact", "lead"])
async def test_deactivating_one_of_two_rows_sharing_a_contact_keeps_it_for_the_live_one(
    connector: Connector, leaving: str
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    contact_id = await created(connector)
    lead_id = await created(connector, "lead", emailaddress1="Noor.Visser@example.nl", companyname="Visser BV")
    assert (await status(connector, "lead", lead_id))["spotlerExternalId"] == contact_id
    assert [c["externalId"] for c in sp.contacts()] == [contact_id]

    dv.deactivate(leaving, contact_id if leaving == "contact" else lead_id)
    await connector.deliver()
    kept = spotler_contact(connector, contact_id)
    assert kept["anonymized"] is False
    assert kept["properties"]["email"] == "noor.visser@example.nl"
    assert mapped_bits(connector, contact_id) == {1: True, NEWSLETTER: True}
    assert (await status(connector, leaving, contact_id if leaving == "contact" else lead_id))["reason"] == "inactive"


async def test_pull_before_the_push_does_not_undo_do_not_bulk_email_ticked_in_dynamics(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = await created(connector)
    # Dynamics withdraws consent; its webhook is queued but not yet applied when the person edits a Spotler
    # form and the pull runs.
    dv.edit("contact", record_id, {"donotbulkemail": True})
    await asyncio.to_thread(dv.drain, timeout=30.0)
    sp.profile_edit(record_id, properties={"firstName": "Noortje"})
    await asyncio.sleep(0.05)  # the pull reads the feed up to (excluding) the moment it starts
    await connector.host.run_timer()
    row = dv.row("contact", record_id)
    assert row is not None
    assert row["firstname"] == "Noortje"
    assert row["donotbulkemail"] is True
    assert row["sync_newsletter"] is True

    await connector.host.run_queue(idle_rounds=2, poll_seconds=0.05)
    assert mapped_bits(connector, record_id) == {1: False, NEWSLETTER: False}
    await asyncio.sleep(0.05)
    await connector.host.run_timer()
    await connector.deliver()
    row = dv.row("contact", record_id)
    assert row is not None
    assert row["donotbulkemail"] is True
    assert mapped_bits(connector, record_id) == {1: False, NEWSLETTER: False}
