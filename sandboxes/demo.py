"""The demo: a short scripted story on the two sandboxes, through the real handlers of function_app.py.

Azurite holds the connector's state and queue; the Dataverse sandbox delivers its webhooks over HTTP to the
handlers; the push worker runs on the queue; the 15-minute pull runs when the story calls the timer. At the
end both systems are printed side by side with each record's Spotler status.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from sandboxes.functions_host import LocalFunctionsHost
from sandboxes.stack import sandbox_stack
from sync_core.domain.reasons import reason_from_option
from sync_core.services.runtime import get_runtime
from sync_core.services.status import record_status_view

console = Console(width=160)


def _masked(email: object) -> str:
    if not isinstance(email, str) or "@" not in email:
        return "-"
    local, domain = email.split("@", 1)
    return f"{local[:1]}…@{domain}"


def _column_note(row: dict[str, object], reason: str) -> str:
    """Say so when the record's status column in Dynamics differs from the connector's status."""
    column = reason_from_option(row.get("sync_spotlerstatus"))
    return "" if column == reason else f" (inactive, read-only row keeps: {column})"


PROFILE_FORM_MAPPING = Path(__file__).resolve().parents[1] / "docs" / "examples" / "profile-update-form.json"


async def _bulk(host: LocalFunctionsHost, body: dict[str, object]) -> dict[str, Any]:
    """Start a backfill through its HTTP route and let the bulk queue's worker carry it out."""
    async with httpx.AsyncClient() as http:
        started = (await http.post(f"{host.url}/api/bulk/backfill", json=body)).json()
        await host.run_bulk(started["run"])
        summary: dict[str, Any] = (await http.get(f"{host.url}/api/bulk/runs/{started['run']}")).json()
    return summary


async def story(connection_string: str) -> int:
    with sandbox_stack(
        connection_string,
        name="demo",
        SPOTLER_MAX_ATTEMPTS="2",
        # Names and e-mail two-way, phone from Spotler: the shipped example for a Spotler profile-update form.
        MAPPING_FILE=str(PROFILE_FORM_MAPPING),
        DATAVERSE_STATUS_COLUMN="sync_spotlerstatus",
        DATAVERSE_STATUS_DETAIL_COLUMN="sync_spotlerstatusdetail",
    ) as stack:
        spotler, dataverse = stack.spotler, stack.dataverse
        async with LocalFunctionsHost(stack.settings) as host:
            host.register_webhooks(dataverse, key=stack.webhook_key)

            async def settle() -> None:
                await asyncio.to_thread(dataverse.drain, timeout=30.0)
                await host.run_queue(idle_rounds=2, poll_seconds=0.05)

            def step(text: str) -> None:
                console.print(f"[bold cyan]▸[/] {text}")

            step("Going live: Dynamics already holds records, and Spotler an old newsletter list")
            sofie = dataverse.store.seed(
                "contact", {"firstname": "Sofie", "lastname": "Mulder", "emailaddress1": "sofie.mulder@example.nl"}
            )
            daan = dataverse.store.seed(
                "contact", {"firstname": "Daan", "lastname": "Smit", "emailaddress1": "daan.smit@example.nl"}
            )
            dataverse.store.seed("contact", {"firstname": "Old", "lastname": "Record", "statecode": 1, "statuscode": 2})
            spotler.seed([{"externalId": "newsletter-0042", "properties": {"email": "sofie.mulder@example.nl"}}])
            for label, dry in (("dry run", True), ("initial load", False)):
                summary = await _bulk(host, {"dryRun": dry})
                counts = summary[("assess" if dry else "apply")]["outcomes"]
                console.print(
                    f"    backfill {label}: {summary['phase']}; " + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
            step("A sales rep creates three contacts, a lead and an account in Dynamics")
            anna = dataverse.create(
                "contact",
                {
                    "firstname": "Anna",
                    "lastname": "de Vries",
                    "emailaddress1": "anna.devries@example.nl",
                    "jobtitle": "Buyer",
                },
            )
            bram = dataverse.create(
                "contact", {"firstname": "Bram", "lastname": "Jansen", "emailaddress1": "bram.jansen@example.nl"}
            )
            noor = dataverse.create("contact", {"firstname": "Noor", "lastname": "Bakker", "emailaddress1": "noor@"})
            lisa = dataverse.create(
                "lead",
                {
                    "firstname": "Lisa",
                    "lastname": "Visser",
                    "subject": "Webinar",
                    "emailaddress1": "lisa.visser@example.nl",
                    "companyname": "Visser BV",
                },
            )
            zoet = dataverse.create("account", {"name": "Bakkerij Zoet", "emailaddress1": "info@zoet.example.nl"})
            await settle()
            step("Anna changes job; Bram ticks Do Not Bulk Email; the lead is disqualified")
            dataverse.edit("contact", anna, {"jobtitle": "Head of Purchasing"})
            dataverse.edit("contact", bram, {"donotbulkemail": True})
            dataverse.deactivate("lead", lisa)
            await settle()
            step(
                "Anna updates her first name in a Spotler profile form (the mapping "
                "docs/examples/profile-update-form.json syncs names both ways); the 15-minute pull runs"
            )
            spotler.profile_edit(anna, properties={"firstName": "Anne"})
            await asyncio.sleep(0.05)
            await host.run_timer()
            await settle()
            step("Bram asks not to be e-mailed at all (Do Not Email)")
            dataverse.edit("contact", bram, {"donotemail": True})
            await settle()
            step("Spotler is down (503) while the account moves; the change waits in the queue")
            spotler.inject_fault("*", "error", status=503, times=None)
            dataverse.edit("account", zoet, {"address1_city": "Haarlem"})
            await asyncio.to_thread(dataverse.drain, timeout=30.0)
            await host.run_queue_once()
            waiting = await record_status_view(get_runtime().state, "account", zoet) or {}
            console.print(f"    account status while Spotler is down: [yellow]{waiting.get('reason')}[/]")
            step("Spotler is back: the queued change lands")
            spotler.clear_faults()
            await settle()

            runtime = get_runtime()
            table = Table(title="Dynamics 365 ⇄ Spotler Mail+ after the story")
            for col in (
                "record",
                "Dynamics name",
                "Dynamics e-mail",
                "Spotler name",
                "Spotler e-mail",
                "Spotler city",
                "newsletter",
                "Spotler status",
            ):
                table.add_column(col)
            rows = [
                ("contact", sofie),
                ("contact", daan),
                ("contact", anna),
                ("contact", bram),
                ("contact", noor),
                ("lead", lisa),
                ("account", zoet),
            ]
            agree = True
            for entity, record_id in rows:
                row = dataverse.row(entity, record_id) or {}
                view = await record_status_view(runtime.state, entity, record_id) or {}
                contact = spotler.contact(str(view.get("spotlerExternalId") or record_id)) or {}
                props = contact.get("properties", {})
                dv_name = row.get("name") or " ".join(filter(None, [row.get("firstname"), row.get("lastname")]))
                sp_name = (
                    props.get("organisation")
                    if entity == "account"
                    else " ".join(filter(None, [props.get("firstName"), props.get("lastName")]))
                )
                perms = {p["bit"]: p["enabled"] for p in props.get("permissions", [])}
                reason = str(view.get("reason"))
                if reason in ("created", "updated", "synced", "conflict_resolved"):
                    agree = (
                        agree
                        and dv_name == sp_name
                        and props.get("email") == row.get("emailaddress1")
                        and props.get("city") == row.get("address1_city")
                    )
                # The status the connector keeps and the one a CRM user sees on the record must be the same
                # (Dataverse keeps inactive rows read-only: theirs shows the last status while active).
                if row.get("statecode", 0) == 0:
                    agree = agree and reason_from_option(row.get("sync_spotlerstatus")) == reason
                table.add_row(
                    f"{entity} {record_id[:8]}",
                    dv_name or "-",
                    _masked(row.get("emailaddress1")),
                    sp_name or "-",
                    _masked(props.get("email")),
                    props.get("city") or "-",
                    {True: "on", False: "off"}.get(perms.get(1), "-"),
                    f"{reason}: {view.get('detail', '')}" + _column_note(row, reason),
                )
            console.print(table)
            if not agree:
                console.print("[bold red]The two systems disagree on a synced record.[/]")
                return 1
            console.print("[bold green]Both systems agree on every synced record.[/]")
            return 0


def main() -> int:
    connection_string = os.environ.get("AZURITE_CONNECTION_STRING")
    if not connection_string:
        console.print("Start Azurite first (./scripts/demo does it) and set AZURITE_CONNECTION_STRING.")
        return 2
    return asyncio.run(story(connection_string))


if __name__ == "__main__":
    sys.exit(main())
