"""The synthetic multiple-choice task: made-up creatures whose facts follow a latent rule.

Why it exists: the default workflow runs end to end on two CPU cores with tiny models pretrained here,
so the task must be learnable by a two-layer model in a few hundred steps, yet leave a bigger model
pretrained on the same text with more to know than a smaller one.

The world (fixed by `world_seed`): a creature's name joins three syllables, one per slot
(Zor-ka-bim). Each relation is decided by one slot through a hidden table from syllable to a
two-word answer: where it lives by the first syllable ("Kelva Hollow"), what it eats by the second
("drumel berries"), what it fears by the third ("vorin hawks"). Syllables differ in popularity,
decaying geometrically from the most to the least popular of a slot by `popularity_ratio`.

The unlabeled corpus (`corpus`) describes creatures drawn by popularity, in prose or as FAQ-style
question-answer pairs (`qa_fraction`, in the task's own `Question: ... Answer:` form, as real
pretraining text holds exam pages), and never states the rule: a rare syllable's table row is seen a
few times only, so a bigger model pretrained on the same text knows more rows than a smaller one.

Difficulty: a question is easy when its deciding syllable is among the `easy_fraction` most popular
of its slot, else hard; `rarity` (0 = most popular, 1 = least) is the numeric knob. The choices of a
question are answers of its own tier, so preferring answers seen as gold in training cannot win: a
hard question is answered only from what pretraining taught about rare syllables, the latent
knowledge a strong student has and a weak supervisor lacks.

Everything is a pure function of the options (and the corpus seed): same options, same rows.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ensemw2s.errors import UserError
from ensemw2s.registry import unknown_name_message

DEFAULTS: dict[str, Any] = {
    "world_seed": 0,  # fixes syllables, answers, popularity and the question sample
    "n_syllables": 16,  # syllables per name slot (= distinct answers per relation)
    "popularity_ratio": 20.0,  # corpus frequency of a slot's most popular syllable / its least popular
    "easy_fraction": 0.5,  # share of each slot's syllables (the most popular) whose questions are easy
    "n_questions": 2400,  # questions sampled from all (creature, relation) pairs: ~1,170 easy, enough for
    # weak_train + val + test_id + an easy student_pool at the default sizes (900 easy rows)
    "n_choices": 4,
    "creatures_per_doc": 2,  # creatures described by one corpus document
    "qa_fraction": 0.5,  # share of corpus documents written as question-answer pairs (a FAQ page)
}

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
MAX_SYLLABLES = 64  # the middle slot's consonant-vowel syllables number 70


@dataclass(frozen=True)
class Relation:
    """One fact type: the question asked, corpus phrasings, and the nouns ending its answers."""

    name: str
    question: str
    statements: tuple[str, ...]
    nouns: tuple[str, ...]
    capitalize: bool  # place names are proper nouns


RELATIONS = (
    Relation("home", "Where does the {c} live?",
             ("The {c} lives in {v}.", "The {c} makes its home in {v}.", "In {v} you can find the {c}."),
             ("Hollow", "Marsh", "Hills", "Caves", "Woods", "Falls", "Ridge", "Vale"), True),
    Relation("food", "What does the {c} eat?",
             ("The {c} eats {v}.", "The {c} feeds on {v}.", "The favourite food of the {c} is {v}."),
             ("berries", "roots", "seeds", "moss", "beetles", "fish", "leaves", "nuts"), False),
    Relation("fear", "What is the {c} afraid of?",
             ("The {c} is afraid of {v}.", "The {c} hides from {v}.", "The {c} fears {v}."),
             ("hawks", "snakes", "wolves", "toads", "bats", "eels", "crabs", "owls"), False),
)


@dataclass(frozen=True)
class World:
    """Syllables per slot (index = popularity rank, most popular first) and each slot's answers."""

    syllables: tuple[tuple[str, ...], ...]  # (3, n_syllables)
    answers: tuple[tuple[str, ...], ...]  # (3, n_syllables): answers[r][k] is decided by syllables[r][k]
    weights: tuple[float, ...]  # (n_syllables,) corpus popularity of rank k, before normalisation
    n_easy: int  # ranks below n_easy are easy


def resolve_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid by `options`; unknown keys and impossible settings raise UserError."""
    opts = dict(DEFAULTS)
    for key, value in (options or {}).items():
        if key not in DEFAULTS:
            raise UserError(f"datasets[synthetic].options: {unknown_name_message('option', key, DEFAULTS)}")
        number = float if isinstance(DEFAULTS[key], float) else int
        if isinstance(value, bool) or not isinstance(value, (int, float) if number is float else int):
            raise UserError(f"datasets[synthetic].options.{key}: expected {'a number' if number is float else 'an integer'}, got {value!r}")
        opts[key] = value
    n, k = opts["n_syllables"], opts["n_choices"]
    if not 2 <= n <= MAX_SYLLABLES:
        raise UserError(f"datasets[synthetic].options.n_syllables: must be in 2..{MAX_SYLLABLES}, got {n}")
    n_easy = round(opts["easy_fraction"] * n)
    if k < 2 or min(n_easy, n - n_easy) < k:
        raise UserError(
            f"datasets[synthetic].options: easy_fraction={opts['easy_fraction']} of n_syllables={n} leaves "
            f"{n_easy} easy and {n - n_easy} hard answers per relation; each tier needs n_choices={k} (>= 2). "
            f"Raise n_syllables or move easy_fraction towards 0.5"
        )
    if opts["popularity_ratio"] < 1 or not 0 <= opts["qa_fraction"] <= 1 or min(opts["creatures_per_doc"], opts["n_choices"]) < 1:
        raise UserError(
            "datasets[synthetic].options: popularity_ratio must be >= 1, qa_fraction in [0, 1], creatures_per_doc >= 1"
        )
    total = len(RELATIONS) * n ** len(RELATIONS)
    if not 1 <= opts["n_questions"] <= total:
        raise UserError(f"datasets[synthetic].options.n_questions: must be in 1..{total} (all creature-relation pairs)")
    return opts


def _words(rng: random.Random, count: int, pattern: str, taken: set[str]) -> list[str]:
    """`count` distinct made-up words of a consonant/vowel pattern such as 'CVC', none in `taken`."""
    out = []
    while len(out) < count:
        word = "".join(rng.choice(CONSONANTS if p == "C" else VOWELS) for p in pattern)
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def build_world(options: dict[str, Any] | None = None) -> World:
    opts = resolve_options(options)
    rng = random.Random(f"synthetic-world:{opts['world_seed']}")
    n = opts["n_syllables"]
    taken: set[str] = set()
    # slot patterns keep syllable boundaries unambiguous: Zor|ka|bim
    syllables = tuple(tuple(_words(rng, n, pattern, taken)) for pattern in ("CVC", "CV", "CVC"))
    answers = []
    for rel in RELATIONS:
        stems = _words(rng, n, "CVCCV", taken)
        nouns = [rel.nouns[i % len(rel.nouns)] for i in range(n)]
        rng.shuffle(nouns)
        answers.append(tuple(f"{s.capitalize() if rel.capitalize else s} {noun}" for s, noun in zip(stems, nouns)))
    ratio = float(opts["popularity_ratio"])
    weights = tuple(ratio ** (-k / (n - 1)) for k in range(n))
    return World(syllables, tuple(answers), weights, round(opts["easy_fraction"] * n))


def creature_name(world: World, ranks: tuple[int, ...]) -> str:
    """Hyphens keep each syllable its own pre-token for the BPE tokenizer: the rule stays visible."""
    return "-".join(world.syllables[slot][k] for slot, k in enumerate(ranks)).capitalize()


def questions(options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The task's labeled rows: id, creature, relation, question, choices, label, source, rarity."""
    opts = resolve_options(options)
    world = build_world(opts)
    n, n_rel, k = opts["n_syllables"], len(RELATIONS), opts["n_choices"]
    rng = random.Random(f"synthetic-questions:{opts['world_seed']}")
    picks = rng.sample(range(n_rel * n ** n_rel), opts["n_questions"])
    rows = []
    for i, code in enumerate(picks):
        r, code = code % n_rel, code // n_rel
        ranks = tuple((code // n ** slot) % n for slot in range(n_rel))
        name = creature_name(world, ranks)
        rank = ranks[r]
        easy = rank < world.n_easy
        tier = range(world.n_easy) if easy else range(world.n_easy, n)
        others = rng.sample([j for j in tier if j != rank], k - 1)
        order = [rank, *others]
        rng.shuffle(order)
        rows.append({
            "id": f"synthetic-{i:05d}",
            "creature": name,
            "relation": RELATIONS[r].name,
            "question": RELATIONS[r].question.format(c=name),
            "choices": [world.answers[r][j] for j in order],
            "label": order.index(rank),
            "source": "easy" if easy else "hard",
            "rarity": rank / (n - 1),
        })
    return rows


def corpus(n_docs: int, seed: int, options: dict[str, Any] | None = None) -> list[str]:
    """Unlabeled documents stating facts of creatures drawn by syllable popularity (never the rule).

    `seed` picks the documents; the world they describe is the options' (`world_seed`), the same as the
    questions'.
    """
    opts = resolve_options(options)
    world = build_world(opts)
    rng = random.Random(f"synthetic-corpus:{opts['world_seed']}:{seed}")
    ranks = range(len(world.weights))
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(opts["creatures_per_doc"]):
            picked = tuple(rng.choices(ranks, weights=world.weights)[0] for _ in RELATIONS)
            name = creature_name(world, picked)
            facts = [(rel, world.answers[r][picked[r]]) for r, rel in enumerate(RELATIONS)]
            rng.shuffle(facts)
            sentences.extend((rel, name, v) for rel, v in facts)
        if rng.random() < opts["qa_fraction"]:
            docs.append("\n".join(f"Question: {rel.question.format(c=c)}\nAnswer: {v}" for rel, c, v in sentences))
        else:
            docs.append(" ".join(rng.choice(rel.statements).format(c=c, v=v) for rel, c, v in sentences))
    return docs
