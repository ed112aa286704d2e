"""Cold import: `import function_app` against a bare `import azure.functions`, in fresh interpreters.

Each figure is the median over `--runs` fresh processes of the time the import statement takes (measured inside
the process, so the interpreter's own start-up is left out). "first call" adds what the first handler call
imports (the runtime, the adapters, the Azure SDKs for storage, pydantic-settings): the cost moved from the
host's indexing to the first call, not added to it.

    .venv/bin/python bench/bench_import.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
FIRST_CALL = (
    "import function_app, sync_core.services.runtime, sync_core.services.config_gate, "
    "sync_core.services.operations, sync_core.services.status, sync_core.settings"
)
CASES = {
    "import azure.functions": "import azure.functions",
    "import function_app": "import function_app",
    "function_app + the first call's imports": FIRST_CALL,
}
PROBE = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"


def measure(statement: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run(  # noqa: S603  # our own interpreter, fixed statements
            [sys.executable, "-c", PROBE.format(statement=statement)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    seconds = {label: measure(statement, args.runs) for label, statement in CASES.items()}
    bare = seconds["import azure.functions"]
    table = Table(title=f"cold import, median of {args.runs} fresh interpreters")
    for column in ("import", "ms", "× azure.functions"):
        table.add_column(column)
    for label, value in seconds.items():
        table.add_row(label, f"{value * 1000:.0f}", f"{value / bare:.2f}×")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
