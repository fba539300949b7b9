"""The synthetic task: a latent syllable rule, stated only through facts in the corpus, with a rarity knob."""
import re
from collections import Counter, defaultdict

import pytest

from ensemw2s import synthetic
from ensemw2s.errors import UserError
from ensemw2s.models import train_tokenizer

SMALL = {"n_syllables": 8, "n_questions": 300}


def deciding_syllable(row: dict) -> str:
    slot = [rel.name for rel in synthetic.RELATIONS].index(row["relation"])
    return row["creature"].lower().split("-")[slot]


def fact_patterns() -> list[tuple[str, re.Pattern]]:
    """(relation, regex with groups c and v) for every way the corpus states a fact."""
    out = []
    for rel in synthetic.RELATIONS:
        forms = [*rel.statements, f"Question: {rel.question}\nAnswer: {{v}}"]
        for form in forms:
            regex = re.escape(form).replace(r"\{c\}", "(?P<c>[A-Z][a-z]+-[a-z]+-[a-z]+)")
            out.append((rel.name, re.compile(regex.replace(r"\{v\}", "(?P<v>[A-Za-z]+ [A-Za-z]+)"))))
    return out


def corpus_facts(docs: list[str]) -> list[tuple[str, str, str]]:
    """(creature, relation, answer) stated by the documents."""
    facts = []
    for doc in docs:
        for rel, pattern in fact_patterns():
            facts += [(m["c"], rel, m["v"]) for m in pattern.finditer(doc)]
    return facts


def test_everything_is_a_function_of_the_options():
    assert synthetic.questions(SMALL) == synthetic.questions(SMALL)
    assert synthetic.corpus(20, 3, SMALL) == synthetic.corpus(20, 3, SMALL)
    assert synthetic.corpus(20, 3, SMALL) != synthetic.corpus(20, 4, SMALL)  # the seed picks documents
    other = synthetic.questions({**SMALL, "world_seed": 1})
    assert [r["choices"] for r in other] != [r["choices"] for r in synthetic.questions(SMALL)]


def test_answers_follow_the_hidden_syllable_rule():
    rows = synthetic.questions()
    assert len(rows) == synthetic.DEFAULTS["n_questions"]
    assert len({r["question"] for r in rows}) == len(rows)  # one question per creature and relation
    table = defaultdict(set)
    for r in rows:
        table[r["relation"], deciding_syllable(r)].add(r["choices"][r["label"]])
    assert all(len(answers) == 1 for answers in table.values())
    # and distinct syllables of a slot decide distinct answers: the rule is a lookup, not a constant
    per_relation = Counter(rel for rel, _ in table)
    assert all(len({next(iter(table[k])) for k in table if k[0] == rel}) == n for rel, n in per_relation.items())


def test_answers_are_several_tokens_long():
    docs = synthetic.corpus(300, 0)
    tok = train_tokenizer(docs, 400)
    rows = synthetic.questions()
    lengths = [len(tok(" " + r["choices"][r["label"]]).input_ids) for r in rows]
    assert min(lengths) >= 2 and sum(lengths) / len(lengths) >= 3


def test_difficulty_tiers_and_choices():
    rows = synthetic.questions()
    n_easy = round(synthetic.DEFAULTS["easy_fraction"] * synthetic.DEFAULTS["n_syllables"])
    world = synthetic.build_world()
    counts = Counter(r["source"] for r in rows)
    assert counts["easy"] > 600 and counts["hard"] > 600  # enough for the default sizes
    for r in rows:
        slot = [rel.name for rel in synthetic.RELATIONS].index(r["relation"])
        rank = world.syllables[slot].index(deciding_syllable(r))
        assert r["rarity"] == rank / (synthetic.DEFAULTS["n_syllables"] - 1)
        assert r["source"] == ("easy" if rank < n_easy else "hard")
        tier = world.answers[slot][:n_easy] if r["source"] == "easy" else world.answers[slot][n_easy:]
        assert len(set(r["choices"])) == 4 and set(r["choices"]) <= set(tier)


def test_corpus_states_the_same_facts_as_the_questions():
    docs = synthetic.corpus(400, 0)
    facts = corpus_facts(docs)
    assert len(facts) == 400 * synthetic.DEFAULTS["creatures_per_doc"] * len(synthetic.RELATIONS)  # all parsed
    world = synthetic.build_world()
    for creature, rel, answer in facts:
        slot = [r.name for r in synthetic.RELATIONS].index(rel)
        syllable = creature.lower().split("-")[slot]
        assert world.answers[slot][world.syllables[slot].index(syllable)] == answer
    assert any(doc.startswith("Question: ") for doc in docs) and any(doc.startswith("The ") or doc.startswith("In ") for doc in docs)


def test_rare_syllables_are_rarely_stated_but_stated():
    """The knob: hard rows of the hidden table appear far less often, yet every row is there to learn."""
    world = synthetic.build_world()
    names = [r.name for r in synthetic.RELATIONS]
    mentions = Counter()
    for creature, rel, _ in corpus_facts(synthetic.corpus(2000, 0)):  # the default pretraining size
        slot = names.index(rel)
        mentions[slot, world.syllables[slot].index(creature.lower().split("-")[slot])] += 1
    n = synthetic.DEFAULTS["n_syllables"]
    for slot in range(len(names)):
        per_rank = [mentions[slot, k] for k in range(n)]
        assert min(per_rank) >= 1
        assert per_rank[0] > 8 * per_rank[-1]  # popularity_ratio 20, with sampling noise
        assert sum(per_rank[: world.n_easy]) > 3 * sum(per_rank[world.n_easy :])


@pytest.mark.parametrize("options, match", [
    ({"n_syllabels": 8}, "Did you mean 'n_syllables'"),
    ({"n_questions": "many"}, "options.n_questions: expected an integer"),
    ({"easy_fraction": 0.1}, "each tier needs n_choices=4"),
    ({"n_syllables": 500}, "n_syllables: must be in 2..64"),
    ({"n_questions": 10**9}, "n_questions: must be in 1.."),
])
def test_bad_options_are_user_errors(options, match):
    with pytest.raises(UserError, match=match):
        synthetic.questions(options)
