"""The runner's cheap checks: the context check against what the backend reports, the answer budget, and how
the YaRN request is recorded."""

from __future__ import annotations

import pytest

from kanana_longctx.backends.base import ContextLimits
from kanana_longctx.errors import ProbeError
from kanana_longctx.options import RunOptions
from kanana_longctx.run.check import check_context, default_max_new_tokens, yarn_request

YARN = {"factor": 4.0, "original_max_position_embeddings": 8192}


def test_without_yarn_a_run_may_pass_the_native_context_up_to_the_default_factor():
    limits = ContextLimits(native=8192, maximum=8192)
    assert check_context(limits, 8000, 4.4) == ""
    assert "native context of 8,192 tokens without YaRN" in check_context(limits, 20000, 4.4)
    with pytest.raises(ProbeError, match="probes need 40,000 positions; the model addresses 36,044 even with YaRN x4.4"):
        check_context(limits, 40000, 4.4)


def test_with_yarn_the_stretched_context_is_the_limit():
    limits = ContextLimits(native=8192, maximum=32768, yarn=YARN)
    assert check_context(limits, 32768, 4.4) == ""
    with pytest.raises(ProbeError, match="addresses 32,768 with YaRN"):
        check_context(limits, 32769, 4.4)


def test_a_fixed_context_allows_nothing_past_it_and_an_unknown_one_no_check():
    with pytest.raises(ProbeError, match="addresses 4,096$"):
        check_context(ContextLimits(native=4096, maximum=4096, fixed=True), 4097, 4.4)
    assert check_context(ContextLimits(), 10**6, 4.4) == ""


def test_answer_budget_from_a_right_answers_tokens(smollm2_tokenizer):
    import dataclasses

    from kanana_longctx.probes.answer import budget_for
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set

    for form in ("qaform", "retform"):
        built = build_probe_set(ProbeRequest(lengths=(300,), depths=(50,), haystack="noise", form=form), smollm2_tokenizer)
        answer = len(smollm2_tokenizer.encode(built.probes[0].answer, add_special_tokens=False))
        assert default_max_new_tokens(built, smollm2_tokenizer) == budget_for(answer) == built.max_new_tokens
        # a probe set that carries no budget (built elsewhere) gets the same one from its probes' answers
        bare = dataclasses.replace(built, max_new_tokens=0)
        assert default_max_new_tokens(bare, smollm2_tokenizer) == built.max_new_tokens


def test_the_yarn_request_as_recorded():
    assert yarn_request(RunOptions()) == "config" and yarn_request(RunOptions(yarn=False)) == "off"
    assert yarn_request(RunOptions(yarn=True, yarn_factor=2.0))["factor"] == 2.0
