"""Change tracking in the Dataverse sandbox: `Prefer: odata.track-changes`, delta links, `$deletedEntity` rows.

As the Web API does it: a list request with the preference returns every row (paged by `odata.maxpagesize`,
following `@odata.nextLink`) and, on its last page, an `@odata.deltaLink`. Following that link returns the rows
created or changed since, as normal objects, and the rows deleted since, as
`{"@odata.context": "…/$metadata#contacts/$deletedEntity", "id": "<guid>", "reason": "deleted"}`, again with a
new delta link on the last page. `$filter`, `$orderby`, `$expand` and `$top` are refused with the documented
message. A token older than the retention (here: issued before `expire_tokens` was called, or before the
sandbox was reset) is answered 400 with the platform's ExpiredVersionStamp error, asking for a full sync.
"""

from __future__ import annotations

import base64
import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from sandboxes.dataverse.store import ERR_INVALID_ARGUMENT, DataverseStore, SandboxError, TableSchema

if TYPE_CHECKING:
    from sandboxes.dataverse.app import OpResult

ERR_EXPIRED_VERSION_STAMP = "0x80044352"
EXPIRED_MESSAGE = "Version stamp associated with the client has expired. Please perform a full sync."
_UNSUPPORTED = ("$filter", "$orderby", "$expand", "$top")

# Per store: (generation, lowest version a token may carry). The generation changes when the store is reset.
_floors: weakref.WeakKeyDictionary[DataverseStore, tuple[int, int]] = weakref.WeakKeyDictionary()


def _generation(store: DataverseStore) -> int:
    return id(store.writes)  # reset() replaces the write log: every earlier token is then too old


def _version(store: DataverseStore) -> int:
    return int(store._version)


def expire_tokens(store: DataverseStore) -> None:
    """Every delta token issued so far is now past the retention period."""
    with store._lock:
        _floors[store] = (_generation(store), _version(store) + 1)


def _token(store: DataverseStore, version: int) -> str:
    return f"{version}!{_generation(store)}"


def _parse_token(store: DataverseStore, raw: str) -> int:
    version_text, _, generation_text = raw.partition("!")
    try:
        version, generation = int(version_text), int(generation_text)
    except ValueError:
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The $deltatoken is invalid.") from None
    floor_generation, floor = _floors.get(store, (generation, 0))
    if generation != _generation(store) or (floor_generation == generation and version < floor):
        raise SandboxError(400, ERR_EXPIRED_VERSION_STAMP, EXPIRED_MESSAGE)
    return version


def _cookie(offset: int, upto: int) -> str:
    cookie = base64.urlsafe_b64encode(json.dumps({"o": offset, "u": upto}).encode()).decode()
    return f'<cookie pagenumber="{offset}" pagingcookie="{cookie}" istracking="True" />'


def _uncookie(raw: str) -> tuple[int, int]:
    try:
        start = raw.index('pagingcookie="') + len('pagingcookie="')
        data = json.loads(base64.urlsafe_b64decode(raw[start : raw.index('"', start)]))
        return int(data["o"]), int(data["u"])
    except (ValueError, KeyError, TypeError):
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The $skiptoken is invalid.") from None


def tracked_list(
    store: DataverseStore,
    schema: TableSchema,
    query: Mapping[str, str],
    prefs: Mapping[str, str],
    root: str,
    *,
    max_page_size: int,
) -> OpResult | None:
    """The answer to a change-tracking list request, or None when the request does not track changes."""
    delta = query.get("$deltatoken")
    if delta is None and "odata.track-changes" not in prefs:
        return None
    from sandboxes.dataverse.app import _context_url, _json_result, _render, _select  # noqa: PLC0415 - circular

    for name in _UNSUPPORTED:
        if name in query:
            raise SandboxError(
                400,
                ERR_INVALID_ARGUMENT,
                f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.',
            )
    select = _select(schema, query.get("$select"))
    page_size = max_page_size
    if "odata.maxpagesize" in prefs:
        try:
            page_size = max(1, min(max_page_size, int(prefs["odata.maxpagesize"])))
        except ValueError:
            raise SandboxError(400, ERR_INVALID_ARGUMENT, "odata.maxpagesize must be an integer.") from None
    with store._lock:
        since = _parse_token(store, delta) if delta is not None else None
        offset, upto = _uncookie(query["$skiptoken"]) if "$skiptoken" in query else (0, _version(store))
        rows = [r for r in store.rows[schema.entity].values() if int(r["versionnumber"]) <= upto]
        items: list[tuple[int, str, dict[str, Any] | None]] = []
        if since is None:
            items = [(0, r[schema.primary_key], r) for r in rows]
            items.sort(key=lambda item: item[1])
        else:
            items = [
                (int(r["versionnumber"]), r[schema.primary_key], r) for r in rows if int(r["versionnumber"]) > since
            ]
            live = {r[schema.primary_key] for r in rows}
            for write in store.writes:
                if (
                    write.entity == schema.entity
                    and write.message == "Delete"
                    and write.version is not None
                    and since < write.version <= upto
                    and write.record_id not in live
                ):
                    items.append((write.version, write.record_id, None))
            items.sort(key=lambda item: (item[0], item[1]))
        page = items[offset : offset + page_size]
        values: list[dict[str, Any]] = []
        for _, record_id, row in page:
            if row is None:
                values.append(
                    {
                        "@odata.context": f"{root}/$metadata#{schema.entity_set}/$deletedEntity",
                        "id": record_id,
                        "reason": "deleted",
                    }
                )
            else:
                values.append(_render(schema, row, select))
        token = _token(store, upto)
    context = _context_url(root, schema, select, entity=False) + ("/$delta" if since is not None else "")
    document: dict[str, Any] = {"@odata.context": context, "value": values}
    base = {k: v for k, v in query.items() if k not in ("$skiptoken", "$deltatoken")}
    if offset + page_size < len(items):
        following = dict(base)
        if delta is not None:
            following["$deltatoken"] = delta
        following["$skiptoken"] = _cookie(offset + page_size, upto)
        document["@odata.nextLink"] = f"{root}/{schema.entity_set}?{urlencode(following, quote_via=quote)}"
    else:
        document["@odata.deltaLink"] = (
            f"{root}/{schema.entity_set}?{urlencode({**base, '$deltatoken': token}, quote_via=quote)}"
        )
    applied = ["odata.track-changes"]
    if "odata.maxpagesize" in prefs:
        applied.append(f"odata.maxpagesize={page_size}")
    return _json_result(200, document, {"Preference-Applied": ",".join(applied)})
