"""Summarise a mutmut run: the score per file and overall, and every surviving mutant with file:line.

Run from the repository root after `mutmut run` (./scripts/mutation does both). Only the mutants named by
the patterns given on the command line count (the rule code in scope); the rest were never run.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

HUNK = re.compile(r"^@@ -(\d+)")


@dataclass(frozen=True)
class Survivor:
    name: str
    path: str
    line: int
    before: str
    after: str


def _function_starts(path: Path) -> dict[str, int]:
    """The `def` line of every function and method, keyed the way mutmut mangles names."""
    starts: dict[str, int] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            starts[f"x_{node.name}"] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    starts[f"x\u01c1{node.name}\u01c1{item.name}"] = item.lineno
    return starts


def _locate(name: str, path: Path, starts: dict[str, int]) -> Survivor:
    diff = get_diff_for_mutant(name, path=path)
    function = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    first = starts.get(function, 1)
    source = path.read_text(encoding="utf-8").splitlines()
    offset, before, after = 0, "", ""
    for text in diff.splitlines():
        match = HUNK.match(text)
        if match:
            offset = int(match.group(1))
            continue
        if text.startswith(("---", "+++")):
            continue
        if text.startswith("-") and not before:
            before = text[1:].strip()
        elif text.startswith("+") and not after:
            after = text[1:].strip()
        elif not before and text.startswith(" "):
            offset += 1
    line = first + offset - 1
    if not (0 < line <= len(source) and source[line - 1].strip() == before):
        # Fall back to the first line of the function that reads like the mutated one.
        line = next((n for n in range(first, len(source) + 1) if source[n - 1].strip() == before), first)
    return Survivor(name, str(path), line, before, after)


def main(patterns: list[str]) -> int:
    counts: Counter[str] = Counter()
    per_file: dict[str, Counter[str]] = {}
    survivors: list[Survivor] = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        starts = _function_starts(path)
        for name, code in sorted(data.exit_code_by_key.items()):
            if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            status = status_by_exit_code[code]
            counts[status] += 1
            per_file.setdefault(str(path), Counter())[status] += 1
            if status == "survived":
                survivors.append(_locate(name, path, starts))
    total = sum(counts.values())
    if not total:
        print("no mutation results: run `mutmut run` first", file=sys.stderr)
        return 1
    print("Surviving mutants (file:line  mutant  change):")
    for s in sorted(survivors, key=lambda s: (s.path, s.line, s.name)):
        print(f"  {s.path}:{s.line}  {s.name.rsplit('.', 1)[1]}\n      - {s.before}\n      + {s.after}")
    if not survivors:
        print("  none")
    print("\nScore per file (killed / mutants run):")
    for path, c in sorted(per_file.items()):
        run = sum(c.values())
        print(f"  {path}: {c['killed']}/{run} killed ({100 * c['killed'] / run:.1f}%), {c['survived']} survived")
    others = {k: v for k, v in counts.items() if k not in ("killed", "survived")}
    print(
        f"\nMutation score: {counts['killed']}/{total} killed = {100 * counts['killed'] / total:.1f}%"
        f" ({counts['survived']} survived{', ' + str(others) if others else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
