"""Run-level rules of bulk work (backfill, resync, reconcile): work items, impact counts and the mass-change guard.

Pure: no I/O, no clock, no environment. The bulk service plans each record with `plan_push` and uses what is
here to cut pages into work items, to add up what a run does (or would do, in a dry run), to decide whether
the mass-change guard lets it write, and to keep records of one run that share an e-mail address on one
Spotler contact.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sync_core.domain.plan import PushAction, PushPlan
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, EntityName, SpotlerContact
from sync_core.domain.state_model import LinkState

MAX_ITEM_RECORDS = 100
"""Records per work item: one Spotler bulk insert (`POST /contact/list` takes at most 100 contacts)."""

MAX_PAGE_ROWS = 5000
"""Rows per Dataverse page (the Web API's largest `odata.maxpagesize`)."""

EXAMPLES_PER_REASON = 3

RunKind = Literal["backfill", "resync", "reconcile"]
RUN_KINDS: tuple[RunKind, ...] = ("backfill", "resync", "reconcile")


@dataclass(frozen=True, slots=True)
class WorkRow:
    """One Dataverse row of a work item: what the worker plans from (the row is not read again)."""

    record_id: str
    attributes: Mapping[str, AttrValue] | None  # None: the row was deleted (change tracking)
    version: int | None = None
    modified_on: str | None = None  # ISO 8601, as the Web API gave it

    def to_json(self) -> dict[str, Any]:
        return {"i": self.record_id, "a": None if self.attributes is None else dict(self.attributes),
                "v": self.version, "m": self.modified_on}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkRow:
        attrs = data.get("a")
        return cls(str(data["i"]), None if attrs is None else dict(attrs), data.get("v"), data.get("m"))


def chunk(rows: Sequence[WorkRow], size: int = MAX_ITEM_RECORDS) -> Iterator[list[WorkRow]]:
    """`rows` cut into work items of at most `size` records, in order."""
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


def pack(document: Mapping[str, Any]) -> str:
    """A queue message for `document`: JSON, compressed when that makes it smaller (`z:` + base64)."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    if len(text) < 512:
        return text
    packed = "z:" + base64.b64encode(zlib.compress(text.encode("utf-8"), 6)).decode("ascii")
    return packed if len(packed) < len(text) else text


def unpack(message: str) -> dict[str, Any]:
    """The document of a `pack`ed message; ValueError when it is not one."""
    try:
        text = zlib.decompress(base64.b64decode(message[2:])).decode("utf-8") if message.startswith("z:") else message
        document = json.loads(text)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not a bulk message: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ValueError("not a bulk message: expected an object")
    return document


# ------------------------------------------------------------------------------------------------ impact


def is_unsubscribe(plan: PushPlan, current: SpotlerContact | None) -> bool:
    """True when the plan turns off a permission the Spotler contact has on."""
    if plan.action is PushAction.UNSUBSCRIBE:
        return True
    if plan.action not in (PushAction.CREATE, PushAction.UPDATE) or plan.contact is None or current is None:
        return False
    return any(not on and current.permissions.get(bit, False) for bit, on in plan.contact.permissions.items())


def is_mass_change(plan: PushPlan, current: SpotlerContact | None) -> bool:
    """Anonymize or unsubscribe: the decisions the mass-change guard counts."""
    return plan.action is PushAction.ANONYMIZE or is_unsubscribe(plan, current)


def outcome_key(action: str, reason: ReasonCode) -> str:
    return f"{action}/{reason.value}"


@dataclass(slots=True)
class Impact:
    """What a run does (or would do): records per action and reason, example ids, mass changes."""

    records: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    mass_changes: int = 0
    spotler_writes: int = 0

    def add(self, entity: EntityName, record_id: str, action: str, reason: ReasonCode, *, mass: bool) -> None:
        self.records += 1
        self.outcomes[outcome_key(action, reason)] += 1
        ids = self.examples.setdefault(reason.value, [])
        if len(ids) < EXAMPLES_PER_REASON:
            ids.append(f"{entity}/{record_id}")
        if mass:
            self.mass_changes += 1

    def merge(self, other: Impact) -> None:
        self.records += other.records
        self.outcomes.update(other.outcomes)
        for reason, ids in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(i for i in ids if i not in mine)
            del mine[EXAMPLES_PER_REASON:]
        self.mass_changes += other.mass_changes
        self.spotler_writes += other.spotler_writes

    def by_reason(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for key, n in self.outcomes.items():
            counts[key.split("/", 1)[1]] += n
        return dict(sorted(counts.items()))

    def by_action(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for key, n in self.outcomes.items():
            counts[key.split("/", 1)[0]] += n
        return dict(sorted(counts.items()))

    @property
    def writes(self) -> int:
        """Records whose Spotler contact is created, updated or anonymized."""
        return sum(n for key, n in self.outcomes.items() if key.split("/", 1)[0] in WRITE_ACTIONS)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "outcomes": dict(sorted(self.outcomes.items())),
            "examples": self.examples,
            "massChanges": self.mass_changes,
            "spotlerWrites": self.spotler_writes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Impact:
        return cls(
            records=int(data.get("records", 0)),
            outcomes=Counter({str(k): int(v) for k, v in dict(data.get("outcomes", {})).items()}),
            examples={str(k): [str(i) for i in v] for k, v in dict(data.get("examples", {})).items()},
            mass_changes=int(data.get("massChanges", 0)),
            spotler_writes=int(data.get("spotlerWrites", 0)),
        )

    @classmethod
    def total(cls, parts: Iterable[Impact]) -> Impact:
        out = cls()
        for part in parts:
            out.merge(part)
        return out


WRITE_ACTIONS = frozenset({"create", "update", "anonymize"})


# ------------------------------------------------------------------------------------------------ guard


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    allowed: bool
    message: str


def check_mass_change(impact: Impact, *, limit: int, share: float, allow: bool) -> GuardVerdict:
    """May the run write? Not when it would anonymize or unsubscribe more than `limit` records or more than
    `share` (0..1) of its records, unless the operator allowed mass changes."""
    count, total = impact.mass_changes, impact.records
    over_limit = count > limit
    over_share = total > 0 and count / total > share
    if not (over_limit or over_share):
        return GuardVerdict(True, f"{count} anonymize/unsubscribe decisions; within the limits")
    why = []
    if over_limit:
        why.append(f"more than MASS_CHANGE_LIMIT={limit}")
    if over_share:
        why.append(f"{count / total:.1%} of {total} records, more than MASS_CHANGE_SHARE={share:.1%}")
    text = f"the run would anonymize or unsubscribe {count} records ({'; '.join(why)})"
    if allow:
        return GuardVerdict(True, text + "; allowed by --allow-mass-changes")
    return GuardVerdict(False, text + "; nothing was written. Check the data, then rerun with --allow-mass-changes")


# ------------------------------------------------------------------------------------------------ shared e-mail


def follow_claim(plan: PushPlan, owner: LinkState, entity: EntityName, record_id: str) -> PushPlan:
    """The plan of a record whose e-mail address another record of the same run already took.

    Spotler keeps one contact per address: the record follows the owner's contact instead of writing its own
    (the same outcome as `plan_push` gives a record whose peer takes precedence).
    """
    if plan.action not in (PushAction.CREATE, PushAction.UPDATE):
        return plan
    detail = f"shares its Spotler contact with {owner.entity} {owner.record_id} (same e-mail address)"
    base = plan.link or LinkState(entity=entity, record_id=record_id, external_id=owner.external_id)
    link = dataclasses.replace(
        base,
        external_id=owner.external_id,
        base={},
        reason=ReasonCode.SYNCED,
        detail=detail,
        failures=0,
        next_retry=None,
    )
    return dataclasses.replace(
        plan,
        action=PushAction.NONE,
        reason=ReasonCode.SYNCED,
        detail=detail,
        external_id=owner.external_id,
        contact=None,
        link=link,
        lift_suppression=None,
    )


RESULT_REASONS: Mapping[str, ReasonCode] = {
    "CONTACT_OPTOUT": ReasonCode.OPTED_OUT_IN_SPOTLER,
    "PROPERTY_INVALID": ReasonCode.PERMANENT_ERROR,
    "CONTACT_ALREADY_EXISTS": ReasonCode.PERMANENT_ERROR,
}


def reason_for_result(code: str) -> ReasonCode:
    """The status of a contact Spotler refused in a bulk insert, from its per-contact result code."""
    return RESULT_REASONS.get(code, ReasonCode.PERMANENT_ERROR)


def merged_hint(message: str) -> bool:
    """Spotler's per-contact message says the contact was merged into one with the same e-mail address."""
    return "merge" in message.casefold()
