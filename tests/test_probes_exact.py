"""Exact lengths, depth placement and prefix sharing, checked by re-encoding whole prompts with SmolLM2's tokenizer."""

from __future__ import annotations

import copy
import random
import re

import pytest

from kanana_longctx.probes import ProbeRequest, build_probe_set, load_haystack
from kanana_longctx.probes.sentences import sentence_ends

# A Llama-3 style pre-tokenizer: punctuation swallows following newlines, digits go in threes. Kanana's tokenizer
# splits text this way; putting it on SmolLM2's vocabulary exercises the same junctions with a second rule set.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def llama3_style_tokenizer(smollm2_tokenizer):
    from tokenizers import Regex, pre_tokenizers

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    pieces = [piece for piece, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("a.\n\nB 1234567")]
    assert pieces == ["a", ".ĊĊ", "B", "Ġ", "123", "456", "7"]
    return tok


def assert_exact(tokenizer, probe):
    ids = tokenizer(probe.prompt, add_special_tokens=False)["input_ids"]
    assert ids == list(probe.input_ids), probe.probe_id
    assert probe.n_tokens == probe.length == len(ids)
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert decoded == probe.prompt
    needle_text = tokenizer.decode(ids[probe.needle_token_start : probe.needle_token_end])
    assert needle_text.strip() == probe.needle
    assert probe.prompt.count(probe.expected) == 1


def _build(tokenizer, **kwargs):
    return build_probe_set(ProbeRequest(**kwargs), tokenizer)


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("form", ["qaform", "retform"])
def test_exact_length_for_both_forms_and_languages(smollm2_tokenizer, form, lang):
    rng = random.Random(f"{form}-{lang}")
    lengths = tuple(sorted(rng.sample(range(700, 6000), 12)))
    depths = (0, 3, 29, 50, 71, 97, 100)
    probe_set = _build(smollm2_tokenizer, lengths=lengths, depths=depths, form=form, lang=lang)
    assert len(probe_set.probes) == len(lengths) * len(depths)
    for probe in probe_set.probes:
        assert_exact(smollm2_tokenizer, probe)
        assert (probe.form, probe.lang, probe.haystack) == (form, lang, f"builtin:{lang}")


def test_korean_lengths_that_cut_through_characters(smollm2_tokenizer):
    """Every length in a run of consecutive values: most of them would end inside a Hangul syllable."""
    lengths = tuple(range(1200, 1260))
    probe_set = _build(smollm2_tokenizer, lengths=lengths, depths=(0, 50, 100), lang="ko", haystack="noise")
    for probe in probe_set.probes:
        assert_exact(smollm2_tokenizer, probe)
        assert 0 <= probe.pad_tokens <= 3 and (probe.pad_tokens > 0) == bool(probe.pad)
        assert probe.pad.strip(" …[]()") == ""  # filler is an ellipsis, never haystack-like text
        if probe.pad:
            assert probe.prompt.count(probe.pad + "\n\n글에서 언급된") == 1  # right before the question
    assert sum(p.pad_tokens > 0 for p in probe_set.probes) > len(probe_set.probes) // 4  # the padded path ran


def test_llama3_style_pretokenizer_is_exact_too(llama3_style_tokenizer):
    for lang in ("en", "ko"):
        probe_set = _build(
            llama3_style_tokenizer,
            lengths=(900, 1333, 2048, 3001),
            depths=(0, 21, 50, 79, 100),
            lang=lang,
            form="retform",
        )
        for probe in probe_set.probes:
            assert_exact(llama3_style_tokenizer, probe)


def test_pre_needle_tokens_are_a_prefix_of_one_stream(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(800, 1600, 3200), depths=(0, 25, 50, 75, 100))
    shared = probe_set.shared_prefix_ids
    starts = {p.haystack_start for p in probe_set.probes}
    assert len(starts) == 1
    for probe in probe_set.probes:
        start = probe.needle_token_start
        assert probe.input_ids[:start] == shared[:start]
        # the post-needle haystack continues the same stream right where the needle was inserted
        after = probe.input_ids[probe.needle_token_end : probe.haystack_end]
        assert after == shared[start : start + len(after)]
    assert len(shared) >= max(p.haystack_end - (p.needle_token_end - p.needle_token_start) for p in probe_set.probes)


def test_depth_zero_and_hundred(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(1500, 2500), depths=(0, 100), form="retform")
    for probe in probe_set.probes:
        prefix = probe.prompt.split(probe.needle)[0]
        if probe.depth == 0:
            assert probe.needle_token_start == probe.haystack_start and probe.actual_depth == 0
            assert prefix.endswith("afterwards.\n\n")  # right after the instruction, first in the haystack
        else:
            assert probe.actual_depth == 100
            # no sentence ends between the needle and the question: it follows the last complete sentence
            after = probe.prompt.split(probe.needle)[1].split("\n\nWhat is the special magic number")[0]
            assert after and all(end == len(after) for end in sentence_ends(after))


def test_needle_starts_at_a_sentence_end_near_the_requested_depth(smollm2_tokenizer):
    depths = tuple(range(0, 101, 5))
    for haystack, tolerance in (("noise", 1.0), ("builtin", 5.0)):
        probe_set = _build(smollm2_tokenizer, lengths=(4000, 6000), depths=depths, haystack=haystack)
        for probe in probe_set.probes:
            before = probe.prompt.split(" " + probe.needle)[0] if probe.depth else ""
            if probe.actual_depth > 0:
                assert re.search(r"[.!?][\"'”’]*$", before), before[-40:]
            assert abs(probe.actual_depth - probe.depth) <= tolerance, probe.probe_id
        actual = [p.actual_depth for p in probe_set.probes if p.length == 6000]
        assert actual == sorted(actual)


def test_short_source_is_repeated_and_counted(smollm2_tokenizer, tmp_path):
    (tmp_path / "short.txt").write_text("A tiny haystack. It has two sentences.", encoding="utf-8")
    probe_set = _build(smollm2_tokenizer, lengths=(400, 1200), depths=(50,), haystack=str(tmp_path / "short.txt"))
    hay = load_haystack(str(tmp_path / "short.txt"))
    short, long = probe_set.probes
    assert 1 < short.haystack_repeats < long.haystack_repeats == probe_set.haystack_repeats
    assert long.prompt.count("A tiny haystack.") in (long.haystack_repeats, long.haystack_repeats - 1)
    assert short.haystack_hash == hay.sha256 == probe_set.haystack_hash
    for probe in probe_set.probes:
        assert_exact(smollm2_tokenizer, probe)


def test_readme_128k_builds_exact_with_shared_prefix(smollm2_tokenizer):
    from kanana_longctx.probes import resolve_grid

    probe_set = build_probe_set(ProbeRequest.from_grid(resolve_grid("readme-128k")), smollm2_tokenizer)
    assert len(probe_set.probes) == 225 and probe_set.preset == "readme-128k"
    assert all(p.n_tokens == p.length == len(p.input_ids) for p in probe_set.probes)
    longest = [p for p in probe_set.probes if p.length == 128000]
    for probe in (longest[0], longest[7], longest[-1]):  # whole re-encodes of the longest prompts
        assert_exact(smollm2_tokenizer, probe)
    shared = probe_set.shared_prefix_ids
    assert all(p.input_ids[: p.needle_token_start] == shared[: p.needle_token_start] for p in probe_set.probes)
