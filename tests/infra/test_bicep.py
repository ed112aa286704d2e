"""Offline checks of the infrastructure: Bicep syntax, no secrets in the templates, and app-settings drift.

Policy (checkov) runs from scripts/checkov.sh in CI, not here: it needs its own venv and takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

import sync_core.settings as settings_module

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
GATE = REPO_ROOT / "scripts" / "check_bicep.py"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the Functions host (not the connector) reads. Every key of the Bicep app settings must be either
# a field of sync_core.settings or listed here.
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Known to the settings module, but never to be set in Azure: storage is identity-based, and the static
# Dataverse token exists for the local sandbox only.
NEVER_IN_AZURE = {"AzureWebJobsStorage", "DATAVERSE_STATIC_TOKEN", "SYNC_TELEMETRY_CONSOLE"}
KEY_VAULT_SECRETS = {
    "spotler-consumer-secret",
    "dataverse-client-secret",
    "webhook-secret",
    "webhook-secret-next",
    "suppression-hash-key",
}
KEY_VAULT_REFERENCE = re.compile(r"^'@Microsoft\.KeyVault\(SecretUri=\$\{secretsUri\}([a-z0-9-]+)/\)'$")


def _load_gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_bicep", GATE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_bicep = _load_gate()


def _run_gate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GATE), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )


# --- 1. the syntax gate passes on the real templates


def test_infra_has_the_expected_templates() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/function.bicep", "app/rbac.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_template_parses_without_syntax_errors(path: Path) -> None:
    assert check_bicep.check_source(path, path.read_bytes()) == []


def test_gate_exits_zero_on_infra_with_a_summary() -> None:
    result = _run_gate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines() == [f"check_bicep: {len(BICEP_FILES)} file(s) parsed, no syntax errors"]


# --- 2. the gate fails on broken copies


def _broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = (INFRA / "core" / "storage.bicep").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "storage.bicep"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    return broken


def _reported_lines(output: str, path: Path) -> list[int]:
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+):(\d+): syntax error", re.MULTILINE)
    return [int(match.group(1)) for match in pattern.finditer(output)]


def test_gate_fails_on_a_missing_closing_brace(tmp_path: Path) -> None:
    broken = _broken_copy(
        tmp_path,
        "  resource tableService 'tableServices' = {\n    name: 'default'\n  }\n",
        "  resource tableService 'tableServices' = {\n    name: 'default'\n",
    )
    result = _run_gate(broken)
    assert result.returncode == 1
    assert _reported_lines(result.stdout, broken), result.stdout


def test_gate_fails_on_a_broken_resource_line(tmp_path: Path) -> None:
    broken = _broken_copy(
        tmp_path,
        "resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' =",
        "resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01'",
    )
    result = _run_gate(broken, INFRA / "main.bicep")
    assert result.returncode == 1
    lines = _reported_lines(result.stdout, broken)
    assert lines, result.stdout
    assert "main.bicep" not in result.stdout  # only the broken file is reported


def test_gate_fails_when_a_file_is_missing(tmp_path: Path) -> None:
    result = _run_gate(tmp_path / "absent.bicep")
    assert result.returncode == 1
    assert "syntax error" in result.stdout


# --- 3. no secret material anywhere in the infrastructure


def _infra_texts() -> Iterator[tuple[Path, str]]:
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            yield path, path.read_text(encoding="utf-8")
    yield REPO_ROOT / "azure.yaml", (REPO_ROOT / "azure.yaml").read_text(encoding="utf-8")


SECRET_PATTERNS = {
    "storage account key": re.compile(r"AccountKey\s*=", re.IGNORECASE),
    "instrumentation key": re.compile(r"InstrumentationKey\s*=", re.IGNORECASE),
    "SAS token": re.compile(r"[?&;]sig=|SharedAccessSignature\s*=", re.IGNORECASE),
    "shared access key": re.compile(r"SharedAccessKey\s*=", re.IGNORECASE),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "secret-like parameter default": re.compile(
        r"param\s+\w*(password|secret|token|key)\s+string\s*=\s*'[^']+'", re.IGNORECASE
    ),
    # A quoted, non-empty, non-interpolated literal assigned to a name that says password/secret/token/key.
    "password-like literal": re.compile(
        r"""["']?[\w-]*(password|passwd|pwd|secret|token|apikey|api_key|clientsecret)["']?\s*[:=]\s*"""
        r"""(?:["'](?!@Microsoft\.KeyVault\()(?![^"']*\$\{)[^"'\s]{6,}["'])""",
        re.IGNORECASE,
    ),
}
# Long tokens mixing upper case, lower case and digits look like keys (role-definition GUIDs are lower-case).
URL = re.compile(r"https?://[^\s'\"]+")
# `${SETTING_NAME=default}` in main.parameters.json: the name of an azd environment value, not a token.
AZD_VARIABLE = re.compile(r"\$\{[A-Za-z_]+=")
HIGH_ENTROPY = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{32,}(?![\w+/=-])")


@pytest.mark.parametrize(("kind", "pattern"), SECRET_PATTERNS.items(), ids=SECRET_PATTERNS.keys())
def test_no_secret_material_in_infra(kind: str, pattern: re.Pattern[str]) -> None:
    hits = [
        f"{path.relative_to(REPO_ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for path, text in _infra_texts()
        for m in pattern.finditer(text)
    ]
    assert hits == [], kind


def test_no_key_like_tokens_in_infra() -> None:
    hits = [
        f"{path.relative_to(REPO_ROOT)}: {token}"
        for path, text in _infra_texts()
        for token in HIGH_ENTROPY.findall(AZD_VARIABLE.sub("${", URL.sub(" ", text)))
        if re.search(r"[A-Z]", token) and re.search(r"[a-z]", token) and re.search(r"\d", token)
    ]
    assert hits == []


@pytest.mark.parametrize(
    "sample",
    [
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc==",
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x",
        "https://x.blob.core.windows.net/c?sv=2022-11-02&sig=abcd",
        "  adminPassword: 'Hunter2Hunter2'",
        '  "clientSecret": "s3cr3t-value"',
        "param apiToken string = 'abcdef123456'",
    ],
    ids=["account-key", "instrumentation-key", "sas", "password", "json-secret", "param-default"],
)
def test_secret_patterns_catch_known_shapes(sample: str) -> None:
    assert any(p.search(sample) for p in SECRET_PATTERNS.values())


def test_key_like_token_pattern_catches_a_base64_key() -> None:
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    assert HIGH_ENTROPY.findall(f"value: '{key}'") == [key]


def test_secret_patterns_accept_key_vault_references_and_interpolations() -> None:
    allowed = [
        "  WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}webhook-secret/)'",
        "  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'",
        "param spotlerConsumerKey string = ''",
        "  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'",
    ]
    assert [s for s in allowed if any(p.search(s) for p in SECRET_PATTERNS.values())] == []


def test_no_secure_parameters_so_no_secret_is_ever_passed_in() -> None:
    offenders = [p.name for p in BICEP_FILES if "@secure()" in p.read_text(encoding="utf-8")]
    assert offenders == []
    parameters = (INFRA / "main.parameters.json").read_text(encoding="utf-8")
    assert not re.search(r'"\w*(secret|password|token)\w*"\s*:', parameters, re.IGNORECASE)


# --- 4. app settings in Bicep match sync_core.settings

_PARSER = Parser(Language(tree_sitter_bicep.language()))


def _variable(path: Path, name: str) -> Node:
    tree = _PARSER.parse(path.read_bytes())
    for node in tree.root_node.children:
        if node.type == "variable_declaration":
            ident = node.child_by_field_name("name") or next(c for c in node.children if c.type == "identifier")
            if ident.text == name.encode():
                return node
    raise AssertionError(f"{path.name}: no `var {name}`")


def _text(node: Node) -> str:
    return (node.text or b"").decode()


def _leaf_properties(node: Node) -> Iterator[tuple[str, str]]:
    """(key, value source) of every object property below `node` whose value is not itself an object."""
    for child in node.children:
        if child.type == "object_property":
            key_node, value_node = child.children[0], child.children[-1]
            key = _text(key_node).strip("'")
            if value_node.type == "object":
                yield from _leaf_properties(value_node)
            else:
                yield key, _text(value_node)
        else:
            yield from _leaf_properties(child)


def bicep_app_settings() -> dict[str, str]:
    """Every app setting the templates write: the connector block (main.bicep) and the host block."""
    settings = dict(_leaf_properties(_variable(INFRA / "main.bicep", "appSettings")))
    host = dict(_leaf_properties(_variable(INFRA / "app" / "function.bicep", "hostSettings")))
    assert not settings.keys() & host.keys(), "a setting is defined twice"
    return settings | host


@pytest.fixture(scope="module")
def specs() -> list[typing.Any]:
    result: list[typing.Any] = settings_module.setting_specs()
    assert result, "setting_specs() returned nothing"
    return result


def test_bicep_parser_finds_the_app_settings() -> None:
    found = bicep_app_settings()
    assert {"SPOTLER_CONSUMER_KEY", "DATAVERSE_CLIENT_SECRET", "AzureWebJobsStorage__accountName"} <= found.keys()


def test_every_required_setting_is_set_in_bicep(specs: list[typing.Any]) -> None:
    required = {s.env_name for s in specs if s.required}
    assert sorted(required - bicep_app_settings().keys()) == []


def test_every_bicep_setting_is_known(specs: list[typing.Any]) -> None:
    known = {s.env_name for s in specs} | HOST_SETTINGS
    assert sorted(bicep_app_settings().keys() - known) == []


def test_secrets_are_key_vault_references(specs: list[typing.Any]) -> None:
    bicep = bicep_app_settings()
    secrets = {s.env_name for s in specs if s.secret}
    not_references = {
        name: bicep[name] for name in secrets & bicep.keys() if not KEY_VAULT_REFERENCE.match(bicep[name])
    }
    assert not_references == {}


def test_settings_for_local_use_only_are_not_set_in_azure(specs: list[typing.Any]) -> None:
    assert {s.env_name for s in specs} >= NEVER_IN_AZURE
    assert sorted(NEVER_IN_AZURE & bicep_app_settings().keys()) == []


def test_key_vault_references_name_the_documented_secrets() -> None:
    referenced = {m.group(1) for v in bicep_app_settings().values() if (m := KEY_VAULT_REFERENCE.match(v))}
    assert referenced == KEY_VAULT_SECRETS
    deploy_doc = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert sorted(name for name in KEY_VAULT_SECRETS if f"--name {name}" not in deploy_doc) == []


def _allowed_values(param: str) -> set[str]:
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    match = re.search(r"@allowed\(\[\n((?:\s+'[^']*'\n)+)\s*\]\)\n(?:@[^\n]*\n)*param " + param + r" ", text)
    assert match, f"no @allowed list for {param}"
    return set(re.findall(r"'([^']*)'", match.group(1)))


@pytest.mark.parametrize(
    ("param", "field"), [("dataverseAuth", "dataverse_auth"), ("conflictWinner", "conflict_winner")]
)
def test_choice_parameters_are_valid_setting_values(param: str, field: str) -> None:
    choices = set(typing.get_args(settings_module.Settings.model_fields[field].annotation))
    assert _allowed_values(param) <= choices


def test_host_setting_allow_list_is_exactly_what_function_bicep_sets() -> None:
    host = dict(_leaf_properties(_variable(INFRA / "app" / "function.bicep", "hostSettings")))
    assert set(host) == HOST_SETTINGS
    assert host["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${identityClientId};Authorization=AAD'"


# --- parameters


def _main_parameters() -> list[str]:
    return re.findall(r"^param (\w+) ", (INFRA / "main.bicep").read_text(encoding="utf-8"), re.MULTILINE)


def test_every_main_parameter_has_a_description() -> None:
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    blocks = re.split(r"\n\n", text)
    undocumented = [
        name for name in _main_parameters() if not any(f"param {name} " in b and "@description(" in b for b in blocks)
    ]
    assert undocumented == []


def test_parameters_file_only_names_declared_parameters() -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert sorted(set(values) - set(_main_parameters())) == []
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"


# --- 5. every setting is a parameter `azd env set` can give (secrets: Key Vault references)


def _azd_values() -> dict[str, tuple[str, str]]:
    """main.bicep parameter -> (the azd environment value that gives it, its default) from main.parameters.json."""
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    found: dict[str, tuple[str, str]] = {}
    for param, entry in values.items():
        match = re.fullmatch(r"\$\{(\w+)(?:=([^}]*))?\}", str(entry.get("value")))
        if match:
            found[param] = (match.group(1), match.group(2) or "")
    return found


def test_every_setting_is_a_key_vault_reference_or_a_parameter_azd_env_set_gives(specs: list[typing.Any]) -> None:
    bicep, params, azd = bicep_app_settings(), set(_main_parameters()), _azd_values()
    problems = []
    for spec in specs:
        name = spec.env_name
        if name in NEVER_IN_AZURE or name in HOST_SETTINGS:
            continue
        value = bicep.get(name)
        if value is None:
            problems.append(f"{name}: not an app setting of main.bicep")
        elif spec.secret:
            if not KEY_VAULT_REFERENCE.match(value):
                problems.append(f"{name}: a secret, but not a Key Vault reference")
        elif not any(azd.get(p, ("", ""))[0] == name for p in re.findall(r"\b[A-Za-z_]\w*\b", value) if p in params):
            problems.append(f"{name}: no main.bicep parameter that `azd env set {name} …` gives")
    assert problems == []


def test_azd_defaults_are_the_settings_defaults(specs: list[typing.Any]) -> None:
    defaults = dict(_azd_values().values())
    mismatched = {
        s.env_name: (defaults[s.env_name], s.default)
        for s in specs
        if s.env_name in defaults and defaults[s.env_name] != s.default
    }
    assert mismatched == {}
