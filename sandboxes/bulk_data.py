"""A CRM to load: contacts, leads and accounts in the Dataverse sandbox (and some people already in Spotler).

Deterministic for a given size and seed. Roughly: 60% contacts, 25% leads, 15% accounts; one lead in ten shares
its e-mail address with a contact; one record in twenty has no e-mail address, one in forty is inactive, one in
fifty has Do Not Email set; one eligible contact in ten is already in Spotler under another externalId (a
list imported before the connector). `expected` says what the sandboxes must hold after a backfill.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from sandboxes.dataverse import DataverseSandbox
from sandboxes.spotler.store import SpotlerStore


@dataclass
class LoadedCrm:
    """What was seeded and what a backfill must end with."""

    records: dict[str, list[str]] = field(default_factory=dict)  # entity -> record ids
    eligible: set[tuple[str, str]] = field(default_factory=set)  # (entity, id) that must be in Spotler
    emails: dict[tuple[str, str], str] = field(default_factory=dict)  # eligible record -> address
    ineligible: int = 0
    preexisting: int = 0  # Spotler contacts seeded before the load

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.records.values())

    @property
    def distinct_eligible_emails(self) -> int:
        return len({self.emails[r].lower() for r in self.eligible})


def _rid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def load_crm(dataverse: DataverseSandbox, spotler: SpotlerStore, size: int, *, seed: int = 7) -> LoadedCrm:
    """Seed `size` rows (no webhooks fire) and the Spotler contacts that existed before."""
    rng = random.Random(seed)
    crm = LoadedCrm(records={"contact": [], "lead": [], "account": []})
    contact_emails: list[str] = []
    preexisting: list[dict[str, Any]] = []
    for n in range(size):
        share = n % 20
        entity = "contact" if share < 12 else ("lead" if share < 17 else "account")
        record_id = _rid(rng)
        email: str | None = f"person{n}@example.org"
        if entity == "lead" and contact_emails and n % 10 == 3:
            email = rng.choice(contact_emails)  # the same person, known as a contact and as a lead
        attributes: dict[str, Any] = {"emailaddress1": email}
        if entity == "account":
            attributes["name"] = f"Company {n}"
        else:
            attributes.update(firstname=f"First{n}", lastname=f"Last{n}", jobtitle="Buyer")
        eligible = True
        if n % 20 == 7:
            attributes["emailaddress1"] = None
            eligible = False
        elif n % 40 == 9:
            attributes["statecode"] = 1
            attributes["statuscode"] = 2
            eligible = False
        elif n % 50 == 11:
            attributes["donotemail"] = True
            eligible = False
        dataverse.store.seed(entity, attributes, record_id=record_id)
        crm.records[entity].append(record_id)
        if not eligible:
            crm.ineligible += 1
            continue
        assert email is not None
        crm.eligible.add((entity, record_id))
        crm.emails[(entity, record_id)] = email
        if entity == "contact":
            contact_emails.append(email)
            if n % 10 == 1:
                preexisting.append(
                    {"externalId": f"imported-{n}", "properties": {"email": email, "firstName": f"Old{n}"}}
                )
    if preexisting:
        spotler.seed(preexisting)
    crm.preexisting = len(preexisting)
    return crm
