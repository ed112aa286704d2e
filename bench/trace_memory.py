"""Run `python -m sync_core …` under tracemalloc and write where its memory is at the peak and at the end.

Used by `bench/bench_bulk.py --trace-memory PATH` to find what grows with the size of a run: every few
seconds the traced total is sampled; the snapshot taken when the traced total was highest and the one at the
end are written to PATH (top allocation sites by size, with their call stacks).
"""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
import threading
import time
import tracemalloc

FRAMES = int(os.environ.get("TRACE_FRAMES", "1"))
"""Frames kept per allocation: 1 (the allocating line) costs least; more find the callers, at a high price."""
SAMPLE_SECONDS = 15.0
GROWTH = 1.05
"""A new snapshot is taken only when the traced total is this much above the last one kept (snapshots are slow)."""


def main() -> None:
    out = sys.argv[1]
    sys.path.insert(0, os.getcwd())  # the repository (the child runs there), not this script's folder
    sys.argv = ["sync_core", *sys.argv[2:]]
    tracemalloc.start(FRAMES)
    best: dict[str, object] = {"size": 0, "snapshot": None, "at": 0.0}
    started = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            current, _ = tracemalloc.get_traced_memory()
            if current > GROWTH * int(best["size"]):  # type: ignore[call-overload]
                best.update(size=current, snapshot=tracemalloc.take_snapshot(), at=time.monotonic() - started)

    def dump() -> None:
        stop.set()
        end = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
        with open(out, "w", encoding="utf-8") as f:
            f.write(f"traced peak {peak / 2**20:.1f} MiB\n")
            for title, snap in (
                (f"largest sampled ({int(best['size']) / 2**20:.1f} MiB at {best['at']:.0f} s)", best["snapshot"]),  # type: ignore[call-overload]
                ("at the end", end),
            ):
                if snap is None:
                    continue
                f.write(f"\n== {title}\n")
                for stat in snap.statistics("traceback" if FRAMES > 1 else "lineno")[:25]:  # type: ignore[attr-defined]
                    f.write(f"\n{stat.size / 2**20:.2f} MiB in {stat.count} blocks\n")
                    f.write("\n".join(stat.traceback.format(limit=FRAMES)) + "\n")

    threading.Thread(target=sample, daemon=True).start()
    atexit.register(dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still writes what it found
    runpy.run_module("sync_core", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
