"""Burst latency: many creates at once, each Spotler call slowed to 30 ms; time from the Dataverse save (its
webhook) to the contact landing in Spotler, with the local host's queue run as the Functions host runs it.

Two runs on fresh sandboxes: the host's semantics (a new batch as soon as no more than `newBatchThreshold`
messages are still running) and, for comparison, whole batches (the next batch only when the last is done).
Everything shares one process and two sandboxes, so absolute times depend on the machine; the ratio less so.

    AZURITE_CONNECTION_STRING=... .venv/bin/python bench/bench_burst.py --records 500 --batch-size 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from sandboxes.functions_host import LocalFunctionsHost
from sandboxes.spotler.store import SpotlerStore
from sandboxes.stack import sandbox_stack


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--call-ms", type=float, default=30.0)
    args = parser.parse_args()
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        print("Start Azurite first (./scripts/bench does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    runs = {
        f"host semantics (newBatchThreshold {args.batch_size // 2})": args.batch_size // 2,
        "whole batches": 0,
    }
    table = Table(
        title=f"{args.records} creates at once, {args.call_ms:.0f} ms per Spotler call, batchSize {args.batch_size}"
    )
    for column in ("queue", "p50 s", "p95 s", "max s"):
        table.add_column(column)
    p95s = []
    for label, threshold in runs.items():
        latencies = asyncio.run(burst(connection_string, args.records, args.batch_size, threshold, args.call_ms, label))
        p95 = _percentile(latencies, 0.95)
        p95s.append(p95)
        table.add_row(label, f"{statistics.median(latencies):.2f}", f"{p95:.2f}", f"{max(latencies):.2f}")
    table.add_row("p95 ratio (host ÷ whole batches)", "", f"{p95s[0] / p95s[1]:.2f}×", "")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
