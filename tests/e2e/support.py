"""Small helpers the end-to-end tests share: the connector's HTTP routes and what the sandboxes saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Connector

# A mapping with two-way name and e-mail fields (and phone ⬅), shipped as an example for Spotler profile forms.
PROFILE_FORM_MAPPING = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "profile-update-form.json")


async def api(connector: Connector, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(method, f"{connector.host.url}/api/{path}")


async def status(connector: Connector, entity: str, record_id: str) -> dict[str, Any]:
    response = await api(connector, "GET", f"status/{entity}/{record_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def reason(connector: Connector, entity: str, record_id: str) -> str:
    return str((await status(connector, entity, record_id))["reason"])


def spotler_contact(connector: Connector, record_id: str) -> dict[str, Any]:
    contact = connector.spotler.store.contact(record_id)
    assert contact is not None, f"no Spotler contact with externalId {record_id}"
    return contact


def permission(connector: Connector, record_id: str, bit: int) -> bool | None:
    for item in spotler_contact(connector, record_id)["properties"].get("permissions", []):
        if item["bit"] == bit:
            return bool(item["enabled"])
    return None


def spotler_writes(connector: Connector) -> dict[str, int]:
    return {k: v for k, v in connector.spotler.store.call_counts().items() if k.startswith(("POST", "PUT"))}
