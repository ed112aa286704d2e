"""Dataverse metadata and registration rows over the Web API: column definitions, service endpoints, steps.

Used by `dataverse setup` and by the live mapping check. Requests go through `DataverseClient.send`, so they
get the same authentication, retries and typed errors as row reads and writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from sync_core.dataverse.client import DataverseClient

_ENTITY_ID_RE = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    """What the mapping check and setup need to know of one column."""

    logical_name: str
    attribute_type: str  # AttributeType: String, Memo, Picklist, Boolean, DateTime, Virtual, ...
    type_name: str  # AttributeTypeName.Value: StringType, MultiSelectPicklistType, ...
    writable: bool  # IsValidForUpdate


class AttributeSource(Protocol):
    """Where the live mapping check reads a table's column definitions."""

    async def attributes(self, entity: str) -> dict[str, AttributeInfo]: ...


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"not a logical name: {name!r}")
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DataverseMetadata:
    """Reads and writes the metadata and registration tables `dataverse setup` manages."""

    def __init__(self, client: DataverseClient) -> None:
        self._client = client

    async def attributes(self, entity: str) -> dict[str, AttributeInfo]:
        """Every column of `entity`, by logical name (`EntityDefinitions(LogicalName=…)/Attributes`)."""
        path = f"EntityDefinitions(LogicalName={_literal(_check_name(entity))})/Attributes"
        params = {"$select": "LogicalName,AttributeType,AttributeTypeName,IsValidForUpdate"}
        body = (await self._client.send("GET", path, params=params)).json()
        result: dict[str, AttributeInfo] = {}
        for item in body.get("value", []):
            type_name = item.get("AttributeTypeName") or {}
            info = AttributeInfo(
                logical_name=str(item["LogicalName"]),
                attribute_type=str(item.get("AttributeType") or ""),
                type_name=str(type_name.get("Value") or "") if isinstance(type_name, Mapping) else "",
                writable=bool(item.get("IsValidForUpdate", False)),
            )
            result[info.logical_name] = info
        return result

    async def create_attribute(self, entity: str, definition: Mapping[str, Any]) -> None:
        """Create a column from an AttributeMetadata document (`POST EntityDefinitions(…)/Attributes`)."""
        path = f"EntityDefinitions(LogicalName={_literal(_check_name(entity))})/Attributes"
        await self._client.send("POST", path, body=dict(definition))

    async def query(self, entity_set: str, *, filter_expr: str | None = None, select: str = "") -> list[dict[str, Any]]:
        """Rows of a registration table (small tables: one page is enough)."""
        params: dict[str, str] = {}
        if filter_expr:
            params["$filter"] = filter_expr
        if select:
            params["$select"] = select
        body = (await self._client.send("GET", entity_set, params=params)).json()
        return [dict(item) for item in body.get("value", [])]

    async def create(self, entity_set: str, body: Mapping[str, Any]) -> str:
        """Create a row; its id (from `OData-EntityId`)."""
        response = await self._client.send("POST", entity_set, body=dict(body))
        match = _ENTITY_ID_RE.search(response.headers.get("OData-EntityId", ""))
        if match is None:
            raise ValueError(f"POST {entity_set} answered without OData-EntityId")
        return match.group(1).lower()

    async def update(self, entity_set: str, row_id: str, body: Mapping[str, Any]) -> None:
        """Update an existing row (`If-Match: *`, never an upsert)."""
        await self._client.send(
            "PATCH", f"{entity_set}({quote(row_id, safe='-')})", body=dict(body), headers={"If-Match": "*"}
        )

    async def delete(self, entity_set: str, row_id: str) -> None:
        await self._client.send("DELETE", f"{entity_set}({quote(row_id, safe='-')})")
