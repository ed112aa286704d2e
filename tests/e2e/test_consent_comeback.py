"""After an anonymization, a person can come back with a new, explicit opt-in from Dynamics.

An anonymized Spotler contact has no address, so Spotler reports its e-mail channel as off. That is not the
person's own opt-out: clearing Do Not Email again in Dynamics brings the person back.
"""

from __future__ import annotations

from tests.e2e.conftest import Connector
from tests.e2e.support import permission, reason, spotler_contact

EVA = {"firstname": "Eva", "lastname": "Smit", "emailaddress1": "eva.smit@example.nl"}


async def test_do_not_email_cleared_again_brings_an_anonymized_person_back(connector: Connector) -> None:
    dv = connector.dataverse.sandbox
    record_id = dv.create("contact", EVA)
    await connector.deliver()
    assert permission(connector, record_id, 1) is True

    dv.edit("contact", record_id, {"donotemail": True})
    await connector.deliver()
    anonymized = spotler_contact(connector, record_id)
    assert anonymized["anonymized"] is True
    assert anonymized["channels"] == [{"name": "EMAIL", "value": False}]  # no address: the channel reads off
    assert await reason(connector, "contact", record_id) == "anonymized"

    dv.edit("contact", record_id, {"donotemail": False})  # the new, explicit opt-in
    await connector.deliver()
    back = spotler_contact(connector, record_id)
    assert back["properties"]["email"] == EVA["emailaddress1"]
    assert back["channels"] == [{"name": "EMAIL", "value": True}]
    assert permission(connector, record_id, 1) is True
    assert await reason(connector, "contact", record_id) in ("created", "updated")


async def test_an_anonymized_person_does_not_come_back_on_an_unrelated_edit(connector: Connector) -> None:
    dv = connector.dataverse.sandbox
    record_id = dv.create("contact", EVA)
    await connector.deliver()
    dv.edit("contact", record_id, {"donotemail": True})
    await connector.deliver()
    dv.edit("contact", record_id, {"donotemail": False})
    dv.edit("contact", record_id, {"donotemail": True})
    await connector.deliver()

    dv.edit("contact", record_id, {"jobtitle": "Planner"})  # no opt-in: the person stays anonymized
    await connector.deliver()
    contact = spotler_contact(connector, record_id)
    assert contact["anonymized"] is True
    assert "email" not in contact["properties"]
    assert permission(connector, record_id, 1) is False
    assert await reason(connector, "contact", record_id) == "anonymized"
