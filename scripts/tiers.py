"""The comparison study's task (scripts/compare.py): generated arithmetic in four difficulty tiers, built to
have a zone of proximal development for a small student. compare.py writes its train split to a JSONL file,
which train.py reads as any other --data file.
"""
import random

# the tiered task's word problems: (template, answer(a, b, c), worked steps); a, b, c are drawn per template
_WORD_PROBLEMS = [
    (("{name} has {a} marbles and buys {b} bags with {c} marbles in each. How many marbles does {name} "
      "have now?"),
     lambda a, b, c: a + b * c, lambda a, b, c: f"{b} * {c} = {b * c}. {a} + {b * c} = {a + b * c}."),
    ("{name} has {a} stickers and gives {b} stickers to each of {c} friends. How many stickers are left?",
     lambda a, b, c: a - b * c, lambda a, b, c: f"{b} * {c} = {b * c}. {a} - {b * c} = {a - b * c}."),
    ("{name} earns {a} dollars a day for {b} days and then spends {c} dollars. How many dollars are left?",
     lambda a, b, c: a * b - c, lambda a, b, c: f"{a} * {b} = {a * b}. {a * b} - {c} = {a * b - c}."),
    (("{name} picks {a} apples in the morning and {b} in the afternoon, then shares them equally among {c} "
      "baskets. How many apples go in each basket?"),
     lambda a, b, c: (a + b) // c, lambda a, b, c: f"{a} + {b} = {a + b}. {a + b} / {c} = {(a + b) // c}."),
]
_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
TIERS = ("sum2", "sum3", "product", "word")


def _tier_pool(tier):
    """Every (id, question, answer, worked steps) of one tier, in a fixed order (no seed involved)."""
    if tier == "sum2":  # two two-digit numbers
        return [(f"{a}+{b}", f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}.")
                for a in range(10, 60) for b in range(10, 60)]
    if tier == "sum3":  # three numbers up to 30
        return [(f"{a}+{b}+{c}", f"What is {a} + {b} + {c}?", a + b + c,
                 f"{a} + {b} = {a + b}. {a + b} + {c} = {a + b + c}.")
                for a in range(2, 31) for b in range(2, 31) for c in range(2, 31)]
    if tier == "product":  # a number from 3 to 12 times one from 11 to 40
        return [(f"{a}*{b}", f"What is {a} * {b}?", a * b, f"{a} * {b} = {a * b}.")
                for a in range(3, 13) for b in range(11, 41)]
    pool = []
    for t, (template, answer, steps) in enumerate(_WORD_PROBLEMS):
        for a in range(5, 40):
            for b in range(2, 7):
                for c in range(2, 6):
                    if (t == 1 and a <= b * c) or (t == 2 and a * b <= c) or (t == 3 and (a + b) % c):
                        continue
                    name = _NAMES[(a + b + c + t) % len(_NAMES)]
                    pool.append((f"{t}:{a},{b},{c}", template.format(name=name, a=a, b=b, c=c),
                                 answer(a, b, c), steps(a, b, c)))
    return pool


def make_tiered(n=None, seed=0, split="train", per_tier=200):
    """A task with a zone of proximal development for a small student: four difficulty tiers of `per_tier`
    questions each (sum2: two two-digit numbers summed; sum3: three numbers summed; product: a number up to
    12 times one up to 40; word: a two-step word problem), each with a worked solution ending in
    \\boxed{answer} for --teacher gold.

    Which questions exist and which are held out is fixed (one in five of each tier is in the test split,
    whatever the seed); `seed` only orders them. Ids are unique: tiers:TIER:NUMBERS; `tier` names the tier.
    """
    examples = []
    for k, tier in enumerate(TIERS):
        pool = _tier_pool(tier)
        random.Random(4321 + k).shuffle(pool)  # fixed: the questions and the split never depend on --seed
        for i, (key, question, answer, steps) in enumerate(pool[:per_tier]):
            if (i % 5 == 0) == (split != "train"):
                examples.append({"id": f"tiers:{tier}:{key}", "question": question, "answer": str(answer),
                                 "solution": f"<think>{steps}</think> The answer is \\boxed{{{answer}}}.",
                                 "tier": tier})
    random.Random(seed).shuffle(examples)
    return examples[:n]
