"""Malformed, hostile and oversized webhook deliveries: a clear 4xx that queues nothing, never a 5xx.

The property test runs the real intake (authentication, size limit, parser, column trimming, queue size limit)
over the three authentication modes with an in-memory queue that is up; it is deterministic (derandomized).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_core.dataverse.auth import WebhookAuthenticator, WebhookAuthMode
from sync_core.domain.event_codec import decode_event
from sync_core.domain.mapping import default_mapping
from sync_core.services.intake import WebhookIntake
from sync_core.state.queue import MAX_ENCODED_MESSAGE_BYTES, InMemoryEventQueue, encoded_size

DATA = Path(__file__).resolve().parents[1] / "data" / "webhooks"
SECRET = "hostile-test-secret"
MAX_BYTES = 1_048_576
SAMPLES = [
    "update_value_types.json",
    "update_with_preimage.json",
    "create_with_formatted_values.json",
    "delete_with_preimage.json",
    "setstate.json",
    "merge.json",
    "update_deactivate.json",
    "plugin_with_attributes.json",
]
VALID: dict[str, dict[str, Any]] = {name: json.loads((DATA / name).read_text(encoding="utf-8")) for name in SAMPLES}
MODES: tuple[WebhookAuthMode, ...] = ("webhook_key", "http_header", "http_query_string")


def make_intake(queue: InMemoryEventQueue, mode: WebhookAuthMode) -> WebhookIntake:
    return WebhookIntake(
        authenticator=WebhookAuthenticator(mode, SECRET),
        sink=queue,
        max_bytes=MAX_BYTES,
        mapping=default_mapping(),
    )


def credentials(mode: WebhookAuthMode, secret: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query) presenting `secret` the way `mode` expects (nothing when None)."""
    if secret is None:
        return {}, {}
    if mode == "http_header":
        return {"X-Sync-Webhook-Key": secret}, {}
    return {}, {"code" if mode == "webhook_key" else "key": secret}


async def deliver(
    body: bytes, mode: WebhookAuthMode = "webhook_key", headers: dict[str, str] | None = None
) -> tuple[int, InMemoryEventQueue]:
    queue = InMemoryEventQueue()
    auth_headers, query = credentials(mode, SECRET)
    result = await make_intake(queue, mode).accept(body, {**(headers or {}), **auth_headers}, query)
    return result.status, queue


def check(status: int, queue: InMemoryEventQueue) -> None:
    """No 5xx while storage is up; a message is queued exactly when the answer is 202, and it is decodable."""
    assert status < 500, status
    texts = queue.texts()
    if status == 202:
        assert len(texts) == 1
        decode_event(texts[0])
        assert encoded_size(texts[0]) <= MAX_ENCODED_MESSAGE_BYTES
    else:
        assert texts == []


def context_with(path: list[Any], value_text: str, sample: str = "update_value_types.json") -> bytes:
    """A valid delivery whose value at `path` is replaced by the raw JSON text `value_text`."""
    marker = "__HOSTILE_VALUE_MARKER__"
    document = copy.deepcopy(VALID[sample])
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = marker
    return json.dumps(document).replace(json.dumps(marker), value_text).encode()


# --- the inputs seen escaping as a 500 or a 503 for ever ---------------------------------------------------

TARGET_ROW_VERSION = ["InputParameters", 0, "value", "RowVersion"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"[" * 1000 + b"]" * 1000, 400, id="1000-nested-arrays"),
        pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, id="5000-nested-objects"),
        pytest.param(context_with(TARGET_ROW_VERSION, "Infinity"), 400, id="rowversion-infinity"),
        pytest.param(context_with(TARGET_ROW_VERSION, "NaN"), 400, id="rowversion-nan"),
        pytest.param(context_with(TARGET_ROW_VERSION, "1e400"), 400, id="rowversion-1e400"),
        pytest.param(context_with(TARGET_ROW_VERSION, '"1' + "0" * 30 + '"'), 400, id="rowversion-huge-string"),
        pytest.param(context_with(["OperationId"], '"\\ud800"'), 400, id="surrogate-operation-id"),
        pytest.param(context_with(["Stage"], '"\\udfff"'), 400, id="surrogate-stage"),
        pytest.param(context_with(["OwningExtension", "Id"], '"\\ud800"'), 400, id="surrogate-owning-extension"),
        pytest.param(
            context_with(["InputParameters", 0, "value", "Attributes", 0, "value"], '"x\\ud800"'),
            400,
            id="surrogate-in-a-value",
        ),
        pytest.param(
            json.dumps(VALID["update_value_types.json"]).replace('"Depth": 1', '"Dep\\ud800th": 1').encode(),
            400,
            id="surrogate-in-a-key",
        ),
        pytest.param(b'{"MessageName": "Update", "x": "\xed\xa0\x80"}', 400, id="utf8-encoded-surrogate"),
        pytest.param(b" " * (MAX_BYTES + 1), 413, id="oversized"),
    ],
)
async def test_hostile_inputs_get_a_4xx_and_queue_nothing(body: bytes, expected: int) -> None:
    status, queue = await deliver(body)
    assert status == expected
    assert queue.texts() == []


async def test_an_update_naming_thousands_of_columns_is_queued_with_the_columns_the_sync_reads() -> None:
    document = copy.deepcopy(VALID["update_value_types.json"])
    attributes = document["InputParameters"][0]["value"]["Attributes"]
    attributes.extend({"key": f"new_column_{n:04d}_with_a_long_name", "value": None} for n in range(2500))
    body = json.dumps(document).encode()
    assert len(body) < MAX_BYTES
    status, queue = await deliver(body)
    assert status == 202
    event = decode_event(queue.texts()[0])
    assert event.changed <= set(default_mapping().for_entity("contact").columns())  # type: ignore[union-attr]
    assert "statecode" in event.changed


async def test_a_delete_too_large_even_without_values_is_a_413_not_a_503() -> None:
    document = copy.deepcopy(VALID["delete_with_preimage.json"])
    image = document["PreEntityImages"][0]["value"]["Attributes"]
    for item in image:
        if item["key"] == "emailaddress1":
            item["value"] = "a" * 70_000 + "@example.com"
    status, queue = await deliver(json.dumps(document).encode())
    assert status == 413
    assert queue.texts() == []


# --- the property: anything at all -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
raw_hostile_values = st.sampled_from(
    ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", '"\\ud800"', '"a\\udc00b"', "[" * 300 + "]" * 300, "1" * 5000]
)


def _paths(node: Any, prefix: list[Any]) -> list[list[Any]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, [*prefix, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, [*prefix, index])
    return found


PATHS = {name: _paths(document, []) for name, document in VALID.items()}


@st.composite
def wrong_type_in_a_field(draw: st.DrawFn) -> bytes:
    """A valid delivery with one field anywhere (top level or nested) replaced by any JSON value or raw text."""
    sample = draw(st.sampled_from(SAMPLES))
    path = draw(st.sampled_from(PATHS[sample]))
    text = json.dumps(draw(json_values)) if draw(st.booleans()) else draw(raw_hostile_values)
    return context_with(path, text, sample)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    body = json.dumps(VALID[draw(st.sampled_from(SAMPLES))]).encode()
    return body[: draw(st.integers(min_value=0, max_value=len(body)))]


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=20_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"MessageName":[', b"]}")]))
    return opener * depth + b"0" + closer * depth


@st.composite
def many_columns(draw: st.DrawFn) -> bytes:
    document = copy.deepcopy(
        VALID[draw(st.sampled_from(["update_value_types.json", "create_with_formatted_values.json"]))]
    )
    count = draw(st.integers(min_value=0, max_value=4000))
    document["InputParameters"][0]["value"]["Attributes"].extend(
        {"key": f"c{n}_" + "x" * draw(st.integers(min_value=0, max_value=40)), "value": "v"} for n in range(count)
    )
    return json.dumps(document).encode()


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    return b"{" + b" " * (MAX_BYTES + draw(st.integers(min_value=0, max_value=1000))) + b"}"


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(list(VALID.values())).map(lambda document: json.dumps(document).encode()),
    truncated(),
    deep(),
    wrong_type_in_a_field(),
    wrong_type_in_a_field(),
    wrong_type_in_a_field(),
    many_columns(),
    huge(),
)
extra_headers = st.dictionaries(
    st.sampled_from(["x-ms-dynamics-msg-size-exceeded", "Content-Type", "X-Other"]), st.text(max_size=10), max_size=2
)
secrets = st.one_of(st.just(SECRET), st.none(), st.text(max_size=20))

PROPERTY = settings(
    max_examples=700,  # x 3 modes = 2,100 examples
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.mark.parametrize("mode", MODES)
@PROPERTY
@given(body=bodies, headers=extra_headers, secret=secrets)
async def test_no_delivery_gets_a_5xx_or_leaves_anything_behind_unless_accepted(
    mode: WebhookAuthMode, body: bytes, headers: dict[str, str], secret: str | None
) -> None:
    queue = InMemoryEventQueue()
    auth_headers, query = credentials(mode, secret)
    result = await make_intake(queue, mode).accept(body, {**headers, **auth_headers}, query)
    check(result.status, queue)
    if secret != SECRET:
        assert result.status == 401
