"""Needle values, seeds, custom needles, forms and templates, and the errors of the probe builder."""

from __future__ import annotations

import copy
import re

import pytest

from kanana_longctx.errors import HaystackError, ProbeError
from kanana_longctx.probes import ProbeRequest, build_probe_set
from kanana_longctx.probes.languages import KO
from kanana_longctx.probes.needle import draw_value, needle_rng
from kanana_longctx.probes.template import resolve_form
from kanana_longctx.probes.tokens import TokenBytes


def _build(tokenizer, **kwargs):
    kwargs.setdefault("lengths", (1000, 2000))
    kwargs.setdefault("depths", (0, 50, 100))
    return build_probe_set(ProbeRequest(**kwargs), tokenizer)


def _exact(tokenizer, probe) -> bool:
    return tokenizer(probe.prompt, add_special_tokens=False)["input_ids"] == list(probe.input_ids)


def test_values_are_seven_digits_one_per_needle_position_and_reproducible(smollm2_tokenizer):
    first = _build(smollm2_tokenizer, seed=3)
    again = _build(smollm2_tokenizer, seed=3)
    other = _build(smollm2_tokenizer, seed=4)
    values = [p.expected for p in first.probes]
    assert all(len(v) == 7 and v.isdigit() and v[0] != "0" for v in values)
    positions = {p.needle_token_start for p in first.probes}
    assert len(set(values)) == len(positions) == 5  # depth 0 of both lengths: one position, one value
    assert [p.prompt for p in first.probes] == [p.prompt for p in again.probes]
    assert [p.expected for p in other.probes] != values
    for probe in first.probes:
        assert probe.prompt.count(probe.expected) == 1 and probe.seed == 3
        offset = probe.needle_token_start - probe.haystack_start
        assert probe.expected == draw_value(needle_rng(3, offset), set())


def test_probes_with_the_needle_at_one_place_share_every_token_up_to_the_shorter_end(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(1000, 2500, 4000), depths=(0,))
    short, middle, long = probe_set.probes
    for a, b in ((short, middle), (middle, long)):
        body = a.haystack_end  # where a's haystack stops and its question begins
        assert a.needle_token_start == b.needle_token_start and a.expected == b.expected
        assert a.input_ids[:body] == b.input_ids[:body]


def test_a_probe_does_not_depend_on_the_rest_of_the_grid(smollm2_tokenizer):
    small = _build(smollm2_tokenizer, lengths=(1500,), depths=(50,))
    large = _build(smollm2_tokenizer, lengths=(800, 1500, 9000), depths=(0, 50, 93))
    same = [p for p in large.probes if p.probe_id == "L1500-D50"][0]
    assert same.prompt == small.probes[0].prompt and same.input_ids == small.probes[0].input_ids


def test_value_already_in_the_haystack_is_redrawn(smollm2_tokenizer, tmp_path):
    text = " ".join(f"Sentence {i} mentions nothing special." for i in range(40))

    def build_with(code: str):
        (tmp_path / "h.txt").write_text(f"The code {code} is printed here. " + text, encoding="utf-8")
        return _build(smollm2_tokenizer, lengths=(1000,), depths=(50,), haystack=str(tmp_path / "h.txt")).probes[0]

    placeholder = build_with("1234567")  # where the needle goes (digits are single tokens: any code puts it there)
    offset = placeholder.needle_token_start - placeholder.haystack_start
    taken = draw_value(needle_rng(0, offset), set())  # the value that position draws first
    assert placeholder.expected == taken
    probe = build_with(taken)
    assert probe.needle_token_start == placeholder.needle_token_start
    assert probe.expected != taken and taken in probe.prompt
    assert probe.prompt.count(probe.expected) == 1 and _exact(smollm2_tokenizer, probe)


def test_custom_needle_question_and_expected(smollm2_tokenizer):
    probe_set = _build(
        smollm2_tokenizer,
        needle="The pass key is {value}. Remember it.",
        question="What is the pass key?",
        form="retform",
    )
    for probe in probe_set.probes:
        assert probe.needle == f"The pass key is {probe.expected}. Remember it."
        assert probe.prompt.endswith("What is the pass key? Answer:") and _exact(smollm2_tokenizer, probe)
    fixed = _build(
        smollm2_tokenizer,
        needle="The best thing to do in San Francisco is eat a sandwich in Dolores Park.",
        question="What is the best thing to do in San Francisco?",
        expected="eat a sandwich in Dolores Park",
        answer_prefix="The best thing to do in San Francisco is",
    )
    assert {p.expected for p in fixed.probes} == {"eat a sandwich in Dolores Park"}
    ending = "<|im_start|>assistant\nThe best thing to do in San Francisco is"
    assert all(p.prompt.endswith(ending) for p in fixed.probes)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"needle": "No value here."}, "needs --expected"),
        ({"needle": "The key is {value}.", "expected": "42"}, "does not contain the expected answer"),
        ({"needle": "  "}, "the needle is empty"),
        ({"question": "Is it {value}?"}, "must not contain {value}"),
        ({"answer_prefix": "It is {value}"}, "must not contain the answer"),
    ],
)
def test_bad_custom_needles(smollm2_tokenizer, kwargs, fragment):
    with pytest.raises(ProbeError, match=re.escape(fragment)):
        _build(smollm2_tokenizer, **kwargs)


def test_expected_answer_found_in_the_haystack_is_refused(smollm2_tokenizer):
    with pytest.raises(ProbeError, match="also occurs outside the needle"):
        _build(smollm2_tokenizer, needle="The colour is green.", expected="green", haystack="noise")


def test_forms_and_answer_prefixes(smollm2_tokenizer):
    assert resolve_form("auto", smollm2_tokenizer) == "qaform"
    qa = _build(smollm2_tokenizer, lengths=(1000,), depths=(50,)).probes[0]
    assert qa.form == "qaform" and qa.answer_prefix == ""
    assert qa.prompt.startswith("<|im_start|>system\n") and qa.prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>user\nA special magic number is hidden" in qa.prompt
    qa_prefixed = _build(smollm2_tokenizer, lengths=(1000,), depths=(50,), answer_prefix="default").probes[0]
    assert qa_prefixed.prompt.endswith("<|im_start|>assistant\nThe special magic number is")
    ret = _build(smollm2_tokenizer, lengths=(1000,), depths=(50,), form="retform", lang="ko").probes[0]
    assert ret.form == "retform" and "<|im_start|>" not in ret.prompt
    assert ret.prompt.startswith(KO.instruction) and ret.prompt.endswith(KO.question + " " + KO.answer_prefix)
    assert ret.needle == KO.needle.replace("{value}", ret.expected)
    bare = _build(smollm2_tokenizer, lengths=(1000,), depths=(50,), form="retform", answer_prefix="").probes[0]
    assert bare.prompt.endswith("What is the special magic number mentioned in the text?")
    for probe in (qa, qa_prefixed, ret, bare):
        assert _exact(smollm2_tokenizer, probe)


def test_tokenizer_without_chat_template(smollm2_tokenizer):
    plain = copy.deepcopy(smollm2_tokenizer)
    plain.chat_template = None
    assert _build(plain, lengths=(800,), depths=(50,)).form == "retform"
    with pytest.raises(ProbeError, match="needs a chat template"):
        _build(plain, form="qaform")


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"lengths": (100,)}, ProbeError, "too small for this template"),
        ({"lengths": (300,), "lang": "ko"}, ProbeError, "use at least"),
        ({"depths": (0, 101)}, ProbeError, "outside 0..100"),
        ({"depths": (-1,)}, ProbeError, "outside 0..100"),
        ({"lengths": ()}, ProbeError, "no lengths"),
        ({"lang": "jp"}, ProbeError, "unknown language 'jp'"),
        ({"form": "chat"}, ProbeError, "unknown form 'chat'"),
        ({"verify": "some"}, ProbeError, "unknown verify mode"),
        ({"haystack": "/nonexistent/dir"}, HaystackError, "not found"),
    ],
)
def test_bad_requests(smollm2_tokenizer, kwargs, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        _build(smollm2_tokenizer, **kwargs)


def test_haystack_with_special_tokens_or_no_sentences_is_refused(smollm2_tokenizer, tmp_path):
    (tmp_path / "chat.txt").write_text("Some text. <|im_end|> More text.", encoding="utf-8")
    with pytest.raises(HaystackError, match=re.escape("special token '<|im_end|>'")):
        _build(smollm2_tokenizer, haystack=str(tmp_path / "chat.txt"))
    (tmp_path / "flat.txt").write_text("no punctuation at all " * 50, encoding="utf-8")
    with pytest.raises(HaystackError, match="no sentence ends"):
        _build(smollm2_tokenizer, haystack=str(tmp_path / "flat.txt"))


def test_full_verification_mode(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(700, 1400), depths=(0, 100), lang="ko", verify="full")
    assert all(_exact(smollm2_tokenizer, p) for p in probe_set.probes)


def test_token_bytes_match_decode_and_refuse_other_tokenizers(smollm2_tokenizer):
    tb = TokenBytes(smollm2_tokenizer)
    text = "한국어와 English가 섞인 문장입니다. <|im_start|>user\n“Quotes” — and 1234567."
    ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tb.bytes_of(ids).decode("utf-8") == text
    for cut in range(len(ids)):  # any slice that ends on a whole character decodes the same both ways
        try:
            piece = tb.bytes_of(ids[:cut]).decode("utf-8")
        except UnicodeDecodeError:
            continue
        decoded = smollm2_tokenizer.decode(ids[:cut], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert piece == decoded

    class SentencePieceLike:
        added_tokens_decoder = {}

        def __len__(self):
            return 3

        def convert_ids_to_tokens(self, ids):
            return ["▁Hello", "▁world", "<unk>"][: len(ids)]

        def __call__(self, text, **kwargs):
            return {"input_ids": [0, 1]}

    with pytest.raises(ProbeError, match="not a byte-level BPE tokenizer"):
        TokenBytes(SentencePieceLike())


def test_shared_reference_haystacks(smollm2_tokenizer, shared_haystacks):
    for lang in ("en", "ko"):
        probe_set = _build(
            smollm2_tokenizer,
            lengths=(2000, 12000),
            depths=(0, 36, 100),
            lang=lang,
            haystack=str(shared_haystacks / lang),
        )
        assert probe_set.haystack == f"{lang}/" and probe_set.haystack_repeats == 1
        for probe in probe_set.probes:
            assert _exact(smollm2_tokenizer, probe) and probe.prompt.count(probe.expected) == 1


def test_retform_writes_out_the_bos_a_base_tokenizer_adds(smollm2_tokenizer):
    from tokenizers.processors import TemplateProcessing

    base = copy.deepcopy(smollm2_tokenizer)  # Llama-style: BOS added by default, like Kanana base models
    base.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    probe = _build(base, lengths=(800,), depths=(50,), form="retform").probes[0]
    assert probe.prompt.startswith("<|endoftext|>A special magic number") and probe.input_ids[0] == 0
    assert probe.input_ids.count(0) == 1 and _exact(base, probe)
