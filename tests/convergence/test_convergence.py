"""Proof under stress: a seeded random world on both systems, with faults, converges and keeps every promise.

CI runs one seed at the size below; `scripts/convergence` runs the larger size by hand (bench/README.md).
Environment: CONVERGENCE_SEED or CONVERGENCE_SEEDS (comma-separated), CONVERGENCE_RECORDS,
CONVERGENCE_OPERATIONS, CONVERGENCE_FAULTS (0/1), CONVERGENCE_DROPS (0/1: lose webhooks; the reconciliation run
repairs them), CONVERGENCE_REPLAY (operation numbers of a printed reproduction), CONVERGENCE_SHRINK (0: report
without shrinking), CONVERGENCE_SHRINK_INVARIANT (shrink the first violation of this invariant),
CONVERGENCE_SHRINK_SECONDS, CONVERGENCE_STRICT (1: the open findings below fail the run too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.convergence.operations import generate
from tests.convergence.reconcile import reconcile_step
from tests.convergence.runner import Arena, reproduction, shrink, summary, world_mapping
from tests.e2e.conftest import ConnectorFactory
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

DEFAULT_SEED = 20261201
# Invariants some seeds still break (bench/README.md, "Convergence under faults", open findings). The default run
# reports them as an expected failure with the violations printed; CONVERGENCE_STRICT=1 fails on them like the
# rest. Every other invariant fails the run. None is open now: the CI seed passed strict on consecutive runs after
# the last fixes, so every invariant fails the run.
OPEN_INVARIANTS: frozenset[str] = frozenset()
# Sized to finish in under five minutes on two shared cores: 500 / 3,000 took eleven minutes and
# 250 / 1,500 four and a half (bench/README.md).
CI_RECORDS = 200
CI_OPERATIONS = 1200


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _seeds() -> list[int]:
    if os.environ.get("CONVERGENCE_SEEDS"):
        return [int(s) for s in os.environ["CONVERGENCE_SEEDS"].split(",") if s.strip()]
    return [_setting("CONVERGENCE_SEED", DEFAULT_SEED)]


async def test_a_random_world_with_faults_converges_and_keeps_every_promise(
    connector_factory: ConnectorFactory,
    dataverse_sandbox: DataverseSandboxHandle,
    spotler_sandbox: SpotlerSandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = _setting("CONVERGENCE_RECORDS", CI_RECORDS)
    operations = _setting("CONVERGENCE_OPERATIONS", CI_OPERATIONS)
    faults = bool(_setting("CONVERGENCE_FAULTS", 1))
    drops = bool(_setting("CONVERGENCE_DROPS", 1 if reconcile_step() is not None else 0))
    replay = os.environ.get("CONVERGENCE_REPLAY")
    arena = Arena(
        connector_factory, dataverse_sandbox, spotler_sandbox, world_mapping(tmp_path), reconcile=reconcile_step()
    )
    open_findings: list[str] = []
    for seed in _seeds():
        plan = generate(seed, records=records, operations=operations, drops=drops)
        ops = plan.ops
        if replay:
            wanted = {int(s) for s in replay.split(",")}
            ops = [op for op in ops if op.seq in wanted]
        with capsys.disabled():
            print(
                f"\nconvergence seed {seed}: {records} records, {operations} operations, faults {faults}, "
                f"dropped webhooks {drops}, {len(ops)} steps"
            )
        result = await arena.run(ops, seed=seed, faults=faults)
        with capsys.disabled():
            print("convergence " + json.dumps(summary(result, seed=seed, operations=operations, records=records)))
        if not result.violations:
            continue
        strict = os.environ.get("CONVERGENCE_STRICT") == "1"
        open_only = not strict and all(v.invariant in OPEN_INVARIANTS for v in result.violations)
        pick = os.environ.get("CONVERGENCE_SHRINK_INVARIANT")
        chosen = [v for v in result.violations if v.invariant == pick] if pick else []
        first = (chosen or result.violations)[0]
        with capsys.disabled():
            print(f"convergence seed {seed}: {len(result.violations)} violations, first: {first}")
            for violation in result.violations[1:10]:
                print(f"  also: {violation}")
            print("  end state of the records involved:")
            for line in result.notes:
                print(f"  {line}")
        if open_only:
            open_findings.append(f"seed {seed}: {first}")
            continue  # reported above; shrink it with CONVERGENCE_STRICT=1
        if os.environ.get("CONVERGENCE_SHRINK", "1") == "0":
            pytest.fail(f"convergence seed {seed}: {first}", pytrace=False)
        shrunk = await shrink(
            arena,
            ops,
            first,
            result.world,
            seed=seed,
            faults=faults,
            budget_seconds=float(os.environ.get("CONVERGENCE_SHRINK_SECONDS", "150")),
        )
        pytest.fail(reproduction(seed, shrunk), pytrace=False)
    if open_findings:
        pytest.xfail("open convergence findings: " + "; ".join(open_findings))
