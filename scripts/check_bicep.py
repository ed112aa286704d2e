"""Syntax gate for Bicep templates, offline: parse each file with tree-sitter-bicep and report errors.

Usage: python scripts/check_bicep.py [FILE_OR_DIR ...]   (default: every .bicep file under infra/)

Prints `path:line:col: syntax error` for every ERROR or MISSING node and exits 1 if there is any;
otherwise prints one summary line and exits 0. This checks syntax only: names, types and references
are left to `az bicep build` wherever the Bicep CLI is available.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO_ROOT / "infra"


@dataclass(frozen=True)
class SyntaxProblem:
    """One ERROR or MISSING node, with a 1-based position."""

    path: Path
    line: int
    column: int
    detail: str

    def __str__(self) -> str:
        return f"{_display(self.path)}:{self.line}:{self.column}: syntax error ({self.detail})"


def _display(path: Path) -> str:
    """The path relative to the working directory when it is inside it, as editors and CI logs expect."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def _problem_nodes(node: Node) -> Iterator[Node]:
    """ERROR and MISSING nodes, outermost first; the children of an ERROR node are not reported again."""
    if node.is_error or node.is_missing:
        yield node
        return
    if not node.has_error:
        return
    for child in node.children:
        yield from _problem_nodes(child)


def check_source(path: Path, source: bytes, parser: Parser | None = None) -> list[SyntaxProblem]:
    """Parse one template's text and return its syntax problems (empty when it parses cleanly)."""
    tree = (parser or _parser()).parse(source)
    problems = []
    for node in _problem_nodes(tree.root_node):
        row, col = node.start_point
        if node.is_missing:
            detail = f"missing {node.type!r}"
        else:
            # tree-sitter often opens the ERROR node where the broken construct starts, not at the typo.
            detail = f"cannot parse lines {row + 1}-{node.end_point[0] + 1}"
        problems.append(SyntaxProblem(path=path, line=row + 1, column=col + 1, detail=detail))
    return problems


def bicep_files(targets: Sequence[str]) -> list[Path]:
    """The .bicep files named, or found under the directories named (default: infra/)."""
    roots = [Path(t) for t in targets] or [DEFAULT_ROOT]
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files.extend(sorted(root.rglob("*.bicep")))
        else:
            files.append(root)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Check every file; return the process exit status."""
    files = bicep_files(sys.argv[1:] if argv is None else argv)
    if not files:
        print("check_bicep: no .bicep files found", file=sys.stderr)
        return 1
    parser = _parser()
    problems: list[SyntaxProblem] = []
    for path in files:
        try:
            source = path.read_bytes()
        except OSError as exc:
            problem = SyntaxProblem(path=path, line=1, column=1, detail=f"cannot read: {exc.strerror}")
            print(problem)
            problems.append(problem)
            continue
        for problem in check_source(path, source, parser):
            print(problem)
            problems.append(problem)
    if problems:
        print(f"check_bicep: {len(problems)} syntax error(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check_bicep: {len(files)} file(s) parsed, no syntax errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
