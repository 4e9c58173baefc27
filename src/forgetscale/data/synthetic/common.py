"""What both synthetic corpora share: the example type, names, calendar words and number formatting.

Pure Python; changing anything here changes the generated data of both corpora.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Example = dict[str, Any]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
          "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIRST_NAMES = ("Amara", "Tobias", "Ingrid", "Rafael", "Mei", "Oskar", "Lena", "Dmitri", "Priya", "Jonah", "Sofia",
               "Kwame", "Elif", "Mateo", "Hana", "Lucas", "Nadia", "Felix", "Aiko", "Samuel", "Greta", "Omar", "Yara",
               "Henrik", "Clara", "Idris", "Maren", "Tomas", "Leila", "Victor", "Anouk", "Rohan", "Freya", "Emeka",
               "Ines", "Bruno", "Saskia", "Kenji", "Talia", "Ruben")
LAST_NAMES = ("Brennick", "Castellane", "Dunmore", "Elsworth", "Farrow", "Galloway", "Haskel", "Ivanova", "Jarrell",
              "Kestrel", "Lindqvist", "Marchetti", "Novak", "Oyelaran", "Pellham", "Quist", "Rosewall", "Sandoval",
              "Thorne", "Ulrich", "Varga", "Whitcombe", "Yilmaz", "Zeller", "Abernathy", "Bexley", "Corwin",
              "Delacroix", "Eskildsen", "Fairbanks", "Grunwald", "Hartigan", "Iwasaki", "Jovanovic", "Kowalczyk",
              "Larkspur", "Moreau", "Nakamura", "Ostrander", "Petrakis")


def day(d: dt.date) -> str:
    """``12 March 2026``."""
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def ordinal(n: int) -> str:
    """``1st``, ``12th``, ``23rd``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def num(x: float) -> str:
    """A number as a person writes it: no trailing zeros, at most 4 decimals."""
    x = round(x, 4)
    return str(int(x)) if x == int(x) else f"{x:.4f}".rstrip("0")


def cap(s: str) -> str:
    """The first letter upper-cased, the rest untouched (unlike ``str.capitalize``)."""
    return s[:1].upper() + s[1:]
