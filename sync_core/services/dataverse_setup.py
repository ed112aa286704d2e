"""`dataverse setup`: the webhook service endpoint, its steps and images, and the status columns, as code.

`desired_steps(mapping)` is the single source of truth for what is registered (the docs' table is generated
from it). `run_setup` reads what exists, plans what to create, change or remove, and — unless it is a dry run —
does it, in order: endpoint, steps, images, columns. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from sync_core.dataverse.metadata import AttributeInfo, DataverseMetadata
from sync_core.dataverse.webhook import post_image_alias
from sync_core.domain.mapping import MappingConfig
from sync_core.domain.reasons import REASON_OPTION_VALUES
from sync_core.domain.records import ENTITY_NAMES
from sync_core.domain.status_columns import ATTRIBUTE_TYPES, DUTCH, ENGLISH, REASON_LABELS, STATUS_COLUMNS, StatusColumn

log = logging.getLogger("sync_core.dataverse_setup")

ENDPOINT_NAME = "Spotler Mail+ sync"
STAGE_POST_OPERATION = 40
MODE_ASYNC = 1
AUTH_TYPES = {"webhook_key": 4, "http_header": 5, "http_query_string": 6}
IMAGE_TYPES = {"PreImage": 0, "PostImage": 1}
MESSAGE_PROPERTY = {"Create": "Id", "Update": "Target", "Delete": "Target"}
Message = Literal["Create", "Update", "Delete"]
Action = Literal["create", "update", "delete", "none", "conflict"]
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,7}")


@dataclass(frozen=True, slots=True)
class DesiredImage:
    alias: str  # "PreImage", or a post-image alias that names its columns (`post_image_alias`)
    attributes: tuple[str, ...]

    @property
    def image_type(self) -> int:
        return IMAGE_TYPES["PostImage" if self.alias.startswith("PostImage") else self.alias]


@dataclass(frozen=True, slots=True)
class DesiredStep:
    """One asynchronous post-operation webhook step and its one image."""

    entity: str
    message: Message
    filtering_attributes: tuple[str, ...]  # Update only; empty = every column
    image: DesiredImage

    @property
    def name(self) -> str:
        return f"{ENDPOINT_NAME}: {self.message} of {self.entity}"


def desired_steps(mapping: MappingConfig) -> list[DesiredStep]:
    """Create, Update and Delete of every mapped table, each with the image the push needs.

    Create and Update carry a post-image of every column the push reads, so a change needs no Dataverse read;
    Update fires only when a watched column was submitted (never for the connector's own status writes);
    Delete carries a pre-image with the e-mail column, because the row is gone when the call arrives.
    """
    steps: list[DesiredStep] = []
    for entity in ENTITY_NAMES:
        entity_mapping = mapping.for_entity(entity)
        if entity_mapping is None:
            continue
        columns = tuple(sorted(entity_mapping.columns()))
        watched = tuple(sorted(entity_mapping.watched_columns()))
        post_image = DesiredImage(post_image_alias(columns), columns)  # a null column is left out of an image
        steps.append(DesiredStep(entity, "Create", (), post_image))
        steps.append(DesiredStep(entity, "Update", watched, post_image))
        steps.append(DesiredStep(entity, "Delete", (), DesiredImage("PreImage", columns)))
    return steps


def synced_entities(mapping: MappingConfig) -> list[str]:
    return [entity for entity in ENTITY_NAMES if mapping.for_entity(entity) is not None]


@dataclass(frozen=True, slots=True)
class SetupOptions:
    webhook_url: str
    secret: str = field(repr=False)
    auth_mode: str = "webhook_key"
    auth_name: str = ""
    prefix: str = "sync"
    write_key: bool = False  # send the key even when the endpoint is otherwise unchanged (rotation)


@dataclass(frozen=True, slots=True)
class PlanItem:
    kind: Literal["endpoint", "step", "image", "column"]
    target: str
    action: Action
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "action": self.action, "detail": self.detail}


@dataclass
class SetupReport:
    dry_run: bool
    items: list[PlanItem] = field(default_factory=list)
    app_settings: dict[str, str] = field(default_factory=dict)

    @property
    def conflicts(self) -> list[PlanItem]:
        return [item for item in self.items if item.action == "conflict"]

    @property
    def changes(self) -> list[PlanItem]:
        return [item for item in self.items if item.action in ("create", "update", "delete")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "items": [item.as_dict() for item in self.items],
            "appSettings": self.app_settings,
            "changes": len(self.changes),
            "conflicts": len(self.conflicts),
        }


def _label(english: str, dutch: str) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": english, "LanguageCode": ENGLISH},
            {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": dutch, "LanguageCode": DUTCH},
        ],
    }


def column_definition(column: StatusColumn, prefix: str) -> dict[str, Any]:
    """The AttributeMetadata document that creates the column (Web API `POST EntityDefinitions(…)/Attributes`)."""
    base: dict[str, Any] = {
        "SchemaName": column.schema_name(prefix),
        "DisplayName": _label(column.english, column.dutch),
        "Description": _label(column.description, column.description),
        "RequiredLevel": {"Value": "None", "CanBeChanged": True},
    }
    if column.kind == "choice":
        options = [
            {"Value": REASON_OPTION_VALUES[code], "Label": _label(*REASON_LABELS[code])}
            for code in REASON_OPTION_VALUES
        ]
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            "AttributeType": "Picklist",
            "AttributeTypeName": {"Value": "PicklistType"},
            **base,
            "OptionSet": {
                "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                "IsGlobal": False,
                "OptionSetType": "Picklist",
                "Options": options,
            },
        }
    if column.kind == "string":
        return {
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            **base,
            "MaxLength": column.max_length or 2000,
            "FormatName": {"Value": "Text"},
        }
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
        "AttributeType": "DateTime",
        "AttributeTypeName": {"Value": "DateTimeType"},
        **base,
        "Format": "DateAndTime",
        "DateTimeBehavior": {"Value": "UserLocal"},
    }


def _auth_value(options: SetupOptions) -> str:
    if options.auth_mode == "webhook_key":
        return options.secret
    return f"<settings><setting name={quoteattr(options.auth_name)} value={quoteattr(options.secret)} /></settings>"


def _names(value: Any) -> frozenset[str]:
    return frozenset(part.strip() for part in str(value or "").split(",") if part.strip())


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Run:
    def __init__(self, admin: DataverseMetadata, report: SetupReport) -> None:
        self.admin = admin
        self.report = report

    def note(self, kind: Any, target: str, action: Action, detail: str = "") -> bool:
        """Record the item; True when the caller should write it now."""
        self.report.items.append(PlanItem(kind, target, action, detail))
        return action in ("create", "update", "delete") and not self.report.dry_run

    async def endpoint(self, options: SetupOptions) -> str | None:
        webhooks = await self.admin.query(
            "serviceendpoints", filter_expr="contract eq 8", select="serviceendpointid,name,url,authtype,contract"
        )
        rows = [row for row in webhooks if row.get("name") == ENDPOINT_NAME]
        wanted_url = options.webhook_url.split("?", 1)[0].rstrip("/").lower()
        for other in webhooks:
            other_url = str(other.get("url") or "").split("?", 1)[0].rstrip("/").lower()
            if other.get("name") != ENDPOINT_NAME and other_url == wanted_url:
                # A hand-made registration of the same connector: both would deliver every change.
                self.note(
                    "endpoint",
                    str(other.get("name")),
                    "conflict",
                    "another webhook posts to the same URL; delete it (and its steps) in the Plug-in Registration Tool",
                )
        body = {
            "name": ENDPOINT_NAME,
            "contract": 8,
            "authtype": AUTH_TYPES[options.auth_mode],
            "url": options.webhook_url,
            "messageformat": 2,
            "userclaim": 1,
            "description": "Dynamics 365 to Spotler Mail+ contact sync (managed by `dataverse setup`)",
            "authvalue": _auth_value(options),
        }
        target = f"{ENDPOINT_NAME} → {options.webhook_url}"
        if not rows:
            if self.note("endpoint", target, "create", f"webhook, {options.auth_mode}, key from the settings"):
                return await self.admin.create("serviceendpoints", body)
            return None
        current = rows[0]
        endpoint_id = str(current["serviceendpointid"]).lower()
        differs = [name for name in ("url", "authtype") if str(current.get(name)).lower() != str(body[name]).lower()]
        if differs or options.write_key:
            detail = f"changes {', '.join(differs)}" if differs else ""
            detail = ", ".join(part for part in (detail, "writes the key") if part)
            if self.note("endpoint", target, "update", detail):
                await self.admin.update("serviceendpoints", endpoint_id, body)
        else:
            self.note("endpoint", target, "none", "exists (the key cannot be read back; --next-secret writes it)")
        return endpoint_id

    async def steps(self, endpoint_id: str | None, wanted: Sequence[DesiredStep]) -> None:
        messages = {
            row["name"]: str(row["sdkmessageid"]).lower()
            for row in await self.admin.query("sdkmessages", filter_expr=None, select="sdkmessageid,name")
            if row.get("name") in MESSAGE_PROPERTY
        }
        existing: list[dict[str, Any]] = []
        if endpoint_id is not None:
            existing = await self.admin.query(
                "sdkmessageprocessingsteps",
                filter_expr=f"_eventhandler_value eq {endpoint_id}",
                select="sdkmessageprocessingstepid,name,stage,mode,filteringattributes,asyncautodelete,"
                "_sdkmessageid_value,_sdkmessagefilterid_value",
            )
        kept: set[str] = set()
        for step in wanted:
            message_id = messages.get(step.message)
            if message_id is None:
                self.note("step", f"{step.entity} {step.message}", "conflict", "message not found in sdkmessages")
                continue
            filters = await self.admin.query(
                "sdkmessagefilters",
                filter_expr=f"primaryobjecttypecode eq {_literal(step.entity)} and _sdkmessageid_value eq {message_id}",
                select="sdkmessagefilterid",
            )
            if not filters:
                self.note("step", f"{step.entity} {step.message}", "conflict", "no message filter for the table")
                continue
            filter_id = str(filters[0]["sdkmessagefilterid"]).lower()
            body: dict[str, Any] = {
                "name": step.name,
                "stage": STAGE_POST_OPERATION,
                "mode": MODE_ASYNC,
                "rank": 1,
                "supporteddeployment": 0,
                "asyncautodelete": True,
                "filteringattributes": ",".join(step.filtering_attributes) if step.filtering_attributes else None,
            }
            bindings = {
                "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
                "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
            }
            target = f"{step.entity} {step.message}"
            detail = "async post-operation"
            if step.filtering_attributes:
                detail += f"; filtering: {', '.join(step.filtering_attributes)}"
            current = next(
                (
                    row
                    for row in existing
                    if str(row.get("_sdkmessageid_value")).lower() == message_id
                    and str(row.get("_sdkmessagefilterid_value")).lower() == filter_id
                ),
                None,
            )
            step_id: str | None = None
            if current is None:
                if self.note("step", target, "create", detail):
                    step_id = await self.admin.create("sdkmessageprocessingsteps", {**body, **bindings})
            else:
                step_id = str(current["sdkmessageprocessingstepid"]).lower()
                kept.add(step_id)
                differs = [
                    name for name in ("name", "stage", "mode", "asyncautodelete") if current.get(name) != body[name]
                ]
                if _names(current.get("filteringattributes")) != _names(body["filteringattributes"]):
                    differs.append("filteringattributes")
                if differs:
                    if self.note("step", target, "update", f"changes {', '.join(differs)}"):
                        await self.admin.update("sdkmessageprocessingsteps", step_id, body)
                else:
                    self.note("step", target, "none", detail)
            await self.image(step, step_id)
        for row in existing:
            step_id = str(row["sdkmessageprocessingstepid"]).lower()
            if step_id not in kept and self.note("step", str(row.get("name")), "delete", "not in the mapping"):
                await self.admin.delete("sdkmessageprocessingsteps", step_id)

    async def image(self, step: DesiredStep, step_id: str | None) -> None:
        image = step.image
        target = f"{step.entity} {step.message} {image.alias}"
        detail = ", ".join(image.attributes)
        body = {
            "name": image.alias,
            "entityalias": image.alias,
            "imagetype": image.image_type,
            "messagepropertyname": MESSAGE_PROPERTY[step.message],
            "attributes": ",".join(image.attributes),
        }
        existing: list[dict[str, Any]] = []
        if step_id is not None:
            existing = await self.admin.query(
                "sdkmessageprocessingstepimages",
                filter_expr=f"_sdkmessageprocessingstepid_value eq {step_id}",
                select="sdkmessageprocessingstepimageid,name,entityalias,imagetype,messagepropertyname,attributes",
            )
        current = next((row for row in existing if row.get("entityalias") == image.alias), None)
        for row in existing:
            if row is not current and self.note(
                "image", f"{step.entity} {step.message} {row.get('entityalias')}", "delete"
            ):
                await self.admin.delete("sdkmessageprocessingstepimages", str(row["sdkmessageprocessingstepimageid"]))
        if current is None:
            if self.note("image", target, "create", detail) and step_id is not None:
                bind = {"sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})"}
                await self.admin.create("sdkmessageprocessingstepimages", {**body, **bind})
            return
        differs = [name for name in ("name", "imagetype", "messagepropertyname") if current.get(name) != body[name]]
        if _names(current.get("attributes")) != _names(body["attributes"]):
            differs.append("attributes")
        if differs:
            if self.note("image", target, "update", f"changes {', '.join(differs)}"):
                image_id = str(current["sdkmessageprocessingstepimageid"])
                await self.admin.update("sdkmessageprocessingstepimages", image_id, body)
        else:
            self.note("image", target, "none", detail)

    async def columns(self, entities: Sequence[str], prefix: str) -> None:
        for entity in entities:
            attributes: dict[str, AttributeInfo] = await self.admin.attributes(entity)
            for column in STATUS_COLUMNS:
                name = column.logical_name(prefix)
                target = f"{entity}.{name}"
                wanted = ATTRIBUTE_TYPES[column.kind]
                current = attributes.get(name)
                if current is None:
                    if self.note("column", target, "create", f"{column.kind}: {column.english} / {column.dutch}"):
                        await self.admin.create_attribute(entity, column_definition(column, prefix))
                elif current.attribute_type != wanted:
                    self.note(
                        "column",
                        target,
                        "conflict",
                        f"exists as {current.attribute_type}, needs {wanted}: delete it or choose another --prefix",
                    )
                else:
                    self.note("column", target, "none", f"exists ({wanted})")


async def run_setup(
    admin: DataverseMetadata, mapping: MappingConfig, options: SetupOptions, *, dry_run: bool
) -> SetupReport:
    """Plan (and unless `dry_run`, apply) the endpoint, steps, images and status columns."""
    if not PREFIX_RE.fullmatch(options.prefix):
        raise ValueError(
            f"publisher prefix {options.prefix!r}: 2 to 8 lower-case letters or digits, starting with a letter"
        )
    report = SetupReport(dry_run=dry_run)
    run = _Run(admin, report)
    endpoint_id = await run.endpoint(options)
    await run.steps(endpoint_id, desired_steps(mapping))
    await run.columns(synced_entities(mapping), options.prefix)
    for column in STATUS_COLUMNS:
        if column.setting is not None:
            report.app_settings[column.setting] = column.logical_name(options.prefix)
    report.app_settings["DATAVERSE_STATUS_COLUMN_TYPE"] = "choice"
    report.app_settings["WEBHOOK_AUTH_MODE"] = options.auth_mode
    report.app_settings["WEBHOOK_PUBLIC_URL"] = options.webhook_url
    log.info(
        "dataverse setup finished",
        extra={"dry_run": dry_run, "changes": len(report.changes), "conflicts": len(report.conflicts)},
    )
    return report


def steps_markdown(mapping: MappingConfig, prefix: str = "sync") -> str:
    """The steps, images and status columns `run_setup` registers, as Markdown (docs/dataverse.md embeds it)."""
    lines = [
        "| Table | Message | Stage, mode | Filtering attributes | Image (name = alias) |",
        "|---|---|---|---|---|",
    ]
    for step in desired_steps(mapping):
        filtering = ", ".join(f"`{c}`" for c in step.filtering_attributes) or "—"
        image = f"{step.image.alias}: " + ", ".join(f"`{c}`" for c in step.image.attributes)
        lines.append(f"| {step.entity} | {step.message} | post-operation (40), asynchronous | {filtering} | {image} |")
    lines += [
        "",
        "| Status column (on every synced table) | Type | Display name (English / Dutch) | App setting |",
        "|---|---|---|---|",
    ]
    for column in STATUS_COLUMNS:
        kind = {
            "choice": "choice (the reason codes)",
            "string": f"text ({column.max_length})",
            "datetime": "date and time",
        }[column.kind]
        setting = f"`{column.setting}`" if column.setting else "—"
        lines.append(f"| `{column.logical_name(prefix)}` | {kind} | {column.english} / {column.dutch} | {setting} |")
    return "\n".join(lines) + "\n"
