"""One run of a world (a fresh connector, empty sandboxes, its own tables), and the shrinking of a failure."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_core.domain.mapping import default_mapping_text
from tests.convergence.invariants import Violation, check, dataverse_writes, explain, spotler_writes
from tests.convergence.operations import EXCLUDED_JOB_TITLE, Op
from tests.convergence.world import SPOTLER_TIMEOUT, World, norm
from tests.e2e.conftest import ConnectorFactory
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

Reconcile = Callable[[World], Awaitable[None]]


def world_mapping(directory: Path) -> str:
    """The default mapping with two-way names (Spotler profile forms) and a filter that excludes interns."""
    mapping = json.loads(default_mapping_text())
    for entity in ("contact", "lead"):
        spec = mapping["entities"][entity]
        for item in spec["fields"]:
            if item["dataverse"] in ("firstname", "lastname"):
                item["direction"] = "both"
        spec["exclude"] = [
            {"attribute": "jobtitle", "equals": EXCLUDED_JOB_TITLE, "description": "interns are not mailed"}
        ]
    path = directory / "convergence-mapping.json"
    path.write_text(json.dumps(mapping, indent=2))
    return str(path)


@dataclass
class RunResult:
    violations: list[Violation]
    world: World
    seconds: float
    spotler_writes: int
    dataverse_writes: int
    dead_letters: int
    spotler_calls: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Arena:
    """What a run needs from the test session: the connector factory and the two sandboxes."""

    factory: ConnectorFactory
    dataverse: DataverseSandboxHandle
    spotler: SpotlerSandbox
    mapping_file: str
    reconcile: Reconcile | None = None

    async def run(self, ops: Sequence[Op], *, seed: int, faults: bool) -> RunResult:
        self.dataverse.sandbox.reset()
        self.spotler.store.reset()
        prefix = "cv" + uuid.uuid4().hex[:10]
        started = time.monotonic()
        async with self.factory(
            MAPPING_FILE=self.mapping_file,
            SYNC_TABLE_PREFIX=prefix,
            SYNC_QUEUE_NAME=f"{prefix}-events",
            SPOTLER_TIMEOUT_SECONDS=str(SPOTLER_TIMEOUT),
            SPOTLER_MAX_ATTEMPTS="2",
            MAX_DELIVERY_ATTEMPTS="3",
            PULL_PAGE_SIZE="25",
            # The random world deactivates and deletes people in bursts by design; the guard is tested elsewhere.
            MASS_CHANGE_LIMIT="1000000",
            MASS_CHANGE_SHARE="1.0",
        ) as connector:
            world = World(connector, seed=seed, faults=faults)
            world.fast_retries()
            for op in ops:
                await world.apply(op)
            await world.settle(reconcile=self.reconcile)
            sp_before, dv_before = spotler_writes(world), dataverse_writes(world)
            dv_seen = len(world.dv.writes)
            calls = sum(world.sp.call_counts().values())
            for _ in range(2):  # settled: an idle pull and push write nothing
                await world.pull()
                await world.run_queue()
            quiet = (spotler_writes(world) - sp_before, dataverse_writes(world) - dv_before)
            late = [w for w in world.dv.writes[dv_seen:] if w.user_id == world.c.dataverse.app_user_id]
            violations = await check(world, quiet_writes=quiet, late_dataverse=late)
            dead = len(await world.dead_letters())
            distinct = list({v.slots: v for v in violations}.values())[:4]
            notes = [line for v in distinct for line in [str(v), *await explain(world, v)]]
        return RunResult(violations, world, time.monotonic() - started, sp_before, dv_before, dead, calls, notes)


def related_slots(ops: Sequence[Op], world: World, slots: Sequence[int]) -> set[int]:
    """`slots` and their neighbours: slots sharing an operation or an address (ever held) with one of them."""
    related = set(slots)
    addresses = {norm(a) for s in slots for a in world.emails.get(s, [])}
    for op in ops:
        if set(op.slots) & set(slots):
            related |= set(op.slots)
    for slot, history in world.emails.items():
        if addresses & {norm(a) for a in history}:
            related.add(slot)
    return related


@dataclass
class Shrunk:
    ops: list[Op]
    failure: Violation
    world: World
    faults: bool
    confirmed: bool  # the shortened list was run and broke the same invariant
    trials: int
    notes: list[str] = field(default_factory=list)  # the end state of the records involved


async def shrink(
    arena: Arena, ops: list[Op], failure: Violation, world: World, *, seed: int, faults: bool, budget_seconds: float
) -> Shrunk:
    """A short operation list that still breaks the same invariant.

    First the operations on the people involved (every slot that shared an address or an operation with them),
    without faults if the failure does not need them; then delta debugging (ddmin) until the budget runs out.
    """
    deadline = time.monotonic() + budget_seconds
    trials = 0

    async def fails(candidate: list[Op], with_faults: bool) -> tuple[Violation, World, list[str]] | None:
        nonlocal trials
        trials += 1
        result = await arena.run(candidate, seed=seed, faults=with_faults)
        same = [v for v in result.violations if v.invariant == failure.invariant]
        if failure.slots:  # prefer the same person
            same.sort(key=lambda v: not set(v.slots) & set(failure.slots))
        return (same[0], result.world, result.notes) if same else None

    best = Shrunk(ops, failure, world, faults, True, 0)
    slots = related_slots(ops, world, failure.slots) if failure.slots else set()
    if slots:
        focused = [op for op in ops if set(op.slots) & slots or op.kind in ("deliver", "pull")]
        focused = [op for op in focused if not op.kind.startswith("net_")] or focused
        for with_faults in (False, True) if faults else (False,):
            hit = await fails(focused, with_faults)
            if hit is not None:
                best = Shrunk(focused, hit[0], hit[1], with_faults, True, trials, hit[2])
                break
        else:
            return Shrunk(focused, failure, world, faults, False, trials)
    chunks = 2
    while len(best.ops) > 1 and time.monotonic() < deadline:
        size = max(1, len(best.ops) // chunks)
        reduced = False
        for start in range(0, len(best.ops), size):
            if time.monotonic() >= deadline:
                break
            candidate = best.ops[:start] + best.ops[start + size :]
            hit = await fails(candidate, best.faults)
            if hit is not None:
                best = Shrunk(candidate, hit[0], hit[1], best.faults, True, trials, hit[2])
                chunks = max(chunks - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            chunks = min(len(best.ops), chunks * 2)
    best.trials = trials
    return best


def reproduction(seed: int, shrunk: Shrunk) -> str:
    """The readable report of a failure: the seed, the invariant, and the operations that replay it."""
    ops, failure, world, faults = shrunk.ops, shrunk.failure, shrunk.world, shrunk.faults
    status = "replays the failure" if shrunk.confirmed else "the person's operations; did not replay alone"
    lines = [
        f"convergence seed {seed}: invariant '{failure.invariant}' broken",
        f"  {failure}",
        f"  shortest reproduction found ({len(ops)} operations, faults {'on' if faults else 'off'}, {status}, "
        f"{shrunk.trials} trial runs):",
    ]
    for op in ops:
        record = world.records.get(op.slot)
        where = f"  [{record[0]} {record[1][:8]}]" if record else ""
        resolved = f" -> {world.resolved[op.seq]}" if op.seq in world.resolved else ""
        lines.append(f"    {op.describe()}{resolved}{where}")
    if shrunk.notes:
        lines.append("  end state of the shortened run:")
        lines.extend(f"  {line}" for line in shrunk.notes)
    seqs = ",".join(str(op.seq) for op in ops)
    lines.append(
        f"  replay: CONVERGENCE_SEED={seed} CONVERGENCE_REPLAY={seqs} CONVERGENCE_FAULTS={int(faults)} "
        ".venv/bin/python -m pytest -s -p no:cacheprovider tests/convergence"
    )
    return "\n".join(lines)


def summary(result: RunResult, *, seed: int, operations: int, records: int) -> dict[str, Any]:
    stats = result.world.stats
    return {
        "seed": seed,
        "records": records,
        "operations": operations,
        "changes": stats.changes,
        "seconds": round(result.seconds, 1),
        "spotler_calls": result.spotler_calls,
        "spotler_faults": stats.spotler_faults,
        "spotler_fault_rate": round(stats.spotler_faults / max(1, result.spotler_calls), 3),
        "dataverse_faults": stats.dataverse_faults,
        "webhooks_duplicated_rounds": stats.webhooks_duplicated,
        "webhooks_reordered": stats.webhooks_reordered,
        "webhooks_dropped": stats.webhooks_dropped,
        "reconciled_records": stats.reconciled,
        "pulls": stats.pulls,
        "pulls_cut": stats.pulls_cut,
        "pulls_failed": stats.pulls_failed,
        "crashes": stats.crashes,
        "spotler_writes": result.spotler_writes,
        "dataverse_writes": result.dataverse_writes,
        "spotler_writes_per_change": round(result.spotler_writes / max(1, stats.changes), 2),
        "dead_letters_left": result.dead_letters,
        "seconds_by_step": {k: round(v, 1) for k, v in stats.seconds.most_common(6)},
    }
