"""The order probes reach a server in, so that its prefix cache serves what they share (pure).

Usage: `ordered = prefix_order(probes); warm = warmup_ids(ordered, probe_set.shared_prefix_ids)`

Every probe of a probe set is `stream[:needle_token_start] + needle + ...`, so probes share the stream up to
their needle, and probes with the needle at the same place share the needle and what follows too. Sent deepest
needle first, each probe's pre-needle part is a prefix of the one before it: a cache that keeps only the last
prompt per slot (llama-server, llama-cpp-python) then reuses it all, and a prefix tree (vLLM, SGLang) finds it
as well. Requests that run at the same moment cannot share a prefix that none of them has finished computing,
so with more than one in flight the bare shared prefix goes first, alone (`warmup_ids`).
"""

from __future__ import annotations

from typing import Sequence

MIN_WARMUP_TOKENS = 256  # a shorter shared prefix costs each probe less than the extra request saves


def prefix_order(probes: Sequence) -> list:
    """Probes grouped by where their needle sits, deepest first; within a group the longest first (so the next
    probe's prompt shares the most with the one just computed); the grid order breaks the remaining ties."""
    indexed = list(enumerate(probes))
    indexed.sort(key=lambda item: (-item[1].needle_token_start, -item[1].n_tokens, item[0]))
    return [probe for _, probe in indexed]


def shared_prefix_groups(probes: Sequence) -> list[list]:
    """Consecutive probes of `prefix_order` with the needle at the same token position."""
    groups: list[list] = []
    for probe in prefix_order(probes):
        if groups and groups[-1][0].needle_token_start == probe.needle_token_start:
            groups[-1].append(probe)
        else:
            groups.append([probe])
    return groups


def warmup_ids(probes: Sequence, shared_prefix_ids: Sequence[int]) -> tuple[int, ...]:
    """The part of the shared stream that every probe's pre-needle part is a prefix of (up to the deepest
    needle), or () when it is too short to be worth a request of its own or the probes do not start with it."""
    if not probes or not shared_prefix_ids:
        return ()
    deepest = max(probes, key=lambda p: p.needle_token_start)
    end = min(deepest.needle_token_start, len(shared_prefix_ids))
    if end < MIN_WARMUP_TOKENS or tuple(deepest.input_ids[:end]) != tuple(shared_prefix_ids[:end]):
        return ()
    return tuple(shared_prefix_ids[:end])
