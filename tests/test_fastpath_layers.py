"""The fused prefill layers (kanana_longctx.fastpath.layers) against transformers' own modules, on CPU with tiny
random models of each supported layout: plain Llama, Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms)."""

from __future__ import annotations

import shutil

import pytest
import torch

from kanana_longctx.backends.local import finish_loaded
from kanana_longctx.fastpath.llama import PrefixReusingLlama
from kanana_longctx.fastpath.layers import FusedLayers, fusable


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _model(kind: str, **extra):
    import transformers

    common = dict(
        vocab_size=500, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, **extra,
    )  # fmt: skip
    config = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen3": lambda: transformers.Qwen3Config(head_dim=16, **common),
    }[kind]()
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a missing or misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model, finish_loaded(model, "cpu", "float32", "sdpa", None)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_fused_layers_compute_what_transformers_computes(kind):
    model, loaded = _model(kind)
    ids = torch.randint(0, 500, (90,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids[None]).logits[0, -1]
    if kind == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    plain = PrefixReusingLlama(loaded, max_tokens=128, chunk_tokens=32, fuse_layers=False)
    fused = PrefixReusingLlama(loaded, max_tokens=128, chunk_tokens=32)
    assert plain.fused is None and fused.fused is not None and not fused.fused.compiled
    with torch.no_grad():
        after = model(ids[None]).logits[0, -1]
    assert torch.equal(before, after)  # fusing re-points the weights, it does not change them
    assert _rel(fused.prefill(ids, 0), before) < 1e-5
    assert _rel(fused.prefill(ids[40:], 40), before) < 1e-5  # a suffix over a cached prefix
    assert _rel(plain.prefill(ids, 0), before) < 1e-5


def test_fusing_makes_the_projections_views_of_one_weight():
    model, _ = _model("qwen2")
    params = sum(p.numel() for p in model.parameters())
    layers = FusedLayers(model, compile=False)
    attn, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp
    qkv = layers.layers[1].qkv
    assert qkv.shape == (64 + 32 + 32, 64)
    assert attn.q_proj.weight.data_ptr() == qkv.data_ptr()
    assert attn.v_proj.weight.data_ptr() == qkv[96:].data_ptr()
    assert attn.k_proj.bias.data_ptr() == layers.layers[1].qkv_bias[64:].data_ptr()
    assert mlp.up_proj.weight.data_ptr() == layers.layers[1].gate_up[96:].data_ptr()
    assert sum(p.numel() for p in model.parameters()) == params
    again = FusedLayers(model, compile=False)  # a second engine on the same model fuses nothing anew
    assert again.layers[1].qkv is qkv


def test_other_layouts_keep_the_module_path():
    model, loaded = _model("llama", hidden_act="gelu")
    assert fusable(model) == (False, "activation gelu (fused layers assume SiLU)")
    fast = PrefixReusingLlama(loaded, max_tokens=64, chunk_tokens=32)
    assert fast.fused is None
    ids = torch.randint(0, 500, (50,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(fast.prefill(ids, 0), ref) < 1e-5


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler")
def test_compiled_layers_match_the_eager_ones_at_several_lengths():
    """The compiled path (the default on CUDA) on CPU: one graph, dynamic in the token count, for every layer."""
    model, loaded = _model("qwen3")
    ids = torch.randint(0, 500, (100,), generator=torch.Generator().manual_seed(4))
    eager = PrefixReusingLlama(loaded, max_tokens=128, chunk_tokens=64)
    compiled = PrefixReusingLlama(loaded, max_tokens=128, chunk_tokens=64, compile_layers=True)
    assert compiled.fused.compiled
    for start in (0, 37, 80):  # suffixes of 100, 63 and 20 tokens, in chunks of up to 64
        assert _rel(compiled.prefill(ids[start:], start), eager.prefill(ids[start:], start)) < 1e-5


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler")
@pytest.mark.parametrize("tile", [0, 16])
def test_one_compiled_graph_per_half_whatever_the_attention_layout(tile):
    """The exact attention path (tile 0: FA2, SDPA, the CPU), joined suffixes and the trimmed last layer's single
    row each leave the attention output in another layout or shape; each used to be a compilation of its own.
    One graph per half now, same results."""
    from torch._dynamo.utils import counters

    model, loaded = _model("llama")
    ids = torch.randint(0, 500, (200,), generator=torch.Generator().manual_seed(6))
    requests = [(ids[:150], 0, 0), (ids[150:160], 150, 1), (ids[100:130], 100, 2), (ids[60:200], 60, 3)]
    outputs = []
    for compile_layers in (False, True):
        torch._dynamo.reset()
        counters.clear()
        fast = PrefixReusingLlama(
            loaded, max_tokens=256, chunk_tokens=48, tile_tokens=tile, rows=4, compile_layers=compile_layers
        )
        for row in (1, 2, 3):
            fast.prefill(ids[:150], 0, row=row, want_logits=False)
        # alone in chunks of 48 (not 64, the hidden size: equal sizes share one symbol and the graph would assume
        # it), then a 10-token suffix (below half a tile: exact) joined with a 30-token one, and trimmed rows
        outputs.append([fast.prefill_rows(requests[:1]), fast.prefill_rows(requests[1:])])
    assert counters["stats"]["unique_graphs"] == 2
    eager, compiled = outputs
    for a, b in zip(sum(eager, []), sum(compiled, [])):
        assert _rel(b, a) < 1e-5


def test_a_compiler_failure_falls_back_to_the_eager_layers(monkeypatch):
    """No Triton or no C++ compiler: the first compiled call fails, the eager halves take over, the engine says so."""
    model, loaded = _model("llama")

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no working C++ compiler found\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    fast = PrefixReusingLlama(loaded, max_tokens=64, chunk_tokens=32, compile_layers=True)
    assert fast.fused.compiled
    ids = torch.randint(0, 500, (40,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(fast.prefill(ids, 0), ref) < 1e-5
    assert not fast.fused.compiled
    assert fast.fused.compile_error == "RuntimeError: no working C++ compiler found"
    assert "compilation failed: RuntimeError" in fast.describe()


def test_compile_default_follows_the_device_and_the_environment(monkeypatch):
    from kanana_longctx.fastpath.layers import COMPILE_ENV, compile_wanted

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_wanted("cuda") and not compile_wanted("cpu")
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not compile_wanted("cuda")



@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler")
def test_background_compilation_builds_the_graphs_while_the_stream_runs_eagerly():
    """The halves compile on a worker thread while the haystack stream runs on the eager halves (the default on
    CUDA). The stream is eager whatever the compiler's speed (bit for bit what the eager engine computes), the
    probes after it run compiled, and the worker's example builds the same two graphs a real call needs: none
    more."""
    from torch._dynamo.utils import counters

    model, loaded = _model("llama")
    ids = torch.randint(0, 500, (200,), generator=torch.Generator().manual_seed(6))
    torch._dynamo.reset()
    counters.clear()
    eager = PrefixReusingLlama(loaded, max_tokens=256, chunk_tokens=48, rows=2)
    fast = PrefixReusingLlama(
        loaded, max_tokens=256, chunk_tokens=48, rows=2, compile_layers=True, background_compile=True
    )
    assert "compiled in the background" in fast.describe()
    for engine in (fast, eager):
        engine.prefill_stream(ids[:150], 0, row=0)
    for ours, ref in zip(fast.kv.k + fast.kv.v, eager.kv.k + eager.kv.v):
        assert torch.equal(ours[0, :, :150], ref[0, :, :150])
    requests = [(ids[150:], 150, 0), (ids[100:130], 100, 1)]  # 50 tokens alone (> chunk), 30 on their own
    for ours, ref in zip(fast.prefill_rows(requests), eager.prefill_rows(requests)):
        assert _rel(ours, ref) < 1e-5
    assert counters["stats"]["unique_graphs"] == 2
    assert fast.fused.compiled and fast.fused._proven and fast.fallback_notes() == []


def test_a_failed_background_compilation_is_reported_and_the_first_call_tries_again(monkeypatch):
    model, loaded = _model("llama")
    calls = []

    def broken(fn, **kwargs):
        def call(*args):
            calls.append(fn.__name__)
            raise RuntimeError("no working C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    fast = PrefixReusingLlama(loaded, max_tokens=64, chunk_tokens=32, compile_layers=True, background_compile=True)
    fast.fused.finish_background_compile()
    assert calls == ["pre_attention"]
    assert fast.fused.background_note == "RuntimeError: no working C++ compiler found"
    ids = torch.randint(0, 500, (40,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(ids[None]).logits[0, -1]
    assert _rel(fast.prefill(ids, 0), ref) < 1e-5
    assert calls == ["pre_attention", "pre_attention"]  # tried again on the first call, then eager
    assert not fast.fused.compiled
    notes = fast.fallback_notes()
    assert len(notes) == 2 and "compiling in the background failed (RuntimeError" in notes[0]
    assert "compilation failed: RuntimeError" in notes[1]
