"""Benchmark of the running connector: webhook → queue → push, and the pull, on the sandboxes and Azurite.

Everything runs through the handlers of function_app.py, as in the demo, with both sandboxes in the same
process (they share its interpreter lock, so the timings understate a deployment). The figures that do not
depend on the machine are the calls each change costs (Spotler, Dataverse); the timings are for comparing
runs on one machine, and the ratio of pull to push throughput is printed as well.

    ./scripts/bench                                    # starts Azurite, runs this and bench_plan.py
    AZURITE_CONNECTION_STRING=... .venv/bin/python bench/bench_connector.py --records 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from sandboxes.functions_host import LocalFunctionsHost
from sandboxes.stack import sandbox_stack

PROFILE_FORM = Path(__file__).resolve().parents[1] / "docs" / "examples" / "profile-update-form.json"


def _per(total: int, n: int) -> str:
    return f"{total / n:.2f}" if n else "-"


async def run(connection_string: str, records: int, page_size: int) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    # The profile-form mapping syncs names both ways (the default mapping only writes Spotler): the pull has work.
    with sandbox_stack(
        connection_string, name="bench", PULL_PAGE_SIZE=str(page_size), MAPPING_FILE=str(PROFILE_FORM)
    ) as stack:
        spotler, dataverse = stack.spotler, stack.dataverse
        async with LocalFunctionsHost(stack.settings) as host:
            host.register_webhooks(dataverse, key=stack.webhook_key)

            async def measure(label: str, action: object, n: int) -> float:
                spotler.reset_call_counts()
                dv_before = dataverse.request_count()
                started = time.perf_counter()
                await action  # type: ignore[misc]
                elapsed = time.perf_counter() - started
                sp_calls = sum(spotler.call_counts().values())
                dv_calls = dataverse.request_count() - dv_before
                rate = n / elapsed if elapsed else 0.0
                rows.append((label, str(n), f"{rate:,.0f}/s", _per(sp_calls, n), _per(dv_calls, n)))
                return rate

            intake_seconds: list[float] = []

            async def push_all() -> None:
                started = time.perf_counter()
                ids.extend(
                    dataverse.create(
                        "contact",
                        {"firstname": f"Bench{i}", "lastname": "Person", "emailaddress1": f"bench{i}@example.nl"},
                    )
                    for i in range(records)
                )
                await asyncio.to_thread(dataverse.drain, timeout=600.0)
                intake_seconds.append(time.perf_counter() - started)
                await host.run_queue(idle_rounds=2, poll_seconds=0.05)

            ids: list[str] = []
            push_rate = await measure("create → webhook → queue → Spotler", push_all(), records)
            intake_rate = f"{records / intake_seconds[0]:,.0f}/s"
            rows.append(("  of which webhook intake (202)", str(records), intake_rate, "", ""))
            await asyncio.sleep(0.05)
            await host.run_timer()  # the creations' own echoes

            for n, record_id in enumerate(ids):
                spotler.profile_edit(record_id, properties={"firstName": f"Edited{n}"})
            # The sandbox stamps quick successive edits a millisecond apart, which can run ahead of the wall
            # clock; a pull reads only changes before its start, so let the clock catch up.
            await asyncio.sleep(1.0)
            pull_rate = await measure("profile edit → pull → Dataverse", host.run_timer(), records)
            await asyncio.sleep(0.05)
            await measure("pull of unchanged contacts (echo)", host.run_timer(), records)
            wrong = [
                record_id
                for n, record_id in enumerate(ids)
                if (dataverse.row("contact", record_id) or {}).get("firstname") != f"Edited{n}"
            ]
            if wrong:
                raise SystemExit(f"{len(wrong)} rows did not receive their pulled change")
            rows.append(("pull ÷ push throughput", "", f"{pull_rate / push_rate:.2f}×" if push_rate else "-", "", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        print("Start Azurite first (./scripts/bench does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    rows = asyncio.run(run(connection_string, args.records, args.page_size))
    table = Table(title=f"connector on the sandboxes, {args.records} contacts, pull pages of {args.page_size}")
    for column in ("path", "changes", "throughput", "Spotler calls / change", "Dataverse requests / change"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
