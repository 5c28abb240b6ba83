"""What the in-process backends share: stop ids from the real SmolLM2 tokenizer, the retform stop, a
generation's decoded text and budget flag, and the tiny test model's YaRN as the loader reads it back."""

from __future__ import annotations

import types

import pytest
import torch

from kanana_longctx.backends.base import BackendRequest
from kanana_longctx.backends.local import LocalModel, make_stop, stop_token_ids
from kanana_longctx.options import RunOptions


def _model(eos):
    return types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=eos))


def test_stop_ids_from_the_tokenizer_the_generation_config_and_end_of_turn_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = stop_token_ids(tok, _model(None))
    assert tok.eos_token_id in ids and im_end in ids
    assert tok.unk_token_id not in ids
    assert {7, 8} <= stop_token_ids(tok, _model([7, 8])) and 9 in stop_token_ids(tok, _model(9))


def test_retform_stops_at_a_line_break_after_content_qaform_only_at_stop_ids(smollm2_tokenizer):
    tok = smollm2_tokenizer
    stop_ids = stop_token_ids(tok, _model(None))
    retform, qaform = make_stop(tok, stop_ids, "retform"), make_stop(tok, stop_ids, "qaform")
    line = tok.encode("\n", add_special_tokens=False)
    answer = tok.encode(" 4829173", add_special_tokens=False)
    assert not retform(line)  # a leading break: the answer has not started
    assert retform(answer + line) and not qaform(answer + line)
    assert retform([tok.eos_token_id]) and qaform(answer + [tok.eos_token_id])


def test_a_generation_is_decoded_and_says_whether_the_budget_ran_out(smollm2_tokenizer):
    tok = smollm2_tokenizer
    model = LocalModel(BackendRequest(RunOptions(), None, tok))
    model.stop_ids = stop_token_ids(tok, _model(None))
    stop = make_stop(tok, model.stop_ids, "qaform")
    answer = tok.encode(" 4829173 is", add_special_tokens=False)
    probe = object()
    cut = model.generation(probe, answer, 0.5, 10, stop, max_new=len(answer))
    assert cut.text == " 4829173 is" and cut.new_tokens == len(answer) and cut.hit_max_new_tokens
    ended = model.generation(probe, answer + [tok.eos_token_id], 0.5, 10, stop, max_new=len(answer) + 1)
    assert not ended.hit_max_new_tokens and ended.text == " 4829173 is"  # special tokens skipped
    short = model.generation(probe, answer, 0.5, 10, stop, max_new=len(answer) + 5)
    assert not short.hit_max_new_tokens


def test_tiny_model_has_yarn_in_its_rotary_embedding(tiny):
    _, loaded = tiny
    assert loaded.rope_attention_factor == pytest.approx(0.1 * torch.log(torch.tensor(4.4)).item() + 1, rel=1e-6)
    assert (loaded.native_context, loaded.max_context) == (4096, int(4096 * 4.4))


def test_the_context_of_a_given_model_is_read_from_its_config(tiny):
    _, loaded = tiny
    limits = LocalModel(BackendRequest(RunOptions(), None, None, loaded=loaded)).context()
    assert (limits.native, limits.maximum, limits.yarn["factor"]) == (4096, int(4096 * 4.4), 4.4)
