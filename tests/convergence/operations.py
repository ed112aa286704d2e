"""The random world: a seeded list of operations on both systems, weighted towards the hard cases.

Operations are abstract ("clear Do Not Email on slot 17", "give slot 4 the address slot 9 holds"); the runner
resolves them against the live state when it applies them, so any sub-list of a generated list is still a
valid run. That is what lets a failure be shrunk to a short reproduction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ENTITY_WEIGHTS = (("contact", 5), ("lead", 3), ("account", 2))

# (kind, weight). Kinds that start with "sp_" act in Spotler, "net_" on the network, the rest in Dataverse.
OPERATION_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("edit", 10),
    ("email_fresh", 6),
    ("email_shared", 7),
    ("email_back", 4),
    ("twins", 3),
    ("dne_on", 3),
    ("dne_off", 4),
    ("dnbe_on", 3),
    ("dnbe_off", 4),
    ("deactivate", 3),
    ("activate", 3),
    ("deactivate_person", 3),
    ("reactivate_person", 3),
    ("delete", 2),
    ("merge", 2),
    ("qualify", 2),
    ("disqualify", 2),
    ("filter_out", 2),
    ("filter_in", 2),
    ("sp_edit", 6),
    ("sp_permission_off", 3),
    ("sp_permission_on", 2),
    ("sp_opt_out", 3),
    # Aimed at the consent and identity rules: two records given one fresh address at the same moment (their
    # pushes race on one address), an address that lost its consent given to another or a new record.
    ("email_converge", 2),
    ("email_blocked", 2),
    ("create_again", 2),
)

EXCLUDED_JOB_TITLE = "Stagiair"  # the mapping filter in this world: interns are not mailed
FIRST_NAMES = ("Anna", "Bram", "Chantal", "Daan", "Eva", "Finn", "Greet", "Hugo", "Iris", "Joost")
JOB_TITLES = ("Inkoper", "Directeur", "Planner", "Adviseur", "Monteur")


@dataclass(frozen=True)
class Op:
    """One step of the run. `slot` names a Dataverse record (or the person it belongs to)."""

    seq: int
    kind: str
    slot: int = -1
    other: int = -1  # a second slot: the holder of an address, a merge master, a twin
    value: str = ""
    entity: str = ""  # for creates: the table of the new record

    def describe(self) -> str:
        parts = [f"#{self.seq} {self.kind}"]
        if self.entity:
            parts.append(self.entity)
        if self.slot >= 0:
            parts.append(f"slot {self.slot}")
        if self.other >= 0:
            parts.append(f"other {self.other}")
        if self.value:
            parts.append(repr(self.value))
        return " ".join(parts)

    @property
    def slots(self) -> tuple[int, ...]:
        return tuple(s for s in (self.slot, self.other) if s >= 0)


@dataclass(frozen=True)
class WorldPlan:
    seed: int
    records: int
    operations: int
    drops: bool
    ops: list[Op] = field(default_factory=list)


def _entity(rng: random.Random) -> str:
    names, weights = zip(*ENTITY_WEIGHTS, strict=True)
    return rng.choices(names, weights)[0]


def generate(seed: int, *, records: int, operations: int, drops: bool) -> WorldPlan:
    """The run for `seed`: `records` creates (about one address in five shared), then `operations` steps."""
    rng = random.Random(seed)
    ops: list[Op] = []
    people = max(2, int(records * 0.8))
    slots = 0

    def add(kind: str, **kw: object) -> None:
        ops.append(Op(seq=len(ops), kind=kind, **kw))  # type: ignore[arg-type]

    for _ in range(records):
        address = f"person{rng.randrange(people)}@example.nl"
        add("create", slot=slots, entity=_entity(rng), value=address)
        slots += 1
        if rng.random() < 0.05:
            add("deliver")
    add("deliver")
    kinds, weights = zip(*OPERATION_WEIGHTS, strict=True)
    crash_at = rng.randrange(operations // 4, max(operations // 4 + 1, operations // 2))
    for step in range(operations):
        kind = rng.choices(kinds, weights)[0]
        slot = rng.randrange(slots)
        if kind == "twins":
            address = f"twin{step}@example.nl"
            add("twins", slot=slots, other=slots + 1, value=address)
            slots += 2
        elif kind == "qualify":
            add("qualify", slot=slot, other=slots)
            slots += 1
        elif kind in ("email_shared", "merge"):
            add(kind, slot=slot, other=rng.randrange(slots))
        elif kind == "email_fresh":
            add(kind, slot=slot, value=f"fresh{step}@example.org")
        elif kind == "email_converge":
            add(kind, slot=slot, other=rng.randrange(slots), value=f"joint{step}@example.org")
        elif kind == "email_blocked":
            add(kind, slot=slot, value=str(rng.randrange(1_000_000)))
        elif kind == "create_again":
            add(kind, slot=slots, entity=_entity(rng), value=str(rng.randrange(1_000_000)))
            slots += 1
        elif kind == "edit":
            add(kind, slot=slot, value=rng.choice(JOB_TITLES))
        elif kind == "sp_edit":
            add(kind, slot=slot, value=rng.choice(FIRST_NAMES))
        else:
            add(kind, slot=slot)
        if kind == "sp_opt_out" and rng.random() < 0.6:
            # The person opts out in Spotler and is edited in Dynamics soon after: the push must write nothing.
            add("edit", slot=slot, value=rng.choice(JOB_TITLES))
        if step == crash_at:
            add("net_crash_after_spotler_write")
        roll = rng.random()
        if roll < 0.02:
            add("net_duplicate_webhooks")
        elif roll < 0.04:
            add("net_hold_webhooks")
        elif roll < 0.05 and drops:
            add("net_drop_webhook")
        if rng.random() < 0.08:
            add("deliver")
        if rng.random() < 0.015:
            add("pull", value="cut" if rng.random() < 0.5 else "")
    return WorldPlan(seed=seed, records=records, operations=operations, drops=drops, ops=ops)
