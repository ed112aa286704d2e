"""The pull heals what the push never heard: a lost deactivation or delete webhook, and refused write-backs.

Dataverse gives a webhook one retry and then drops it. The pull reads the linked row whenever its Spotler
contact changes; a row it finds inactive or gone gets the rule the push would have applied, and nothing is
written to it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sync_core.domain.mapping import default_mapping_text
from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import reason, spotler_contact, status

PERSON = {"firstname": "Lotte", "lastname": "Bakker", "emailaddress1": "lotte.bakker@example.nl", "jobtitle": "Inkoper"}


async def created_contact(connector: Connector, extra: dict[str, Any] | None = None) -> str:
    record_id = connector.dataverse.sandbox.create("contact", {**PERSON, **(extra or {})})
    await connector.deliver()
    assert await reason(connector, "contact", record_id) == "created"
    return record_id


def lose_next_webhook(connector: Connector) -> None:
    connector.dataverse.sandbox.set_webhook_options(drop=1)


async def pull(connector: Connector) -> None:
    """One timer run; the feed is read up to (excluding) the moment it starts, so let the edits be before it."""
    await asyncio.sleep(0.05)
    await connector.host.run_timer()


def dropped(connector: Connector) -> int:
    return sum(1 for d in connector.dataverse.sandbox.deliveries() if d.status == "dropped")


async def test_lost_deactivation_is_anonymized_by_the_pull_and_the_inactive_row_is_not_written(
    connector: Connector,
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = await created_contact(connector)

    lose_next_webhook(connector)
    dv.deactivate("contact", record_id)
    await connector.deliver()
    assert dropped(connector) == 1
    assert spotler_contact(connector, record_id)["anonymized"] is False  # the push never heard of it

    sp.profile_edit(record_id, properties={"firstName": "Charlotte", "jobTitle": "Hoofd inkoop"})
    row_before = dv.row("contact", record_id)
    await pull(connector)

    contact = spotler_contact(connector, record_id)
    assert contact["anonymized"] is True
    assert "email" not in contact["properties"]
    assert not any(p["enabled"] for p in contact["properties"].get("permissions", []))
    assert dv.row("contact", record_id) == row_before  # nothing written to the read-only row
    view = await status(connector, "contact", record_id)
    assert view["reason"] == "anonymized"
    assert "found by the pull" in view["detail"]
    assert view["anonymized"] is True


async def test_lost_delete_is_anonymized_and_tombstoned_by_the_pull(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = await created_contact(connector)

    lose_next_webhook(connector)
    dv.delete("contact", record_id)
    await connector.deliver()
    assert dropped(connector) == 1
    assert spotler_contact(connector, record_id)["anonymized"] is False

    sp.profile_edit(record_id, properties={"jobTitle": "Vertrokken"})
    await pull(connector)

    assert spotler_contact(connector, record_id)["anonymized"] is True
    view = await status(connector, "contact", record_id)
    assert view["reason"] == "anonymized"
    assert "found by the pull" in view["detail"]

    # The tombstone: the same person entered again is not re-created without a new opt-in.
    again = dv.create("contact", PERSON)
    await connector.deliver()
    assert await reason(connector, "contact", again) == "suppressed"
    assert sp.contact(again) is None
    assert len([c for c in sp.contacts() if c["externalId"] in (record_id, again)]) == 1


def job_title_from_spotler(path: Path) -> Path:
    """The default mapping with the job title owned by Spotler (⬅), so the pull writes it to Dynamics."""
    data = json.loads(default_mapping_text())
    for field in data["entities"]["contact"]["fields"]:
        if field["dataverse"] == "jobtitle":
            field["direction"] = "to_dynamics"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


async def test_a_write_back_dataverse_refuses_is_the_records_newest_status(
    connector_factory: ConnectorFactory, tmp_path: Path
) -> None:
    mapping = job_title_from_spotler(tmp_path / "mapping.json")
    async with connector_factory(MAPPING_FILE=str(mapping)) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        record_id = await created_contact(connector)
        await pull(connector)  # the creation's echo: nothing to write
        assert await reason(connector, "contact", record_id) == "created"

        sp.profile_edit(record_id, properties={"jobTitle": "x" * 150})  # Dataverse's jobtitle holds 100
        await pull(connector)

        view = await status(connector, "contact", record_id)
        assert view["reason"] == "permanent_error"
        assert "refused" in view["detail"]
        assert view["history"][0]["reason"] == "permanent_error"
        assert dv.row("contact", record_id)["jobtitle"] == PERSON["jobtitle"]

        # The feed moved on: the next run does not try the refused value again, and a later edit lands.
        sp.profile_edit(record_id, properties={"jobTitle": "Inkoopleider"})
        await pull(connector)
        assert dv.row("contact", record_id)["jobtitle"] == "Inkoopleider"
        assert await reason(connector, "contact", record_id) == "updated"
