"""The alerts template: one action group with an e-mail parameter, and the four rules operators rely on."""

from __future__ import annotations

import re
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra"
ALERTS = (INFRA / "core" / "alerts.bicep").read_text(encoding="utf-8")
MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")


def test_the_action_group_mails_the_address_parameter() -> None:
    assert "resource actionGroup 'Microsoft.Insights/actionGroups@" in ALERTS
    assert "emailAddress: alertEmail" in ALERTS
    assert "param alertEmail string = ''" in MAIN
    assert "alertEmail: alertEmail" in MAIN


def test_there_is_a_rule_for_each_condition_and_each_notifies_the_action_group() -> None:
    names = re.findall(r"^\s+name: '([a-z-]+)'\n\s+description:", ALERTS, flags=re.MULTILINE)
    assert names == ["dead-letters", "poison-queue", "no-completed-pull", "push-failure-share"]
    assert "resource alertRules 'Microsoft.Insights/scheduledQueryRules@" in ALERTS
    assert "actionGroup.id" in ALERTS


def test_the_rules_query_what_the_connector_emits() -> None:
    # The names below are the ones sync_core.telemetry, the worker and function_app.py emit.
    for needle in (
        '"sync.dead_letters.waiting"',
        'operation_Name == "poison_worker"',
        'message startswith "dead letter not stored"',
        'name == "sync.pull"',
        'customDimensions["sync.completed"]',
        'name == "sync.push"',
    ):
        assert needle in ALERTS, needle


def test_the_failure_share_is_a_parameter() -> None:
    assert "threshold: failureSharePercent" in ALERTS
    assert "failureSharePercent: alertFailureSharePercent" in MAIN
