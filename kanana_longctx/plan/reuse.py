"""The plan of a fast run: which KV each probe takes from what the buffer rows already hold, and what is computed
once for several probes. Pure bookkeeping on token ids (numpy, no torch), so it is tested on its own and the work
it saves is known before anything runs.

Usage: batches = plan_reuse([probe.input_ids, ...], shared_prefix_ids, rows=6)

Two kinds of sharing, both exact (a position's KV depends only on the tokens up to it):
- The haystack stream. Every probe is `stream[:cut] + needle + stream[cut:end] + tail`, so its tokens before the
  needle are a prefix of one stream. The stream is computed once, up to the deepest needle, and probes run in order
  of decreasing needle position: each finds its own (shorter) prefix intact in some row.
- Below the needle. Probes that put the same needle at the same place (every length at depth 0, since the needle's
  value follows its position; lengths whose depths meet at one sentence) share the haystack after the needle too,
  up to the shorter one's end. The longest common part of such a group is computed once ("extend"), and every
  member computes only what follows it: at depth 0 that is the question at the end of each length.

Every start is the longest common prefix of the probe's ids and what a row really holds, so a plan never reuses
KV of other tokens, whatever the probes are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

SHARED = -1  # `Extend.source` of the haystack stream
REUSE_MIN_TOKENS = 256  # below this, recomputing a prefix is cheaper than attending to it split from the suffix
_GROUP_KEY_TOKENS = 64  # tokens after the shared stream that decide which probes are worth comparing in full


@dataclass(frozen=True)
class Copy:
    """Copy the KV of positions [begin, end) from row `src` to row `dst` (a memory copy, not a recomputation)."""

    src: int
    dst: int
    begin: int
    end: int


@dataclass(frozen=True)
class Extend:
    """Compute positions [begin, end) of `source`'s tokens (a probe's index, or SHARED) into `row`, no logits."""

    row: int
    source: int
    begin: int
    end: int


@dataclass(frozen=True)
class Suffix:
    """Prefill probe `probe` from position `start` in `row` (positions before it are in place), with logits."""

    probe: int
    row: int
    start: int


@dataclass(frozen=True)
class Batch:
    """`steps` (copies and extends, in order) and then the suffixes, prefilled and decoded together."""

    steps: tuple[Copy | Extend, ...]
    suffixes: tuple[Suffix, ...]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def plan_reuse(
    probes: Sequence, shared: Sequence[int], rows: int, min_reuse: int = REUSE_MIN_TOKENS
) -> list[Batch]:
    """Batches of at most `rows` probes (given as token id sequences), each probe in its own row; every probe of
    `probes` appears in exactly one Suffix. Reuse below `min_reuse` tokens is not taken."""
    rows = max(1, rows)
    ids = [np.asarray(p, dtype=np.int64) for p in probes]
    stream = np.asarray(shared, dtype=np.int64)
    base = [common_prefix(x, stream) for x in ids]
    base = [b if b >= min_reuse else 0 for b in base]
    keys = [x[b : b + _GROUP_KEY_TOKENS].tobytes() for x, b in zip(ids, base)]
    # Deepest stream prefix first (a probe overwrites only what follows its own start); probes that leave the
    # stream the same way next to each other, longest first, so a group's common part is in a row when it is used.
    order = sorted(range(len(ids)), key=lambda i: (-base[i], keys[i], -len(ids[i]), i))

    held: list[np.ndarray] = [stream[:0]] * rows  # row r holds the KV of these tokens at positions [0, len)
    steps: list[Copy | Extend] = []
    top = max(base, default=0)
    if top:
        steps.append(Extend(0, SHARED, 0, top))
        held[0] = stream[:top]
    batches: list[Batch] = []
    for first in range(0, len(order), rows):
        members = order[first : first + rows]
        reach = _batch_reach(ids, members, [(base[i], keys[i]) for i in members])
        suffixes = []
        for row, i in enumerate(members):
            x = ids[i]
            limit = len(x) - 1  # at least the last token is computed: its logits start the answer
            have = [min(common_prefix(x, h), limit) for h in held]
            source = row if have[row] == max(have) else int(np.argmax(have))
            start = have[source] if have[source] >= min_reuse else 0
            if start > have[row]:
                steps.append(Copy(source, row, have[row], start))
            end = min(reach[i], limit)
            if end - start >= min_reuse:
                steps.append(Extend(row, i, start, end))
                start = end
            held[row] = x[:start]  # what the copies and extends leave; the suffix overwrites the rest
            suffixes.append(Suffix(i, row, start))
        batches.append(Batch(tuple(steps), tuple(suffixes)))
        steps = []
        for s in suffixes:
            held[s.row] = ids[s.probe]  # decoding writes past the prompt only
    return batches


def _batch_reach(ids, members, groups) -> dict[int, int]:
    """For each probe of a batch, how far it shares its tokens with a later probe of the same batch and group (same
    stream prefix, same first tokens after it): what is worth computing once for both before the batch's prefill.
    Probes in later batches need no such step: they find the whole probe in its row."""
    reach = dict.fromkeys(members, 0)
    for k, i in enumerate(members):
        for j, group in zip(members[k + 1 :], groups[k + 1 :]):
            if group == groups[k]:
                reach[i] = max(reach[i], common_prefix(ids[i], ids[j]))
    return reach


def planned_tokens(batches: Sequence[Batch], lengths: Sequence[int]) -> int:
    """Tokens a plan computes: every span of `planned_work`."""
    return sum(end - begin for begin, end, _ in planned_work(batches, lengths))


def planned_work(batches: Sequence[Batch], lengths: Sequence[int]) -> list[tuple[int, int, bool]]:
    """(begin, end, logits) of every computed span of a plan, in order: what the FLOP accounting needs."""
    spans = []
    for batch in batches:
        for step in batch.steps:
            if isinstance(step, Extend):
                spans.append((step.begin, step.end, False))
        for s in batch.suffixes:
            spans.append((s.start, lengths[s.probe], True))
    return spans
