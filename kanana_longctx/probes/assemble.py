"""One exact probe from the token stream: needles inserted at sentence ends, the haystack cut so that the whole
prompt has exactly `length` tokens, then the question.

Usage: `built = Assembler(tb, stream, sample_suffix).assemble(length, [(cut, needle_text), ...], suffix)`

A probe is `stream[:c1] + needle1 + stream[c1:c2] + needle2 + ... + stream[ck:end] + tail`. Each needle is
tokenized in its real context (between the probe's tokens before it and the stream's after it), `end` is chosen so
that the total is exact, and `tail` is the filler (if any) and the suffix as they tokenize after the haystack's
last token. Every junction is then re-encoded locally (`TokenBytes.splice_ok`), so the prompt re-encodes to its ids.
When `end` would fall inside a multi-byte character or on an unstable junction, the haystack stops a token or three
earlier and a short filler ("…") makes up the difference.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from kanana_longctx.probes.stream import Stream
from kanana_longctx.probes.template import SEPARATOR
from kanana_longctx.probes.tokens import TokenBytes

MAX_PAD = 4
MAX_CANDIDATES = 64  # sentence ends tried per needle, nearest to the requested depth first
# Fillers, preferred first: an ellipsis reads as "the text was cut here", which it was.
_BRIDGES = (
    "…", "……", "………", "…………", "……………", " …", " ……", " ………", "[…]", " […]", "(…)", " (…)",
)
_BRIDGE_UNITS = ("…", ".", "—", "-", ",", "*")  # fallbacks for tokenizers that merge the ones above


@dataclass(frozen=True)
class Built:
    ids: list[int]
    prompt: str
    spans: tuple[tuple[int, int], ...]  # each needle's token span in `ids`, in prompt order
    end: int  # stream position where the haystack stops
    pad_tokens: int
    pad: str

    @property
    def needle_tokens(self) -> int:
        return sum(b - a for a, b in self.spans)


class Assembler:
    """The stream and the fillers; `assemble` builds one probe."""

    def __init__(self, tb: TokenBytes, stream: Stream, sample_suffix: str):
        self.tb, self.stream = tb, stream
        self.bridges = self._bridges(sample_suffix)

    def _bridges(self, suffix: str) -> list[list[str]]:
        """Filler texts grouped by how many tokens they add before the suffix (index = tokens). Grouped with one
        sample suffix: the grouping only orders the search, `assemble` checks each filler with the real one."""
        suffix_len = len(self.tb.encode(suffix))
        groups: list[list[str]] = [[""]] + [[] for _ in range(MAX_PAD)]
        generated = [
            lead + " ".join([unit] * count)
            for unit in _BRIDGE_UNITS
            for count in range(1, MAX_PAD + 1)
            for lead in ("", " ")
        ]
        for text in (*_BRIDGES, *generated):
            extra = len(self.tb.encode(text + suffix)) - suffix_len
            if 1 <= extra <= MAX_PAD and text not in groups[extra]:
                groups[extra].append(text)
        return groups

    def assemble(self, length: int, needles, suffix: str, suffix_len: int) -> Built | None:
        """The probe with `needles` ((stream position, text) pairs at distinct sentence ends, ascending) and
        `suffix` after the haystack, or None when no exact, stable assembly exists."""
        tb, stream = self.tb, self.stream
        data, cum = stream.data, stream.cum
        ids: list[int] = []
        pieces: list[bytes] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for i, (cut, core) in enumerate(needles):
            ids.extend(stream.ids[pos:cut])
            pieces.append(data[cum[pos] : cum[cut]])
            # At the haystack's very start a needle is a paragraph of its own; elsewhere it follows a sentence end.
            text = core + SEPARATOR if cut == stream.start else " " + core
            left = ids[tb.left_edge(ids, len(ids)) :]
            limit = needles[i + 1][0] if i + 1 < len(needles) else stream.usable
            right = stream.ids[cut : tb.right_edge(stream.ids, cut, limit)]
            needle = tb.encode_between(left, text, right)
            if needle is None:
                return None
            spans.append((len(ids), len(ids) + len(needle)))
            ids.extend(needle)
            pieces.append(text.encode("utf-8"))
            pos = cut
        n = len(ids) - pos  # needle tokens in all
        for pad_tokens, bridges in enumerate(self.bridges):
            for bridge in bridges:
                end = length - n - suffix_len - pad_tokens  # stream position where the haystack stops
                for _ in range(2):  # once more when bridge + suffix tokenize to another length in context
                    if not (pos <= end <= stream.usable and stream.char_complete(end)):
                        break
                    tail = self._tail(ids, pos, end, bridge + suffix)
                    if tail is None:
                        break
                    if end + n + len(tail) == length:
                        full = ids + stream.ids[pos:end] + tail
                        junctions = [j for span in spans for j in span] + [end + n]
                        if not tb.splice_ok(full, junctions):
                            break
                        raw = b"".join(pieces) + data[cum[pos] : cum[end]] + tb.bytes_of(tail)
                        padded = max(0, len(tail) - suffix_len) if bridge else 0
                        return Built(full, raw.decode("utf-8"), tuple(spans), end, padded, bridge)
                    end = length - n - len(tail)
        return None

    def _tail(self, ids: list[int], pos: int, end: int, text: str) -> list[int] | None:
        """The ids of `text` (filler + suffix) as they tokenize after the probe's haystack, which runs from the last
        needle (`ids` so far, stream position `pos`) to stream position `end`."""
        tb, stream = self.tb, self.stream.ids
        keep = tb.window + tb.scan + 2  # a shorter head only happens at the true start of the prompt (clean)
        if end - pos >= keep:
            head = stream[end - keep : end]
        else:
            head = (ids[-keep:] + stream[pos:end])[-keep:]
        return tb.encode_between(head[tb.left_edge(head, len(head)) :], text, [])


def nearest(bounds: list[int], target: int, limit: int = MAX_CANDIDATES):
    """Elements of the sorted `bounds` by distance to `target` (the earlier one first on a tie)."""
    hi = bisect.bisect_left(bounds, target)
    lo = hi - 1
    for _ in range(limit):
        if lo < 0 and hi >= len(bounds):
            return
        if hi >= len(bounds) or (lo >= 0 and target - bounds[lo] <= bounds[hi] - target):
            yield bounds[lo]
            lo -= 1
        else:
            yield bounds[hi]
            hi += 1
