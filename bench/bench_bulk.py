"""Benchmark of a backfill: the command line (`python -m sync_core backfill`) on the sandboxes and Azurite.

The sandboxes run in this process, seeded with a CRM of `--records` rows (sandboxes/bulk_data.py); the connector
runs as a child process, exactly as an operator runs it, so its peak memory is its own. The Spotler sandbox is
limited to `--rate` calls per second; the ceiling of a backfill is then rate × 100 contacts per second (one
bulk insert of 100 contacts per call). Printed: the write rate of the apply phase against that ceiling,
Spotler calls and Dataverse requests per record, the child's peak memory, and, with `--dry-run`, the writes
both sandboxes saw (must be 0).

    ./scripts/bench-bulk --records 10000 --rate 5
    AZURITE_CONNECTION_STRING=... .venv/bin/python bench/bench_bulk.py --records 10000 --rate 5 [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from sandboxes.bulk_data import load_crm
from sandboxes.stack import sandbox_stack

ROOT = Path(__file__).resolve().parents[1]
PACE_SHARE = 0.95
"""The connector is paced a little under the sandbox's limit: timer and scheduling jitter would otherwise earn 429s."""


def _seconds(doc: dict[str, object], start_key: str) -> float:
    started = doc.get("phaseStarted", {}).get(start_key)  # type: ignore[union-attr]
    finished = doc.get("finished")
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hwm_kib(pid: int) -> int:
    """The process's own peak resident set (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


def _run_measured(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the command; its answer and its own peak RSS in KiB.

    Not `ru_maxrss` of the children: a child's high-water mark includes the pages it shared with this process
    between fork and exec, and this process holds both sandboxes and the whole seeded CRM. The child's VmHWM
    is its own, read every 0.2 s while it runs (it only grows).
    """
    peak = 0
    with subprocess.Popen(  # noqa: S603 (the command is built above from fixed parts)
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, _hwm_kib(child.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stdout, stderr = child.communicate()
        done.set()
        watcher.join()
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr), peak


async def run(
    connection_string: str,
    records: int,
    rate: float,
    dry_run: bool,
    concurrency: int,
    pace: float | None = None,
    trace_memory: str | None = None,
    profile: str | None = None,
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with sandbox_stack(connection_string, name="bulk") as stack:
        crm = load_crm(stack.dataverse, stack.spotler, records)
        stack.spotler.set_rate_limit(rate)
        stack.spotler.reset_call_counts()
        dv_before = stack.dataverse.request_counts()
        env = {
            **os.environ,
            **stack.settings,
            "BULK_CONCURRENCY": str(concurrency),
            "SPOTLER_MAX_ATTEMPTS": "20",
            "SPOTLER_CALLS_PER_SECOND": str(pace if pace is not None else round(rate * PACE_SHARE, 3)),
        }
        command = [sys.executable, "-m", "sync_core", "backfill", "--json"] + (["--dry-run"] if dry_run else [])
        if trace_memory:
            command[1:3] = [str(ROOT / "bench" / "trace_memory.py"), trace_memory]
        elif profile:
            command[1:1] = ["-m", "cProfile", "-o", profile]
        started = time.perf_counter()
        cpu_before = _children_cpu()
        result, peak_kib = await asyncio.to_thread(_run_measured, command, env)
        elapsed = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        if result.returncode != 0:
            raise SystemExit(f"backfill failed ({result.returncode}): {result.stderr[-2000:]}")
        doc = json.loads(result.stdout[result.stdout.index("{") :])
        spotler_calls = stack.spotler.call_counts()
        total_calls = sum(spotler_calls.values())
        dv_after = stack.dataverse.request_counts()
        dv_calls = sum(dv_after.values()) - sum(dv_before.values())
        dv_writes = sum(v for k, v in dv_after.items() if not k.startswith("GET")) - sum(
            v for k, v in dv_before.items() if not k.startswith("GET")
        )
        sp_writes = sum(v for k, v in spotler_calls.items() if k.startswith(("POST", "PUT")))
        phase = doc["apply"] if not dry_run else doc["assess"]
        rows.append(("records (contacts, leads, accounts)", f"{crm.total:,}"))
        rows.append(("run", f"{doc['run']} → {doc['phase']}"))
        rows.append(("whole run, wall clock", f"{elapsed:,.1f} s ({crm.total / elapsed:,.0f} records/s)"))
        if not dry_run:
            apply_seconds = _seconds(doc, "apply")
            written = sum(n for k, n in phase["outcomes"].items() if k.split("/")[0] in ("create", "update"))
            ceiling = rate * 100
            achieved = written / apply_seconds if apply_seconds else 0.0
            rows.append(("contacts written (apply phase)", f"{written:,} in {apply_seconds:,.1f} s"))
            rows.append(
                ("contacts written per second", f"{achieved:,.0f} of ceiling {ceiling:,.0f} ({achieved / ceiling:.0%})")
            )
            rows.append(("Spotler in the end (contacts)", f"{len(stack.spotler.contacts()):,}"))
        throttled = spotler_calls.get("POST /contact/list", 0) - phase.get("spotlerWrites", 0)
        rows.append(("Spotler calls / record (all answers)", f"{total_calls / crm.total:.4f} ({total_calls:,})"))
        rows.append(("  of which bulk inserts that were answered 429", f"{max(0, throttled):,}"))
        rows.append(("Dataverse requests / record", f"{dv_calls / crm.total:.5f} ({dv_calls})"))
        rows.append(("writes seen by the sandboxes", f"Spotler {sp_writes:,}, Dataverse {dv_writes:,}"))
        rows.append(("CPU time of the command", f"{cpu:,.1f} s ({cpu * 1000 / crm.total:,.1f} ms per record)"))
        rows.append(("peak memory of the command (RSS)", f"{peak_kib / 1024:,.0f} MiB"))
        rows.append(("outcomes", json.dumps(phase["outcomes"])))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5.0, help="Spotler sandbox calls per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument(
        "--pace",
        type=float,
        default=None,
        help="SPOTLER_CALLS_PER_SECOND of the connector (default: 0.95 x --rate; 0 sends unpaced)",
    )
    parser.add_argument("--trace-memory", metavar="PATH", help="run the command under tracemalloc; write to PATH")
    parser.add_argument("--profile", metavar="PATH", help="run the command under cProfile; write its stats to PATH")
    args = parser.parse_args()
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        print("Start Azurite first (./scripts/bench-bulk does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    rows = asyncio.run(
        run(
            connection_string,
            args.records,
            args.rate,
            args.dry_run,
            args.concurrency,
            args.pace,
            args.trace_memory,
            args.profile,
        )
    )
    mode = " --dry-run" if args.dry_run else ""
    title = f"backfill{mode}, {args.records:,} records, Spotler limited to {args.rate:g} calls/s"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
