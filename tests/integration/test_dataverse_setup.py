"""`dataverse setup` and the live mapping check against the Dataverse and Spotler sandboxes over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from sync_core.dataverse import DataverseClient, DataverseInvalidData
from sync_core.dataverse.metadata import DataverseMetadata
from sync_core.dataverse.webhook import post_image_alias
from sync_core.domain.mapping import default_mapping, parse_mapping
from sync_core.domain.reasons import REASON_OPTION_VALUES
from sync_core.services.dataverse_setup import SetupOptions, run_setup
from sync_core.services.mapping_check import check_mapping_live
from sync_core.spotler.client import SpotlerClient
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

KEY = "setup-webhook-key"
URL = "http://127.0.0.1:9/api/dynamics/webhook"  # nothing listens: deliveries are recorded, not received
WRITES = ("POST ", "PATCH ", "DELETE ")


def _options(**overrides: Any) -> SetupOptions:
    return SetupOptions(**{"webhook_url": URL, "secret": KEY, **overrides})


def _writes(handle: DataverseSandboxHandle) -> dict[str, int]:
    return {k: v for k, v in handle.sandbox.request_counts().items() if k.startswith(WRITES)}


async def test_setup_twice_leaves_one_endpoint_one_set_of_steps_and_images_and_each_column_once(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    admin = DataverseMetadata(dataverse_client)
    first = await run_setup(admin, default_mapping(), _options(), dry_run=False)
    second = await run_setup(admin, default_mapping(), _options(), dry_run=False)

    tables = dataverse_sandbox.sandbox.metadata.tables
    assert len(tables["serviceendpoints"]) == 1
    assert len(tables["sdkmessageprocessingsteps"]) == 9  # Create, Update, Delete of contact, lead, account
    assert len(tables["sdkmessageprocessingstepimages"]) == 9
    for entity in ("contact", "lead", "account"):
        columns = dataverse_sandbox.sandbox.store.schema(entity).columns
        for name, kind in (
            ("sync_spotlerreason", "choice"),
            ("sync_spotlerdetail", "string"),
            ("sync_spotlerlastsyncedon", "datetime"),
        ):
            assert columns[name].type == kind
    assert len(first.changes) == 1 + 9 + 9 + 9
    assert second.changes == []
    assert second.conflicts == []
    assert first.app_settings["DATAVERSE_STATUS_COLUMN"] == "sync_spotlerreason"
    assert first.app_settings["DATAVERSE_STATUS_DETAIL_COLUMN"] == "sync_spotlerdetail"


async def test_dry_run_writes_nothing_and_lists_what_the_real_run_then_does(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    admin = DataverseMetadata(dataverse_client)
    plan = await run_setup(admin, default_mapping(), _options(), dry_run=True)

    assert _writes(dataverse_sandbox) == {}
    assert dataverse_sandbox.sandbox.metadata.tables["serviceendpoints"] == {}
    assert "sync_spotlerreason" not in dataverse_sandbox.sandbox.store.schema("contact").columns

    done = await run_setup(admin, default_mapping(), _options(), dry_run=False)
    listed = [(i.kind, i.target, i.action) for i in plan.items]
    assert listed == [(i.kind, i.target, i.action) for i in done.items]
    assert sum(_writes(dataverse_sandbox).values()) == len(done.changes) == len(plan.changes) == 28


async def test_setup_changes_a_step_whose_filter_drifted_and_removes_steps_the_mapping_no_longer_needs(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    admin = DataverseMetadata(dataverse_client)
    await run_setup(admin, default_mapping(), _options(), dry_run=False)
    tables = dataverse_sandbox.sandbox.metadata.tables
    update_step = next(
        s for s in tables["sdkmessageprocessingsteps"].values() if s["name"].endswith("Update of contact")
    )
    await admin.update(
        "sdkmessageprocessingsteps", update_step["sdkmessageprocessingstepid"], {"filteringattributes": "telephone1"}
    )
    raw = json.loads(json.dumps(default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)))
    raw["entities"]["lead"]["enabled"] = False

    report = await run_setup(admin, parse_mapping(raw), _options(), dry_run=False)

    actions = {(i.kind, i.target): i.action for i in report.items}
    assert actions[("step", "contact Update")] == "update"
    assert [i.action for i in report.items if i.kind == "step" and "lead" in i.target] == ["delete"] * 3
    assert len(tables["sdkmessageprocessingsteps"]) == 6
    assert len(tables["sdkmessageprocessingstepimages"]) == 6  # a step's images go with it


async def test_the_sender_honours_the_registered_steps_filtering_attributes_and_images(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    await run_setup(DataverseMetadata(dataverse_client), default_mapping(), _options(), dry_run=False)
    sandbox = dataverse_sandbox.sandbox
    record_id = sandbox.create(
        "contact", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com"}
    )
    sandbox.edit("contact", record_id, {"telephone1": "+31 20 123 4567"})  # not a filtering attribute: no call
    sandbox.edit("contact", record_id, {"jobtitle": "Analyst"})
    sandbox.delete("contact", record_id)
    await asyncio.to_thread(sandbox.drain, timeout=30.0)

    deliveries = sandbox.deliveries()
    assert [d.message for d in deliveries] == ["Create", "Update", "Delete"]
    steps = {s["name"]: s for s in sandbox.metadata.tables["sdkmessageprocessingsteps"].values()}
    columns = set(default_mapping().entities["contact"].columns())
    for delivery in deliveries:
        context = delivery.context
        assert (
            context["OwningExtension"]["Id"]
            == steps[f"Spotler Mail+ sync: {delivery.message} of contact"]["sdkmessageprocessingstepid"]
        )
        assert "code=" + KEY in delivery.url
        images = context["PreEntityImages"] if delivery.message == "Delete" else context["PostEntityImages"]
        image = next(i for i in images if i["key"] in ("PreImage", post_image_alias(columns)))
        assert {a["key"] for a in image["value"]["Attributes"]} <= columns
        assert "emailaddress1" in {a["key"] for a in image["value"]["Attributes"]}
    assert [d.context["PreEntityImages"] for d in deliveries[:2]] == [[], []]  # Create and Update: post-image only


async def test_created_status_choice_column_carries_every_reason_code_in_english_and_dutch(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    await run_setup(DataverseMetadata(dataverse_client), default_mapping(), _options(), dry_run=False)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{dataverse_sandbox.api_url}/EntityDefinitions(LogicalName='lead')/Attributes(LogicalName='sync_spotlerreason')",
            headers={"Authorization": f"Bearer {dataverse_sandbox.token}"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["AttributeType"] == "Picklist"
    assert {label["LanguageCode"] for label in body["DisplayName"]["LocalizedLabels"]} == {1033, 1043}
    options = {o["Value"]: o["Label"]["LocalizedLabels"] for o in body["OptionSet"]["Options"]}
    assert set(options) == set(REASON_OPTION_VALUES.values())
    assert all({label["LanguageCode"] for label in labels} == {1033, 1043} for labels in options.values())


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"imagetype": 0, "messagepropertyname": "Id"}, "Create step has no pre-image"),
        ({"imagetype": 1, "messagepropertyname": "Target"}, "must be 'Id'"),
        ({"imagetype": 1, "messagepropertyname": "Id", "attributes": "nosuchcolumn"}, "nosuchcolumn"),
    ],
)
async def test_the_sandbox_rejects_images_dataverse_would_refuse(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient, body: dict[str, Any], fragment: str
) -> None:
    admin = DataverseMetadata(dataverse_client)
    await run_setup(admin, default_mapping(), _options(), dry_run=False)
    create_step = next(
        s
        for s in dataverse_sandbox.sandbox.metadata.tables["sdkmessageprocessingsteps"].values()
        if s["name"].endswith("Create of contact")
    )
    step_id = create_step["sdkmessageprocessingstepid"]
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{dataverse_sandbox.api_url}/sdkmessageprocessingstepimages",
            headers={"Authorization": f"Bearer {dataverse_sandbox.token}"},
            json={
                "name": "Extra",
                "entityalias": "Extra",
                **body,
                "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})",
            },
        )
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def _misspelt() -> dict[str, Any]:
    raw: dict[str, Any] = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["entities"]["contact"]["fields"][0]["spotler"] = "firstNme"
    raw["entities"]["contact"]["fields"][1]["dataverse"] = "lastnme"
    return raw


async def test_live_check_names_a_misspelt_spotler_property_and_a_misspelt_dataverse_column(
    spotler_sandbox: SpotlerSandbox, dataverse_client: DataverseClient
) -> None:
    async with SpotlerClient(
        base_url=spotler_sandbox.url,
        consumer_key=spotler_sandbox.consumer_key,
        consumer_secret=spotler_sandbox.consumer_secret,
    ) as spotler:
        good = await check_mapping_live(default_mapping(), spotler, DataverseMetadata(dataverse_client))
        bad = await check_mapping_live(parse_mapping(_misspelt()), spotler, DataverseMetadata(dataverse_client))

    assert good.ok
    assert good.status == "ok"
    assert bad.status == "configuration_error"
    lines = [p.line() for p in bad.problems]
    assert len(lines) == 2
    assert "Spotler: property `firstNme` does not exist" in lines[0]
    assert "`firstName`" in lines[0]
    assert "Dataverse: column `lastnme` does not exist on contact" in lines[1]
    assert "`lastname`" in lines[1]


async def test_live_check_finds_wrong_types_missing_bits_and_read_only_columns(
    spotler_sandbox: SpotlerSandbox, dataverse_client: DataverseClient
) -> None:
    raw = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    fields = raw["entities"]["account"]["fields"]
    fields.append(
        {"dataverse": "createdon", "spotler": "lastPurchaseDate", "type": "datetime", "direction": "to_spotler"}
    )
    fields.append({"dataverse": "telephone1", "spotler": "permissions", "type": "string"})
    fields.append({"dataverse": "donotemail", "spotler": "interests", "type": "boolean", "bit": 64})
    raw["entities"]["account"]["permissions"].append({"bit": 32, "dataverse": "sync_newsletter"})
    raw["entities"]["account"]["read_only_attributes"] = []
    async with SpotlerClient(
        base_url=spotler_sandbox.url,
        consumer_key=spotler_sandbox.consumer_key,
        consumer_secret=spotler_sandbox.consumer_secret,
    ) as spotler:
        result = await check_mapping_live(parse_mapping(raw), spotler, DataverseMetadata(dataverse_client))

    text = "\n".join(p.line() for p in result.problems)
    assert "property `permissions` is of type `set`" in text
    assert "property `interests` has no bit 64" in text
    assert "permission bit 32 does not exist" in text
    assert "createdon" not in text  # a read-only column read for ➡ is fine


async def test_a_hand_made_webhook_to_the_same_url_is_reported_as_a_conflict(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    admin = DataverseMetadata(dataverse_client)
    await admin.create(
        "serviceendpoints", {"name": "Spotler sync", "contract": 8, "authtype": 4, "url": URL, "authvalue": KEY}
    )

    report = await run_setup(admin, default_mapping(), _options(), dry_run=True)

    assert [(i.kind, i.target) for i in report.conflicts] == [("endpoint", "Spotler sync")]


async def test_a_bad_publisher_prefix_is_refused_before_anything_is_read(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    with pytest.raises(ValueError, match="publisher prefix"):
        await run_setup(DataverseMetadata(dataverse_client), default_mapping(), _options(prefix="Sync_"), dry_run=True)
    assert dataverse_sandbox.sandbox.request_count() == 0


async def test_a_disabled_step_sends_nothing_and_deleted_steps_take_their_images_and_deliveries_with_them(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    admin = DataverseMetadata(dataverse_client)
    await run_setup(admin, default_mapping(), _options(), dry_run=False)
    sandbox = dataverse_sandbox.sandbox
    steps = sandbox.metadata.tables["sdkmessageprocessingsteps"].values()
    update_step = next(s for s in steps if s["name"].endswith("Update of contact"))
    await admin.update("sdkmessageprocessingsteps", update_step["sdkmessageprocessingstepid"], {"statecode": 1})

    record_id = sandbox.create("contact", {"lastname": "Hopper", "emailaddress1": "grace@example.com"})
    sandbox.edit("contact", record_id, {"jobtitle": "Admiral"})
    await asyncio.to_thread(sandbox.drain, timeout=30.0)
    assert [d.message for d in sandbox.deliveries()] == ["Create"]

    endpoint_id = next(iter(sandbox.metadata.tables["serviceendpoints"]))
    with pytest.raises(DataverseInvalidData, match="steps are registered"):
        await admin.delete("serviceendpoints", endpoint_id)
    for step_id in list(sandbox.metadata.tables["sdkmessageprocessingsteps"]):
        await admin.delete("sdkmessageprocessingsteps", step_id)
    sandbox.edit("contact", record_id, {"firstname": "Grace"})
    sandbox.delete("contact", record_id)
    await asyncio.to_thread(sandbox.drain, timeout=30.0)
    assert [d.message for d in sandbox.deliveries()] == ["Create"]
    assert sandbox.metadata.tables["sdkmessageprocessingstepimages"] == {}
