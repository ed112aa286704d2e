"""The sync-health page: server-rendered HTML from Jinja2 templates (autoescaped), no build step.

Jinja2 is imported on the first render, so importing the Functions entry points stays cheap.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape  # noqa: PLC0415

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = when
    return environment


def when(value: str | None) -> str:
    """An ISO 8601 UTC timestamp as `2026-01-31 14:05:09` (the page says its times are UTC)."""
    if not value:
        return ""
    return value.replace("T", " ")[:19]


def link(path: str, code: str | None, **params: str | None) -> str:
    """`/api/<path>` with the query parameters that are set, the function key (`code`) last."""
    query = {k: v for k, v in params.items() if v}
    if code:
        query["code"] = code
    return f"/api/{path}" + (f"?{urlencode(query)}" if query else "")


def render_page(data: dict[str, Any], *, code: str | None, reason: str | None, message: str | None) -> str:
    template = _environment().get_template("health_page.html")
    return str(
        template.render(
            data=data,
            reason=reason or "",
            message=message,
            link=lambda path, **params: link(path, code, **params),
            q=lambda value: quote(str(value), safe=""),
        )
    )
