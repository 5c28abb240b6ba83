"""The layer math of the fast engine: the model parts a forward calls, the module-path QKV + RoPE, and the two
halves of a prefill layer as plain functions over fused weights, on kernels of our own or compiled once.

Usage: parts = ModelParts.of(model); x, cos, sin = parts.embed(ids[None], positions[None])
       layers = FusedLayers.for_model(model, compile=True)  # None when the layout does not fit
       q, k, v = layers.pre(i, x, cos, sin); ...attention...; x = layers.post(i, x, o)

Why: in a long prefill the matmuls and the attention kernel run near the GPU's peak, and the rest of a layer is a
dozen memory-bound passes over (tokens x hidden) activations: RMSNorm in float32, RoPE with its concatenations,
the transposes, SiLU(gate) * up, the residual adds. One QKV and one gate-up matmul replace five narrower ones (the
k and v projections are 1024 wide), and the passes run fused. The functions take the weights as arguments, so one
version serves all layers; the attention call stays outside, in kanana_longctx.kernels.attention.

On CUDA the halves run on kernels of our own where they apply (`kernel_pre_attention`, `kernel_post_attention`:
RMSNorm, SiLU(gate) * up and RoPE on Triton kernels, each residual add in its matmul's epilogue). Before them
the halves were compiled by torch.compile, which cost 4-6 s of host time on a fresh machine on a worker thread
that slowed everything the main thread did meanwhile, and whose kernels, dynamic in the token count, ran the
memory-bound passes at a third of the memory speed (docs/performance.md, "2026-12-04, third session"). The
compiled halves remain for the layouts the kernels do not cover (Qwen3's per-head q/k norms), or with
KANANA_LONGCTX_LAYER_KERNELS=0 (kernels.choice.layer_halves decides).

Compiling (the halves, or the kernels' Triton code on a cold cache) takes time in which the GPU would sit idle
before the first chunk. `compile_in_background` does it on a worker thread from example inputs while the caller
keeps the GPU busy with the eager halves inside `eager()`: the engine runs the haystack stream that way, once per
run before any probe. Everything else waits for the worker. The split is fixed, not "eager until ready", so a
run's numbers never depend on how fast the compiler was.

The fused weights are concatenated once and the model's own projection weights become views into them, so fusing
costs no memory and transformers' modules (the plain loop, the decode step) keep working on the same tensors.
The arithmetic is transformers' own (Llama/Qwen RMSNorm in float32, rotate-half RoPE); the kernels and compiled
code round the fused elementwise chains once instead of after every op, within bf16 tolerance (tests/test_gpu.py
checks it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kanana_longctx.kernels import choice, pointwise
from kanana_longctx.kernels.rope import rope_in_place
from kanana_longctx.plan.dims import ModelDims


@dataclass(frozen=True)
class ModelParts:
    """The modules of a Llama-family transformers model that a forward of our own calls, and its dimensions:
    the model's own weights, norms, MLP and rotary embedding, so numerics match transformers."""

    embed_tokens: torch.nn.Module
    rotary_emb: torch.nn.Module
    layers: tuple
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    dims: ModelDims

    @classmethod
    def of(cls, model) -> "ModelParts":
        inner = model.model
        return cls(
            inner.embed_tokens, inner.rotary_emb, tuple(inner.layers), inner.norm, model.lm_head,
            ModelDims.from_config(model.config),
        )

    def embed(self, ids: torch.Tensor, positions: torch.Tensor):
        """Token embeddings (B, T, hidden) of `ids` (B, T) and the rotary cos, sin (B, 1, T, head_dim) of
        `positions` (B, T)."""
        x = self.embed_tokens(ids)
        cos, sin = self.rotary_emb(x, positions)
        return x, cos.unsqueeze(1), sin.unsqueeze(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm and the LM head over hidden states (B, T, hidden)."""
        return self.lm_head(self.norm(x))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm / Qwen3RMSNorm: normalise in float32, scale in the input dtype."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """transformers' RoPE helper: (x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def module_qkv(layer, x, cos, sin, n_heads: int, n_kv: int, head_dim: int):
    """Layer input norm, q/k/v projections, Qwen3-style per-head norms (before RoPE) and RoPE, through
    transformers' own modules. x: (B, T, hidden); returns q, k, v as (B, heads, T, head_dim)."""
    attn = layer.self_attn
    B, T = x.shape[:2]
    h = layer.input_layernorm(x)
    q = attn.q_proj(h).view(B, T, n_heads, head_dim)
    k = attn.k_proj(h).view(B, T, n_kv, head_dim)
    v = attn.v_proj(h).view(B, T, n_kv, head_dim).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q, k, v


def pre_attention(x, norm_w, eps: float, w_qkv, b_qkv, q_norm_w, k_norm_w, cos, sin, n_heads: int, n_kv: int, head_dim: int):
    """RMSNorm, one QKV matmul, optional per-head q/k norms (Qwen3), RoPE. x: (1, T, hidden); returns q, k, v as
    (1, heads, T, head_dim) views of (1, T, heads, head_dim) tensors.

    RoPE runs in the projections' own token-major layout and the head transposes are views, so the compiled
    kernel reads and writes rows of the same layout; the consumers copy q into tiles and K/V into the buffer,
    which take any layout, and the decode step's head split becomes a view. Measured on the H200 (2.1B dims,
    3000 tokens): the q kernel 82 us a call against 90 us head-major, both at about 0.5 TB/s, so most of its
    cost is elsewhere ("2026-12-04, later" in docs/performance.md)."""
    T = x.shape[1]
    qkv = F.linear(rms_norm(x, norm_w, eps), w_qkv, b_qkv)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = q.view(1, T, n_heads, head_dim)
    k = k.view(1, T, n_kv, head_dim)
    v = v.view(1, T, n_kv, head_dim)
    if q_norm_w is not None:
        q, k = rms_norm(q, q_norm_w, eps), rms_norm(k, k_norm_w, eps)
    cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)  # (1, T, 1, head_dim): broadcast over the heads
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def kernel_pre_attention(x, norm_w, eps: float, w_qkv, b_qkv, q_norm_w, k_norm_w, cos, sin, n_heads: int,
                         n_kv: int, head_dim: int):
    """`pre_attention` on kernels of our own (CUDA, no per-head q/k norms): RMSNorm (kernels.pointwise), the QKV
    matmul, RoPE in place (kernels.rope); q, k, v are views of the projection's output."""
    T = x.shape[1]
    qkv = F.linear(pointwise.rms_norm(x.reshape(T, -1).contiguous(), norm_w, eps), w_qkv, b_qkv)[None]
    rope_in_place(qkv, cos, sin, rotated_heads=n_heads + n_kv, head_dim=head_dim)
    return split_heads(qkv, n_heads, n_kv, head_dim)


def kernel_post_attention(x, o, w_o, b_o, norm_w, eps: float, w_gate_up, b_gate_up, w_down, b_down, ffn: int):
    """`post_attention` on kernels of our own: each residual add in its matmul's epilogue (`_plus_linear`), RMSNorm
    and SiLU(gate) * up on kernels.pointwise."""
    T = x.shape[1]
    x = _plus_linear(x.reshape(T, -1), o.reshape(T, -1), w_o, b_o)
    gate_up = F.linear(pointwise.rms_norm(x, norm_w, eps), w_gate_up, b_gate_up)
    return _plus_linear(x, pointwise.silu_mul(gate_up, ffn), w_down, b_down)[None]


def _plus_linear(x, a, w, b):
    """x + a @ w.T (+ b) as one matmul that adds x in its epilogue (rounded once, where the modules round the
    product before the add)."""
    return torch.addmm(x if b is None else x + b, a, w.t())


def split_heads(qkv, n_heads: int, n_kv: int, head_dim: int):
    """q, k, v (1, heads, T, head_dim) as views of a (1, T, width) projection output."""
    T = qkv.shape[1]
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    return tuple(t.view(1, T, n, head_dim).transpose(1, 2) for t, n in ((q, n_heads), (k, n_kv), (v, n_kv)))


def post_attention(x, o, w_o, b_o, norm_w, eps: float, w_gate_up, b_gate_up, w_down, b_down, ffn: int):
    """o_proj and residual, RMSNorm, one gate-up matmul, SiLU(gate) * up, down and residual. o: the attention
    output with its heads joined, (1, T, heads x head_dim)."""
    x = x + F.linear(o, w_o, b_o)
    gate, up = F.linear(rms_norm(x, norm_w, eps), w_gate_up, b_gate_up).split([ffn, ffn], dim=-1)
    return x + F.linear(F.silu(gate) * up, w_down, b_down)


@dataclass(frozen=True)
class _LayerWeights:
    input_norm: torch.Tensor
    input_eps: float
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _eps(norm) -> float | None:
    for name in ("variance_epsilon", "eps"):
        value = getattr(norm, name, None)
        if isinstance(value, float):
            return value
    return None


def fusable(model) -> tuple[bool, str]:
    """Whether every layer has the plain pre-norm Llama/Qwen layout with SiLU MLP and RMSNorm; why not."""
    cfg = model.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False, f"activation {cfg.hidden_act} (fused layers assume SiLU)"
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        parts = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(p) is not torch.nn.Linear for p in parts):
            return False, "projections are not plain Linear layers (quantised or wrapped)"
        weights = [p.weight for p in parts]
        if any(w.device != weights[0].device or w.is_meta for w in weights):
            return False, "weights are offloaded or spread over devices"
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        if hasattr(attn, "q_norm"):
            norms += [attn.q_norm, attn.k_norm]
        if any(_eps(n) is None or "RMSNorm" not in type(n).__name__ for n in norms):
            return False, "norms are not RMSNorm"
        if hasattr(attn, "q_norm") and _eps(attn.q_norm) != _eps(layer.input_layernorm):
            return False, "q/k norms use another epsilon"
    return True, ""


def _fuse_linears(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several Linear layers with the same input; the layers' own parameters become
    views into it (no extra memory once the old tensors are freed)."""
    if all(getattr(p, "_kanana_fused", None) is not None for p in linears):
        return linears[0]._kanana_fused
    weight = torch.cat([p.weight.detach() for p in linears])
    has_bias = [p.bias is not None for p in linears]
    bias = None
    if any(has_bias):
        bias = torch.cat(
            [p.bias.detach() if p.bias is not None else weight.new_zeros(p.out_features) for p in linears]
        )
    offset = 0
    for p in linears:
        n = p.out_features
        p.weight = torch.nn.Parameter(weight[offset : offset + n], requires_grad=False)
        if p.bias is not None:
            p.bias = torch.nn.Parameter(bias[offset : offset + n], requires_grad=False)
        offset += n
    for p in linears:
        p._kanana_fused = (weight, bias)
    return weight, bias


COMPILE_ENV = "KANANA_LONGCTX_COMPILE"  # "0": eager fused halves (neither the kernel nor the compiled ones)


def compile_wanted(device_type: str) -> bool:
    """The default: fused passes on CUDA (the kernel halves, or compiled ones where those do not apply), eager
    elsewhere (inductor's C++ build costs more on a CPU than the fusion saves), unless KANANA_LONGCTX_COMPILE=0."""
    return device_type == "cuda" and os.environ.get(COMPILE_ENV, "1") != "0"


class FusedLayers:
    """The fused weights of every layer and the two layer halves: on kernels (`kernels`), compiled (`compiled`) or
    eager. If the kernels or the compilation fail on the first call (no Triton, an unsupported compiler), the eager
    halves take over and `compile_error` says why."""

    def __init__(self, model, compile: bool):
        dims = ModelDims.from_config(model.config)
        self.compile_error = ""
        self._proven = False  # a compiled call has succeeded: later errors are real errors
        self.n_heads = dims.heads
        self.n_kv = dims.kv_heads
        self.head_dim = dims.head_dim
        self.ffn = dims.ffn
        self.compiled = compile
        self.background_note = ""  # why the background compilation failed, if it did (compiled on first use then)
        self._background: threading.Thread | None = None
        self._background_started = False
        self.background_seconds = 0.0  # how long the background compilation took
        self.waited_seconds = 0.0  # how long calls waited for it
        self._eager_depth = 0  # > 0 inside `eager()`
        # On CUDA the halves run on kernels of our own where they apply (kernels.pointwise: why), else compiled.
        attn = model.model.layers[0].self_attn
        halves = choice.layer_halves(attn.q_proj.weight.device.type, self.head_dim, fused_passes=compile,
                                     qk_norms=hasattr(attn, "q_norm"))
        self.kernels, self.compiled = halves == "kernels", halves == "compiled"
        if self.kernels:
            self._pre, self._post = kernel_pre_attention, kernel_post_attention
        elif self.compiled:
            self._pre = torch.compile(pre_attention, dynamic=True)
            self._post = torch.compile(post_attention, dynamic=True)
        else:
            self._pre, self._post = pre_attention, post_attention
        self.layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv, qkv_bias = _fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
                gate_up, gate_up_bias = _fuse_linears([mlp.gate_proj, mlp.up_proj])
                has_qk_norm = hasattr(attn, "q_norm")
                self.layers.append(
                    _LayerWeights(
                        input_norm=layer.input_layernorm.weight,
                        input_eps=_eps(layer.input_layernorm),
                        qkv=qkv,
                        qkv_bias=qkv_bias,
                        q_norm=attn.q_norm.weight if has_qk_norm else None,
                        k_norm=attn.k_norm.weight if has_qk_norm else None,
                        o=attn.o_proj.weight,
                        o_bias=attn.o_proj.bias,
                        post_norm=layer.post_attention_layernorm.weight,
                        post_eps=_eps(layer.post_attention_layernorm),
                        gate_up=gate_up,
                        gate_up_bias=gate_up_bias,
                        down=mlp.down_proj.weight,
                        down_bias=mlp.down_proj.bias,
                    )
                )

    @classmethod
    def for_model(cls, model, *, compile: bool) -> "FusedLayers | None":
        ok, _ = fusable(model)
        return cls(model, compile) if ok else None

    def describe(self) -> str:
        if self.kernels:
            return "fused layers on Triton kernels (RMSNorm, RoPE, SiLU-gate) and matmuls with the residual adds"
        if self.compiled:
            return "fused layers, compiled" + (" in the background" if self._background_started else "")
        return "fused layers, eager" + (f" (compilation failed: {self.compile_error})" if self.compile_error else "")

    def _run(self, compiled, eager, *args):
        """The kernel or compiled half, or the eager one where both are off, failed, or would not pay: inside
        `eager()`, and for a compiled half a single token (dynamic shapes specialise sizes 0 and 1, so one row
        would be a graph and a compilation of its own for a call that takes microseconds; the trimmed last layer
        is such a call)."""
        if self._eager_depth or not (self.kernels or (self.compiled and args[0].shape[1] != 1)):
            return eager(*args)
        self.finish_background_compile()
        try:
            out = compiled(*args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure before the first success: run eagerly
            if self._proven:
                raise
            self.compiled = self.kernels = False
            self.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            return eager(*args)
        self._proven = True
        return out

    @contextlib.contextmanager
    def eager(self):
        """Calls inside run the eager halves, whether or not the compiled ones are ready."""
        self._eager_depth += 1
        try:
            yield
        finally:
            self._eager_depth -= 1

    def compile_in_background(self, example_inputs, warm_ups=()) -> None:
        """Compile both halves on a worker thread. `example_inputs(tokens)` returns (x, cos, sin) exactly as a
        forward of `tokens` tokens makes them; it is called on the worker, in inference mode like the engine.
        `warm_ups`: callables run on the worker afterwards, such as a first call of the other Triton kernels the
        engine launches later (compiled on first use, each a fraction of a second with the GPU waiting).

        The worker calls the kernel or compiled halves once on layer 0's weights, which is what compiling costs (for
        the kernels, Triton's compilation where its cache is cold); later calls
        with any token count find the graph built (one per half, dynamic in the token count). The example's token
        count differs from every other size of the inputs: compiled code gives equal sizes one symbol, and a later
        call where they differ would compile again. A failure here is not final: the first call compiles as
        before and falls back to the eager halves if that fails too."""
        if not (self.compiled or self.kernels) or self._background_started:
            return
        self._background_started = True
        w = self.layers[0]
        sizes = {self.n_heads, self.n_kv, self.head_dim, self.ffn, self.n_heads * self.head_dim}
        sizes |= {n for t in (w.qkv, w.o, w.gate_up, w.down) for n in t.shape}
        tokens = 97
        while tokens in sizes:
            tokens += 1

        def work():
            t = time.perf_counter()
            try:
                x, cos, sin = example_inputs(tokens)
                q, _, _ = self._pre(*self._pre_args(0, x, cos, sin))
                self._post(*self._post_args(0, x, q))
                for warm_up in warm_ups:
                    warm_up()
            except Exception as exc:  # noqa: BLE001 - reported; the first real call compiles instead
                self.background_note = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            self.background_seconds = time.perf_counter() - t

        device = w.qkv.device

        def run():
            context = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
            with context, torch.inference_mode():
                work()

        self._background = threading.Thread(target=run, name="kanana-longctx-compile", daemon=True)
        self._background.start()

    def finish_background_compile(self) -> None:
        """Wait for the background compilation, if one is running (before compiled calls, and before a CUDA graph
        is captured: a capture must not see another thread's kernels)."""
        thread = self._background
        if thread is not None and thread is not threading.current_thread():
            t = time.perf_counter()
            thread.join()
            self.waited_seconds += time.perf_counter() - t
            self._background = None

    def background_report(self) -> str:
        """How the background compilation went, for the run's report ("" without one)."""
        if not self._background_started or self._background is not None:
            return ""
        what = "layer kernels" if self.kernels else "layer halves"
        return (f"{what} compiled in {self.background_seconds:.1f} s beside the eager haystack stream; "
                f"the probes waited {self.waited_seconds:.1f} s for them")

    def pre(self, i: int, x, cos, sin):
        return self._run(self._pre, pre_attention, *self._pre_args(i, x, cos, sin))

    def _pre_args(self, i: int, x, cos, sin) -> tuple:
        w = self.layers[i]
        return (
            x, w.input_norm, w.input_eps, w.qkv, w.qkv_bias, w.q_norm, w.k_norm, cos, sin,
            self.n_heads, self.n_kv, self.head_dim,
        )  # fmt: skip

    def post(self, i: int, x, o):
        """o: (1, heads, T, head_dim), in whatever layout the attention kernel left it. It enters the compiled half
        as one layout, (1, T, heads x head_dim) with plain strides (a view where it already is one, else a copy):
        compiled code guards on its inputs' strides, and each layout of the tiles, the exact path and the joined
        suffixes was a graph and a compilation of its own."""
        return self._run(self._post, post_attention, *self._post_args(i, x, o))

    def _post_args(self, i: int, x, o) -> tuple:
        w = self.layers[i]
        o = o.transpose(1, 2).reshape(x.shape[1], -1)[None]
        return (
            x, o, w.o, w.o_bias, w.post_norm, w.post_eps, w.gate_up, w.gate_up_bias, w.down, w.down_bias, self.ffn,
        )  # fmt: skip
