"""A bulk run applies the live push's rule for a new record of an address another live record speaks for.

The contact row that spoke for a shared contact took it to its new address; the lead left on the old address has
Do Not Bulk Email ticked. A new record for the old address whose webhook never came is written by the
reconciliation or a resync: no contact holds the address, but the person is known, and the new row's default
flags are no opt-in (docs/identity.md, "Joining a contact that exists").
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Connector
from tests.e2e.test_bulk_runs import run
from tests.e2e.test_identity import ADDRESS, CONTACT, LEAD, holders


async def test_a_resync_of_a_new_record_of_an_address_a_silent_live_record_speaks_for_turns_no_bit_on(
    connector: Connector,
) -> None:
    dv = connector.dataverse.sandbox
    contact_id = dv.create("contact", CONTACT)
    await connector.deliver()
    lead_id = dv.create("lead", LEAD)
    await connector.deliver()
    dv.edit("contact", contact_id, {"emailaddress1": "kim.new@example.nl"})
    await connector.deliver()
    assert holders(connector, ADDRESS) == []  # the shared contact went along with the contact row
    dv.edit("lead", lead_id, {"donotbulkemail": True})
    await connector.deliver()

    dv.set_webhook_options(drop=1)  # the new record's webhook is lost
    again = dv.create("contact", {**CONTACT, "firstname": "Kim", "lastname": "Again"})
    await connector.deliver()
    assert holders(connector, ADDRESS) == []

    summary = await run(connector, "resync", {"table": "contact", "id": again})

    assert summary["phase"] == "done"
    created: list[dict[str, Any]] = holders(connector, ADDRESS)
    assert len(created) == 1
    bits = [p["bit"] for p in created[0]["properties"].get("permissions", []) if p["enabled"]]
    assert bits == []  # the person said no on the lead; a new row is no opt-in
