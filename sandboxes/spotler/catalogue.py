"""The default property catalogue the sandbox serves on `/contact/properties/list`.

Names follow MailPlus' own connector defaults; `permissions` and `interests` are `set` properties whose
entries are bit -> description. Spotler's type enum has no boolean; `testGroup` is listed (the real API lists
it too) with type `boolean` because its real type is not documented.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PROPERTIES: list[dict[str, Any]] = [
    {"name": "email", "description": "E-mailadres", "type": "email"},
    {"name": "firstName", "description": "Voornaam", "type": "string"},
    {"name": "infix", "description": "Tussenvoegsel", "type": "string"},
    {"name": "lastName", "description": "Achternaam", "type": "string"},
    {"name": "gender", "description": "Geslacht", "type": "gender"},
    {"name": "birthday", "description": "Geboortedatum", "type": "birthdate"},
    {"name": "organisation", "description": "Organisatie", "type": "string"},
    {"name": "jobTitle", "description": "Functie", "type": "string"},
    {"name": "street", "description": "Straat", "type": "string"},
    {"name": "houseNumber", "description": "Huisnummer", "type": "string"},
    {"name": "postalCode", "description": "Postcode", "type": "postcode"},
    {"name": "city", "description": "Plaats", "type": "string"},
    {"name": "country", "description": "Land", "type": "string"},
    {"name": "phoneNumber", "description": "Telefoonnummer", "type": "string"},
    {"name": "customerType", "description": "Klanttype", "type": "string"},
    {"name": "lastPurchaseDate", "description": "Laatste aankoop", "type": "dateTime"},
    {
        "name": "permissions",
        "description": "Permissies",
        "type": "set",
        "entries": [
            {"bit": 1, "description": "Nieuwsbrief", "rank": 1},
            {"bit": 2, "description": "Aanbiedingen", "rank": 2},
            {"bit": 4, "description": "Evenementen", "rank": 3},
        ],
    },
    {
        "name": "interests",
        "description": "Interesses",
        "type": "set",
        "entries": [
            {"bit": 1, "description": "Sport", "rank": 1},
            {"bit": 2, "description": "Muziek", "rank": 2},
            {"bit": 4, "description": "Reizen", "rank": 3},
        ],
    },
    {"name": "testGroup", "description": "Testgroep", "type": "boolean"},
]
