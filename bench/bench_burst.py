"""Burst latency: many creates at once, each Spotler call slowed to 30 ms; time from the Dataverse save (its
webhook) to the contact landing in Spotler, with the local host's queue run as the Functions host runs it.

Two runs on fresh sandboxes: the host's semantics (a new batch as soon as no more than `newBatchThreshold`
messages are still running) and, for comparison, whole batches (the next batch only when the last is done).
Spotler and Dataverse each run in their own process (`python -m sandboxes.spotler`, `python -m sandboxes.dataverse`),
as they are separate services in production; the connector (webhook endpoint and queue handlers) runs in this one.
The webhook is registered as `dataverse setup` registers it (post-images). `--in-process` runs everything in one
process and event loop, as earlier versions of this benchmark did. Absolute times depend on the machine; the ratio
less so.

    AZURITE_CONNECTION_STRING=... .venv/bin/python bench/bench_burst.py --records 500 --batch-size 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from sandboxes._server import free_port
from sandboxes.dataverse.store import APP_USER_ID
from sandboxes.functions_host import LocalFunctionsHost
from sandboxes.spotler.store import SpotlerStore
from sandboxes.stack import KEY, SECRET, TOKEN, WEBHOOK_KEY, sandbox_stack
from sync_core.dataverse.webhook import post_image_alias
from sync_core.domain.records import ENTITY_NAMES
from sync_core.services.runtime import get_runtime

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_WORKERS = 8
"""Webhook deliveries the Dataverse sandbox sends at a time (its default of one sends a burst one by one)."""


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def burst(
    connection_string: str, records: int, batch_size: int, threshold: int, call_ms: float, label: str = ""
) -> list[float]:
    """Seconds from each create to its contact's first write in Spotler."""
    landed: dict[str, float] = {}
    original = SpotlerStore._insert_one

    def timed_insert(store: SpotlerStore, contact: object, **kwargs: Any) -> Any:
        outcome = original(store, contact, **kwargs)
        if isinstance(contact, dict) and isinstance(contact.get("externalId"), str):
            landed.setdefault(contact["externalId"], time.monotonic())
        return outcome

    SpotlerStore._insert_one = timed_insert  # type: ignore[method-assign]
    try:
        with sandbox_stack(connection_string, name="burst") as stack:
            spotler, dataverse = stack.spotler, stack.dataverse
            async with LocalFunctionsHost(stack.settings, visibility_timeout=30) as host:
                host.register_webhooks(dataverse, key=stack.webhook_key)
                spotler.inject_fault("*", "delay", delay=call_ms / 1000, times=None)
                worker = asyncio.create_task(
                    host.run_queue(
                        idle_rounds=40,
                        max_rounds=100_000,
                        poll_seconds=0.05,
                        batch_size=batch_size,
                        new_batch_threshold=threshold,
                    )
                )
                sent: dict[str, float] = {}
                for i in range(records):
                    started = time.monotonic()
                    record_id = dataverse.create(
                        "contact",
                        {"firstname": f"Burst{i}", "lastname": "Person", "emailaddress1": f"burst{i}@example.nl"},
                    )
                    sent[record_id] = started
                await asyncio.to_thread(dataverse.drain, timeout=600.0)
                intake_done = time.monotonic() - min(sent.values())
                await worker
                print(f"{label}: every webhook answered {intake_done:.1f} s after the first save")
                spotler.clear_faults()
    finally:
        SpotlerStore._insert_one = original  # type: ignore[method-assign]
    missing = [r for r in sent if r not in landed]
    if missing:
        raise SystemExit(f"{len(missing)} creates never reached Spotler")
    return [landed[r] - sent[r] for r in sent]


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """A sandbox server started from this checkout (its output is not needed)."""
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


@contextlib.asynccontextmanager
async def sandbox_processes(connection_string: str, name: str) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """Spotler and Dataverse sandboxes in processes of their own: (Spotler URL, Dataverse URL, connector settings)."""
    sp_port, dv_port = free_port(), free_port()
    commands = [
        [sys.executable, "-m", "sandboxes.spotler", "--port", str(sp_port), "--consumer-key", KEY],
        [sys.executable, "-m", "sandboxes.dataverse", "--port", str(dv_port), "--token", TOKEN, "--webhook-workers"],
    ]
    commands[0] += ["--consumer-secret", SECRET]
    commands[1] += [str(WEBHOOK_WORKERS)]
    processes = [_spawn(command) for command in commands]
    spotler_url, dataverse_url = f"http://127.0.0.1:{sp_port}", f"http://127.0.0.1:{dv_port}"
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for url in (f"{spotler_url}/_sandbox/calls", f"{dataverse_url}/_sandbox/requests"):
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise SystemExit(f"sandbox at {url} did not start")
        run = uuid.uuid4().hex[:8]
        yield (
            spotler_url,
            dataverse_url,
            {
                "AzureWebJobsStorage": connection_string,
                "SYNC_TABLE_PREFIX": f"{name}{run}",
                "SYNC_QUEUE_NAME": f"{name}-{run}",
                "SPOTLER_BASE_URL": spotler_url,
                "SPOTLER_CONSUMER_KEY": KEY,
                "SPOTLER_CONSUMER_SECRET": SECRET,
                "DATAVERSE_URL": dataverse_url,
                "DATAVERSE_AUTH": "static_token",
                "DATAVERSE_STATIC_TOKEN": TOKEN,
                "DATAVERSE_APP_USER_ID": APP_USER_ID,
                "WEBHOOK_SECRET": WEBHOOK_KEY,
                "SUPPRESSION_HASH_KEY": f"{name}-suppression-hash-key",
            },
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


async def burst_separate(
    connection_string: str, records: int, batch_size: int, threshold: int, call_ms: float, label: str = ""
) -> list[float]:
    """As `burst`, with the sandboxes in their own processes; landing times are Spotler's `created` stamps."""
    async with (
        sandbox_processes(connection_string, "burst") as (spotler_url, dataverse_url, settings),
        httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=900.0)) as client,
        LocalFunctionsHost(settings, visibility_timeout=30) as host,
    ):
        runtime = get_runtime()
        for entity in ENTITY_NAMES:
            mapping = runtime.mapping.for_entity(entity)
            if mapping is None:
                continue
            columns = sorted(mapping.columns())
            for messages, image in ((["Create", "Update"], "post_image"), (["Delete"], "pre_image")):
                registration = {
                    "url": f"{host.url}/api/dynamics/webhook?code={WEBHOOK_KEY}",
                    "entity": entity,
                    "messages": messages,
                    "auth_type": "webhook_key",
                    "auth_value": WEBHOOK_KEY,
                    "filtering_attributes": sorted(mapping.watched_columns()),
                    image: columns,
                    "post_image_alias": post_image_alias(columns),
                }
                (await client.post(f"{dataverse_url}/_sandbox/webhooks", json=registration)).raise_for_status()
        fault = {"endpoint": "*", "kind": "delay", "delay": call_ms / 1000, "times": None}
        (await client.post(f"{spotler_url}/_sandbox/faults", json=fault)).raise_for_status()
        worker = asyncio.create_task(
            host.run_queue(
                idle_rounds=60,
                max_rounds=100_000,
                poll_seconds=0.05,
                batch_size=batch_size,
                new_batch_threshold=threshold,
            )
        )
        sent: dict[str, float] = {}
        for i in range(records):
            started = time.time()
            attributes = {"firstname": f"Burst{i}", "lastname": "Person", "emailaddress1": f"burst{i}@example.nl"}
            response = await client.post(
                f"{dataverse_url}/_sandbox/rows/contact", json={"attributes": attributes, "fire_webhooks": True}
            )
            response.raise_for_status()
            sent[str(response.json()["contactid"])] = started
        (await client.post(f"{dataverse_url}/_sandbox/webhooks/drain", json={"timeout": 600})).raise_for_status()
        print(f"{label}: every webhook answered {time.time() - min(sent.values()):.1f} s after the first save")
        await worker
        await client.delete(f"{spotler_url}/_sandbox/faults")
        contacts = (await client.get(f"{spotler_url}/_sandbox/contacts")).json()
    landed = {str(c["externalId"]): float(c["created"]) / 1000 for c in contacts if c.get("externalId") in sent}
    missing = [r for r in sent if r not in landed]
    if missing:
        raise SystemExit(f"{len(missing)} creates never reached Spotler")
    return [landed[r] - sent[r] for r in sent]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--call-ms", type=float, default=30.0)
    parser.add_argument(
        "--in-process", action="store_true", help="sandboxes, webhook endpoint and handlers in one process"
    )
    args = parser.parse_args()
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        print("Start Azurite first (./scripts/bench does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    runs = {
        f"host semantics (newBatchThreshold {args.batch_size // 2})": args.batch_size // 2,
        "whole batches": 0,
    }
    where = "one process" if args.in_process else "sandboxes in their own processes"
    table = Table(
        title=f"{args.records} creates at once, {args.call_ms:.0f} ms per Spotler call, batchSize {args.batch_size}"
        f" ({where})"
    )
    for column in ("queue", "p50 s", "p95 s", "max s"):
        table.add_column(column)
    p95s = []
    run = burst if args.in_process else burst_separate
    for label, threshold in runs.items():
        latencies = asyncio.run(run(connection_string, args.records, args.batch_size, threshold, args.call_ms, label))
        p95 = _percentile(latencies, 0.95)
        p95s.append(p95)
        table.add_row(label, f"{statistics.median(latencies):.2f}", f"{p95:.2f}", f"{max(latencies):.2f}")
    table.add_row("p95 ratio (host ÷ whole batches)", "", f"{p95s[0] / p95s[1]:.2f}×", "")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
