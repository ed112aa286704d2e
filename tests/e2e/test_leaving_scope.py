"""ON_LEAVING_SCOPE: a synced record that stops qualifying does not leave a live, subscribed Spotler contact.

No valid e-mail address any more, or a mapping filter that now excludes it: by default every mapped permission
bit is turned off and the contact kept (`unsubscribe`); `anonymize` and `keep` are the alternatives. Coming back
into scope brings the data back, but no subscription without a new, explicit opt-in from Dynamics.
"""

from __future__ import annotations

import json
from pathlib import Path

from sync_core.domain.mapping import default_mapping_text
from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import permission, reason, spotler_contact, status

NINA = {"firstname": "Nina", "lastname": "Bos", "emailaddress1": "nina.bos@example.nl", "jobtitle": "Inkoper"}


async def synced_contact(connector: Connector) -> str:
    record_id = connector.dataverse.sandbox.create("contact", NINA)
    await connector.deliver()
    assert permission(connector, record_id, 1) is True
    return record_id


async def edit(connector: Connector, record_id: str, changes: dict[str, object]) -> None:
    connector.dataverse.sandbox.edit("contact", record_id, changes)
    await connector.deliver()


async def test_removing_the_address_unsubscribes_the_contact_and_keeps_it(connector: Connector) -> None:
    record_id = await synced_contact(connector)
    await edit(connector, record_id, {"emailaddress1": None})

    contact = spotler_contact(connector, record_id)
    assert permission(connector, record_id, 1) is False
    assert contact["anonymized"] is False
    assert contact["properties"]["email"] == NINA["emailaddress1"]
    view = await status(connector, "contact", record_id)
    assert (view["reason"], view["detail"]) == ("no_valid_email", "no valid e-mail address; unsubscribed")

    # Back in scope: the data flows again, the subscription does not come back by itself.
    await edit(connector, record_id, {"emailaddress1": "nina@bos.example.nl"})
    assert spotler_contact(connector, record_id)["properties"]["email"] == "nina@bos.example.nl"
    assert permission(connector, record_id, 1) is False
    view = await status(connector, "contact", record_id)
    assert view["reason"] == "updated"
    assert "subscriptions stay off until a new opt-in in Dynamics" in view["detail"]
    await edit(connector, record_id, {"jobtitle": "Planner"})
    assert permission(connector, record_id, 1) is False

    # A new, explicit opt-in: Do Not Bulk Email set and cleared again.
    await edit(connector, record_id, {"donotbulkemail": True})
    await edit(connector, record_id, {"donotbulkemail": False})
    assert permission(connector, record_id, 1) is True


def excluding_students(path: Path) -> Path:
    data = json.loads(default_mapping_text())
    data["entities"]["contact"]["exclude"] = [
        {"attribute": "jobtitle", "equals": "Student", "description": "students are not mailed"}
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


async def test_starting_to_match_an_exclude_rule_unsubscribes_the_contact(
    connector_factory: ConnectorFactory, tmp_path: Path
) -> None:
    async with connector_factory(MAPPING_FILE=str(excluding_students(tmp_path / "m.json"))) as connector:
        record_id = await synced_contact(connector)
        await edit(connector, record_id, {"jobtitle": "Student"})
        assert permission(connector, record_id, 1) is False
        assert spotler_contact(connector, record_id)["anonymized"] is False
        view = await status(connector, "contact", record_id)
        assert (view["reason"], view["detail"]) == ("excluded_by_filter", "students are not mailed; unsubscribed")


async def test_leaving_scope_with_anonymize_anonymizes_the_contact(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(ON_LEAVING_SCOPE="anonymize") as connector:
        record_id = await synced_contact(connector)
        await edit(connector, record_id, {"emailaddress1": "not an address"})
        contact = spotler_contact(connector, record_id)
        assert contact["anonymized"] is True
        assert "email" not in contact["properties"]
        assert await reason(connector, "contact", record_id) == "no_valid_email"
        # The tombstone holds: the old address entered again is not re-created without an opt-in.
        await edit(connector, record_id, {"emailaddress1": NINA["emailaddress1"]})
        assert spotler_contact(connector, record_id)["anonymized"] is True
        assert await reason(connector, "contact", record_id) == "suppressed"


async def test_leaving_scope_with_keep_leaves_the_contact_as_it_is(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(ON_LEAVING_SCOPE="keep") as connector:
        record_id = await synced_contact(connector)
        await edit(connector, record_id, {"emailaddress1": None})
        assert permission(connector, record_id, 1) is True
        assert spotler_contact(connector, record_id)["anonymized"] is False
        assert await reason(connector, "contact", record_id) == "no_valid_email"
