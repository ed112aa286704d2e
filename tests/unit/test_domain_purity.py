"""Domain modules stay pure: no I/O or framework imports, no clock; only the settings module reads the environment."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYNC_CORE = ROOT / "sync_core"
DOMAIN = SYNC_CORE / "domain"
DOMAIN_MODULES = tuple(sorted(path.stem for path in DOMAIN.glob("*.py") if path.stem != "__init__"))
# The rules, the records and the ports: what the folder must hold for the layers to mean anything.
CORE_DOMAIN_MODULES = (
    "records",
    "reasons",
    "state_model",
    "mapping",
    "convert",
    "consent",
    "eligibility",
    "plan",
    "merge",
    "feed",
    "event_codec",
    "errors",
    "ports",
)
BANNED_IMPORTS = (
    "httpx",
    "aiohttp",
    "requests",
    "socket",
    "urllib.request",
    "http.client",
    "azure",
    "os",
    "subprocess",
    "asyncio",
    "time",
    "threading",
    "sqlite3",
    "logging",
    "random",
    "secrets",
    "shutil",
    "tempfile",
)
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
}
BANNED_BUILTINS = {"open", "print", "input"}
ENV_NAMES = {"environ", "environb", "getenv", "putenv", "unsetenv"}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def is_banned(module: str, banned: str) -> bool:
    return module == banned or module.startswith(banned + ".")


def dotted(node: ast.expr) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (*dotted(node.value), node.attr)
    return ()


def test_every_domain_module_exists() -> None:
    missing = [name for name in CORE_DOMAIN_MODULES if not (DOMAIN / f"{name}.py").is_file()]
    assert not missing


@pytest.mark.parametrize("name", DOMAIN_MODULES)
def test_domain_module_imports_nothing_outside_the_domain(name: str) -> None:
    tree = parse(DOMAIN / f"{name}.py")
    found = [
        f"line {line}: {module}"
        for line, module in imported_modules(tree)
        if is_banned(module, "sync_core") and not is_banned(module, "sync_core.domain")
    ]
    assert not found, f"sync_core/domain/{name}.py depends on an outer layer: {found}"


@pytest.mark.parametrize("name", DOMAIN_MODULES)
def test_domain_module_imports_no_io_or_framework_library(name: str) -> None:
    tree = parse(DOMAIN / f"{name}.py")
    found = [
        f"line {line}: {module}"
        for line, module in imported_modules(tree)
        if any(is_banned(module, banned) for banned in BANNED_IMPORTS)
    ]
    assert not found, f"sync_core/domain/{name}.py imports I/O or framework code: {found}"


@pytest.mark.parametrize("name", DOMAIN_MODULES)
def test_domain_module_reads_no_clock(name: str) -> None:
    tree = parse(DOMAIN / f"{name}.py")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            path = dotted(node.func)
            if len(path) >= 2 and (path[-2], path[-1]) in CLOCK_CALLS:
                found.append(f"line {node.lineno}: {'.'.join(path)}()")
            if len(path) == 1 and path[0] in BANNED_BUILTINS:
                found.append(f"line {node.lineno}: {path[0]}()")
    assert not found, f"sync_core/domain/{name}.py reads the clock or does I/O: {found}"


def test_the_checks_catch_what_they_look_for() -> None:
    tree = ast.parse("import os\nfrom azure.data import tables\nimport logging\nx = datetime.now(UTC)\n")
    modules = [m for _, m in imported_modules(tree)]
    assert any(is_banned(m, "os") for m in modules)
    assert any(is_banned(m, "azure") for m in modules)
    assert any(is_banned(m, "logging") for m in modules)
    calls = [dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert ("datetime", "now") in calls
    assert not is_banned("osmosis", "os")
    assert env_reads(ast.parse("import os\na = os.environ['X']\nb = os.getenv('Y')\nfrom os import environ\n"))
    assert not env_reads(ast.parse("def f(environ: dict[str, str]) -> None:\n    return None\n"))


def all_sync_core_files() -> list[Path]:
    return sorted(p for p in SYNC_CORE.rglob("*.py") if ".venv" not in p.parts)


def test_no_sync_core_module_imports_azure_functions() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in all_sync_core_files()
        for line, module in imported_modules(parse(path))
        if is_banned(module, "azure.functions")
    ]
    assert not found


def env_reads(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES and dotted(node.value) == ("os",):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in ENV_NAMES for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript):
            path = dotted(node.value)
            if path and path[-1] == "environ":
                lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment() -> None:
    files = [p for p in all_sync_core_files() if p != SYNC_CORE / "settings.py"]
    entry = ROOT / "function_app.py"
    if entry.is_file():
        files.append(entry)
    found = [f"{path.relative_to(ROOT)}:{line}" for path in files for line in env_reads(parse(path))]
    assert not found, f"only sync_core/settings.py may read the environment: {found}"
