"""The study and benchmark harness, outside the method's files: each runs from the repository root as
`python scripts/NAME.py ...`, and is imported as `scripts.NAME` (e.g. demo.py: `from scripts import plot`).

`number` is the scripts' argparse type for numeric flags: a value that cannot work stops the script at start,
before any work, with the flag, the value and the allowed range."""
import argparse
import math


def number(kind=int, low=None, high=None, above=False, inf=False):
    """An argparse `type`: a `kind` (int or float) at least `low` (over it with `above`) and at most `high`,
    finite unless `inf`. Anything else (-5 where >= 1 is needed, nan, inf, 2.5 for an integer) makes argparse
    stop with `argument --FLAG: 'VALUE' is not allowed: expected RANGE`."""
    bounds = ""
    if low is not None and high is not None:
        bounds = f" in {'(' if above else '['}{low}, {high}]"
    elif low is not None:
        bounds = f" {'>' if above else '>='} {low}"
    elif high is not None:
        bounds = f" <= {high}"
    allowed = ("an integer" if kind is int else "a number" if inf else "a finite number") + bounds + \
        (" (inf allowed)" if inf else "")

    def parse(text):
        try:
            value = kind(text)
        except ValueError:  # int("nan"), int("2.5"), float("x")
            value = math.nan
        if (math.isnan(value) or (math.isinf(value) and not inf) or (low is not None and value < low)
                or (above and value == low) or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: expected {allowed}")
        return value

    return parse
