"""Prefix reuse on the model's own transformers cache: greedy outputs equal the plain loop's (float32, CPU) for
every architecture family it serves (Llama, Qwen3-MoE, Mixtral, DeepSeek-V3 MLA + MoE, Mistral's sliding window,
a Qwen3 layer_types hybrid, Olmo3 with per-layer-type RoPE), with needles inside and past the window and prompts in several forwards; `--engine auto`
chooses it where the fast engine refuses; the dry run's reuse FLOPs are what it computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kanana_longctx.backends import reuse
from kanana_longctx.backends.hfcache import DecodeGroup, PrefixCache, supports_reuse
from kanana_longctx.backends.local import finish_loaded
from kanana_longctx.bench.models import random_model
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import ModelShape
from kanana_longctx.plan.memory import CPU_DECODE_ROWS
from kanana_longctx.probes.build import ProbeRequest, build_probe_set
from kanana_longctx.probes.summary import summarize
from kanana_longctx.results import load_results
from kanana_longctx.run.runner import execute

ARCHITECTURES = ("tiny", "tiny-moe", "tiny-mixtral", "tiny-mla", "tiny-sliding", "tiny-hybrid", "tiny-olmo3")


@pytest.fixture(scope="module")
def probe_set(smollm2_tokenizer):
    """Lengths 300 and 700 at depths 0/50/100: with a 128-token window the question at the end sees the needle of
    depth 100 inside the window and the others past it; the 700-token probes need several 128-token forwards."""
    request = ProbeRequest(lengths=(300, 700), depths=(0, 50, 100), haystack="noise", form="qaform")
    return build_probe_set(request, smollm2_tokenizer)


def _loaded(name: str):
    model = random_model(name, device="cpu", dtype="float32", yarn=False)
    return finish_loaded(model, "cpu", "float32", "sdpa", None)


def _outputs(path) -> dict:
    return {r.probe_id: (r.output, r.new_tokens) for r in load_results(path)[0]}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_reuse_outputs_are_the_plain_loops(name, probe_set, smollm2_tokenizer, tmp_path, monkeypatch, keeping_reporter):
    monkeypatch.setattr(reuse, "chunk_tokens_for", lambda device: 128)
    loaded = _loaded(name)
    options = RunOptions(max_new_tokens=6)
    notes = keeping_reporter()
    ours = execute(probe_set, dataclasses.replace(options, engine="reuse"), tmp_path / "reuse", loaded=loaded,
                   tokenizer=smollm2_tokenizer, reporter=notes)
    plain = execute(probe_set, dataclasses.replace(options, engine="hf"), tmp_path / "hf", loaded=loaded,
                    tokenizer=smollm2_tokenizer)
    assert ours.backend.engine == "reuse" and plain.backend.engine == "hf"
    assert _outputs(tmp_path / "reuse") == _outputs(tmp_path / "hf")
    assert len(_outputs(tmp_path / "reuse")) == len(probe_set.probes)
    records = load_results(tmp_path / "reuse")[0]
    assert any(r.prefill_tokens < r.n_tokens for r in records)  # the prefix really was reused
    assert 0 < ours.computed_flops < plain.computed_flops
    assert ours.prefill_seconds > 0 and ours.decode_seconds > 0
    assert ours.kv_rows == CPU_DECODE_ROWS  # 6 probes: decoded as groups of 4 and 2, lengths 300 and 700 mixed
    steps = sum(max(r.new_tokens for r in g) - 1 for g in (records[:4], records[4:]))
    assert any(f"decoded in 2 groups of up to 4 KV rows (at most 4): {steps} batched steps" in n
               for n in notes.lines), notes.lines


@pytest.mark.parametrize("room", (8, 3))
@pytest.mark.parametrize("name", ("tiny", "tiny-moe", "tiny-mla", "tiny-sliding", "tiny-olmo3"))
def test_prompts_of_different_lengths_decoded_together_are_each_decoded_alone(name, room):
    """Rows of 150, 400 and 260 tokens (the shorter ones padded on the left, two past the 128-token window)
    decoded in one group, under the reuse run's decoding attention, give each prompt's own greedy tokens (from
    the plain forward, one prompt at a time), and its first logits are the full forward's. The group's cache has
    room for all 8 tokens in place, or for 3 and then grows."""
    from kanana_longctx.kernels.hf_prefix import model_attention, prefix_attention

    model = _loaded(name).model
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in (150, 400, 260)]
    never = lambda out: False  # noqa: E731 - decode the whole budget
    with torch.inference_mode():
        alone, group = [], DecodeGroup(model, [len(p) for p in prompts], max_new_tokens=room)
        for ids in prompts:
            cache = PrefixCache(model, chunk_tokens=128)
            logits = cache.extend(ids, 0, want_logits=True)
            assert torch.allclose(logits, model(torch.tensor([ids])).logits[0, -1], atol=1e-5)
            group.add(cache, logits)
            alone.append(cache.greedy(logits, max_new_tokens=8, stop=never))
        with prefix_attention(model) as kernel, model_attention(model):
            assert kernel and model.config._attn_implementation == "kanana_decode_sdpa"
            together = group.greedy(max_new_tokens=8, stop=never)
    assert together == alone
    assert len({tuple(x) for x in alone}) > 1  # the rows really differ
    assert group.cache.get_seq_length() == 400 + 7


@pytest.mark.parametrize("padded", (True, False))
def test_the_decoding_attention_reads_grouped_heads_in_place_with_the_same_result(padded, monkeypatch):
    """One query per row over 2 K/V heads shared by 6 query heads, with a padding mask or none: the packed call
    gives transformers' SDPA result (which repeats the K/V heads), and does not repeat them."""
    import transformers.integrations.sdpa_attention as hf_sdpa

    from kanana_longctx.kernels import hf_prefix

    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, h, n, 16, generator=gen) for h, n in ((6, 1), (2, 50), (2, 50)))
    mask = None
    if padded:
        mask = torch.arange(50)[None, None, None, :] >= torch.tensor([0, 20, 7])[:, None, None, None]
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = 3, True, False
    ref, _ = hf_sdpa.sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    monkeypatch.setattr(hf_sdpa, "repeat_kv", lambda *a: pytest.fail("K/V heads repeated"))
    out, _ = hf_prefix._decode_sdpa(module, q, k, v, mask, scaling=0.25)
    assert out.shape == ref.shape == (3, 1, 6, 16)
    assert torch.allclose(out, ref, atol=1e-6)


def test_a_group_refuses_a_prompt_of_the_wrong_length_and_decoding_before_it_is_full():
    model = _loaded("tiny").model
    with torch.inference_mode():
        cache = PrefixCache(model)
        logits = cache.extend(list(range(10, 30)), 0, want_logits=True)
        group = DecodeGroup(model, [20, 21])
        group.add(cache, logits)
        with pytest.raises(ValueError, match="21-token prompt"):
            group.add(cache, logits)
        with pytest.raises(ValueError, match="1 of 2 prompts"):
            group.greedy(max_new_tokens=2, stop=lambda out: False)


def test_batch_size_one_decodes_one_probe_at_a_time_with_the_same_outputs(probe_set, smollm2_tokenizer, tmp_path):
    loaded = _loaded("tiny-moe")
    runs = {}
    for rows in (1, 3):
        ran = execute(probe_set, RunOptions(engine="reuse", max_new_tokens=5, batch_size=rows), tmp_path / str(rows),
                      loaded=loaded, tokenizer=smollm2_tokenizer)
        assert ran.kv_rows == rows
        runs[rows] = _outputs(tmp_path / str(rows))
    assert runs[1] == runs[3] and len(runs[1]) == len(probe_set.probes)


def test_the_window_matters_and_a_prefix_longer_than_it_is_reused_exactly():
    """The sliding window changes the logits of a probe longer than it (so the equality above is not the full
    attention's), and a prefix longer than the window, cut back from a longer one, gives the full forward's
    logits."""
    windowed = _loaded("tiny-sliding").model
    full = random_model("tiny-sliding", device="cpu", dtype="float32", yarn=False)
    full.config.sliding_window = None
    ids = torch.randint(0, 1000, (400,), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = windowed(ids[None]).logits[0, -1]
        assert (ref - full(ids[None]).logits[0, -1]).abs().max() > 1e-3
        cache = PrefixCache(windowed, chunk_tokens=100)
        cache.extend(ids.tolist(), 0)  # 400 cached positions, then back to 300 (both past the 128-token window)
        logits = cache.extend(ids[300:].tolist(), 300, want_logits=True)
    assert torch.allclose(logits, ref, atol=1e-5)


def test_auto_chooses_reuse_where_the_fast_engine_refuses(probe_set, smollm2_tokenizer, tmp_path):
    small = dataclasses.replace(probe_set, probes=probe_set.probes[:2])
    options = RunOptions(max_new_tokens=2)
    for name, engine in (("tiny", "fast"), ("tiny-moe", "reuse"), ("tiny-sliding", "reuse"), ("tiny-mla", "reuse")):
        ran = execute(small, options, tmp_path / name, loaded=_loaded(name), tokenizer=smollm2_tokenizer)
        assert ran.backend.engine == engine, name
        if engine == "reuse":  # and the run says why the fast engine did not run it
            assert any(n.startswith("prefix reuse on the transformers cache: ") for n in ran.backend.notes), name


def test_the_dry_runs_reuse_flops_are_what_reuse_computes(probe_set, smollm2_tokenizer, tmp_path):
    loaded = _loaded("tiny-moe")
    ran = execute(probe_set, RunOptions(engine="reuse", max_new_tokens=2), tmp_path, loaded=loaded,
                  tokenizer=smollm2_tokenizer)
    dry = summarize(probe_set, shape=ModelShape.from_config(loaded.model.config), rows=1)
    assert dry.reuse_flops == ran.computed_flops and dry.flops == ran.effective_flops


def test_caches_that_cannot_be_cut_back_are_refused(monkeypatch):
    from transformers import cache_utils

    model = _loaded("tiny").model
    assert supports_reuse(model) == (True, "")

    class LinearAttentionLayer(cache_utils.DynamicLayer):
        pass

    real = cache_utils.DynamicCache

    def odd_cache(config=None, **kwargs):
        cache = real(config=config, **kwargs)
        cache.layers = [LinearAttentionLayer() for _ in cache.layers] or [LinearAttentionLayer()]
        return cache

    monkeypatch.setattr(cache_utils, "DynamicCache", odd_cache)
    ok, why = supports_reuse(model)
    assert not ok and "LinearAttentionLayer" in why


@pytest.mark.slow
def test_reuse_equals_the_plain_loop_on_smollm2(smollm2_source, smollm2_tokenizer, tmp_path):
    """The real model: the same greedy answers, needles found, and the deeper needles computed less."""
    from kanana_longctx.backends.local import load_model

    loaded = load_model(smollm2_source, RunOptions(device="cpu"))
    request = ProbeRequest(lengths=(500, 1500), depths=(0, 50, 100), haystack="noise", form="qaform")
    probes = build_probe_set(request, smollm2_tokenizer)
    execute(probes, RunOptions(engine="reuse"), tmp_path / "reuse", loaded=loaded, tokenizer=smollm2_tokenizer)
    execute(probes, RunOptions(engine="hf"), tmp_path / "hf", loaded=loaded, tokenizer=smollm2_tokenizer)
    assert _outputs(tmp_path / "reuse") == _outputs(tmp_path / "hf")
    records = load_results(tmp_path / "reuse")[0]
    assert all(r.score == 1.0 for r in records), [r.output for r in records]
    assert sum(r.prefill_tokens for r in records) < sum(r.n_tokens for r in records)


@pytest.mark.parametrize(("name", "lower_right"), [("tiny", True), ("tiny-mla", True), ("tiny-sliding", False)])
def test_suffixes_attend_bottom_right_without_a_mask_except_past_a_window(name, lower_right, monkeypatch):
    """The bottom-right causal call replaces the dense mask for suffixes over the prefix (same logits as the full
    forward); a sliding-window layer whose keys reach past its window keeps transformers' masked SDPA."""
    import torch.nn.attention.bias as bias

    from kanana_longctx.kernels.hf_prefix import prefix_attention

    calls = []
    real = bias.causal_lower_right
    monkeypatch.setattr(bias, "causal_lower_right", lambda q, kv: calls.append((q, kv)) or real(q, kv))
    model = _loaded(name).model
    ids = torch.randint(0, 1000, (400,), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = model(ids[None]).logits[0, -1]
        with prefix_attention(model) as kernel:
            assert kernel and model.config._attn_implementation != "sdpa"
            cache = PrefixCache(model, chunk_tokens=100)
            cache.extend(ids.tolist(), 0)
            logits = cache.extend(ids[250:].tolist(), 250, want_logits=True)
    assert model.config._attn_implementation == "sdpa"  # restored after the run
    assert torch.allclose(logits, ref, atol=1e-5)
    assert bool(calls) == lower_right and all(q < kv for q, kv in calls)
