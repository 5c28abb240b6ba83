"""The token stream every probe of a set is cut from: template prefix + haystack, tokenized once.

Usage: `stream = build_stream(tb, template.prefix, haystack, need_tokens=130_000)`

The prefix and the haystack are encoded together, so the tokens at their junction are the ones the full prompt
really has, and every probe's pre-needle part is literally `stream.ids[:cut]`. A long source is cut (at a space,
well past what the longest probe needs) before encoding rather than encoded whole; a short one is repeated with a
paragraph break, and the copies each probe touches are counted. Sentence ends come from the text and are mapped to
token positions by byte offsets; only those that fall on a token boundary are kept.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from itertools import accumulate

from kanana_longctx.errors import HaystackError, ProbeError
from kanana_longctx.probes.haystack import Haystack
from kanana_longctx.probes.sentences import sentence_ends
from kanana_longctx.probes.tokens import TokenBytes

_GUARD = 32  # tokens at the end of a cut text that may tokenize differently from the uncut text: never used
_SAMPLE_CHARS = 20_000


@dataclass(frozen=True)
class Stream:
    ids: list[int]  # prefix + haystack tokens (only the first `usable` are used)
    data: bytes  # their bytes
    cum: list[int]  # cum[i] = byte offset where token i starts; len(ids) + 1 entries
    start: int  # token index where the haystack starts (the prefix's length)
    usable: int  # tokens that may be used (the guard at the end excluded)
    boundaries: list[int]  # absolute token positions of sentence ends (start included), ascending
    copy_bytes: int  # bytes of one copy of the source plus its separator
    copies: int  # copies of the source in the encoded text
    digit_runs: frozenset[str]  # every 7-digit substring of the text (a needle value must avoid them)

    def char_complete(self, i: int) -> bool:
        """Token position i does not fall inside a multi-byte character."""
        return i >= len(self.ids) or (self.data[self.cum[i]] & 0xC0) != 0x80

    def copies_used(self, end: int) -> int:
        """How many copies of the source the haystack tokens [start, end) touch."""
        used = self.cum[end] - self.cum[self.start]
        return max(1, math.ceil(used / self.copy_bytes)) if used > 0 else 1


def _cut_at_space(text: str, chars: int) -> str:
    if chars >= len(text):
        return text
    space = re.compile(r"\s").search(text, chars)
    return text[: space.start()] if space else text


def check_special_tokens(tb: TokenBytes, haystack: Haystack) -> None:
    """A haystack that spells a special token would inject chat structure into the prompt."""
    for token in tb.special_texts:
        if len(token) > 1 and token in haystack.text:
            raise HaystackError(f"haystack {haystack.name} contains the tokenizer's special token {token!r}")


def build_stream(tb: TokenBytes, prefix: str, haystack: Haystack, need_tokens: int, *, digits: int = 7) -> Stream:
    """Encode prefix + enough haystack text for `need_tokens` haystack tokens (repeating the source if needed)."""
    check_special_tokens(tb, haystack)
    source = haystack.text
    sample = source[:_SAMPLE_CHARS]
    chars_per_token = len(sample) / max(1, len(tb.encode(sample)))
    chars = int(need_tokens * chars_per_token * 1.2) + 2000
    copy_chars = len(source) + len(haystack.separator)
    prefix_tokens = len(tb.encode(prefix))
    for _ in range(8):  # the estimate is generous; a second round is rare
        copies = max(1, math.ceil(chars / copy_chars))
        text = _cut_at_space(haystack.repeated(copies), chars)
        ids = tb.encode(prefix + text)
        if len(ids) - _GUARD - prefix_tokens >= need_tokens:
            break
        chars = int(chars * 1.5) + 1000
    data = tb.bytes_of(ids)
    if data != (prefix + text).encode("utf-8"):
        raise ProbeError("the tokenizer does not reproduce the haystack's bytes (not a byte-level BPE tokenizer?)")
    cum = list(accumulate((len(tb.table[i]) for i in ids), initial=0))
    hay_byte = len(prefix.encode("utf-8"))
    start = bisect.bisect_left(cum, hay_byte)
    if start >= len(cum) or cum[start] != hay_byte:
        raise ProbeError("the template's last token runs into the haystack's first one; cannot cut probes exactly")
    usable = len(ids) - _GUARD
    if usable - start < need_tokens:
        raise ProbeError(f"could not gather {need_tokens:,} haystack tokens from {haystack.name}")

    boundaries = [start]
    byte_pos, char_pos = hay_byte, 0
    for end in sentence_ends(text):
        byte_pos += len(text[char_pos:end].encode("utf-8"))
        char_pos = end
        k = bisect.bisect_left(cum, byte_pos)
        if k >= usable:
            break
        if cum[k] == byte_pos and k > boundaries[-1]:
            boundaries.append(k)
    if len(boundaries) == 1:
        raise HaystackError(f"haystack {haystack.name} has no sentence ends (. ! ? 。), so no depth can be placed")

    runs = set()
    for match in re.finditer(rf"[0-9]{{{digits},}}", prefix + text):
        run = match.group(0)
        runs.update(run[i : i + digits] for i in range(len(run) - digits + 1))
    return Stream(
        ids=ids,
        data=data,
        cum=cum,
        start=start,
        usable=usable,
        boundaries=boundaries,
        copy_bytes=len(haystack.text.encode("utf-8")) + len(haystack.separator.encode("utf-8")),
        copies=copies,
        digit_runs=frozenset(runs),
    )
