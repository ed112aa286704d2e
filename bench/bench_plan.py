"""Benchmark of the push decision: how many Dataverse changes `plan_push` decides per second.

Generates varied records deterministically (mixed tables; some inactive, Do Not Email, invalid e-mail,
deleted, opted out in Spotler, suppressed; many already linked with a Spotler contact) as a stream: each
`PushInput` is built, planned and dropped, and only the planning is timed. Peak memory is measured in a second,
traced pass and does not grow with --records. The decision digest (every plan's action, reason, detail, contact
and link base) is the same for the same seed and record count whenever the decisions are the same.

    .venv/bin/python bench/bench_plan.py --records 100000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from sync_core.domain.consent import email_hash
from sync_core.domain.mapping import EntityMapping, default_mapping
from sync_core.domain.plan import PushAction, PushInput, PushOptions, PushPlan, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, ChangeKind, EntityName, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause

KEY = b"benchmark-hash-key-0123456789abcd"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Niklaus"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Wirth"]
CITIES = ["Amsterdam", "Utrecht", "Rotterdam", "Eindhoven", "Groningen", None]
JOBS = ["Engineer", "Analyst", "Manager", "Director", None, ""]


def build_inputs(count: int, seed: int, options: PushOptions) -> Iterator[tuple[PushInput, EntityMapping]]:
    rng = random.Random(seed)
    config = default_mapping()
    mappings: dict[EntityName, EntityMapping] = {}
    for name in ("contact", "lead", "account"):
        m = config.for_entity(name)
        assert m is not None
        mappings[name] = m
    for i in range(count):
        entity: EntityName = rng.choices(("contact", "lead", "account"), weights=(6, 3, 1))[0]
        mapping = mappings[entity]
        record_id = f"{entity[0]}-{i:07d}"
        email: str | None = f"{rng.choice(FIRST).lower()}.{i}@example.com"
        roll = rng.random()
        if roll < 0.04:
            email = rng.choice(["not-an-address", "", None, "x@localhost"])
        attrs: dict[str, AttrValue] = {
            "firstname": rng.choice(FIRST),
            "lastname": rng.choice(LAST),
            "name": f"{rng.choice(LAST)} BV",
            "companyname": f"{rng.choice(LAST)} BV",
            "emailaddress1": email,
            "jobtitle": rng.choice(JOBS),
            "birthdate": f"19{rng.randint(40, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "address1_line1": f"Straat {rng.randint(1, 300)}",
            "address1_postalcode": f"{rng.randint(1000, 9999)} AB",
            "address1_city": rng.choice(CITIES),
            "address1_country": "NL",
            "statecode": 1 if rng.random() < 0.05 else 0,
            "donotemail": rng.random() < 0.03,
            "donotbulkemail": rng.random() < 0.08,
        }
        when = EPOCH + timedelta(seconds=i)
        kind = ChangeKind.UPDATE
        link: LinkState | None = None
        spotler: SpotlerContact | None = None
        email_match: SpotlerContact | None = None
        suppression: Suppression | None = None
        peers: list[LinkState] = []
        if rng.random() < 0.45:  # already synced once: a link and the contact it produced
            prior = dict(attrs, statecode=0, donotemail=False, emailaddress1=f"prior.{i}@example.com")
            first = plan_push(
                PushInput(entity, record_id, ChangeKind.CREATE, prior, when, frozenset(prior), version=1),
                mapping,
                options,
            )
            link, spotler = first.link, first.contact
            if spotler is not None:
                channels = {"EMAIL": rng.random() >= 0.02}  # a few opted out in Spotler
                spotler = dataclasses.replace(spotler, channels=channels, last_changed=when)
                if rng.random() < 0.5:  # unchanged e-mail: most updates touch one or two columns
                    attrs["emailaddress1"] = prior["emailaddress1"]
                    for column in rng.sample(["jobtitle", "address1_city", "lastname", "firstname"], 2):
                        attrs[column] = prior[column]
            if rng.random() < 0.03 and link is not None:
                peers = [LinkState("lead" if entity == "contact" else "contact", f"p-{i}", link.external_id)]
            if rng.random() < 0.03:
                kind = ChangeKind.DELETE
        else:
            kind = ChangeKind.CREATE
            if rng.random() < 0.08 and email:
                email_match = SpotlerContact(f"sp-{i}", {"email": email}, {1: True}, channels={"EMAIL": True})
        if rng.random() < 0.02 and email:
            suppression = Suppression(email_hash(KEY, email), SuppressionCause.ANONYMIZED, entity, f"old-{i}", when)
        changed = frozenset(attrs) if kind is ChangeKind.CREATE else frozenset(rng.sample(sorted(attrs), 2))
        yield (
            PushInput(
                entity=entity,
                record_id=record_id,
                kind=kind,
                attributes=None if kind is ChangeKind.DELETE else attrs,
                now=when + timedelta(hours=1),
                changed=changed,
                modified_on=when + timedelta(minutes=30),
                version=2,
                link=link,
                spotler=spotler,
                email_match=email_match,
                suppression=suppression,
                peers=peers,
            ),
            mapping,
        )


def _fingerprint(plan: PushPlan) -> bytes:
    contact = plan.contact
    link = plan.link
    return repr(
        (
            plan.action.value,
            plan.reason.value,
            plan.detail,
            plan.external_id,
            None if contact is None else (sorted(contact.properties.items()), sorted(contact.permissions.items())),
            None if link is None else sorted(link.base.items()),
        )
    ).encode()


def plan_all(
    inputs: Iterable[tuple[PushInput, EntityMapping]], options: PushOptions
) -> tuple[float, Counter[tuple[PushAction, ReasonCode]], str]:
    """Plan every input as it arrives: (seconds spent planning, decisions by action/reason, decision digest)."""
    counts: Counter[tuple[PushAction, ReasonCode]] = Counter()
    digest = hashlib.sha256()
    spent = 0.0
    clock = time.perf_counter
    for inp, mapping in inputs:
        started = clock()
        plan = plan_push(inp, mapping, options)
        spent += clock() - started
        counts[(plan.action, plan.reason)] += 1
        digest.update(_fingerprint(plan))
    return spent, counts, digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="number of generated changes (default 100000)")
    parser.add_argument("--seed", type=int, default=20250101, help="generator seed (default 20250101)")
    parser.add_argument("--no-trace", action="store_true", help="skip the traced pass that measures peak memory")
    args = parser.parse_args(argv)
    console = Console()
    options = PushOptions(hash_key=KEY)

    planning, counts, digest = plan_all(build_inputs(args.records, args.seed, options), options)
    decisions = sum(counts.values())

    peak_traced = None
    if not args.no_trace:
        tracemalloc.start()
        plan_all(build_inputs(args.records, args.seed, options), options)
        _, peak_traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    rate = decisions / planning if planning else float("inf")
    summary = Table(title=f"plan_push over {decisions:,} generated changes (seed {args.seed})")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("planning time", f"{planning:.3f} s")
    summary.add_row("decisions per second", f"{rate:,.0f}")
    summary.add_row("mean per decision", f"{planning / max(decisions, 1) * 1e6:.1f} µs")
    summary.add_row("decision digest", digest)
    if peak_traced is not None:
        summary.add_row("tracemalloc peak while planning", f"{peak_traced / 2**20:.1f} MiB")
    summary.add_row("ru_maxrss (whole process)", f"{max_rss_kib / 1024:.1f} MiB")
    console.print(summary)

    outcomes = Table(title="decisions by action / reason")
    outcomes.add_column("action")
    outcomes.add_column("reason")
    outcomes.add_column("count", justify="right")
    outcomes.add_column("share", justify="right")
    for (action, reason), n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        outcomes.add_row(action.value, reason.value, f"{n:,}", f"{n / decisions:.1%}")
    console.print(outcomes)
    assert any(action is PushAction.CREATE for action, _ in counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
