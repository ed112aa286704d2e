"""The live mapping check: does every mapped field exist, with a compatible type, in Spotler and in Dataverse?

`find_problems` compares a mapping with Spotler's property list and Dataverse's column definitions (no I/O);
`check_mapping_live` fetches both and compares; `MappingCheckCache` runs it once and keeps the answer, so the
start-up check, the health view, the queue worker and the timer all share one result. Each problem is one line
that names the field, the system and the fix.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sync_core.dataverse.metadata import AttributeInfo, AttributeSource
from sync_core.domain.mapping import (
    EntityMapping,
    FieldMapping,
    MappingConfig,
    MappingError,
    default_mapping,
    parse_mapping,
)
from sync_core.domain.records import ENTITY_NAMES, SpotlerProperty
from sync_core.settings import Settings
from sync_core.state.mapping_blob import read_mapping_blob

log = logging.getLogger("sync_core.mapping_check")

System = Literal["spotler", "dataverse"]

# Spotler property types each mapping type may feed (Spotler has no boolean: bits of a `set` property).
SPOTLER_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"string", "postcode", "gender", "mobNr"}),
    "email": frozenset({"email"}),
    "date": frozenset({"date", "birthdate"}),
    "birthdate": frozenset({"birthdate", "date"}),
    "datetime": frozenset({"dateTime"}),
    "int": frozenset({"int"}),
    "money": frozenset({"money"}),
    "boolean": frozenset({"set"}),
    "multichoice": frozenset({"set"}),
}
# Dataverse AttributeType values each mapping type may read or write.
DATAVERSE_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"String", "Memo"}),
    "email": frozenset({"String"}),
    "date": frozenset({"DateTime"}),
    "birthdate": frozenset({"DateTime"}),
    "datetime": frozenset({"DateTime"}),
    "int": frozenset({"Integer", "BigInt"}),
    "money": frozenset({"Money", "Decimal", "Double"}),
    "boolean": frozenset({"Boolean"}),
    "choice": frozenset({"Picklist", "State", "Status"}),
    "multichoice": frozenset({"Virtual", "MultiSelectPicklist"}),
}
_SYSTEM_NAMES = {"spotler": "Spotler", "dataverse": "Dataverse"}


class PropertySource(Protocol):
    async def list_properties(self) -> list[SpotlerProperty]: ...


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One thing in the mapping that does not fit one of the two systems."""

    entity: str
    field: str
    system: System
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.entity} {self.field}: {_SYSTEM_NAMES[self.system]}: {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return {
            "entity": self.entity,
            "field": self.field,
            "system": self.system,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class MappingCheckResult:
    """The outcome of one live check. `checked` is False when a system could not be asked."""

    problems: tuple[MappingProblem, ...] = ()
    checked: bool = True
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems

    @property
    def status(self) -> Literal["ok", "configuration_error", "unchecked"]:
        if self.problems:
            return "configuration_error"
        return "ok" if self.checked else "unchecked"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "problems": [p.line() for p in self.problems]}
        if self.error:
            body["error"] = self.error
        return body


def _closest(name: str, candidates: Iterable[str]) -> str:
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{found[0]}`?" if found else "use an existing name"


@dataclass
class _Checker:
    properties: dict[str, SpotlerProperty]
    problems: list[MappingProblem] = field(default_factory=list)

    def add(self, entity: str, where: str, system: System, message: str, fix: str) -> None:
        self.problems.append(MappingProblem(entity, where, system, message, fix))

    def spotler_field(self, entity: str, where: str, f: FieldMapping) -> None:
        prop = self.properties.get(f.spotler)
        if prop is None:
            fix = f"create the property in Spotler or correct the name ({_closest(f.spotler, self.properties)})"
            self.add(entity, where, "spotler", f"property `{f.spotler}` does not exist", fix)
            return
        if f.type == "choice":
            allowed = frozenset({"set"}) if f.bits else SPOTLER_TYPES["string"]
        else:
            allowed = SPOTLER_TYPES[f.type]
        if prop.type not in allowed:
            self.add(
                entity,
                where,
                "spotler",
                f"property `{f.spotler}` is of type `{prop.type}`, which a `{f.type}` field cannot fill",
                f"map a property of type {' or '.join(sorted(allowed))}, or change the field's type",
            )
            return
        wanted_bits = [f.bit] if f.type == "boolean" and f.bit is not None else list((f.bits or {}).values())
        missing = sorted(b for b in wanted_bits if b not in prop.entries)
        if missing:
            self.add(
                entity,
                where,
                "spotler",
                f"property `{f.spotler}` has no bit {', '.join(map(str, missing))}",
                f"add the entry in Spotler or use one of its bits ({', '.join(map(str, sorted(prop.entries)))})",
            )

    def dataverse_column(
        self,
        entity: str,
        where: str,
        columns: Mapping[str, AttributeInfo],
        name: str,
        allowed: frozenset[str] | None,
        *,
        writes: bool,
        wanted: str = "",
    ) -> None:
        column = columns.get(name)
        if column is None:
            fix = f"create the column on {entity} or correct the name ({_closest(name, columns)})"
            self.add(entity, where, "dataverse", f"column `{name}` does not exist on {entity}", fix)
            return
        kind = column.attribute_type
        if column.type_name == "MultiSelectPicklistType":
            kind = "MultiSelectPicklist"
        if allowed is not None and kind not in allowed and column.attribute_type not in allowed:
            self.add(
                entity,
                where,
                "dataverse",
                f"column `{name}` is of type {kind}, which {wanted or 'this field'} cannot use",
                f"map a column of type {' or '.join(sorted(allowed))}, or change the field's type",
            )
            return
        if writes and not column.writable:
            self.add(
                entity,
                where,
                "dataverse",
                f"column `{name}` is read-only, but the field writes it (⬅/🔁)",
                "make the field ➡ to_spotler, or map a writable column",
            )


def _check_entity(checker: _Checker, entity: str, mapping: EntityMapping, columns: Mapping[str, AttributeInfo]) -> None:
    for index, f in enumerate(mapping.fields):
        where = f"fields.{index} ({f.dataverse} ↔ {f.spotler})"
        checker.spotler_field(entity, where, f)
        checker.dataverse_column(
            entity,
            where,
            columns,
            f.dataverse,
            DATAVERSE_TYPES[f.type],
            writes=f.direction.pulls,
            wanted=f"a `{f.type}` field",
        )
    permissions = checker.properties.get("permissions")
    for index, p in enumerate(mapping.permissions):
        where = f"permissions.{index} (bit {p.bit})"
        if permissions is None or permissions.type != "set":
            checker.add(
                entity,
                where,
                "spotler",
                "the account has no `permissions` set property",
                "check the Spotler account (permissions are its subscriptions)",
            )
        elif p.bit not in permissions.entries:
            bits = ", ".join(map(str, sorted(permissions.entries))) or "none"
            checker.add(
                entity,
                where,
                "spotler",
                f"permission bit {p.bit} does not exist",
                f"add the permission in Spotler or use one of its bits ({bits})",
            )
        if p.dataverse:
            checker.dataverse_column(
                entity,
                where,
                columns,
                p.dataverse,
                frozenset({"Boolean"}),
                writes=p.direction.pulls,
                wanted="a permission",
            )
    # A permission mirrored from Do Not Bulk Email writes that column when it flows back from Spotler.
    bulk_written = any(p.source == "not_donotbulkemail" and p.direction.pulls for p in mapping.permissions)
    for attribute, writes in ((mapping.donotemail_attribute, False), (mapping.donotbulkemail_attribute, bulk_written)):
        checker.dataverse_column(
            entity, attribute, columns, attribute, frozenset({"Boolean"}), writes=writes, wanted="a consent column"
        )
    for index, rule in enumerate(mapping.exclude):
        checker.dataverse_column(entity, f"exclude.{index}", columns, rule.attribute, None, writes=False)


def find_problems(
    mapping: MappingConfig,
    properties: Sequence[SpotlerProperty],
    attributes: Mapping[str, Mapping[str, AttributeInfo]],
) -> list[MappingProblem]:
    """Every mismatch between the mapping and the two systems' definitions (no I/O)."""
    checker = _Checker({p.name: p for p in properties})
    for entity in ENTITY_NAMES:
        entity_mapping = mapping.for_entity(entity)
        if entity_mapping is not None:
            _check_entity(checker, entity, entity_mapping, attributes.get(entity, {}))
    return checker.problems


async def check_mapping_live(
    mapping: MappingConfig, spotler: PropertySource, dataverse: AttributeSource
) -> MappingCheckResult:
    """Fetch Spotler's property list and each mapped table's columns, then compare."""
    entities = [e for e in ENTITY_NAMES if mapping.for_entity(e) is not None]
    try:
        properties = await spotler.list_properties()
    except Exception as exc:
        log.warning("mapping check: Spotler property list unavailable", extra={"error": type(exc).__name__})
        return MappingCheckResult(checked=False, error=f"Spotler property list unavailable: {type(exc).__name__}")
    try:
        attributes: dict[str, dict[str, AttributeInfo]] = {e: await dataverse.attributes(e) for e in entities}
    except Exception as exc:
        log.warning("mapping check: Dataverse metadata unavailable", extra={"error": type(exc).__name__})
        return MappingCheckResult(checked=False, error=f"Dataverse metadata unavailable: {type(exc).__name__}")
    return MappingCheckResult(tuple(find_problems(mapping, properties, attributes)))


class MappingCheckCache:
    """Runs the live check once and keeps the answer: a good answer for `valid_ttl` seconds, a bad or missing
    one for `recheck` seconds (a fixed Spotler property or column is picked up without a restart)."""

    def __init__(
        self,
        check: Callable[[], Awaitable[MappingCheckResult]],
        *,
        recheck: float = 60.0,
        valid_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._recheck = recheck
        self._valid_ttl = valid_ttl
        self._clock = clock
        self._result: MappingCheckResult | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def recheck_seconds(self) -> float:
        return self._recheck

    async def result(self) -> MappingCheckResult:
        async with self._lock:
            if self._result is None or self._clock() >= self._expires:
                self._result = await self._check()
                ttl = self._valid_ttl if self._result.ok else self._recheck
                self._expires = self._clock() + ttl
                if self._result.problems:
                    log.error(
                        "mapping does not fit Spotler or Dataverse: push and pull paused (configuration_error)",
                        extra={"problems": [p.line() for p in self._result.problems]},
                    )
            return self._result

    def invalidate(self) -> None:
        self._result = None


def mapping_file_of(settings_value: Path | None) -> Path | None:
    """The configured mapping file, or None for the shipped default (an empty setting counts as unset)."""
    if settings_value is None or str(settings_value).strip() in ("", "."):
        return None
    return settings_value


def load_mapping_file(path: Path | None) -> MappingConfig:
    """Parse a mapping file (None: the shipped default); MappingError names the file's problem."""
    if path is None:
        return default_mapping()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read the mapping file ({exc.strerror or type(exc).__name__})") from None
    return parse_mapping(text)


def configured_mapping(settings: Settings) -> MappingConfig:
    """The mapping the connector runs with: MAPPING_BLOB, else MAPPING_FILE, else the shipped default."""
    if settings.mapping_blob:
        return parse_mapping(read_mapping_blob(settings, settings.mapping_blob))
    return load_mapping_file(mapping_file_of(settings.mapping_file))
