"""The repair of dropped webhooks: the connector's reconciliation run (Dataverse change tracking), as one step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.convergence.runner import Reconcile
    from tests.convergence.world import World


async def run_reconcile(world: World) -> dict[str, Any]:
    """Start a reconciliation run through its route and drive the bulk queue until it ends; its summary."""
    url = world.c.host.url
    async with httpx.AsyncClient(timeout=120) as http:
        # The random world deactivates people in bursts by design: the mass-change guard is told to let it through.
        response = await http.post(f"{url}/api/bulk/reconcile", json={"allowMassChanges": True})
        assert response.status_code == 202, response.text
        run_id = str(response.json()["run"])
        await world.c.host.run_bulk(run_id)
        response = await http.get(f"{url}/api/bulk/runs/{run_id}")
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    assert summary["phase"] == "done", summary
    world.stats.reconciled += int(summary.get("apply", {}).get("records", 0))
    return summary


def reconcile_step() -> Reconcile | None:
    """The reconciliation run to call once the faults stop."""

    async def step(world: World) -> None:
        await run_reconcile(world)

    return step
