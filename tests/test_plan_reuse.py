"""The reuse plan of a fast run: every probe is computed exactly once from KV that really belongs to its tokens,
and the sharing it promises (the haystack stream, and below the needle for probes that put it at one place)
is taken. The KV rows are simulated by fingerprints: position p of a row holds the fingerprint of the token
sequence whose KV was computed there, so a reuse of the wrong tokens is caught whatever the ids are."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kanana_longctx.probes import ProbeRequest, build_probe_set
from kanana_longctx.plan.reuse import SHARED, Copy, Extend, common_prefix, plan_reuse, planned_work

_WEIGHTS = np.random.default_rng(7).integers(1, 2**62, size=200_000, dtype=np.int64)


def _fingerprints(ids: np.ndarray) -> np.ndarray:
    """fp[p] identifies ids[: p + 1] (int64 arithmetic wraps, which is fine for a fingerprint)."""
    with np.errstate(over="ignore"):
        return np.cumsum((ids + 1) * _WEIGHTS[: len(ids)])


def _execute(batches, probes, shared, rows, capacity, max_new=4):
    """Run a plan against simulated KV rows; return (tokens computed, each probe's start). Fails on any reuse of
    KV that is not the probe's own tokens, on a probe computed twice or never, and on rows out of range."""
    probes = [np.asarray(p, dtype=np.int64) for p in probes]
    shared = np.asarray(shared, dtype=np.int64)
    kv = np.zeros((rows, capacity), dtype=np.int64)  # 0: nothing computed there
    rng = np.random.default_rng(0)
    computed, starts = 0, {}
    for batch in batches:
        assert 1 <= len(batch.suffixes) <= rows
        assert len({s.row for s in batch.suffixes}) == len(batch.suffixes)
        for step in batch.steps:
            if isinstance(step, Copy):
                assert step.src != step.dst and 0 <= step.begin < step.end
                kv[step.dst, step.begin : step.end] = kv[step.src, step.begin : step.end]
                continue
            assert isinstance(step, Extend) and step.begin < step.end
            tokens = shared if step.source == SHARED else probes[step.source]
            assert step.end <= len(tokens)
            assert (kv[step.row, : step.begin] == _fingerprints(tokens[: step.begin])).all(), "extend on foreign KV"
            kv[step.row, step.begin : step.end] = _fingerprints(tokens[: step.end])[step.begin :]
            computed += step.end - step.begin
        for s in batch.suffixes:  # one prefill call: each suffix reads only its own row
            ids = probes[s.probe]
            assert s.probe not in starts, "probe computed twice"
            assert 0 <= s.start < len(ids)
            assert (kv[s.row, : s.start] == _fingerprints(ids[: s.start])).all(), f"probe {s.probe}: foreign KV"
            starts[s.probe] = s.start
            computed += len(ids) - s.start
        for s in batch.suffixes:
            n = len(probes[s.probe])
            kv[s.row, : n] = _fingerprints(probes[s.probe])
            kv[s.row, n : n + max_new] = rng.integers(1, 2**62, size=max_new)  # decoding writes past the prompt
    assert sorted(starts) == list(range(len(probes))), "every probe exactly once"
    return computed, starts


@pytest.fixture(scope="module")
def grid(smollm2_tokenizer):
    request = ProbeRequest(lengths=tuple(range(1000, 6001, 1000)), depths=(0, 14, 29, 50, 71, 100), form="retform")
    return build_probe_set(request, smollm2_tokenizer)


@pytest.mark.parametrize("rows", [1, 3, 6])
def test_real_grid_is_computed_once_from_its_own_kv_and_shares_below_the_needle(grid, rows):
    probes = [p.input_ids for p in grid.probes]
    batches = plan_reuse(probes, grid.shared_prefix_ids, rows)
    computed, starts = _execute(batches, probes, grid.shared_prefix_ids, rows, 7000)
    spans = planned_work(batches, [len(p) for p in probes])
    assert computed == sum(end - begin for begin, end, _ in spans)
    # haystack stream: every needle deep enough starts at the needle, the stream up to the deepest computed once
    deepest = max(p.needle_token_start for p in grid.probes)
    for i, p in enumerate(grid.probes):
        if p.needle_token_start >= 256:
            assert starts[i] >= p.needle_token_start
    # below the needle: the depth-0 probes hold one needle at one place, and all but the longest compute only
    # their question (and whatever of the haystack does not reach the next longer one's)
    zero = sorted((i for i, p in enumerate(grid.probes) if p.depth == 0), key=lambda i: grid.probes[i].n_tokens)
    assert len({grid.probes[i].input_ids[: grid.probes[i].needle_token_end] for i in zero}) == 1
    for i in zero[:-1]:
        assert starts[i] >= grid.probes[i].haystack_end
    # against the stream-only plan (each probe from its needle, the stream once): at least the depth-0 saving
    old = deepest + sum(len(x) - (p.needle_token_start if p.needle_token_start >= 256 else 0)
                        for x, p in zip(probes, grid.probes))
    below = sum(grid.probes[i].haystack_end for i in zero[:-1])
    assert computed <= old - below + 8  # 8: the stream may match a needle's first token or two
    if rows > 1:
        assert any(isinstance(s, Extend) and s.source != SHARED for b in batches for s in b.steps)


def test_probes_sharing_nothing_are_computed_whole():
    rng = random.Random(1)
    probes = [[rng.randrange(1, 50_000) for _ in range(rng.randrange(300, 900))] for _ in range(7)]
    batches = plan_reuse(probes, [], rows=3)
    computed, starts = _execute(batches, probes, [], 3, 1000)
    assert set(starts.values()) == {0} and computed == sum(map(len, probes))
    assert not any(b.steps for b in batches)


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_tries_of_probes_reuse_only_what_is_really_shared(rows, seed):
    """Probes grown from a random trie: some are prefixes of others, some identical, some share a long branch
    below a point that is not on the shared stream, some leave the stream before the minimum reuse."""
    rng = random.Random(seed)
    stream = [rng.randrange(1, 50_000) for _ in range(3000)]
    probes = []
    for _ in range(14):
        kind = rng.random()
        if kind < 0.5:  # stream prefix + a branch, sometimes shared with an earlier probe's branch
            cut = rng.choice([100, 400, 900, 900, 1500, 2500])
            if probes and rng.random() < 0.5:
                other = rng.choice(probes)
                cut = min(len(other), rng.randrange(cut, cut + 900))
                head = list(other[:cut])
            else:
                head = stream[:cut]
            probes.append(head + [rng.randrange(1, 50_000) for _ in range(rng.randrange(1, 700))])
        elif kind < 0.7 and probes:
            probes.append(list(rng.choice(probes)))  # an identical probe
        elif kind < 0.85 and probes:
            other = rng.choice(probes)
            probes.append(list(other[: rng.randrange(1, len(other))]))  # a prefix of another probe
        else:
            probes.append([rng.randrange(1, 50_000) for _ in range(rng.randrange(1, 500))])
    batches = plan_reuse(probes, stream, rows)
    computed, starts = _execute(batches, probes, stream, rows, 5000)
    assert computed < sum(map(len, probes))
    for i, s in starts.items():
        assert s == 0 or s >= 256  # no reuse below the minimum
        best = common_prefix(np.asarray(probes[i]), np.asarray(stream))
        if best >= 256:
            assert s >= min(best, len(probes[i]) - 1)  # the stream prefix is always taken
