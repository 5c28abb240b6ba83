"""What is hidden and what is asked: the needle text, the question, the expected answer and the answer prefix.

Usage: `spec = resolve_needle(pack, form, needle=None, question=None, expected=None, answer_prefix=None)`

The default needle carries a random 7-digit value. It is drawn per needle position from `random.Random` seeded
with the string "SEED@OFFSET", OFFSET being the haystack token where the needle goes (Python seeds a str through
SHA-512, so the value is the same on every machine and Python version, unlike `hash()`), and redrawn from the same
generator when it occurs anywhere else in the prompt.

Why per position and not per probe: two probes that put the needle at the same place (every length at depth 0,
and lengths whose depths meet at the same sentence) then hold the same tokens up to the shorter one's end, and the
runner computes that shared part once (kanana_longctx.plan.reuse). Values still differ between positions, and
no probe sees another's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.languages import VALUE, LanguagePack

VALUE_DIGITS = 7
_SAMPLE_VALUE = "0" * VALUE_DIGITS


@dataclass(frozen=True)
class NeedleSpec:
    needle: str  # may contain {value}
    question: str
    expected: str  # may contain {value}
    answer_prefix: str  # "" for none
    custom: bool  # the user supplied needle, question or expected answer

    @property
    def uses_value(self) -> bool:
        return VALUE in self.needle

    def needle_text(self, value: str) -> str:
        return self.needle.replace(VALUE, value)

    def expected_text(self, value: str) -> str:
        return self.expected.replace(VALUE, value)


def resolve_needle(
    pack: LanguagePack,
    form: str,
    *,
    needle: str | None = None,
    question: str | None = None,
    expected: str | None = None,
    answer_prefix: str | None = None,
) -> NeedleSpec:
    """Fill in the language's defaults and check that the needle holds the answer.

    answer_prefix: None -> the form's default (retform: the language's prefix, or "Answer:"/"답:" with a custom
    needle or question; qaform: none); "default" -> that language prefix for either form; any other text -> itself.
    """
    custom = needle is not None or question is not None or expected is not None
    text = (pack.needle if needle is None else needle).strip()
    asked = (pack.question if question is None else question).strip()
    if not text:
        raise ProbeError("the needle is empty")
    if not asked:
        raise ProbeError("the question is empty")
    if VALUE in asked:
        raise ProbeError("the question must not contain {value}: it would give the answer away")
    if expected is None:
        if VALUE not in text:
            raise ProbeError("a needle without {value} needs --expected (the answer it contains)")
        answer = VALUE
    else:
        answer = expected.strip()
        if not answer:
            raise ProbeError("the expected answer is empty")
    if answer.replace(VALUE, _SAMPLE_VALUE) not in text.replace(VALUE, _SAMPLE_VALUE):
        raise ProbeError(f"the needle {text!r} does not contain the expected answer {answer!r}")
    default_prefix = pack.generic_answer_prefix if (needle is not None or question is not None) else pack.answer_prefix
    if answer_prefix is None:
        prefix = default_prefix if form == "retform" else ""
    elif answer_prefix.strip().lower() == "default":
        prefix = default_prefix
    else:
        prefix = answer_prefix.strip()
    if VALUE in prefix or (answer.replace(VALUE, _SAMPLE_VALUE) in prefix.replace(VALUE, _SAMPLE_VALUE)):
        raise ProbeError("the answer prefix must not contain the answer")
    return NeedleSpec(needle=text, question=asked, expected=answer, answer_prefix=prefix, custom=custom)


def needle_rng(seed: int, offset: int) -> random.Random:
    """The generator of the needle at haystack token `offset`: the same (seed, offset) always draws the same values,
    whatever the probe's length or requested depth."""
    return random.Random(f"{seed}@{offset}")


def draw_value(rng: random.Random, forbidden: set[str] | frozenset[str]) -> str:
    """A 7-digit value (no leading zero) that is not in `forbidden`."""
    for _ in range(1000):
        value = str(rng.randint(10 ** (VALUE_DIGITS - 1), 10**VALUE_DIGITS - 1))
        if value not in forbidden:
            return value
    raise ProbeError("cannot draw a needle value that does not already occur in the haystack")
