"""A record that joins a Spotler contact that already exists turns no permission bit on without a new opt-in.

The bits such a contact has off are the person's own choice in Spotler (or the choice of the record that spoke
for them); a record that moves onto the contact by a new address, or is paired with it by e-mail, is no opt-in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, PushPlan, plan_push
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState
from tests.unit.domain_builders import T0, hashed, options, person, push_input

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
]
PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
CONTACT = EntityMapping.model_validate({"fields": FIELDS, "permissions": PERMISSIONS})
GRACE = "grace@example.com"


def opted_out_holder() -> SpotlerContact:
    """The contact that holds the address, its bit 1 turned off in Spotler by the person."""
    return SpotlerContact(
        "c-9", {"email": GRACE, "firstName": "Grace", "lastName": "Hopper"}, {1: False}, channels={"EMAIL": True}
    )


def moved_link() -> LinkState:
    """The record's link as the push hands it over after the new address moved it onto `opted_out_holder`."""
    return LinkState("contact", "c-1", "c-9", email_hash=hashed("ada@example.com"), base={})


def test_a_record_moved_onto_a_contact_by_its_new_address_leaves_its_bits_off() -> None:
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            changed={"emailaddress1"},
            link=moved_link(),
            spotler=opted_out_holder(),
            moved=True,
        ),
        CONTACT,
        options(),
    )
    assert plan.contact is None or plan.contact.permissions.get(1) is not True
    assert plan.link is not None
    assert plan.link.unsubscribed  # held until Dynamics records a new opt-in
    assert plan.link.external_id == "c-9"


def test_a_record_moved_onto_a_contact_turns_its_bits_on_with_an_explicit_opt_in() -> None:
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            changed={"emailaddress1", "donotbulkemail"},
            link=moved_link(),
            spotler=opted_out_holder(),
            moved=True,
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True}
    assert plan.link is not None
    assert not plan.link.unsubscribed


def test_a_record_paired_by_email_on_an_edit_leaves_the_contacts_bits_off() -> None:
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, jobtitle="Admiral"),
            changed={"jobtitle"},
            email_match=opted_out_holder(),
        ),
        CONTACT,
        options(),
    )
    assert plan.external_id == "c-9"
    assert plan.contact is None or plan.contact.permissions.get(1) is not True
    assert plan.link is not None
    assert plan.link.unsubscribed


def test_a_follower_that_joined_keeps_its_bits_off_when_it_comes_to_speak() -> None:
    owner = LinkState("contact", "c-0", "c-9", email_hash=hashed(GRACE), base={})
    follow = plan_push(
        push_input(
            person(emailaddress1=GRACE),
            entity="lead",
            record_id="l-1",
            changed={"emailaddress1"},
            link=LinkState("lead", "l-1", "c-9", base={}),
            spotler=opted_out_holder(),
            moved=True,
            peers=[owner],
        ),
        CONTACT,
        options(),
    )
    assert follow.action is PushAction.NONE
    assert follow.link is not None
    assert follow.link.unsubscribed
    speak = plan_push(
        push_input(
            person(emailaddress1=GRACE),
            entity="lead",
            record_id="l-1",
            changed={"jobtitle"},
            link=follow.link,
            spotler=opted_out_holder(),
        ),
        CONTACT,
        options(),
    )
    assert speak.contact is None or speak.contact.permissions.get(1) is not True


def test_a_record_coming_back_to_a_contact_anonymized_for_another_record_writes_all_its_values() -> None:
    # The record's link still holds the base of its last sync; the contact was anonymized since (for the record
    # that spoke for it). On the record's new opt-in its names must be written, not taken for Spotler's news.
    spoke = plan_push(
        push_input(person(emailaddress1=GRACE), changed={"jobtitle"}, spotler=opted_out_holder(), link=moved_link()),
        CONTACT,
        options(),
    )
    assert spoke.link is not None
    assert spoke.link.base
    wiped = SpotlerContact("c-9", {}, {1: False})
    back = plan_push(
        push_input(
            person(emailaddress1=GRACE),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            link=spoke.link,
            spotler=wiped,
        ),
        CONTACT,
        options(),
    )
    assert back.action is PushAction.UPDATE
    assert back.contact is not None
    assert back.contact.properties["firstName"] == "Ada"
    assert back.contact.properties["lastName"] == "Lovelace"


def test_a_peer_that_moved_to_another_address_keeps_no_shared_contact_for_the_person_who_leaves() -> None:
    # The follower changed its address and follows the contact silently; when the last record of the contact's
    # address is deleted, the person is gone: the contact is anonymized and the address gets its tombstone.
    mine = LinkState("contact", "c-1", "c-9", email_hash=hashed(GRACE), base={})
    moved_on = LinkState("lead", "l-1", "c-9", email_hash=hashed("elsewhere@example.com"), base={})
    holder = SpotlerContact("c-9", {"email": GRACE}, {1: True}, channels={"EMAIL": True})
    plan = plan_push(
        push_input(None, kind=ChangeKind.DELETE, link=mine, spotler=holder, peers=[moved_on]), CONTACT, options()
    )
    assert plan.action is PushAction.ANONYMIZE
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed(GRACE)


def test_a_new_record_of_an_address_another_live_record_speaks_for_creates_its_contact_with_bits_off() -> None:
    """The other record (Do Not Bulk Email ticked) is linked to a contact that went with another address: no
    contact holds the address, but the person is known, and a new row with the default flags is no opt-in."""
    silent = LinkState("lead", "l-7", "c-elsewhere", email_hash=hashed(GRACE), base={})
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            kind=ChangeKind.CREATE,
            record_id="c-new",
            address_peers=(silent,),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.CREATE
    assert plan.contact is not None
    assert plan.contact.permissions.get(1) is not True
    assert plan.link is not None
    assert plan.link.unsubscribed  # held until Dynamics records a new opt-in


def test_a_new_record_of_an_address_no_live_record_speaks_for_creates_its_contact_with_bits_on() -> None:
    gone = LinkState("lead", "l-7", "c-elsewhere", email_hash=hashed(GRACE), base={}, anonymized=True)
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            kind=ChangeKind.CREATE,
            record_id="c-new",
            address_peers=(gone,),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.CREATE
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True}


def test_a_record_whose_own_contact_exists_without_a_link_does_not_join_it() -> None:
    # A crash between the Spotler write and the link save leaves the record's own contact without a link: the
    # record speaks for that contact already, so nothing is held.
    own = SpotlerContact("c-1", {"email": "ada@example.com", "firstName": "Ada"}, {1: True}, channels={"EMAIL": True})
    plan = plan_push(push_input(person(), changed={"firstname"}, link=None, spotler=own), CONTACT, options())
    assert plan.link is not None
    assert plan.link.external_id == "c-1"
    assert plan.link.unsubscribed is False


def subscribed_holder() -> SpotlerContact:
    """The contact that holds the address, subscribed (another person's record reached the address first)."""
    return SpotlerContact(
        "c-9", {"email": GRACE, "firstName": "Grace", "lastName": "Hopper"}, {1: True}, channels={"EMAIL": True}
    )


def unsubscribed_left() -> SpotlerContact:
    """The contact the record leaves: its person turned bit 1 off in Spotler."""
    return SpotlerContact("c-1", {"email": "ada@example.com", "firstName": "Ada"}, {1: False}, channels={"EMAIL": True})


def test_a_record_moved_onto_a_subscribed_contact_brings_its_unsubscribe_along() -> None:
    # Two records take one address at the same moment: whichever push reaches it first, the unsubscribe stands.
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            changed={"emailaddress1"},
            link=moved_link(),
            spotler=subscribed_holder(),
            moved=True,
            left=unsubscribed_left(),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact is not None
    assert plan.contact.external_id == "c-9"
    assert plan.contact.permissions == {1: False}


def test_a_silent_record_moved_onto_a_subscribed_contact_still_brings_its_unsubscribe_along() -> None:
    owner = LinkState("contact", "c-0", "c-9", email_hash=hashed(GRACE), base={})
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE),
            entity="lead",
            record_id="l-1",
            changed={"emailaddress1"},
            link=LinkState("lead", "l-1", "c-9", base={}),
            spotler=subscribed_holder(),
            moved=True,
            left=unsubscribed_left(),
            peers=[owner],
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact == SpotlerContact("c-9", {}, {1: False})
    assert plan.link is not None
    assert (plan.link.external_id, plan.link.in_scope, plan.link.unsubscribed) == ("c-9", True, True)
    assert plan.detail.endswith("its unsubscribe carried over")


def test_a_record_moved_from_a_subscribed_contact_changes_no_bit_of_the_one_it_joins() -> None:
    left = SpotlerContact("c-1", {"email": "ada@example.com"}, {1: True}, channels={"EMAIL": True})
    plan = plan_push(
        push_input(
            person(emailaddress1=GRACE, firstname="Grace", lastname="Hopper"),
            changed={"emailaddress1"},
            link=moved_link(),
            spotler=subscribed_holder(),
            moved=True,
            left=left,
        ),
        CONTACT,
        options(),
    )
    assert plan.contact is None or 1 not in plan.contact.permissions


def _leave_of_the_speaker(joined_at: datetime) -> PushPlan:
    """Contact c-1 speaks for Grace's contact and is deactivated at T0 + 1 h; lead l-1 joined it (held, without an
    opt-in of its own) at `joined_at`, and that change was applied first."""
    speaker = LinkState("contact", "c-1", "c-9", email_hash=hashed(GRACE), base={})
    joiner = LinkState("lead", "l-1", "c-9", email_hash=hashed(GRACE), unsubscribed=True, dv_modified_on=joined_at)
    return plan_push(
        push_input(
            person(emailaddress1=GRACE, statecode=1, statuscode=2),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            link=speaker,
            spotler=subscribed_holder(),
            peers=[joiner],
            modified_on=T0 + timedelta(hours=1),
        ),
        CONTACT,
        options(),
    )


def test_a_leave_before_the_remaining_record_joined_turns_the_bits_off_whichever_was_applied_first() -> None:
    plan = _leave_of_the_speaker(joined_at=T0 + timedelta(hours=2))
    assert plan.action is PushAction.UNSUBSCRIBE
    assert plan.contact == SpotlerContact("c-9", {}, {1: False})
    assert plan.detail == (
        "inactive; Spotler contact kept for lead l-1; its subscriptions turned off: the records that keep it joined "
        "later"
    )
    assert plan.link is not None
    assert plan.link.unsubscribed


def test_a_leave_after_the_remaining_record_joined_keeps_the_contact_and_its_bits() -> None:
    plan = _leave_of_the_speaker(joined_at=T0 + timedelta(minutes=30))
    assert plan.action is PushAction.NONE
    assert plan.contact is None
    assert plan.detail == "inactive; Spotler contact kept for lead l-1"
