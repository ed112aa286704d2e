"""The field mapping: which Dataverse column feeds which Spotler property, in which direction, and how.

A mapping file is JSON validated by these models; errors point at the offending entry (for example
`entities.contact.fields.3.direction`). `mapping_json_schema()` publishes the schema for editors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from sync_core.domain.records import EntityName


class Direction(StrEnum):
    """Who owns a field: ➡ Dynamics writes Spotler, ⬅ Spotler writes Dynamics, 🔁 both."""

    TO_SPOTLER = "to_spotler"
    TO_DYNAMICS = "to_dynamics"
    BOTH = "both"

    @property
    def pushes(self) -> bool:
        return self in (Direction.TO_SPOTLER, Direction.BOTH)

    @property
    def pulls(self) -> bool:
        return self in (Direction.TO_DYNAMICS, Direction.BOTH)


_ARROWS = {
    "➡": "to_spotler",
    "→": "to_spotler",
    "⬅": "to_dynamics",
    "←": "to_dynamics",
    "🔁": "both",
    "↔": "both",
}


def _direction(value: Any) -> Any:
    return _ARROWS.get(value.strip(), value.strip()) if isinstance(value, str) else value


# The schema lists the arrows too: editors must accept every spelling the parser accepts.
DirectionField = Annotated[
    Direction,
    BeforeValidator(_direction),
    WithJsonSchema({"type": "string", "enum": [d.value for d in Direction] + list(_ARROWS)}),
]

ValueType = Literal[
    "string", "email", "date", "birthdate", "datetime", "int", "money", "boolean", "choice", "multichoice"
]

# Columns the platform computes or owns; a mapping may never write them.
READ_ONLY_ATTRIBUTES = frozenset(
    {
        "fullname",
        "yomifullname",
        "createdon",
        "createdby",
        "modifiedon",
        "modifiedby",
        "modifiedonbehalfby",
        "createdonbehalfby",
        "versionnumber",
        "contactid",
        "leadid",
        "accountid",
        "ownerid",
        "owningbusinessunit",
        "statecode",
        "statuscode",
        "address1_composite",
        "address2_composite",
        "exchangerate",
    }
)

DEFAULT_STATE_ATTRIBUTE = "statecode"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMapping(_Strict):
    """One Dataverse column <-> one Spotler property."""

    dataverse: str = Field(min_length=1, description="Dataverse column logical name, e.g. `firstname`.")
    spotler: str = Field(min_length=1, description="Spotler property name, e.g. `firstName`.")
    direction: DirectionField = Field(default=Direction.TO_SPOTLER, description="➡ to_spotler, ⬅ to_dynamics, 🔁 both.")
    type: ValueType = Field(default="string", description="How values are converted between the two systems.")
    choices: dict[int, str] | None = Field(
        default=None, description="For a choice column mapped to a Spotler string: option value -> text."
    )
    bits: dict[int, int] | None = Field(
        default=None,
        description="For a choice or multi-select column mapped to a Spotler set: option value -> bit.",
    )
    bit: int | None = Field(default=None, description="For a boolean column mapped to one bit of a Spotler set.")
    blank: Literal["keep", "clear"] | None = Field(
        default=None,
        description="When the source is blank: keep the target's value or clear it. "
        "Unset follows PurgeExistingPropertiesWhenNotSet.",
    )
    create_only: bool = Field(default=False, description="Only written when the Spotler contact is created.")

    @model_validator(mode="after")
    def _check_type_options(self) -> FieldMapping:
        if self.type == "multichoice" and not self.bits:
            raise ValueError("a multichoice field needs `bits`: option value -> bit of a Spotler set")
        if self.type == "choice" and not (self.choices or self.bits):
            raise ValueError("a choice field needs `choices` (to a Spotler string) or `bits` (to a Spotler set)")
        if self.type == "boolean" and self.bit is None:
            raise ValueError("a boolean field needs `bit`: the bit of the Spotler set property it drives")
        if self.bits is not None and len(set(self.bits.values())) != len(self.bits):
            raise ValueError("`bits` maps two options to the same bit")
        return self

    @property
    def is_set(self) -> bool:
        """True when the Spotler side is a `set` property (bits)."""
        return self.type == "boolean" or self.bits is not None

    @property
    def key(self) -> str:
        """The key of this field in link state (per Spotler property, and bit for booleans)."""
        return f"{self.spotler}:{self.bit}" if self.type == "boolean" else self.spotler


class PermissionMapping(_Strict):
    """One Spotler permission bit (a subscription) <-> a Dataverse boolean, two-way by default."""

    bit: int = Field(ge=1, description="The bit of Spotler's `permissions` property.")
    dataverse: str | None = Field(
        default=None, description="Boolean column that is true when subscribed; unset: use `source`."
    )
    source: Literal["column", "not_donotbulkemail"] = Field(
        default="column",
        description="`not_donotbulkemail`: subscribed exactly when Do Not Bulk Email is false.",
    )
    direction: DirectionField = Field(default=Direction.BOTH)

    @model_validator(mode="after")
    def _check_source(self) -> PermissionMapping:
        if self.source == "column" and not self.dataverse:
            raise ValueError("a permission with source `column` needs `dataverse` (a boolean column)")
        if self.source == "not_donotbulkemail" and self.dataverse:
            raise ValueError("a permission with source `not_donotbulkemail` takes no `dataverse` column")
        return self

    @property
    def key(self) -> str:
        return f"permission:{self.bit}"


class ExcludeRule(_Strict):
    """Excludes a record from the sync when its column matches."""

    attribute: str = Field(min_length=1)
    equals: str | int | bool | None = Field(default=None, description="Excluded when the column equals this.")
    any_of: list[str | int] | None = Field(default=None, description="Excluded when the column is one of these.")
    is_blank: bool | None = Field(default=None, description="Excluded when the column is (true) or is not blank.")
    description: str = Field(default="", description="Shown in the record's Spotler status.")

    @model_validator(mode="after")
    def _one_condition(self) -> ExcludeRule:
        given = [c for c in (self.equals, self.any_of, self.is_blank) if c is not None]
        if len(given) != 1:
            raise ValueError("an exclude rule needs exactly one of `equals`, `any_of`, `is_blank`")
        return self


class EntityMapping(_Strict):
    """The mapping of one Dataverse table."""

    enabled: bool = True
    email_attribute: str = "emailaddress1"
    donotemail_attribute: str = "donotemail"
    donotbulkemail_attribute: str = "donotbulkemail"
    anonymize_closed_leads: bool = Field(
        default=False,
        description="Lead only: anonymize qualified leads too (by default the contact lives on).",
    )
    fields: list[FieldMapping] = Field(default_factory=list)
    permissions: list[PermissionMapping] = Field(default_factory=list)
    exclude: list[ExcludeRule] = Field(default_factory=list)
    read_only_attributes: list[str] = Field(
        default_factory=list, description="Extra columns that must never be written (⬅ or 🔁 is rejected)."
    )

    @model_validator(mode="after")
    def _check_entity(self) -> EntityMapping:
        if not any(f.type == "email" and f.dataverse == self.email_attribute for f in self.fields):
            raise ValueError(f"no field maps the e-mail column `{self.email_attribute}` with type `email`")
        read_only = READ_ONLY_ATTRIBUTES | set(self.read_only_attributes)
        for index, f in enumerate(self.fields):
            if f.direction.pulls and f.dataverse in read_only:
                raise ValueError(
                    f"fields.{index} ({f.dataverse}): direction {f.direction.value} writes a read-only column"
                )
        keys = [f.key for f in self.fields]
        for index, key in enumerate(keys):
            if key in keys[:index]:
                raise ValueError(f"fields.{index}: Spotler property `{key}` is mapped twice")
        bits = [p.bit for p in self.permissions]
        for index, p in enumerate(self.permissions):
            if bits.count(p.bit) > 1:
                raise ValueError(f"permissions.{index}: permission bit {p.bit} is used twice")
            if p.direction.pulls and p.dataverse in read_only:
                raise ValueError(f"permissions.{index} ({p.dataverse}): writes a read-only column")
        return self

    def columns(self, state_attribute: str = DEFAULT_STATE_ATTRIBUTE) -> list[str]:
        """Every Dataverse column the sync needs to read for this table."""
        cols = [
            self.email_attribute,
            self.donotemail_attribute,
            self.donotbulkemail_attribute,
            state_attribute,
            "statuscode",
            "modifiedon",
        ]
        cols += [f.dataverse for f in self.fields]
        cols += [p.dataverse for p in self.permissions if p.dataverse]
        cols += [r.attribute for r in self.exclude]
        return list(dict.fromkeys(cols))

    def watched_columns(self) -> list[str]:
        """The filtering attributes to register on the Update step: a change elsewhere needs no push.

        `modifiedon` is left out: it changes on every save, including the connector's own status writes.
        """
        return [c for c in self.columns() if c != "modifiedon"]


class MappingConfig(_Strict):
    """The whole mapping file."""

    schema_ref: str | None = Field(default=None, alias="$schema", description="Editor hint; ignored.")
    version: Literal[1] = 1
    entities: dict[EntityName, EntityMapping]

    def multi_select_columns(self) -> tuple[str, ...]:
        """Dataverse columns mapped as multi-select choices (the Web API writes them as "1,2,3")."""
        names = (f.dataverse for m in self.entities.values() for f in m.fields if f.type == "multichoice")
        return tuple(dict.fromkeys(names))

    def for_entity(self, entity: EntityName) -> EntityMapping | None:
        mapping = self.entities.get(entity)
        return mapping if mapping is not None and mapping.enabled else None


class MappingError(ValueError):
    """The mapping file is not valid; the message names each offending entry."""


def parse_mapping(data: Mapping[str, Any] | str) -> MappingConfig:
    """Validate a mapping (a JSON text or an already-parsed object)."""
    try:
        raw = json.loads(data) if isinstance(data, str) else data
        return MappingConfig.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise MappingError(f"mapping is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
            problems.append(f"{where or 'mapping'}: {error['msg']}")
        raise MappingError("invalid mapping: " + "; ".join(problems)) from None


def default_mapping_text() -> str:
    """The shipped default mapping file."""
    return resources.files("sync_core.domain").joinpath("default_mapping.json").read_text(encoding="utf-8")


def default_mapping() -> MappingConfig:
    """The default mapping: name, e-mail, job title, birthdate, address, and the newsletter permission."""
    return parse_mapping(default_mapping_text())


def mapping_json_schema() -> dict[str, Any]:
    """The JSON Schema of mapping files, for editors."""
    schema = MappingConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Dynamics 365 to Spotler Mail+ field mapping"
    return schema
