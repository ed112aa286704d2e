"""Serve the Dataverse sandbox in the foreground: python -m sandboxes.dataverse --port 8082 --token T."""

from __future__ import annotations

import argparse
import json

import uvicorn

from sandboxes.dataverse.app import DEFAULT_TOKEN, DataverseSandbox, create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.dataverse", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token the Web API accepts")
    parser.add_argument(
        "--columns",
        default="",
        help='custom columns as JSON, e.g. {"contact": {"sync_spotlerstatus": "string", "sync_newsletter": "bool"}}',
    )
    parser.add_argument(
        "--webhook-workers", type=int, default=1, help="asynchronous webhook deliveries sent at a time (default 1)"
    )
    args = parser.parse_args()
    custom = json.loads(args.columns) if args.columns else None
    sandbox = DataverseSandbox(token=args.token, custom_columns=custom, webhook_workers=args.webhook_workers)
    print(f"Dataverse sandbox on http://{args.host}:{args.port}/api/data/v9.2 (control API under /_sandbox)")
    uvicorn.run(create_app(sandbox), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
