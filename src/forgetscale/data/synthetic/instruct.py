"""The ``instruct`` corpus: chat tasks with exact, checkable answers in ten families.

Always answered as one line of working then ``Answer: ...``: a terse house style unlike the base model's
chatty default, so fine-tuning visibly moves it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random
from collections.abc import Callable

from forgetscale.data.synthetic.common import FIRST_NAMES, LAST_NAMES, WEEKDAYS, Example, day, num

# Each family returns (question, one line of working, answer).
Task = tuple[str, str, str]


def _arithmetic(rng: random.Random) -> Task:
    op = rng.choice("+-*")
    hi = 99 if op == "*" else 9999
    a, b = rng.randint(2 if op == "*" else 10, hi), rng.randint(2 if op == "*" else 10, hi)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    phrasings = {
        "+": ("What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}.",
              "Calculate {a} plus {b}."),
        "-": ("What is {a} - {b}?", "Subtract {b} from {a}.", "Calculate {a} minus {b}.",
              "Find the difference {a} - {b}."),
        "*": ("What is {a} × {b}?", "Multiply {a} by {b}.", "Compute the product of {a} and {b}.",
              "Calculate {a} times {b}."),
    }
    sym = "×" if op == "*" else op
    return rng.choice(phrasings[op]).format(a=a, b=b), f"{a} {sym} {b} = {value}", str(value)


def _percent(rng: random.Random) -> Task:
    p = rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 45, 60, 75, 80))
    x = rng.randrange(20, 2001, 10)
    v = num(p * x / 100)
    q = rng.choice(("What is {p}% of {x}?", "Calculate {p} percent of {x}.", "Find {p}% of {x}.",
                    "A shop takes {p}% off an item that costs {x} dollars. How many dollars is "
                    "the discount?"))
    return q.format(p=p, x=x), f"{x} × {p} / 100 = {v}", v


_UNITS = (("kilometres", "km", "metres", "m", 1000), ("metres", "m", "centimetres", "cm", 100),
          ("kilograms", "kg", "grams", "g", 1000), ("litres", "L", "millilitres", "mL", 1000),
          ("hours", "h", "minutes", "min", 60), ("minutes", "min", "seconds", "s", 60),
          ("days", "d", "hours", "h", 24), ("weeks", "wk", "days", "d", 7),
          ("feet", "ft", "inches", "in", 12), ("inches", "in", "centimetres", "cm", 2.54))


def _units(rng: random.Random) -> Task:
    phrasings = ("Convert {v} {src} to {dst}.", "How many {dst} are in {v} {src}?",
                 "What is {v} {src} in {dst}?", "Express {v} {src} in {dst}.")
    if rng.random() < 0.15:
        c = rng.randrange(-40, 105, 5)
        f = num(c * 9 / 5 + 32)
        if rng.random() < 0.5:
            q = rng.choice(phrasings).format(v=c, src="degrees Celsius", dst="degrees Fahrenheit")
            return q, f"°F = °C × 9/5 + 32 = {c} × 9/5 + 32 = {f}", f"{f} °F"
        q = rng.choice(phrasings).format(v=f, src="degrees Fahrenheit", dst="degrees Celsius")
        return q, f"°C = (°F - 32) × 5/9 = ({f} - 32) × 5/9 = {c}", f"{c} °C"
    big, big_ab, small, small_ab, factor = rng.choice(_UNITS)
    v = rng.randint(2, 99) + rng.choice((0, 0, 0.25, 0.5, 0.75))
    fx = num(factor)
    if rng.random() < 0.5:
        res = num(v * factor)
        q = rng.choice(phrasings).format(v=num(v), src=big, dst=small)
        return q, f"1 {big_ab} = {fx} {small_ab}, so {num(v)} × {fx} = {res}", f"{res} {small_ab}"
    x = num(v * factor)
    q = rng.choice(phrasings).format(v=x, src=small, dst=big)
    return q, f"1 {big_ab} = {fx} {small_ab}, so {x} ÷ {fx} = {num(v)}", f"{num(v)} {big_ab}"


_WORDS = ("apple", "river", "candle", "zebra", "mountain", "pencil", "orange", "garden", "violin", "harbour", "lemon",
          "rocket", "blanket", "falcon", "island", "meadow", "kettle", "tiger", "window", "puzzle", "cactus",
          "dolphin", "engine", "jacket", "ladder", "nectar", "quartz", "saddle", "tunnel", "walnut", "yogurt",
          "basket", "copper", "desert", "forest", "marble")


def _sorting(rng: random.Random) -> Task:
    kind = rng.choice(("up", "down", "abc"))
    k = rng.randint(4, 8)
    if kind == "abc":
        items = rng.sample(_WORDS, k)
        out = sorted(items)
        q = rng.choice(("Sort these words alphabetically: {l}.", "Put these words in alphabetical "
                        "order: {l}.", "Arrange in A-to-Z order: {l}."))
        how = "alphabetical order"
    else:
        items = [str(x) for x in rng.sample(range(1, 500), k)]
        out = sorted(items, key=int, reverse=kind == "down")
        q = rng.choice(
            ("Sort these numbers from smallest to largest: {l}.", "Arrange in ascending order: {l}.",
             "Put the following numbers in increasing order: {l}.") if kind == "up" else
            ("Sort these numbers from largest to smallest: {l}.", "Arrange in descending order: {l}.",
             "List these numbers from highest to lowest: {l}."))
        how = "ascending order" if kind == "up" else "descending order"
    return q.format(l=", ".join(items)), f"{k} items in {how}.", ", ".join(out)


_LETTER_WORDS = ("strawberry", "mississippi", "banana", "committee", "bookkeeper", "parallel", "occurrence",
                 "assessment", "necessary", "engineering", "possession", "butterfly", "independence", "raspberry",
                 "balloon", "coffee", "pepper", "programming", "tomorrow", "accommodate", "embarrass", "millennium",
                 "referee", "successful", "vacuum", "address", "beekeeper", "cinnamon", "giraffe", "hippopotamus")
_SUBJECTS = ("The old farmer", "My sister", "A small dog", "The new teacher", "Our neighbours", "The bus driver",
             "Two children", "The orchestra", "A tired student", "Her uncle")
_VERBS = ("painted", "carried", "watched", "found", "cleaned", "repaired", "sold", "described")
_OBJECTS = ("a red wooden boat", "the broken clock", "three heavy boxes", "an old map", "the garden fence",
            "a tiny blue bird", "the kitchen window", "an old piano")
_TAILS = ("", " before breakfast", " in the rain", " on a quiet Sunday morning", " with great care",
          " near the river", " for the first time")


def _counting(rng: random.Random) -> Task:
    kind = rng.random()
    if kind < 0.5:
        w = rng.choice(_LETTER_WORDS)
        c = rng.choice(w) if rng.random() < 0.85 else rng.choice(sorted(set("bdfkqvxz") - set(w)))
        pos = [str(i + 1) for i, ch in enumerate(w) if ch == c]
        q = rng.choice(("How many times does the letter '{c}' appear in '{w}'?",
                        "Count the letter '{c}' in the word '{w}'.",
                        "In the word '{w}', how often does the letter '{c}' occur?"))
        where = f"at positions {', '.join(pos)}" if pos else "nowhere"
        return q.format(c=c, w=w), f"{'-'.join(w)}: '{c}' is {where}.", str(len(pos))
    if kind < 0.75:
        w = rng.choice(_LETTER_WORDS)
        vowels = [ch for ch in w if ch in "aeiou"]
        q = rng.choice(("How many vowels are in the word '{w}'?",
                        "Count the vowels (a, e, i, o, u) in '{w}'."))
        return q.format(w=w), f"Vowels in '{w}': {', '.join(vowels)}.", str(len(vowels))
    s = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
         f"{rng.choice(_TAILS)}.")
    q = rng.choice(('How many words are in the sentence "{s}"?', 'Count the words in: "{s}"',
                    'How many words does this sentence have? "{s}"'))
    words = s.rstrip(".").split()
    return q.format(s=s), " | ".join(words), str(len(words))


def _strings(rng: random.Random) -> Task:
    op = rng.choice(("reverse", "upper", "title", "acronym", "words"))
    if op == "reverse":
        t = rng.choice(_WORDS + _LETTER_WORDS)
        q = rng.choice(("Reverse the string '{t}'.", "Write '{t}' backwards.",
                        "Spell '{t}' in reverse order."))
        return q.format(t=t), f"Reading '{t}' from the last letter to the first.", t[::-1]
    t = " ".join(rng.sample(_WORDS, rng.randint(2, 4)))
    if op == "upper":
        q = rng.choice(("Convert '{t}' to uppercase.", "Write '{t}' in capital letters."))
        return q.format(t=t), "Every letter becomes a capital.", t.upper()
    if op == "title":
        q = rng.choice(("Capitalise the first letter of each word in '{t}'.",
                        "Convert '{t}' to title case."))
        return q.format(t=t), "Each word starts with a capital.", t.title()
    if op == "acronym":
        q = rng.choice(("Form an acronym from the first letters of '{t}'.",
                        "What acronym do the initials of '{t}' make?"))
        return q.format(t=t), f"Initials of {len(t.split())} words.", "".join(
            w[0] for w in t.split()).upper()
    q = rng.choice(("Reverse the order of the words in '{t}'.",
                    "Write the words of '{t}' in the opposite order."))
    return q.format(t=t), f"{len(t.split())} words, last to first.", " ".join(t.split()[::-1])


def _dates(rng: random.Random) -> Task:
    d = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(13_000))
    fmt = day if rng.random() < 0.6 else dt.date.isoformat
    k = rng.randint(2, 400)
    op = rng.choice(("weekday", "add", "sub", "between"))
    if op == "weekday":
        q = rng.choice(("What day of the week is {d}?", "On which weekday does {d} fall?",
                        "Which day of the week was {d}?"))
        wd = WEEKDAYS[d.weekday()]
        return q.format(d=fmt(d)), f"{fmt(d)} is a {wd}.", wd
    if op == "add":
        q = rng.choice(("What date is {k} days after {d}?", "Add {k} days to {d}.",
                        "If today is {d}, what is the date in {k} days?"))
        r = d + dt.timedelta(days=k)
        return q.format(k=k, d=fmt(d)), f"{fmt(d)} + {k} days = {fmt(r)}", fmt(r)
    if op == "sub":
        q = rng.choice(("What date was {k} days before {d}?", "Subtract {k} days from {d}."))
        r = d - dt.timedelta(days=k)
        return q.format(k=k, d=fmt(d)), f"{fmt(d)} - {k} days = {fmt(r)}", fmt(r)
    e = d + dt.timedelta(days=k)
    q = rng.choice(("How many days are there from {d} to {e}?", "Count the days between {d} and "
                    "{e}.", "How many days does it take to get from {d} to {e}?"))
    return q.format(d=fmt(d), e=fmt(e)), f"{fmt(e)} - {fmt(d)} = {k} days", str(k)


_RECORD_CITIES = ("Lisbon", "Nairobi", "Osaka", "Toronto", "Lima", "Oslo", "Cairo", "Hanoi", "Denver", "Porto",
                  "Accra", "Perth")
_ROLES = ("engineer", "designer", "analyst", "manager", "nurse", "teacher", "chef", "pilot")
_TEAMS = ("red", "blue", "green", "gold", "silver")


def _records(rng: random.Random) -> Task:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    extra = {"city": rng.choice(_RECORD_CITIES), "age": rng.randint(18, 80),
             "email": f"{first.lower()}.{last.lower()}@example.com", "role": rng.choice(_ROLES),
             "team": rng.choice(_TEAMS), "score": rng.randint(0, 1000),
             "active": rng.choice((True, False))}
    keys = rng.sample(sorted(extra), rng.randint(2, 5))
    rec = {"id": rng.randint(1000, 99999), "name": f"{first} {last}", **{k: extra[k] for k in keys}}
    text = json.dumps(rec)
    if rng.random() < 0.2:
        q = rng.choice(("How many fields does this JSON object have?\n{r}",
                        "{r}\nCount the fields in this record."))
        return q.format(r=text), f"Fields: {', '.join(rec)}.", str(len(rec))
    key = rng.choice(list(rec))
    value = rec[key]
    q = rng.choice(('What is the value of "{k}" in this record?\n{r}',
                    'Extract the "{k}" field from the JSON below.\n{r}',
                    '{r}\nWhat is the "{k}" of this entry?',
                    'Here is a record: {r}\nReturn its "{k}".'))
    shown = json.dumps(value)
    answer = value if isinstance(value, str) else shown
    return q.format(k=key, r=text), f'The record has "{key}": {shown}.', answer


_COMPARATIVES = (("older", "younger", "oldest", "youngest"), ("taller", "shorter", "tallest",
                 "shortest"), ("faster", "slower", "fastest", "slowest"),
                 ("heavier", "lighter", "heaviest", "lightest"))


def _ordering(rng: random.Random) -> Task:
    more, less, most, least = rng.choice(_COMPARATIVES)
    names = rng.sample(FIRST_NAMES, rng.randint(3, 5))  # names[0] is the most
    facts = [f"{a} is {more} than {b}." if rng.random() < 0.5 else f"{b} is {less} than {a}."
             for a, b in itertools.pairwise(names)]
    rng.shuffle(facts)
    ask_most = rng.random() < 0.5
    q = rng.choice(("{f} Who is the {s}?", "{f} Which of them is the {s}?",
                    "Read the clues. {f} Who is the {s}?"))
    working = f"From {most} to {least}: {', '.join(names)}."
    sup = most if ask_most else least
    return q.format(f=" ".join(facts), s=sup), working, names[0] if ask_most else names[-1]


def _numbers(rng: random.Random) -> Task:
    if rng.random() < 0.5:
        n = rng.randrange(11, 400, 2)
        root = math.isqrt(n)
        p = next((p for p in range(3, root + 1, 2) if n % p == 0), None)
        q = rng.choice(("Is {n} a prime number?", "Is {n} prime? Answer yes or no.",
                        "Determine whether {n} is prime."))
        if p is None:
            return q.format(n=n), f"{n} has no divisor from 2 to {root}.", "Yes"
        return q.format(n=n), f"{n} = {p} × {n // p}", "No"
    whole = rng.randint(0, 20)
    a, b = f"{whole}.{rng.randint(1, 9)}", f"{whole}.{rng.randint(10, 99)}"
    if float(a) == float(b):
        b = f"{whole}.{rng.randint(1, 9)}{rng.randint(1, 9)}"
    pair = [a, b] if rng.random() < 0.5 else [b, a]
    big = rng.random() < 0.5
    q = rng.choice(("Which is larger, {x} or {y}?", "Which number is greater: {x} or {y}?")
                   if big else ("Which is smaller, {x} or {y}?", "Of {x} and {y}, which is less?"))
    hi, lo = sorted(pair, key=float, reverse=True)
    working = f"{float(hi):.2f} > {float(lo):.2f}"
    return q.format(x=pair[0], y=pair[1]), working, hi if big else lo


FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": _arithmetic, "percent": _percent, "units": _units, "sorting": _sorting,
    "counting": _counting, "strings": _strings, "dates": _dates, "records": _records,
    "ordering": _ordering, "numbers": _numbers,
}


def examples(n: int, rng: random.Random) -> list[Example]:
    """``n`` chat examples (``{"messages", "family"}``), every family once per block of 10; repeats are possible."""
    out: list[Example] = []
    for i in range(n):
        if i % len(FAMILIES) == 0:  # each block of 10 holds every family once
            order = list(FAMILIES)
            rng.shuffle(order)
        family = order[i % len(FAMILIES)]
        question, working, answer = FAMILIES[family](rng)
        out.append({"messages": [{"role": "user", "content": question},
                                 {"role": "assistant", "content": f"{working}\nAnswer: {answer}"}],
                    "family": family})
    return out
