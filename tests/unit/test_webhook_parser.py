"""parse_delivery on a corpus of RemoteExecutionContext and plug-in JSON payloads (tests/data/webhooks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_core.dataverse.webhook import UnsupportedMessage, WebhookPayloadError, parse_delivery, post_image_alias
from sync_core.domain.records import ChangeKind, EventSource

CORPUS = Path(__file__).resolve().parents[1] / "data" / "webhooks"
CONTACT_ID = "6d81597f-0f9f-e711-8122-000d3aa2331c"
USER_ID = "75c2dd85-e89e-e711-8122-000d3aa2331c"
HEADERS = {"x-ms-dynamics-entity-name": "contact", "content-type": "application/json"}


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def parse(name: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_delivery(load(name), headers if headers is not None else HEADERS)


def test_update_overlays_target_on_pre_image_and_reports_submitted_columns() -> None:
    event = parse("update_with_preimage.json")

    assert (event.entity, event.record_id, event.kind) == ("contact", CONTACT_ID, ChangeKind.UPDATE)
    assert event.source is EventSource.WEBHOOK
    assert event.attributes["firstname"] == "James"  # the Target wins over the pre-image's "Jim"
    assert event.attributes["emailaddress1"] == "jim@example.com"  # only known from the pre-image
    assert event.attributes["donotbulkemail"] is False
    assert event.attributes["modifiedby"] == USER_ID
    assert event.attributes["modifiedonbehalfby"] is None
    assert event.changed == frozenset(
        {"firstname", "contactid", "fullname", "modifiedon", "modifiedby", "modifiedonbehalfby"}
    )
    assert event.modified_on == datetime(2017, 9, 26, 0, 4, 7, tzinfo=UTC)
    assert event.occurred_on == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
    assert event.initiating_user_id == USER_ID
    assert event.user_id == USER_ID
    assert event.correlation_id == "b374239d-4233-41a9-8b17-a86cb4f737b5"
    assert event.depth == 1
    assert event.complete is True
    assert event.merged_into is None


def test_escaped_and_unescaped_slashes_parse_the_same() -> None:
    raw = load("update_with_preimage.json")
    assert b"\\/Date(" in raw

    escaped = parse("update_with_preimage.json")
    unescaped = parse("update_with_preimage_redelivered.json")

    assert escaped.attributes == unescaped.attributes
    assert escaped.modified_on == unescaped.modified_on


def test_idempotency_key_is_stable_across_a_redelivery_and_differs_across_operations() -> None:
    first = parse("update_with_preimage.json")
    redelivered = parse_delivery(
        load("update_with_preimage_redelivered.json"), {**HEADERS, "x-ms-correlation-request-id": "other"}
    )
    next_operation = parse("update_with_preimage_next_operation.json")

    assert first.idempotency_key == redelivered.idempotency_key
    assert first.idempotency_key != next_operation.idempotency_key
    assert len(first.idempotency_key) == 32
    assert int(first.idempotency_key, 16) >= 0


def test_idempotency_keys_differ_between_messages_of_one_record() -> None:
    keys = {
        parse(name).idempotency_key
        for name in ("update_with_preimage.json", "delete_with_preimage.json", "setstate.json")
    }
    assert len(keys) == 3


def test_delete_takes_its_attributes_from_the_pre_image() -> None:
    event = parse("delete_with_preimage.json")

    assert event.kind is ChangeKind.DELETE
    assert event.record_id == CONTACT_ID
    assert event.attributes == {
        "contactid": CONTACT_ID,
        "emailaddress1": "james@example.com",
        "statecode": 0,
    }
    assert event.changed == frozenset()
    assert event.occurred_on == datetime(2024, 8, 2, 7, 0, 39, tzinfo=UTC)
    assert event.complete is True


def test_setstate_becomes_statecode_and_statuscode() -> None:
    event = parse("setstate.json")

    assert event.kind is ChangeKind.SET_STATE
    assert event.attributes == {"statecode": 1, "statuscode": 2}
    assert event.changed == frozenset({"statecode", "statuscode"})
    assert event.statecode == 1


def test_deactivating_update_keeps_kind_update_with_state_columns_changed() -> None:
    event = parse("update_deactivate.json")

    assert event.kind is ChangeKind.UPDATE
    assert event.statecode == 1
    assert event.attributes["statuscode"] == 2
    assert event.attributes["emailaddress1"] == "james@example.com"
    assert {"statecode", "statuscode"} <= event.changed


def test_create_reads_the_target_and_ignores_formatted_values() -> None:
    event = parse("create_with_formatted_values.json")

    assert event.kind is ChangeKind.CREATE
    assert event.record_id == "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
    assert event.attributes["fullname"] == "Ann Lee"
    assert event.attributes["statecode"] == 0
    assert event.attributes["ownerid"] == USER_ID
    assert event.attributes["createdon"] == "2024-08-02T07:00:39Z"
    assert event.attributes["donotbulkemail"] is False  # the value, not the "Allow" label
    assert event.version == 5948260
    assert "emailaddress1" in event.changed


def test_every_value_type_is_normalized_to_web_api_form() -> None:
    event = parse("update_value_types.json")
    values = event.attributes

    assert values["statecode"] == 0
    assert values["sync_revenue"] == 1234.5
    assert values["parentcustomerid"] == "b5a3e0b6-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
    assert values["sync_interests"] == [100000000, 100000002]
    assert values["sync_topics"] == [3, 4]
    assert values["birthdate"] == "2010-01-01"  # +0100 offset: local midnight of 1 January
    assert values["anniversary"] == "2010-01-01"  # -0200 offset
    assert values["modifiedon"] == "2024-08-02T07:00:39Z"
    assert values["createdon"] == "2024-08-02T07:00:39Z"  # a DateTime stays the UTC instant
    assert values["telephone1"] is None
    assert values["donotemail"] is True
    assert values["numberofchildren"] == 2
    assert values["creditlimit"] == 10.25
    assert "relatedparty" not in values  # a nested Entity is not a column value
    assert event.version == 5948261
    assert event.occurred_on == datetime(2024, 8, 2, 7, 0, 39, tzinfo=UTC)


def test_unknown_context_fields_and_parent_context_are_ignored() -> None:
    event = parse("update_unknown_fields.json")
    baseline = parse("update_with_preimage.json")

    assert event.attributes == baseline.attributes
    assert event.changed == baseline.changed
    assert event.idempotency_key != baseline.idempotency_key


def test_merge_produces_an_event_for_the_subordinate_pointing_at_the_master() -> None:
    event = parse("merge.json")

    assert event.record_id == "7c1e2d3f-4a5b-4c6d-8e7f-901a2b3c4d55"
    assert event.merged_into == "0a9f6a52-2b11-4f7e-8f3d-5c0e2f1d7b44"
    assert event.kind is ChangeKind.UPDATE
    assert event.attributes == {}  # the images describe the master
    assert event.complete is False  # the service re-reads the subordinate


def test_stripped_payload_is_incomplete() -> None:
    event = parse("update_size_exceeded.json", {**HEADERS, "x-ms-dynamics-msg-size-exceeded": "true"})

    assert event.kind is ChangeKind.UPDATE
    assert event.record_id == CONTACT_ID
    assert event.complete is False
    assert event.attributes == {}


@pytest.mark.parametrize("header", ["x-ms-dynamics-msg-size-exceeded", "X-MS-Dynamics-Msg-Size-Exceeded"])
def test_size_exceeded_header_marks_any_payload_incomplete(header: str) -> None:
    event = parse_delivery(load("update_with_preimage.json"), {header: ""})
    assert event.complete is False


def test_plugin_json_with_attributes_is_a_complete_event() -> None:
    event = parse("plugin_with_attributes.json")

    assert event.source is EventSource.PLUGIN
    assert (event.entity, event.record_id, event.kind) == ("contact", CONTACT_ID, ChangeKind.UPDATE)
    assert event.attributes["birthdate"] == "1990-04-01"
    assert event.attributes["sync_interests"] == [1, 2]
    assert event.attributes["donotbulkemail"] is True
    assert event.changed == frozenset(event.attributes)
    assert event.version == 5948262
    assert event.modified_on == datetime(2024, 8, 2, 7, 0, 39, tzinfo=UTC)
    assert event.user_id == USER_ID
    assert event.complete is True


def test_plugin_json_idempotency_uses_the_delivery_id() -> None:
    document = json.loads(load("plugin_with_attributes.json"))
    changed_body = {**document, "attributes": {"firstname": "Other"}}

    first = parse_delivery(json.dumps(document).encode(), {})
    same_delivery = parse_delivery(json.dumps(changed_body).encode(), {})
    other_delivery = parse_delivery(json.dumps({**document, "deliveryId": "plugin-run-0002"}).encode(), {})

    assert first.idempotency_key == same_delivery.idempotency_key
    assert first.idempotency_key != other_delivery.idempotency_key


def test_plugin_json_without_attributes_is_incomplete_and_keyed_by_its_body() -> None:
    event = parse("plugin_without_attributes.json")
    reordered = json.dumps(dict(reversed(list(json.loads(load("plugin_without_attributes.json")).items()))))

    assert (event.entity, event.kind) == ("lead", ChangeKind.DELETE)
    assert event.complete is False
    assert event.attributes == {}
    assert parse_delivery(reordered.encode(), {}).idempotency_key == event.idempotency_key


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("not_json.txt", "not valid JSON"),
        ("array_body.json", "JSON object"),
        ("missing_primary_entity_id.json", "PrimaryEntityId"),
        ("non_guid_primary_entity_id.json", "PrimaryEntityId is not a GUID"),
        ("unsupported_entity.json", "'opportunity' is not one of contact, lead, account"),
        ("bad_date.json", "not a valid /Date(ms)/"),
        ("update_without_target.json", "Target is missing on Update"),
        ("plugin_bad_message.json", "message"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_clear_message(name: str, fragment: str) -> None:
    with pytest.raises(WebhookPayloadError) as caught:
        parse(name)

    assert fragment in str(caught.value)
    assert not isinstance(caught.value, UnsupportedMessage)
    assert "@example.com" not in str(caught.value)


def test_errors_never_echo_attribute_values() -> None:
    document = json.loads(load("plugin_bad_message.json"))
    document["attributes"] = {"emailaddress1": {"nested": "secret@example.com"}}

    with pytest.raises(WebhookPayloadError) as caught:
        parse_delivery(json.dumps(document).encode(), {})

    assert "secret@example.com" not in str(caught.value)
    assert "attributes.emailaddress1" in str(caught.value)


def test_messages_not_synced_raise_unsupported_message() -> None:
    with pytest.raises(UnsupportedMessage) as caught:
        parse("assign_unsupported.json")

    assert caught.value.message_name == "Assign"


def test_body_that_is_neither_format_is_rejected() -> None:
    with pytest.raises(WebhookPayloadError, match="neither"):
        parse_delivery(b'{"hello": "world"}', {})


@pytest.mark.parametrize(
    "target",
    [
        {"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": CONTACT_ID},
        "just a string",
        {"Attributes": "not a list"},
    ],
)
def test_target_of_the_wrong_shape_is_rejected(target: object) -> None:
    document = json.loads(load("update_with_preimage.json"))
    document["InputParameters"] = [{"key": "Target", "value": target}]

    with pytest.raises(WebhookPayloadError, match="Target"):
        parse_delivery(json.dumps(document).encode(), {})


def test_delete_with_an_entity_as_target_is_rejected() -> None:
    document = json.loads(load("delete_with_preimage.json"))
    document["InputParameters"][0]["value"] = {"Attributes": [], "Id": CONTACT_ID, "LogicalName": "contact"}

    with pytest.raises(WebhookPayloadError, match="EntityReference"):
        parse_delivery(json.dumps(document).encode(), {})


def test_set_state_dynamic_entity_is_treated_like_set_state() -> None:
    document = json.loads(load("setstate.json"))
    document["MessageName"] = "SetStateDynamicEntity"

    event = parse_delivery(json.dumps(document).encode(), {})

    assert event.kind is ChangeKind.SET_STATE
    assert event.attributes == {"statecode": 1, "statuscode": 2}


@pytest.mark.parametrize("value", ["/Date(1722582039000+2500)/", "/Date(12x)/", "/Date()/"])
def test_invalid_dates_are_rejected(value: str) -> None:
    document = json.loads(load("update_with_preimage.json"))
    document["OperationCreatedOn"] = value

    with pytest.raises(WebhookPayloadError, match="OperationCreatedOn"):
        parse_delivery(json.dumps(document).encode(), {})


IMAGE_COLUMNS = ("contactid", "emailaddress1", "firstname", "jobtitle", "lastname", "statecode")


def with_post_image(alias: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The update delivery with a post-image under `alias` that, like Dataverse's, leaves its null columns out."""
    context = json.loads(load("update_with_preimage.json"))
    image = {
        "Attributes": [
            {"key": "firstname", "value": "James"},
            {"key": "emailaddress1", "value": "jim@example.com"},
            {"key": "contactid", "value": CONTACT_ID},
            {
                "key": "statecode",
                "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 0},
            },
        ],
        "EntityState": None,
        "FormattedValues": [],
        "Id": CONTACT_ID,
        "KeyAttributes": [],
        "LogicalName": "contact",
        "RelatedEntities": [],
        "RowVersion": "812345",
    }
    context["PostEntityImages"].append({"key": alias, "value": image})
    body = json.dumps(context).encode()
    return parse_delivery(body, headers if headers is not None else HEADERS, image_columns=lambda _: IMAGE_COLUMNS)


def test_a_post_image_registered_with_the_mapped_columns_holds_the_ones_it_leaves_out_as_null() -> None:
    event = with_post_image(post_image_alias(IMAGE_COLUMNS))
    assert event.complete
    assert event.attributes["firstname"] == "James"
    assert event.attributes["statecode"] == 0
    assert "jobtitle" in event.attributes
    assert "lastname" in event.attributes
    assert event.attributes["jobtitle"] is None
    assert event.attributes["lastname"] is None
    assert event.version == 812345


@pytest.mark.parametrize(
    "alias",
    ["PostImage", post_image_alias((*IMAGE_COLUMNS, "address1_city")), post_image_alias(IMAGE_COLUMNS[1:])],
    ids=["setup-before-aliases", "registered-with-more-columns", "registered-with-fewer-columns"],
)
def test_a_post_image_registered_with_other_columns_leaves_the_missing_ones_unknown(alias: str) -> None:
    event = with_post_image(alias)
    assert "jobtitle" not in event.attributes
    assert "lastname" not in event.attributes
    assert event.attributes["firstname"] == "James"


def test_a_delivery_whose_size_was_exceeded_is_never_taken_for_complete() -> None:
    event = with_post_image(post_image_alias(IMAGE_COLUMNS), {**HEADERS, "x-ms-dynamics-msg-size-exceeded": "1"})
    assert not event.complete
    assert "jobtitle" not in event.attributes


def test_the_alias_names_the_column_set_whatever_its_order_or_case() -> None:
    assert post_image_alias(["b", "A"]) == post_image_alias(("a", "B", "a"))
    assert post_image_alias(["a"]) != post_image_alias(["a", "b"])
    assert post_image_alias(["a"]).startswith("PostImage")
