"""The fixed world every ``news`` article is drawn from: a seeded cast (cities, mayors, companies, clubs,
institutes) and the events that happen to it in 2026, each event every fact an article may state.

Built once from its own seed, so facts stay consistent across articles and seeds.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable

from forgetscale.data.synthetic.common import FIRST_NAMES, LAST_NAMES, MONTHS, WEEKDAYS, cap, day, ordinal

_WORLD_SEED = 2026
_TOWN_HEADS = ("Kester", "Lind", "Varrow", "Ashby", "Brenn", "Corran", "Dunhal", "Elm", "Fallow", "Grey", "Harl",
               "Ilsen", "Marl", "Norr", "Oster", "Pell", "Quill", "Rav", "Sel", "Thorn", "Wyn")
_TOWN_TAILS = ("moor", "haven", "ford", "bridge", "holm", "wick", "port", "dale", "mouth", "stead")
_REGIONS = ("the Northern Reach", "Calder Province", "Westmark", "the Sorrel Valley", "the Eastern Shires")
_PARTIES = ("Civic Renewal Party", "Green Commons", "Liberal Union", "Workers' Alliance")
_COMPANIES = (("Norvale Systems", "software", "its cloud accounting tools"),
              ("Brightwater Foods", "food", "frozen meals"),
              ("Halcyon Robotics", "robotics", "warehouse robots"),
              ("Tessaline Energy", "energy", "home batteries"),
              ("Bluefen Pharma", "pharmaceutical", "allergy medicines"),
              ("Orrin Motors", "carmaker", "electric vans"),
              ("Lumenfield Solar", "solar", "rooftop solar panels"),
              ("Greyharbour Shipping", "shipping", "container freight"),
              ("Velta Telecom", "telecoms", "fibre broadband"),
              ("Corvid Analytics", "data", "fraud-detection software"))
_CLUB_SUFFIXES = ("Rovers", "United", "Harriers", "Athletic", "Wanderers", "Falcons", "Mariners", "Town")
_BUILDERS = ("Hartwell Construction", "Ironvale Engineering", "Quarrystone Materials")


def _dated(rng: random.Random, first_month: int, last_month: int) -> dict[str, str]:
    d = dt.date(2026, rng.randint(first_month, last_month), rng.randint(1, 28))
    return {"date": day(d), "weekday": WEEKDAYS[d.weekday()], "_d": d.isoformat()}


# Each builder returns one event: every fact an article may state, as strings.
# Pools are indexed by the event's number so no two events share a quote.

_ELECTION_QUOTES = ("This city voted for change, and change is what it will get",
                    "I will be a mayor for every street in {city}, not just the ones that voted for me",
                    "Tonight belongs to the volunteers who knocked on thousands of doors",
                    "The hard work starts tomorrow morning",
                    "People here want a council that listens. From today, it will",
                    "We ran a campaign about buses, homes and parks, and voters agreed")
_PLEDGES = ("build 4,000 affordable homes", "extend the tram network to the airport", "cut bus fares in half",
            "plant 20,000 street trees", "reopen the central library", "hire 300 more nurses for the city hospital")


def _election(rng: random.Random, i: int, city: dict, person: Callable[[], str]) -> dict:
    share = round(rng.uniform(44, 61), 1)
    turnout = round(rng.uniform(38, 72), 1)
    prev = round(turnout + rng.choice((-1, 1)) * rng.uniform(2, 9), 1)
    party, rival_party = rng.sample(_PARTIES, 2)
    ev = _dated(rng, 1, 1)  # January, so later articles can quote the new mayor
    start = dt.date.fromisoformat(ev["_d"]) + dt.timedelta(days=14)
    return ev | city | {
        "kind": "election", "place": city["city"], "winner": city["mayor"], "party": party,
        "rival": person(), "rival_party": rival_party, "share": str(share),
        "rival_share": str(round(rng.uniform(20, min(share - 2, 96 - share)), 1)),
        "turnout": str(turnout), "turnout_prev": str(prev),
        "turnout_dir": "up" if turnout > prev else "down", "predecessor": person(),
        "quote": _ELECTION_QUOTES[i].format(**city), "pledge": _PLEDGES[i],
        "office_date": day(start),
    }


_QUOTES_UP = ("We delivered growth in every region we serve",
              "Customers are choosing us for quality, and the numbers show it",
              "This was our strongest quarter in five years", "Our investment in new products is paying off",
              "The team executed well in a demanding market")
_QUOTES_DOWN = ("This was a difficult quarter, and we are acting quickly",
                "We expect demand to recover in the second half of the year",
                "We are cutting costs without cutting quality", "The market is tough, but our plan has not changed",
                "We have the cash and the products to come back stronger")
_PLANS = ("open a factory in {city} that will create {jobs} jobs", "hire {jobs} engineers at a new office in {city}",
          "build a distribution centre in {city} employing {jobs} people",
          "move {jobs} staff into a new regional hub in {city}")
_QUARTERS = ("first", "second", "third")


def _results(rng: random.Random, i: int, co: dict, other_city: str) -> dict:
    q = rng.randint(1, 3)
    revenue = rng.randrange(120, 4000)
    up = rng.random() < 0.65
    profit = max(3, round(revenue * rng.uniform(0.03, 0.15)))
    prev = round(profit * (rng.uniform(0.7, 0.95) if up else rng.uniform(1.05, 1.4)))
    jobs = rng.randrange(80, 1200, 10)
    return _dated(rng, 3 * q + 1, 3 * q + 2) | co | {
        "kind": "results", "place": co["hq"], "quarter": f"{_QUARTERS[q - 1]} quarter",
        "q": f"Q{q}", "revenue": str(revenue), "change": str(round(rng.uniform(2, 24), 1)),
        "dir_past": "rose" if up else "fell", "dir_now": "rises" if up else "falls",
        "profit": str(profit), "profit_prev": str(prev),
        "share_move": str(round(rng.uniform(1, 9), 1)),
        "share_dir": "rose" if up else "fell", "share_adv": "higher" if up else "lower",
        "reason": (f"strong demand for {co['product']}" if up
                   else f"weaker demand for {co['product']} and higher energy costs"),
        "reason_verb": "credited" if up else "blamed",
        "quote": (_QUOTES_UP if up else _QUOTES_DOWN)[i % 5],
        "plan": _PLANS[i % len(_PLANS)].format(city=other_city, jobs=f"{jobs:,}"),
        "lo": f"{round(revenue * 3.8):,}", "hi": f"{round(revenue * 4.2):,}",
    }


# (short, did, detail, next step, field, institute index, range a, range b)
_DISCOVERIES = (
    ("a new tree frog species",
     "identified a previously unknown species of tree frog, named Hyla {latin}",
     "The frog is about {a} millimetres long and lives only in cloud forest above {city}.",
     "The team wants the forest protected before logging resumes in {month}.",
     "biology", 0, (18, 42), (2, 9)),
    ("a longer-lasting sodium battery",
     "developed a sodium battery electrode that keeps {a}% of its capacity after {b} charging cycles",
     "Today's best sodium cells lose that much capacity in about a third as many cycles.",
     "A pilot line in {city} is due to test the electrode at scale from {month}.",
     "chemistry", 1, (85, 97), (2000, 9000)),
    ("a plastic-eating enzyme",
     "engineered an enzyme that breaks down PET plastic bottles in {a} hours at {b} degrees Celsius",
     "Existing enzymes need several days to do the same job.",
     "The team plans a small recycling plant in {city} by {month}.",
     "biochemistry", 1, (6, 40), (30, 70)),
    ("a new comet",
     "discovered a comet, now designated C/2026 {code}",
     "It will pass closest to the Sun in {month} 2027, at about {a} million kilometres.",
     "Stargazers in {region} should be able to see it with binoculars.",
     "astronomy", 3, (60, 240), (2, 9)),
    ("a drought-tolerant wheat",
     "bred a wheat variety that yields {a}% more grain than standard varieties in dry years",
     "Field trials ran for {b} seasons on farms around {city}.",
     "Seed could reach farmers in {region} by {month} 2027.",
     "plant science", 4, (12, 38), (3, 6)),
    ("a giant marine reptile fossil",
     "unearthed the fossil of a {a}-metre marine reptile near {city}",
     "The animal lived about {b} million years ago.",
     "The skeleton will go on display at the {city} Natural History Museum in {month}.",
     "palaeontology", 0, (5, 14), (90, 200)),
    ("an early kidney disease test",
     "developed a blood test that detects early kidney disease with {a}% accuracy",
     "The test was evaluated on {b} patients at {city} General Hospital.",
     "Clinical trials are due to begin in {month}.",
     "medicine", 5, (88, 97), (800, 5000)),
    ("a heat-resistant coral",
     "found a coral strain that survived water {a} degrees warmer than normal for {b} weeks",
     "Most other corals in the experiment bleached within days.",
     "The team hopes to plant the strain on reefs off {city} next year.",
     "marine biology", 2, (2, 4), (4, 12)),
)
_INSTITUTES = ("the University of {city}", "the {city} Institute of Technology", "the Halvorsen Marine Laboratory",
               "the Calder Observatory", "the National Crop Research Centre", "the {city} Medical Research Institute")
_JOURNALS = ("Northern Science Letters", "the Journal of Applied Biosystems", "Frontiers of Matter",
             "the Review of Earth and Life", "Open Research Reports")
_SCIENCE_QUOTES = ("We checked the result three times before we believed it",
                   "This was a team effort over many long nights",
                   "It is a small step, but it points somewhere important",
                   "Nobody expected the numbers to be this clear",
                   "The hard part now is making it useful outside the lab",
                   "Our students did most of the work, and they deserve the credit",
                   "We were looking for something else entirely",
                   "It opens more questions than it answers, which is how science should be")


def _science(rng: random.Random, i: int, inst: dict, city: dict, person: Callable[[], str]) -> dict:
    short, did, detail, nxt, field, _, (a0, a1), (b0, b1) = _DISCOVERIES[i]
    lead = person()
    step = 100 if b1 > 500 else 1
    fill = {"a": rng.randint(a0, a1), "b": rng.randrange(b0, b1 + 1, step), **city,
            "latin": lead.split()[1].lower() + "i", "month": MONTHS[rng.randrange(12)],
            "code": f"{'ABCDEFGHJK'[rng.randrange(10)]}{rng.randint(1, 9)}"}
    return _dated(rng, 1, 11) | inst | {
        "kind": "science", "place": inst["inst_city"], "short": short, "lead": lead,
        "did": did.format(**fill), "detail": detail.format(**fill), "next": nxt.format(**fill),
        "field": field, "journal": rng.choice(_JOURNALS), "team": str(rng.randint(4, 31)),
        "years": str(rng.randint(2, 8)), "funding": f"{rng.randint(2, 40) / 2:g}",
        "funder": f"{city['region']} Science Council", "quote": _SCIENCE_QUOTES[i],
    }


_COACH_WIN = ("I am proud of how the players kept going", "We were patient and took our chances",
              "The crowd carried us through the last twenty minutes", "We defended as a team and it paid off",
              "That is the best we have played all season", "The plan worked, but the players made it work",
              "It was not pretty, but we will take it", "Days like this are why we do the job")
_COACH_LOSE = ("a painful lesson", "not good enough", "unlucky, but fair", "a hard one to take", "a wake-up call",
               "frustrating", "a step backwards", "disappointing")
# Matches 0-4 are league games; 5-7 are one cup run (quarter-final, semi-final, final).
_COMPETITIONS = (("a Premier Division match", "lifts {w} to {pos} place in the Premier Division"),
                 ("the Northern Cup quarter-final", "sends {w} into the Northern Cup semi-finals"),
                 ("the Northern Cup semi-final", "puts {w} into the Northern Cup final"),
                 ("the Northern Cup final", "gives {w} the Northern Cup"))


def _match(rng: random.Random, i: int, home: dict, away: dict) -> dict:
    win, lose = (home, away) if rng.random() < 0.6 else (away, home)
    ws = rng.randint(1, 3)
    ls = rng.randint(0, ws - 1)
    minutes = sorted(rng.sample(range(3, 90), ws + ls))
    rng.shuffle(minutes)
    w_goals = sorted(zip(minutes[:ws], rng.sample(win["players"], ws), strict=True))
    l_goals = sorted(zip(minutes[ws:], rng.sample(lose["players"], ls), strict=True))
    goals = " and ".join(f"{p} scored in the {ordinal(m)} minute" for m, p in w_goals)
    replies = " and ".join(f"{p} in the {ordinal(m)} minute" for m, p in l_goals)
    comp, outcome = _COMPETITIONS[max(0, i - 4)]
    month = i - 1 if i >= 5 else rng.randint(2, 11)  # the cup rounds: April, May, June
    return _dated(rng, month, month) | {
        "kind": "match", "place": home["club_city"], "winner": win["club"], "loser": lose["club"],
        "ws": str(ws), "ls": str(ls), "competition": comp, "stadium": home["stadium"],
        "goals": f"{cap(goals)}.", "coach": win["coach"], "lcoach": lose["coach"],
        "replies": (f"{lose['club']} replied through {replies}." if ls
                    else f"{lose['club']} failed to register a goal."),
        "attendance": f"{rng.randrange(4000, 52000, 10):,}", "quote": _COACH_WIN[i],
        "lquote": _COACH_LOSE[i], "founded": win["founded"], "wstadium": win["stadium"],
        "wcity": win["club_city"],
        "outcome": outcome.format(w=win["club"], pos=ordinal(rng.randint(1, 6))),
    }


_STORMS = ("Ada", "Bram", "Cora", "Dario", "Elin", "Fergus")
_STORM_QUOTES = ("Our priority tonight is keeping people safe",
                 "Please stay away from the river banks until the water goes down",
                 "Crews will work through the night to reopen the roads", "I have never seen the harbour this high",
                 "Check on your neighbours, especially the elderly", "We will rebuild, and we will rebuild better")


def _storm(rng: random.Random, i: int, c1: dict, c2: dict) -> dict:
    evac = rng.randrange(600, 12000)
    injured = rng.randint(0, 40)
    return _dated(rng, 2 * i + 2, min(2 * i + 3, 12)) | {
        "kind": "storm", "place": c1["city"], "storm": _STORMS[i], "region": c1["region"],
        "city1": c1["city"], "city2": c2["city"], "mayor1": c1["mayor"],
        "rain": str(rng.randint(60, 240)), "wind": str(rng.randint(90, 160)),
        "evacuated": f"{evac:,}", "evac_round": f"{evac // 500 * 500:,}",
        "homes": f"{rng.randrange(2000, 60000, 100):,}", "damage": str(rng.randint(5, 240)),
        "record_year": str(rng.randint(1950, 2010)), "hours": str(rng.randint(6, 36)),
        "injuries": (f"No deaths were reported, but {injured} people were treated for minor "
                     "injuries." if injured else "No deaths or injuries were reported."),
        "shelters": str(rng.randint(3, 25)), "quote": _STORM_QUOTES[i],
    }


# (award, kind of work, description of the work)
_AWARDS = (("the Marlow Prize for Fiction", "novel",
            "The novel follows three sisters who inherit a failing orchard near {place}."),
           ("the Golden Gull at the {place} Film Festival", "film",
            "The film tells the story of a ferry captain in {place} during one long winter."),
           ("the Northern Music Prize", "album",
            "The album was recorded over ten days in a converted church in {place}."),
           ("the Halden Award for Sculpture", "installation",
            "The installation fills a disused railway shed in {place} with hanging glass."),
           ("the Lantern Prize for Poetry", "collection",
            "The collection is a sequence of poems about the fishing families of {place}."),
           ("the Stagelight Award for best new play", "play",
            "The play is set in a night bakery in {place} over a single shift."))
_TITLE_ADJ = ("Salt", "Quiet", "Northern", "Borrowed", "Glass", "Winter", "Last", "Paper")
_TITLE_NOUN = ("Orchard", "Harbour", "Lanterns", "Tide", "Kingdom", "Bakery", "Ferry", "Hours")
_CAREERS = ("previously worked as a schoolteacher", "spent a decade as a nurse",
            "studied engineering before turning to art", "was shortlisted twice before",
            "grew up above the family's hardware shop", "once worked on fishing boats")
_WINNER_QUOTES = ("I wrote it for my grandmother, who never got to read it",
                  "I want to thank everyone who said this was a strange idea",
                  "This belongs to the whole crew, not just to me", "I still cannot quite believe it",
                  "It took seven years, and every one was worth it", "Small places have big stories")
_JURY_QUOTES = ("It was the one work none of us could stop talking about", "Brave, funny and completely original",
                "A unanimous decision, and an easy one", "It made the whole jury look at {place} differently",
                "Quietly, it is the most ambitious work on the shortlist",
                "We argued for hours, and it won every argument")


def _award(rng: random.Random, i: int, c: dict, born: str, person: Callable[[], str]) -> dict:
    award, work, desc = _AWARDS[i]
    return _dated(rng, 3, 12) | {
        "kind": "award", "place": c["city"], "award": award.format(place=c["city"]),
        "work": work, "desc": desc.format(place=c["city"]), "winner": person(),
        "title": f"The {_TITLE_ADJ[i]} {_TITLE_NOUN[(i + 3) % 8]}", "born": born,
        "prize": f"{rng.randrange(10_000, 60_000, 5000):,}", "jury": person(),
        "shortlist": str(rng.randint(4, 8)), "career": _CAREERS[i], "quote": _WINNER_QUOTES[i],
        "jquote": _JURY_QUOTES[i].format(place=c["city"]),
    }


# (name, noun, spec sentence, usage sentence, range a, range b)
_PROJECTS = (("the {name} Bridge", "bridge",
              "The bridge is {a} metres long and carries {b} lanes of traffic across the estuary.",
              "Planners expect about {users} vehicles to cross it every day.", (400, 2200), (2, 6)),
             ("the {city1}-{city2} rail link", "rail line",
              "The line runs {a} kilometres and cuts the journey between {city1} and {city2} to "
              "{b} minutes.", "Operators expect about {users} passengers a day.", (30, 140), (20, 55)),
             ("the {name} Tunnel", "road tunnel",
              "The tunnel is {a} kilometres long and has {b} emergency exits.",
              "It is expected to take {users} lorries a day off the old coast road.", (2, 9), (6, 20)),
             ("the {name} desalination plant", "desalination plant",
              "The plant can produce {a} million litres of drinking water a day from {b} intakes.",
              "Its water will reach about {users} homes in {city1} and {city2}.", (40, 300), (2, 8)),
             ("the {name} offshore wind farm", "wind farm",
              "Its {a} turbines can generate up to {b} megawatts.",
              "The operator says it will supply about {users} homes.", (20, 90), (200, 900)),
             ("tram line {b} in {city1}", "tram line",
              "The line has {a} stops and links the main station to the university.",
              "About {users} passengers are expected to use it daily.", (12, 30), (3, 7)))
_OPENING_QUOTES = ("This is what a city looks like when it invests in its future",
                   "It was late and it was hard, but it was worth the wait",
                   "Thousands of people will get home faster from tonight",
                   "Clean water is the most basic promise a city can make",
                   "Every turbine out there was assembled by local workers",
                   "Give it a year and nobody will remember life without it")
_NEXT_PHASES = ("A second phase is planned for 2029.", "A link to the airport is being studied.",
                "Tolls will be free for the first month.", "A second plant is already under review.",
                "An extension of the site was approved in principle last year.",
                "An extension to {city2} is due to open in 2028.")


def _project(rng: random.Random, i: int, c1: dict, c2: dict) -> dict:
    name, noun, spec, usage, (a0, a1), (b0, b1) = _PROJECTS[i]
    over = rng.randint(-5, 40)
    fill = {"name": rng.choice(LAST_NAMES), "city1": c1["city"], "city2": c2["city"],
            "a": rng.randint(a0, a1), "b": rng.randint(b0, b1),
            "users": f"{rng.randrange(5_000, 90_000, 500):,}"}
    return _dated(rng, 2, 12) | fill | {
        "kind": "project", "place": c1["city"], "project": name.format(**fill), "noun": noun,
        "spec": spec.format(**fill), "usage": usage.format(**fill), "mayor": c1["mayor"],
        "cost": f"{rng.randrange(40, 2400, 10):,}", "years": str(rng.randint(2, 7)),
        "budget": (f"{over}% more than first budgeted" if over > 0 else "slightly under budget"),
        "builder": _BUILDERS[i % 3], "workers": f"{rng.randrange(150, 3000, 50):,}",
        "quote": _OPENING_QUOTES[i], "next": _NEXT_PHASES[i].format(**fill),
    }


@functools.lru_cache(maxsize=1)
def build() -> dict[str, list[dict]]:
    """The fixed cast and events every article is drawn from (treat as read-only).

    Returns:
        ``{"cities", "companies", "institutes", "clubs", "events"}``, lists of dicts of strings.
    """
    rng = random.Random(_WORLD_SEED)
    used: set[str] = set()

    def person() -> str:
        while (name := f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}") in used:
            pass
        used.add(name)
        return name

    names = [h + rng.choice(_TOWN_TAILS) for h in rng.sample(_TOWN_HEADS, 14)]
    cities = [{"city": n, "region": _REGIONS[i % 5], "pop": f"{rng.randrange(40, 1200) * 1000:,}",
               "mayor": person()} for i, n in enumerate(names)]
    companies = [{"company": n, "sector": s, "product": p, "ceo": person(),
                  "hq": rng.choice(names), "employees": f"{rng.randrange(300, 40000, 100):,}",
                  "founded": str(rng.randint(1950, 2019))} for n, s, p in _COMPANIES]
    institutes = [{"institute": pattern.format(city=c["city"]), "inst_city": c["city"],
                   "director": person(), "inst_founded": str(rng.randint(1890, 1995))}
                  for pattern, c in zip(_INSTITUTES, rng.sample(cities, 6), strict=True)]
    clubs = [{"club": f"{c['city']} {suffix}", "club_city": c["city"], "coach": person(),
              "players": [person() for _ in range(3)], "founded": str(rng.randint(1880, 1975)),
              "stadium": f"{rng.choice(LAST_NAMES)} Park"}
             for suffix, c in zip(_CLUB_SUFFIXES, rng.sample(cities, 8), strict=True)]

    events = [_election(rng, i, c, person) for i, c in enumerate(cities[:6])]
    for i, co in enumerate(rng.sample(companies, 8)):
        events.append(_results(rng, i, co, rng.choice([n for n in names if n != co["hq"]])))
    for i, disc in enumerate(_DISCOVERIES):
        events.append(_science(rng, i, institutes[disc[5]], rng.choice(cities), person))
    cup = None
    for i in range(8):
        home, away = rng.sample(clubs, 2)
        if cup is not None:  # the cup's semi-final and final: the last round's winner goes on
            home, away = cup, rng.choice([c for c in clubs if c is not cup])
        events.append(_match(rng, i, home, away))
        if i >= 5:
            cup = next(c for c in clubs if c["club"] == events[-1]["winner"])
    for i in range(len(_STORMS)):
        region = rng.choice(_REGIONS)
        events.append(_storm(rng, i, *rng.sample([c for c in cities if c["region"] == region], 2)))
    for i in range(len(_AWARDS)):
        events.append(_award(rng, i, rng.choice(cities), rng.choice(names), person))
    for i in range(len(_PROJECTS)):
        events.append(_project(rng, i, *rng.sample(cities, 2)))
    return {"cities": cities, "companies": companies, "institutes": institutes, "clubs": clubs,
            "events": events}
