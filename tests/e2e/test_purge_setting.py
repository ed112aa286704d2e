"""PurgeExistingPropertiesWhenNotSet: whether an update from Dynamics leaves Spotler holding exactly what it sends.

It governs Dynamics -> Spotler only. Spotler-owned values (⬅ fields) and permission bits survive a purge.
"""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import PROFILE_FORM_MAPPING, permission, spotler_contact

ROOS = {
    "firstname": "Roos",
    "lastname": "Meijer",
    "emailaddress1": "roos.meijer@example.nl",
    "jobtitle": "Buyer",
    "address1_city": "Delft",
}
PHONE = "+31 6 1234 5678"


async def spotler_side_values_then_a_dynamics_edit(connector: Connector) -> str:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = dv.create("contact", ROOS)
    await connector.deliver()
    # Spotler gets a value nobody maps (a marketer's segment) and one Spotler owns (the phone, ⬅).
    sp.profile_edit(record_id, properties={"customerType": "B2B", "phoneNumber": PHONE})
    await asyncio.sleep(0.05)
    await connector.host.run_timer()
    await connector.deliver()
    assert dv.row("contact", record_id)["telephone1"] == PHONE
    dv.edit("contact", record_id, {"jobtitle": "Chief buyer", "address1_city": None})
    await connector.deliver()
    return record_id


async def test_purge_on_leaves_spotler_holding_exactly_what_dynamics_sends(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(PurgeExistingPropertiesWhenNotSet="true", MAPPING_FILE=PROFILE_FORM_MAPPING) as c:
        record_id = await spotler_side_values_then_a_dynamics_edit(c)
        props = spotler_contact(c, record_id)["properties"]
        assert props["jobTitle"] == "Chief buyer"
        assert "city" not in props  # blank in Dynamics: cleared
        assert "customerType" not in props  # not carried by the update: purged
        assert props["phoneNumber"] == PHONE  # ⬅ Spotler owns it: sent back with its value, never erased
        assert props["email"] == ROOS["emailaddress1"]
        assert permission(c, record_id, 1) is True  # the purge never unsubscribes


async def test_purge_off_keeps_spotler_values_the_update_does_not_carry(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(MAPPING_FILE=PROFILE_FORM_MAPPING) as c:
        record_id = await spotler_side_values_then_a_dynamics_edit(c)
        props = spotler_contact(c, record_id)["properties"]
        assert props["jobTitle"] == "Chief buyer"
        assert props["city"] == "Delft"  # blank in Dynamics: the default policy keeps Spotler's value
        assert props["customerType"] == "B2B"
        assert props["phoneNumber"] == PHONE


async def test_a_blank_in_spotler_does_not_clear_dynamics_even_with_purge_on(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory(PurgeExistingPropertiesWhenNotSet="true", MAPPING_FILE=PROFILE_FORM_MAPPING) as c:
        dv, sp = c.dataverse.sandbox, c.spotler.store
        record_id = dv.create("contact", ROOS)
        await c.deliver()
        sp.profile_edit(record_id, properties={"firstName": None})  # 🔁 field blanked in Spotler
        await asyncio.sleep(0.05)
        await c.host.run_timer()
        assert dv.row("contact", record_id)["firstname"] == "Roos"
