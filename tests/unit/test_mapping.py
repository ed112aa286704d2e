"""The mapping file: the default validates, broken files are rejected naming the entry, the schema is published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync_core.domain.mapping import (
    Direction,
    MappingConfig,
    MappingError,
    default_mapping,
    default_mapping_text,
    mapping_json_schema,
    parse_mapping,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "sync_core" / "domain" / "mapping.schema.json"
REGENERATE = (
    'python -c "import json; from sync_core.domain.mapping import mapping_json_schema; '
    "open('sync_core/domain/mapping.schema.json', 'w', encoding='utf-8').write("
    'json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + chr(10))"'
)

EMAIL = {"dataverse": "emailaddress1", "spotler": "email", "type": "email"}


def one_entity(*fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "entities": {"contact": {"fields": [EMAIL, *fields], **extra}}}


def rejected(data: dict[str, Any] | str) -> str:
    with pytest.raises(MappingError) as info:
        parse_mapping(data)
    return str(info.value)


# --- the shipped default --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["contact", "lead", "account"])
def test_default_mapping_validates_for_each_entity(entity: str) -> None:
    config = default_mapping()
    mapping = config.for_entity(entity)  # type: ignore[arg-type]
    assert mapping is not None
    assert any(f.type == "email" and f.dataverse == mapping.email_attribute for f in mapping.fields)
    assert [p.bit for p in mapping.permissions] == [1]
    assert mapping.email_attribute in mapping.columns()


def test_default_mapping_text_is_the_file_parse_mapping_reads() -> None:
    assert parse_mapping(default_mapping_text()) == default_mapping()


def test_disabled_entity_is_not_mapped() -> None:
    data = one_entity()
    data["entities"]["contact"]["enabled"] = False
    assert parse_mapping(data).for_entity("contact") is None


def test_unmapped_entity_is_not_mapped() -> None:
    assert parse_mapping(one_entity()).for_entity("lead") is None


# --- arrows ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("➡", Direction.TO_SPOTLER),
        ("→", Direction.TO_SPOTLER),
        ("⬅", Direction.TO_DYNAMICS),
        ("←", Direction.TO_DYNAMICS),
        ("🔁", Direction.BOTH),
        ("↔", Direction.BOTH),
        (" both ", Direction.BOTH),
        ("to_dynamics", Direction.TO_DYNAMICS),
    ],
)
def test_direction_arrows_are_accepted(given: str, expected: Direction) -> None:
    config = parse_mapping(one_entity({"dataverse": "firstname", "spotler": "firstName", "direction": given}))
    mapping = config.for_entity("contact")
    assert mapping is not None
    assert mapping.fields[1].direction is expected


def test_direction_defaults_to_spotler_and_permissions_default_to_both() -> None:
    config = parse_mapping(
        one_entity({"dataverse": "firstname", "spotler": "firstName"}, permissions=[{"bit": 2, "dataverse": "x"}])
    )
    mapping = config.for_entity("contact")
    assert mapping is not None
    assert mapping.fields[1].direction is Direction.TO_SPOTLER
    assert mapping.permissions[0].direction is Direction.BOTH


# --- broken mappings name the entry ---------------------------------------------------------------------------------


def test_unknown_direction_names_the_entry() -> None:
    message = rejected(one_entity({"dataverse": "firstname", "spotler": "firstName", "direction": "sideways"}))
    assert "entities.contact.fields.1.direction" in message


@pytest.mark.parametrize("direction", ["⬅", "🔁", "to_dynamics", "both"])
def test_pulling_into_a_read_only_column_is_rejected(direction: str) -> None:
    message = rejected(one_entity({"dataverse": "fullname", "spotler": "name", "direction": direction}))
    assert "entities.contact" in message
    assert "fields.1 (fullname)" in message
    assert "read-only" in message


def test_pushing_a_read_only_column_is_allowed() -> None:
    parse_mapping(one_entity({"dataverse": "fullname", "spotler": "name", "direction": "➡"}))


def test_extra_read_only_columns_are_honoured() -> None:
    data = one_entity({"dataverse": "new_score", "spotler": "score", "direction": "⬅"})
    data["entities"]["contact"]["read_only_attributes"] = ["new_score"]
    assert "fields.1 (new_score)" in rejected(data)


def test_permission_into_a_read_only_column_is_rejected() -> None:
    message = rejected(one_entity(permissions=[{"bit": 1, "dataverse": "statecode"}]))
    assert "permissions.0 (statecode)" in message


def test_permission_bit_used_twice_is_rejected() -> None:
    message = rejected(
        one_entity(permissions=[{"bit": 1, "source": "not_donotbulkemail"}, {"bit": 1, "dataverse": "new_news"}])
    )
    assert "entities.contact" in message
    assert "permission bit 1 is used twice" in message
    assert "permissions.0" in message


def test_permission_column_source_needs_a_column() -> None:
    assert "entities.contact.permissions.0" in rejected(one_entity(permissions=[{"bit": 3}]))


def test_permission_not_donotbulkemail_takes_no_column() -> None:
    message = rejected(one_entity(permissions=[{"bit": 3, "source": "not_donotbulkemail", "dataverse": "x"}]))
    assert "entities.contact.permissions.0" in message


def test_permission_bit_must_be_positive() -> None:
    assert "entities.contact.permissions.0.bit" in rejected(one_entity(permissions=[{"bit": 0, "dataverse": "x"}]))


def test_choice_without_choices_or_bits_is_rejected() -> None:
    message = rejected(one_entity({"dataverse": "gendercode", "spotler": "gender", "type": "choice"}))
    assert "entities.contact.fields.1" in message
    assert "choices" in message
    assert "bits" in message


def test_multichoice_without_bits_is_rejected() -> None:
    message = rejected(one_entity({"dataverse": "new_topics", "spotler": "topics", "type": "multichoice"}))
    assert "entities.contact.fields.1" in message
    assert "bits" in message


def test_boolean_without_bit_is_rejected() -> None:
    message = rejected(one_entity({"dataverse": "new_vip", "spotler": "flags", "type": "boolean"}))
    assert "entities.contact.fields.1" in message
    assert "bit" in message


def test_two_options_on_one_bit_are_rejected() -> None:
    field = {"dataverse": "new_topics", "spotler": "topics", "type": "multichoice", "bits": {"1": 4, "2": 4}}
    assert "entities.contact.fields.1" in rejected(one_entity(field))


def test_bad_json_names_line_and_column() -> None:
    message = rejected('{\n  "version": 1,\n  "entities": {,}\n}')
    assert "not valid JSON" in message
    assert "line 3 column 16" in message


def test_property_mapped_twice_is_rejected() -> None:
    message = rejected(
        one_entity(
            {"dataverse": "firstname", "spotler": "firstName"},
            {"dataverse": "nickname", "spotler": "firstName"},
        )
    )
    assert "entities.contact" in message
    assert "`firstName` is mapped twice" in message
    assert "fields.2" in message


def test_same_set_property_on_distinct_bits_is_allowed() -> None:
    parse_mapping(
        one_entity(
            {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 1},
            {"dataverse": "new_partner", "spotler": "flags", "type": "boolean", "bit": 2},
        )
    )


def test_same_bit_of_a_set_property_twice_is_rejected() -> None:
    message = rejected(
        one_entity(
            {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 1},
            {"dataverse": "new_partner", "spotler": "flags", "type": "boolean", "bit": 1},
        )
    )
    assert "`flags:1` is mapped twice" in message


def test_missing_email_field_is_rejected() -> None:
    data = {"entities": {"contact": {"fields": [{"dataverse": "firstname", "spotler": "firstName"}]}}}
    assert "emailaddress1" in rejected(data)


def test_unknown_key_is_rejected_naming_it() -> None:
    message = rejected(one_entity({"dataverse": "firstname", "spotler": "firstName", "directon": "both"}))
    assert "entities.contact.fields.1.directon" in message


def test_unknown_entity_is_rejected() -> None:
    data = {"entities": {"opportunity": {"fields": [EMAIL]}}}
    assert "entities.opportunity" in rejected(data)


def test_unknown_type_is_rejected() -> None:
    message = rejected(one_entity({"dataverse": "x", "spotler": "y", "type": "uuid"}))
    assert "entities.contact.fields.1.type" in message


def test_exclude_rule_needs_exactly_one_condition() -> None:
    message = rejected(one_entity(exclude=[{"attribute": "x", "equals": 1, "is_blank": True}]))
    assert "entities.contact.exclude.0" in message
    assert "entities.contact.exclude.0" in rejected(one_entity(exclude=[{"attribute": "x"}]))


def test_all_problems_are_listed_together() -> None:
    message = rejected(
        one_entity(
            {"dataverse": "a", "spotler": "a", "direction": "up"},
            {"dataverse": "b", "spotler": "b", "type": "boolean"},
        )
    )
    assert "fields.1.direction" in message
    assert "fields.2" in message


# --- the published schema -------------------------------------------------------------------------------------------


def test_json_schema_looks_like_a_json_schema() -> None:
    schema = mapping_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert "entities" in schema["required"]
    assert {"EntityMapping", "FieldMapping", "PermissionMapping", "ExcludeRule"} <= set(schema["$defs"])
    assert "$schema" in schema["properties"]
    field_props = schema["$defs"]["FieldMapping"]["properties"]
    assert {"dataverse", "spotler", "direction", "type", "choices", "bits", "bit", "blank", "create_only"} <= set(
        field_props
    )
    json.dumps(schema)  # serializable


def test_json_schema_refs_resolve() -> None:
    schema = mapping_json_schema()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    refs.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"]


def test_json_schema_accepts_the_arrows_the_parser_accepts() -> None:
    text = json.dumps(mapping_json_schema(), ensure_ascii=False)
    for arrow in ("➡", "⬅", "🔁"):
        assert arrow in text


def test_published_schema_file_matches_the_models() -> None:
    generated = json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + "\n"
    assert SCHEMA_FILE.exists(), f"sync_core/domain/mapping.schema.json is missing; regenerate it with: {REGENERATE}"
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == generated, (
        f"sync_core/domain/mapping.schema.json is out of date; regenerate it with: {REGENERATE}"
    )


def test_default_mapping_points_at_the_published_schema() -> None:
    assert json.loads(default_mapping_text())["$schema"] == "./mapping.schema.json"
    assert isinstance(default_mapping(), MappingConfig)
