"""One record's whole life, per mapped table: create, update, consent, subscriptions, deactivation and delete.

Everything runs through the handlers of function_app.py (the `connector` fixtures) on Azurite and both
sandboxes over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sync_core.domain.mapping import default_mapping_text
from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import permission, reason, spotler_contact, spotler_writes, status

ENTITIES = ("contact", "lead", "account")
NEWSLETTER_BIT = 2

SAMPLE: dict[str, dict[str, Any]] = {
    "contact": {
        "firstname": "Noor",
        "lastname": "Visser",
        "emailaddress1": "noor.visser@example.nl",
        "jobtitle": "Inkoper",
        "address1_city": "Utrecht",
    },
    "lead": {
        "firstname": "Daan",
        "lastname": "Mulder",
        "emailaddress1": "daan.mulder@example.nl",
        "companyname": "Mulder Techniek",
        "subject": "Offerte aanvraag",
    },
    "account": {"name": "Groenteboer Jansen", "emailaddress1": "info@jansen.example.nl", "address1_city": "Gouda"},
}
# A mapped field per table to edit: (Dataverse column, new value, Spotler property).
EDIT: dict[str, tuple[str, str, str]] = {
    "contact": ("jobtitle", "Hoofd inkoop", "jobTitle"),
    "lead": ("companyname", "Mulder Techniek BV", "organisation"),
    "account": ("name", "Groenteboer Jansen & Zn", "organisation"),
}


async def create(connector: Connector, entity: str, extra: dict[str, Any] | None = None) -> str:
    record_id = connector.dataverse.sandbox.create(entity, {**SAMPLE[entity], **(extra or {})})
    await connector.deliver()
    return record_id


async def edit(connector: Connector, entity: str, record_id: str, changes: dict[str, Any]) -> None:
    connector.dataverse.sandbox.edit(entity, record_id, changes)
    await connector.deliver()


def newsletter_mapping(path: Path) -> Path:
    """The default mapping plus, for every table, permission bit 2 two-way with the column sync_newsletter."""
    data = json.loads(default_mapping_text())
    for entity in ENTITIES:
        data["entities"][entity]["permissions"].append(
            {"bit": NEWSLETTER_BIT, "source": "column", "dataverse": "sync_newsletter", "direction": "both"}
        )
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("entity", ENTITIES)
async def test_create_then_update_of_a_mapped_field(connector: Connector, entity: str) -> None:
    record_id = await create(connector, entity)
    created = spotler_contact(connector, record_id)
    assert created["externalId"] == record_id
    assert created["properties"]["email"] == SAMPLE[entity]["emailaddress1"]
    assert await reason(connector, entity, record_id) == "created"

    column, value, prop = EDIT[entity]
    assert created["properties"][prop] != value
    await edit(connector, entity, record_id, {column: value})
    updated = spotler_contact(connector, record_id)
    assert updated["properties"][prop] == value
    assert updated["properties"]["email"] == SAMPLE[entity]["emailaddress1"]
    assert await reason(connector, entity, record_id) == "updated"


@pytest.mark.parametrize("entity", ENTITIES)
async def test_do_not_bulk_email_turns_bit_1_off_and_clearing_it_turns_it_on(connector: Connector, entity: str) -> None:
    record_id = await create(connector, entity)
    assert permission(connector, record_id, 1) is True
    await edit(connector, entity, record_id, {"donotbulkemail": True})
    assert permission(connector, record_id, 1) is False
    assert await reason(connector, entity, record_id) == "updated"
    await edit(connector, entity, record_id, {"donotbulkemail": False})
    assert permission(connector, record_id, 1) is True
    assert await reason(connector, entity, record_id) == "updated"
    assert spotler_contact(connector, record_id)["properties"]["email"] == SAMPLE[entity]["emailaddress1"]


@pytest.mark.parametrize("entity", ENTITIES)
async def test_newsletter_column_and_spotler_permission_2_follow_each_other(
    connector_factory: ConnectorFactory, tmp_path: Path, entity: str
) -> None:
    async with connector_factory(MAPPING_FILE=str(newsletter_mapping(tmp_path / "mapping.json"))) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        record_id = await create(connector, entity, {"sync_newsletter": False})
        assert permission(connector, record_id, NEWSLETTER_BIT) is False
        assert permission(connector, record_id, 1) is True

        # Dataverse -> Spotler: the column drives bit 2, and leaves bit 1 alone.
        await edit(connector, entity, record_id, {"sync_newsletter": True})
        assert permission(connector, record_id, NEWSLETTER_BIT) is True
        assert permission(connector, record_id, 1) is True
        assert await reason(connector, entity, record_id) == "updated"
        await edit(connector, entity, record_id, {"sync_newsletter": False})
        assert permission(connector, record_id, NEWSLETTER_BIT) is False
        await edit(connector, entity, record_id, {"sync_newsletter": True})
        assert permission(connector, record_id, NEWSLETTER_BIT) is True
        # Do Not Bulk Email withdraws every subscription; clearing it restores what the columns ask for.
        await edit(connector, entity, record_id, {"donotbulkemail": True})
        assert (permission(connector, record_id, 1), permission(connector, record_id, NEWSLETTER_BIT)) == (False, False)
        await edit(connector, entity, record_id, {"donotbulkemail": False})
        assert (permission(connector, record_id, 1), permission(connector, record_id, NEWSLETTER_BIT)) == (True, True)

        # Spotler -> Dataverse: the contact unsubscribes from bit 2 on a Spotler profile form.
        sp.profile_edit(record_id, permissions={NEWSLETTER_BIT: False})
        # A pull reads the feed up to (excluding) the moment it starts; let the edit be strictly before that.
        await asyncio.sleep(0.05)
        deliveries_before = len(dv.deliveries())
        await connector.host.run_timer()
        row = dv.row(entity, record_id)
        assert row is not None
        assert row["sync_newsletter"] is False
        assert row["donotbulkemail"] is False  # bit 1 is still on: the other subscription is untouched

        # The write-back's own webhook is an unchanged echo: no Spotler write; a second pull writes nothing.
        sp.reset_call_counts()
        await connector.deliver()
        echoes = [d for d in dv.deliveries()[deliveries_before:] if d.record_id == record_id]
        assert [d.status for d in echoes] == ["succeeded"], "the write-back's webhook must really have been delivered"
        assert echoes[0].attempts == [200], "recognised as the connector's own write: answered 200, not queued"
        assert spotler_writes(connector) == {}
        assert permission(connector, record_id, NEWSLETTER_BIT) is False
        writes_before = len(dv.writes)
        await connector.host.run_timer()
        assert len(dv.writes) == writes_before, dv.writes[writes_before:]
        assert spotler_writes(connector) == {}

        # And a re-subscription on the Spotler profile form comes back the same way.
        sp.profile_edit(record_id, permissions={NEWSLETTER_BIT: True})
        await asyncio.sleep(0.05)
        await connector.host.run_timer()
        row = dv.row(entity, record_id)
        assert row is not None
        assert row["sync_newsletter"] is True


@pytest.mark.parametrize("entity", ENTITIES)
async def test_deactivate_anonymizes_and_reactivate_restores(connector: Connector, entity: str) -> None:
    dv = connector.dataverse.sandbox
    record_id = await create(connector, entity)
    _, _, prop = EDIT[entity]
    mapped_value = spotler_contact(connector, record_id)["properties"][prop]
    dv.deactivate(entity, record_id)
    await connector.deliver()
    anonymized = spotler_contact(connector, record_id)
    assert anonymized["anonymized"] is True
    assert "email" not in anonymized["properties"]
    assert prop not in anonymized["properties"]
    assert await reason(connector, entity, record_id) == "anonymized"

    dv.activate(entity, record_id)
    await connector.deliver()
    restored = spotler_contact(connector, record_id)
    assert restored["properties"]["email"] == SAMPLE[entity]["emailaddress1"]
    assert restored["properties"][prop] == mapped_value
    assert permission(connector, record_id, 1) is True
    assert await reason(connector, entity, record_id) in ("created", "updated")


@pytest.mark.parametrize("entity", ENTITIES)
async def test_do_not_email_anonymizes_and_delete_keeps_one_anonymized_contact(
    connector: Connector, entity: str
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = await create(connector, entity)
    await edit(connector, entity, record_id, {"donotemail": True})
    assert "email" not in spotler_contact(connector, record_id)["properties"]
    view = await status(connector, entity, record_id)
    assert view["reason"] == "anonymized"
    assert "@" not in json.dumps(view)

    dv.delete(entity, record_id)
    await connector.deliver()
    assert dv.row(entity, record_id) is None
    same = [c for c in sp.contacts() if c["externalId"] == record_id]
    assert len(same) == 1
    assert "email" not in same[0]["properties"]
    assert await reason(connector, entity, record_id) == "anonymized"


@pytest.mark.parametrize("entity", ENTITIES)
async def test_delete_of_a_live_record_anonymizes_its_contact(connector: Connector, entity: str) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = await create(connector, entity)
    dv.delete(entity, record_id)
    await connector.deliver()
    same = [c for c in sp.contacts() if c["externalId"] == record_id]
    assert len(same) == 1
    assert same[0]["anonymized"] is True
    assert "email" not in same[0]["properties"]
    assert await reason(connector, entity, record_id) == "anonymized"
