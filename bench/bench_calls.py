"""Calls per change: Spotler calls, Dataverse requests and Table Storage operations each kind of change costs.

Runs the connector through the handlers of function_app.py on both sandboxes and Azurite, with the webhook
registered the way `python -m sync_core dataverse setup` registers it (Create and Update with a post-image of
every column the push reads, Delete with a pre-image). Spotler calls and Dataverse requests are counted by the
sandboxes; Table Storage operations (and queue operations) by a counter on the storage SDK's HTTP transport.
The counts do not depend on the machine.

    AZURITE_CONNECTION_STRING=... .venv/bin/python bench/bench_calls.py --records 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.core.pipeline.transport import AioHttpTransport
from rich.console import Console
from rich.table import Table

from sandboxes.functions_host import LocalFunctionsHost
from sandboxes.stack import sandbox_stack
from sync_core.dataverse.webhook import post_image_alias
from sync_core.domain.records import ENTITY_NAMES
from sync_core.services.runtime import get_runtime

PROFILE_FORM_MAPPING = Path(__file__).resolve().parents[1] / "docs" / "examples" / "profile-update-form.json"


class StorageCounter:
    """Counts requests the storage SDKs send, per service (by endpoint), split into reads and writes."""

    def __init__(self, connection_string: str) -> None:
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        self.netlocs = {
            urlsplit(parts.get("TableEndpoint", "")).netloc: "table",
            urlsplit(parts.get("QueueEndpoint", "")).netloc: "queue",
        }
        self.counts: Counter[str] = Counter()
        self._original = AioHttpTransport.send

    def install(self) -> None:
        counter, original = self, self._original

        async def send(transport: AioHttpTransport, request: Any, **kwargs: Any) -> Any:
            service = counter.netlocs.get(urlsplit(request.url).netloc)
            if service is not None:
                kind = "read" if request.method in ("GET", "HEAD") else "write"
                counter.counts[f"{service} {kind}"] += 1
            return await original(transport, request, **kwargs)

        AioHttpTransport.send = send  # type: ignore[method-assign]

    def reset(self) -> None:
        self.counts.clear()


def _per(total: int, n: int) -> str:
    return f"{total / n:.2f}".rstrip("0").rstrip(".") if n else "-"


async def run(connection_string: str, records: int) -> list[tuple[str, ...]]:
    counter = StorageCounter(connection_string)
    counter.install()
    rows: list[tuple[str, ...]] = []
    # The profile-form mapping syncs names both ways, so a Spotler edit has something to pull.
    with sandbox_stack(connection_string, name="calls", MAPPING_FILE=str(PROFILE_FORM_MAPPING)) as stack:
        spotler, dataverse = stack.spotler, stack.dataverse
        async with LocalFunctionsHost(stack.settings) as host:
            runtime = get_runtime()
            key = stack.webhook_key
            for entity in ENTITY_NAMES:
                mapping = runtime.mapping.for_entity(entity)
                if mapping is None:
                    continue
                columns = tuple(mapping.columns())
                for messages, image in (({"Create", "Update"}, "post"), ({"Delete"}, "pre")):
                    dataverse.register_webhook(
                        url=f"{host.url}/api/dynamics/webhook?code={key}",
                        entity=entity,
                        messages=frozenset(messages),
                        auth_type="webhook_key",
                        auth_value=key,
                        filtering_attributes=frozenset(mapping.watched_columns()),
                        pre_image=columns if image == "pre" else None,
                        post_image=columns if image == "post" else None,
                        post_image_alias=post_image_alias(columns),
                    )

            async def measure(label: str, n: int, action: Any) -> None:
                await asyncio.sleep(0.05)
                spotler.reset_call_counts()
                dv_before = dataverse.request_count()
                counter.reset()
                await action()
                sp = sum(spotler.call_counts().values())
                dv = dataverse.request_count() - dv_before
                table = counter.counts["table read"] + counter.counts["table write"]
                rows.append(
                    (
                        label,
                        _per(sp, n),
                        _per(dv, n),
                        f"{_per(table, n)} ({_per(counter.counts['table write'], n)} writes)",
                        _per(counter.counts["queue read"] + counter.counts["queue write"], n),
                        ", ".join(f"{k} {v}" for k, v in sorted(spotler.call_counts().items())),
                    )
                )

            async def pushed() -> None:
                await asyncio.to_thread(dataverse.drain, timeout=120.0)
                await host.run_queue(idle_rounds=2, poll_seconds=0.05)

            ids: list[str] = []

            async def create() -> None:
                ids.extend(
                    dataverse.create(
                        "contact",
                        {"firstname": f"Calls{i}", "lastname": "Person", "emailaddress1": f"calls{i}@example.nl"},
                    )
                    for i in range(records)
                )
                await pushed()

            async def edit() -> None:
                for i, record_id in enumerate(ids):
                    dataverse.edit("contact", record_id, {"lastname": f"Edited{i}"})
                await pushed()

            async def unchanged() -> None:
                for i, record_id in enumerate(ids):
                    dataverse.edit("contact", record_id, {"lastname": f"Edited{i}"})
                await pushed()

            async def pull() -> None:
                await host.run_timer()

            await measure("create", records, create)
            await host.run_timer()  # the creations' own echoes
            for i, record_id in enumerate(ids):
                spotler.profile_edit(record_id, properties={"firstName": f"Pulled{i}"})
            await asyncio.sleep(1.0)  # a pull reads only changes from before its start
            await measure("pulled change", records, pull)
            wrong = [
                r for i, r in enumerate(ids) if (dataverse.row("contact", r) or {}).get("firstname") != f"Pulled{i}"
            ]
            if wrong:
                raise SystemExit(f"{len(wrong)} rows did not receive their pulled change")
            await pushed()  # the write-backs' own webhooks (the connector's user: ignored)
            await measure("one-field edit", records, edit)
            await measure("unchanged save", records, unchanged)
            await measure("unchanged save, again", records, unchanged)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20)
    args = parser.parse_args()
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        print("Start Azurite first (./scripts/bench does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    rows = asyncio.run(run(connection_string, args.records))
    table = Table(title=f"calls per change, {args.records} contacts (webhook with post-images, as setup registers it)")
    for column in ("change", "Spotler calls", "Dataverse requests", "Table Storage ops", "queue ops", "Spotler detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
