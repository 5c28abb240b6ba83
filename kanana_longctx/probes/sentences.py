"""Sentence ends found in the text itself (never by guessing token ids), for English and Korean.

Usage: `sentence_ends("첫 문장이다. 둘째 문장이다.")  # -> [7, 15]`

A sentence end is a run of . ! ? 。 ！ ？ or …, optionally closed by quotes or brackets, followed by whitespace or
the end of the text (the full-width 。！？ need no space after them). Korean sentences end the same way
("...했다." / "...까?"), so one rule serves both languages.
Two English traps are skipped: abbreviations and initials ("Mr. Darcy", "J. Smith") and a full stop followed by a
lower-case word ("e.g. the"), where a needle would split a sentence in two.
"""

from __future__ import annotations

import re

_END = re.compile(r"(?:[.!?。！？]+|…+)[\"'”’»」』)\]]*(?=\s|$)|[。！？]+[”’」』)]*")
_WORD_BEFORE = re.compile(r"(\S+)$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr st jr sr prof rev gen col capt lt sgt mt ft vs etc no nos vol fig co inc ltd esq "
    "e.g i.e cf al approx jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


def _is_abbreviation(text: str, start: int) -> bool:
    match = _WORD_BEFORE.search(text, max(0, start - 24), start)
    if not match:
        return False
    word = match.group(1).lstrip("\"'“‘(«[")
    if len(word) == 1 and word.isalpha() and word.isupper() and word.isascii():
        return True  # an initial: "J. Smith"
    return word.lower() in _ABBREVIATIONS


def _next_visible(text: str, pos: int) -> str:
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return text[pos] if pos < n else ""


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence end (after closing quotes), ascending."""
    ends = []
    for match in _END.finditer(text):
        mark = match.group(0)
        if mark.startswith(".") and mark.rstrip("\"'”’»」』)]") == ".":
            if _is_abbreviation(text, match.start()):
                continue
            following = _next_visible(text, match.end())
            if following.isascii() and following.islower():
                continue
        ends.append(match.end())
    return ends
