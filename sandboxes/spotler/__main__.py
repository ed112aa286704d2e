"""Serve the Spotler sandbox in the foreground: `python -m sandboxes.spotler --port 8081`."""

from __future__ import annotations

import argparse

import uvicorn

from sandboxes.spotler.app import create_app
from sandboxes.spotler.store import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.spotler", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--consumer-key", default="sandbox-consumer-key")
    parser.add_argument("--consumer-secret", default="sandbox-secret")
    parser.add_argument("--timestamp-window", type=float, default=300.0, help="seconds")
    parser.add_argument("--invalid-email-error-type", default="INVALID_PARAMS")
    parser.add_argument("--duplicate-email-mode", choices=["merge", "allow"], default="merge")
    parser.add_argument("--updates-shape", choices=["wrapper", "array"], default="wrapper")
    parser.add_argument("--timestamp-format", choices=["epoch_ms", "iso"], default="epoch_ms")
    parser.add_argument("--strict-postcode", action="store_true")
    parser.add_argument(
        "--api-writes-hidden-from-feed",
        action="store_true",
        help="API writes do not appear in /contact/updates/list (profile edits still do)",
    )
    args = parser.parse_args(argv)
    config = SandboxConfig(
        consumers={args.consumer_key: args.consumer_secret},
        timestamp_window=args.timestamp_window,
        invalid_email_error_type=args.invalid_email_error_type,
        duplicate_email_mode=args.duplicate_email_mode,
        updates_shape=args.updates_shape,
        timestamp_format=args.timestamp_format,
        strict_postcode=args.strict_postcode,
        api_writes_in_feed=not args.api_writes_hidden_from_feed,
    )
    url = f"http://{args.host}:{args.port}"
    print(f"Spotler sandbox on {url}/integrationservice-1.1.0 (control API: {url}/_sandbox/)", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
