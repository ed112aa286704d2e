"""What a change costs: no GET of a contact no link points to, no history entry for a save that changed nothing."""

from __future__ import annotations

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind
from tests.unit.service_fakes import World, change

ID = "3f2a1c4e-0000-4000-8000-0000000000bb"
WRITES = ("insert_contact", "insert_contacts", "update_contact", "anonymize_contact")


async def test_saves_that_change_nothing_write_nothing_to_spotler_and_add_one_status_entry_in_all() -> None:
    world = World()
    push = world.push()
    await push.handle(change(ID), owner="create")
    for version in (2, 3, 4):
        world.clock.advance(seconds=10)
        outcome = await push.handle(
            change(ID, {"firstname": "Ada"}, kind=ChangeKind.UPDATE, version=version, key=f"save-{version}"),
            owner=f"save-{version}",
        )
        assert outcome.action == "none"
    history = await world.state.list_status("contact", ID)
    assert sorted(s.detail for s in history) == ["already in sync", "created in Spotler"]
    assert sum(world.spotler.calls[m] for m in WRITES) == 1  # the create only
    link = await world.state.get_link("contact", ID)
    assert link is not None
    # Saved by the first save (its status moved to "already in sync"), not by the two after it: the record's
    # lease row keeps the newest version, and an older change arriving late is still told apart.
    assert link.dv_version == 2
    late = await push.handle(
        change(ID, {"firstname": "Older"}, kind=ChangeKind.UPDATE, version=3, key="late-3"), owner="late-3"
    )
    assert (late.action, late.detail) == ("none", "stale event ignored")
    assert sum(world.spotler.calls[m] for m in WRITES) == 1


async def test_a_record_whose_contact_exists_under_its_own_id_without_a_link_is_found_by_one_search() -> None:
    # A create whose worker died after Spotler took the contact and before the link was saved.
    first = World()
    await first.push().handle(change(ID), owner="create")
    contact = first.spotler.contact(ID)
    assert contact is not None
    world = World()
    world.spotler.seed(contact)

    outcome = await world.push().handle(change(ID), owner="create-again")

    assert outcome.reason is ReasonCode.SYNCED
    assert dict(world.spotler.calls) == {"search_by_email": 1}
    assert [c.external_id for c in world.spotler.contacts()] == [ID]
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert link.external_id == ID
