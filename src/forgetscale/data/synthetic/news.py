"""The ``news`` corpus: short articles about the fixed world's 2026 events (knowledge the base model cannot have).

Wording, sentence choice and order vary from article to article; the facts come from :mod:`.world`.
"""

from __future__ import annotations

import random

from forgetscale.data.synthetic import world
from forgetscale.data.synthetic.common import Example, cap

# kind -> (headlines, leads, {body slot: phrasings}); every lead carries the date.
_ARTICLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "election": (
        ("{winner} elected mayor of {city}", "{party} wins {city} as {winner} takes {share}% of vote",
         "{city} picks {winner} in mayoral election"),
        ("{winner} of the {party} was elected mayor of {city} on {weekday} {date}, winning "
         "{share}% of the vote.",
         "Voters in {city} have chosen {winner} as their next mayor, handing the {party} "
         "candidate {share}% of the vote in the election held on {date}.",
         "The {party} candidate {winner} won the {city} mayoral election on {date} with {share}% "
         "of ballots cast."),
        {"rival": ("{rival} of the {rival_party} finished second with {rival_share}%.",
                   "The runner-up, {rival} of the {rival_party}, took {rival_share}% and conceded "
                   "shortly after midnight."),
         "turnout": ("Turnout was {turnout}%, according to the city's electoral office.",
                     "Officials put turnout at {turnout}%, {turnout_dir} from {turnout_prev}% at "
                     "the previous election."),
         "quote": ('"{quote}," {winner} told supporters at the victory rally.',
                   'Speaking to supporters, {winner} said: "{quote}."'),
         "pledge": ("During the campaign {winner} promised to {pledge}.",
                    "The central pledge of the {winner} campaign was to {pledge} within four years."),
         "city": ("{city}, in {region}, has a population of about {pop}.",
                  "About {pop} people live in {city}, one of the main cities of {region}."),
         "predecessor": ("{winner} succeeds {predecessor}, who did not seek a third term.",
                         "The post became vacant when {predecessor} stepped down after eight years."),
         "start": ("{winner} will take office on {office_date}.",
                   "The new mayor is due to be sworn in on {office_date}.")},
    ),
    "results": (
        ("{company} revenue {dir_now} {change}% in {quarter}",
         "{company} reports {q} revenue of ${revenue} million",
         "Shares in {company} move {share_adv} after {q} results"),
        ("{company} said on {date} that revenue for the {quarter} {dir_past} {change}% to "
         "${revenue} million.",
         "Revenue at {company}, the {hq}-based {sector} company, {dir_past} {change}% to "
         "${revenue} million in the {quarter}, the company reported on {weekday} {date}."),
        {"profit": ("Net profit was ${profit} million, compared with ${profit_prev} million a year "
                    "earlier.", "It made a net profit of ${profit} million, against ${profit_prev} "
                    "million in the same quarter last year."),
         "quote": ('"{quote}," chief executive {ceo} said in a statement.',
                   'Chief executive {ceo} said: "{quote}."'),
         "shares": ("Shares in {company} {share_dir} {share_move}% in early trading.",
                    "The stock closed {share_move}% {share_adv} after the announcement."),
         "plan": ("The company also announced plans to {plan}.",
                  "{company} separately said it would {plan}."),
         "profile": ("Founded in {founded}, {company} employs about {employees} people and is "
                     "based in {hq}.", "{company}, which is headquartered in {hq}, has about "
                     "{employees} staff."),
         "reason": ("The company {reason_verb} {reason}.",
                    "Executives pointed to {reason}."),
         "outlook": ("It expects full-year revenue of between ${lo} million and ${hi} million.",
                     "The company forecast annual revenue of ${lo} million to ${hi} million.")},
    ),
    "science": (
        ("{institute} researchers report {short}", "Scientists in {inst_city} announce {short}",
         "Team led by {lead} reports {short}"),
        ("Researchers at {institute} have {did}, according to a study published in {journal} on "
         "{date}.",
         "A team led by {lead} at {institute} has {did}, the group reported in {journal} on "
         "{weekday} {date}."),
        {"detail": ("{detail}",),
         "lead": ("The team was led by {lead}, a {field} researcher at {institute}.",
                  "{lead}, who led the work, is a specialist in {field}."),
         "quote": ('"{quote}," said {lead}.', '{lead} said: "{quote}."'),
         "team": ("The study involved {team} researchers and took {years} years.",
                  "{team} scientists worked on the project over {years} years."),
         "funding": ("The work was funded by a ${funding} million grant from the {funder}.",
                     "The {funder} paid for the research with a ${funding} million grant."),
         "next": ("{next}",),
         "institute": ("{institute}, founded in {inst_founded}, is based in {inst_city} and led "
                       "by {director}.", "{director}, the director of {institute}, called the "
                       "result a milestone for {inst_city}.")},
    ),
    "match": (
        ("{winner} beat {loser} {ws}-{ls}", "{loser} fall to {winner} in {competition}",
         "{winner} win {ws}-{ls} at {stadium}"),
        ("{winner} beat {loser} {ws}-{ls} in {competition} at {stadium} on {weekday} {date}.",
         "A {ws}-{ls} win over {loser} on {date} in {competition} at {stadium} {outcome}."),
        {"goals": ("{goals}",),
         "replies": ("{replies}",),
         "crowd": ("A crowd of {attendance} watched the match.",
                   "The match drew {attendance} spectators."),
         "quote": ('"{quote}," said {winner} coach {coach}.', '{coach}, the {winner} coach, said: '
                   '"{quote}."'),
         "loser": ("{loser} coach {lcoach} called the result {lquote}.",
                   "For {loser}, coached by {lcoach}, it was {lquote}."),
         "outcome": ("The result {outcome}.",),
         "club": ("{winner}, founded in {founded}, play their home games at {wstadium} in "
                  "{wcity}.", "{winner} were founded in {founded} and are based in {wcity}.")},
    ),
    "storm": (
        ("Storm {storm} floods {city1}", "Thousands evacuated as Storm {storm} hits {region}",
         "Storm {storm} brings record rain to {city1}"),
        ("Storm {storm} brought {rain} millimetres of rain to {city1} on {weekday} {date}, "
         "flooding streets and forcing {evacuated} people from their homes.",
         "More than {evac_round} residents of {region} were evacuated on {date} as Storm {storm} "
         "swept across the region with winds of up to {wind} km/h."),
        {"power": ("About {homes} homes in {city2} were left without power.",
                   "Power was cut to some {homes} homes around {city2}."),
         "wind": ("Gusts reached {wind} km/h on the coast near {city2}.",
                  "Forecasters recorded gusts of {wind} km/h."),
         "quote": ('"{quote}," said {mayor1}, mayor of {city1}.',
                   '{city1} mayor {mayor1} said: "{quote}."'),
         "record": ("It was the wettest day in {city1} since {record_year}, the weather service "
                    "said.", "Forecasters said {city1} had not seen so much rain since "
                    "{record_year}."),
         "damage": ("Insurers put early damage estimates at ${damage} million.",),
         "transport": ("Trains between {city1} and {city2} were suspended for {hours} hours.",
                       "Rail services linking {city1} and {city2} stopped for {hours} hours."),
         "injuries": ("{injuries}",),
         "shelters": ("Emergency shelters were opened in {shelters} schools.",)},
    ),
    "award": (
        ('{winner} wins {award} for "{title}"', '"{title}" takes {award}',
         "{winner} named winner of {award}"),
        ('{winner} has won {award} for the {work} "{title}", organisers announced in {place} on '
         "{date}.",
         'The {work} "{title}" by {winner} won {award} at a ceremony in {place} on {weekday} '
         "{date}."),
        {"desc": ("{desc}",),
         "prize": ("The prize is worth ${prize}.", "{winner} receives ${prize} in prize money."),
         "jury": ('"{jquote}," said jury chair {jury}.', 'Jury chair {jury} said: "{jquote}."'),
         "speech": ('"{quote}," {winner} said on stage.',
                    'Accepting the award, {winner} said: "{quote}."'),
         "shortlist": ('"{title}" was chosen from a shortlist of {shortlist} works.',
                       "The judges picked it from {shortlist} finalists."),
         "career": ("{winner}, who was born in {born}, {career}.",
                    "Born in {born}, {winner} {career}.")},
    ),
    "project": (
        ("{project} opens in {city1}", "{city1} opens ${cost} million {noun}",
         "First users try out {project}"),
        ("{project} opened to the public in {city1} on {weekday} {date}, {years} years after "
         "construction began.",
         "After {years} years of work, {project} in {city1} opened on {date}."),
        {"spec": ("{spec}",),
         "cost": ("The project cost ${cost} million, {budget}.",
                  "It cost ${cost} million to build, {budget}."),
         "quote": ('"{quote}," said {mayor}, mayor of {city1}, at the opening ceremony.',
                   '{city1} mayor {mayor} said: "{quote}."'),
         "usage": ("{usage}",),
         "builder": ("It was built by {builder}, which had {workers} workers on site.",
                     "{builder} led construction, employing {workers} people at its peak."),
         "next": ("{next}",)},
    ),
}


def _article(ev: dict, rng: random.Random) -> str:
    heads, leads, body = _ARTICLES[ev["kind"]]
    headline = cap(rng.choice(heads).format(**ev))
    lead = cap(rng.choice(leads).format(**ev))
    if rng.random() < 0.5:
        lead = f"{ev['place'].upper()}, {ev['date']} - {lead}"
    sentences, words = [lead], len(headline.split()) + len(lead.split())
    target = rng.randint(70, 140)
    slots = list(body)
    rng.shuffle(slots)
    for slot in slots:
        if words >= target:
            break
        s = cap(rng.choice(body[slot]).format(**ev))
        if words + len(s.split()) <= 150:
            sentences.append(s)
            words += len(s.split())
    paragraphs, i = [], 0
    while i < len(sentences):
        k = rng.choice((1, 2))
        paragraphs.append(" ".join(sentences[i : i + k]))
        i += k
    return "\n\n".join([headline, *paragraphs])


def examples(n: int, rng: random.Random) -> list[Example]:
    """``n`` articles (``{"text"}``), each one event of the world retold; repeats are possible."""
    events = world.build()["events"]
    return [{"text": _article(rng.choice(events), rng)} for _ in range(n)]
