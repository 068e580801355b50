#!/usr/bin/env python3
"""Writes src/session/us_area_codes.txt, the US area codes (NPA) by state behind `cliState`,
from libphonenumber's geocoding data (its Python port, PyPI `phonenumbers`) and ISO 3166-2
(PyPI `pycountry`, for the two-letter state codes).

    python3 -m pip install phonenumbers pycountry
    python3 tools/us-area-codes.py > src/session/us_area_codes.txt

Each line is `NPA|place as libphonenumber describes it|USPS code`. Only NPAs libphonenumber
places in the United States (not Canada, Puerto Rico or the Caribbean), described by a
state's name or as `City, ST`, are kept. libphonenumber's data is under the Apache License 2.0
(LICENSE-APACHE in this repository)."""

import phonenumbers
import phonenumbers.geodata as geodata
import pycountry

codes = {s.name: s.code.split("-")[1] for s in pycountry.subdivisions.get(country_code="US")}
codes.update({"Washington D.C.": "DC", "Washington State": "WA"})
usps = set(codes.values())


def state_code(name):
    """The USPS code of a libphonenumber description: a state's name, or `City, ST`."""
    if name in codes:
        return codes[name]
    tail = name.rsplit(", ", 1)[-1]
    return tail if tail in usps else None


print(f"# US area codes by state: libphonenumber {phonenumbers.__version__} geocoding data (Apache License 2.0),")
print(f"# state codes from ISO 3166-2 (pycountry {pycountry.__version__ if hasattr(pycountry, '__version__') else ''}).")
print("# Made by tools/us-area-codes.py; do not edit by hand.")
# Each NPA's descriptions: its own 4-digit prefix when libphonenumber has one, else those of
# its longer prefixes (exchanges), which must all name one state.
by_npa = {}
for prefix, names in geodata.GEOCODE_DATA.items():
    if prefix.startswith("1") and len(prefix) >= 4 and "en" in names:
        by_npa.setdefault(prefix[1:4], []).append((len(prefix), names["en"]))
for npa in sorted(by_npa):
    number = phonenumbers.parse(f"+1{npa}2000000")
    if phonenumbers.region_code_for_number(number) != "US":
        continue
    entries = sorted(by_npa[npa])
    if entries[0][0] == 4:
        entries = entries[:1]
    states = {state_code(name) for _, name in entries}
    if len(states) == 1 and None not in states:
        print(f"{npa}|{entries[0][1]}|{states.pop()}")
