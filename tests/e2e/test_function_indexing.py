"""The Functions host would index these bindings: read them the way the host does."""

from __future__ import annotations

import json
from typing import Any

import function_app

FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}


def _bindings(name: str) -> list[dict[str, Any]]:
    bindings: list[dict[str, Any]] = json.loads(FUNCTIONS[name].get_function_json())["bindings"]
    return bindings


def test_every_function_is_indexed() -> None:
    assert set(FUNCTIONS) == {
        "dynamics_webhook",
        "push_worker",
        "spotler_pull",
        "record_status",
        "list_dead_letters",
        "replay_dead_letter",
        "replay_dead_letters",
        "health",
        "poison_worker",
        "health_details_route",
        "runs_route",
        "records_route",
        "ui_page",
        "ui_replay",
        "bulk_backfill",
        "bulk_resync",
        "bulk_reconcile",
        "bulk_run",
        "bulk_worker",
        "bulk_poison_worker",
        "scheduled_reconcile",
    }


def test_bulk_work_has_its_own_queue_routes_with_a_function_key_and_a_configured_schedule() -> None:
    assert _bindings("bulk_worker")[0]["queueName"] == "%BULK_QUEUE_NAME%"
    assert _bindings("bulk_poison_worker")[0]["queueName"] == "%BULK_QUEUE_NAME%-poison"
    for name, route in (("bulk_backfill", "bulk/backfill"), ("bulk_resync", "bulk/resync"),
                        ("bulk_reconcile", "bulk/reconcile")):  # fmt: skip
        trigger = _bindings(name)[0]
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, ["POST"], "FUNCTION")
    assert _bindings("bulk_run")[0]["authLevel"] == "FUNCTION"
    assert _bindings("scheduled_reconcile")[0]["schedule"] == "%RECONCILE_SCHEDULE%"


def test_webhook_is_an_anonymous_post_route_validated_by_the_connector() -> None:
    trigger = _bindings("dynamics_webhook")[0]
    assert trigger["type"] == "httpTrigger"
    assert trigger["route"] == "dynamics/webhook"
    assert trigger["methods"] == ["POST"]
    assert trigger["authLevel"] == "ANONYMOUS"


def test_push_worker_reads_the_configured_queue_on_the_host_storage() -> None:
    trigger = _bindings("push_worker")[0]
    assert trigger == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "msg",
        "queueName": "%SYNC_QUEUE_NAME%",
        "connection": "AzureWebJobsStorage",
    }


def test_pull_runs_every_fifteen_minutes() -> None:
    trigger = _bindings("spotler_pull")[0]
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "0 */15 * * * *"
    assert trigger["runOnStartup"] is False


def test_operator_routes_need_a_function_key() -> None:
    for name in ("record_status", "list_dead_letters", "replay_dead_letter", "replay_dead_letters"):
        assert _bindings(name)[0]["authLevel"] == "FUNCTION"
    assert _bindings("record_status")[0]["route"] == "status/{entity}/{id}"
    assert _bindings("replay_dead_letters")[0]["route"] == "deadletters/replay"
    assert _bindings("replay_dead_letters")[0]["methods"] == ["POST"]
    assert _bindings("health")[0]["authLevel"] == "ANONYMOUS"


def test_handlers_are_the_plain_functions_of_the_module() -> None:
    assert FUNCTIONS["dynamics_webhook"].get_user_function() is function_app.dynamics_webhook
    assert FUNCTIONS["spotler_pull"].get_user_function() is function_app.spotler_pull


def test_poison_trigger_reads_the_hosts_poison_queue() -> None:
    trigger = _bindings("poison_worker")[0]
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == "%SYNC_QUEUE_NAME%-poison"
    assert trigger["connection"] == "AzureWebJobsStorage"


def test_operations_routes_need_a_function_key() -> None:
    routes = {
        "health_details_route": ("health/details", ["GET"]),
        "runs_route": ("runs", ["GET"]),
        "records_route": ("status", ["GET"]),
        "ui_page": ("ui", ["GET"]),
        "ui_replay": ("ui/deadletters/{entity}/{event_id}/replay", ["POST"]),
    }
    for name, (route, methods) in routes.items():
        trigger = _bindings(name)[0]
        assert (trigger["authLevel"], trigger["route"], trigger["methods"]) == ("FUNCTION", route, methods), name
