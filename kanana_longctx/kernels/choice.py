"""Every kernel decision of a run, in one place: device, dtype, attention kernel, the SDPA backends, per call
cuDNN or FA2 (with a plan cache the run owns), the log-sum-exp op, the attention tile, the decode split count and
what the fast engine's layer halves run on.

Usage: device = pick_device("auto"); attention = pick_attention("auto", device, pick_dtype("auto", device))
       plans = CudnnPlans(); plans.worth(q.shape, kv_len, causal=True); tile_tokens(attention, "cuda")

The loader (kanana_longctx.backends.local) records the device, dtype and kernel it got from here in LoadedModel,
and the run reports them; the fast engine reports its layer halves, tiles and decode mode
(kanana_longctx.fastpath.llama). The
kernels themselves (kanana_longctx.kernels.attention, .split_kv, .merge) only carry these decisions out. Three
things are not decided here but proven where they are used: whether the decode step's variable-length mode is
exact on this GPU (fastpath.decode.split_mode_works), whether the fused merge applies to a pair of tensors
(merge.fused_merge_available) and whether cuDNN's squares read grouped K/V heads in place
(attention._grouped_squares_work). Imports torch only inside functions, so options can be checked cheaply.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

from kanana_longctx.errors import DeviceError

ATTN_CHOICES = ("auto", "cudnn", "fa3", "fa2", "sdpa", "eager")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(requested: str) -> str:
    import torch

    if requested not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device '{requested}' (choose from {', '.join(DEVICE_CHOICES)})")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but CUDA is not available here")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str) -> str:
    if requested not in DTYPE_CHOICES:
        raise DeviceError(f"unknown dtype '{requested}' (choose from {', '.join(DTYPE_CHOICES)})")
    if requested == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return requested


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def cudnn_attention_available() -> bool:
    """cuDNN fused attention: on Hopper it is the FlashAttention-3-class kernel (about 2x PyTorch's FA2 backend)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention import SDPBackend  # noqa: F401

        return torch.backends.cudnn.is_available() and torch.cuda.get_device_capability()[0] >= 8
    except Exception:
        return False


def pick_attention(requested: str, device: str, dtype: str = "bfloat16") -> str:
    """Resolve --attn. `auto`: cudnn on Hopper-class GPUs, fa2 (flash-attn package or SDPA's flash backend) on other
    GPUs, sdpa on CPU. An explicit choice that is not available here is an error, not a silent fallback."""
    import torch

    if requested not in ATTN_CHOICES:
        raise DeviceError(f"unknown attention kernel '{requested}' (choose from {', '.join(ATTN_CHOICES)})")
    if requested == "auto":
        if device != "cuda" or dtype == "float32":  # fused GPU kernels are half precision only
            return "sdpa"
        major = torch.cuda.get_device_capability()[0]
        if major >= 9 and cudnn_attention_available():
            return "cudnn"
        return "fa2"
    if requested in ("cudnn", "fa2", "fa3") and device != "cuda":
        raise DeviceError(f"--attn {requested} needs a CUDA device")
    if requested in ("cudnn", "fa2", "fa3") and dtype == "float32":
        raise DeviceError(f"--attn {requested} needs --dtype bfloat16 or float16 (use sdpa or eager for float32)")
    if requested == "cudnn" and not cudnn_attention_available():
        raise DeviceError("--attn cudnn: cuDNN attention is not available with this torch/GPU")
    if requested == "fa3" and not _has_module("flash_attn_interface"):
        raise DeviceError("--attn fa3 needs the flash-attn 3 package (flash_attn_interface), which is not installed")
    return requested


def hf_attn_implementation(attention: str) -> str:
    """The transformers `attn_implementation` that matches our kernel choice (for the plain HF path)."""
    if attention == "eager":
        return "eager"
    if attention == "fa3":
        return "flash_attention_3"
    if attention == "fa2" and _has_module("flash_attn"):
        return "flash_attention_2"
    return "sdpa"  # cudnn / fa2 without the package / sdpa: SDPA with a backend preference (see sdpa_backends)


def sdpa_backends(attention: str):
    """SDPA backends to allow, fastest first, for a kernel choice (used as a context around model calls)."""
    from torch.nn.attention import SDPBackend

    if attention == "cudnn":
        return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if attention == "fa2":
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]


def sdpa_context(kernel: str, device):
    """A context manager restricting SDPA to the backends of `kernel` (no-op on CPU)."""
    if device.type != "cuda" or kernel in ("sdpa", "eager"):
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(sdpa_backends(kernel), set_priority=True)


def decode_sdpa_context(kernel: str, device):
    """The SDPA backends for one-token decoding steps through transformers' forward (the reuse engine): never
    cuDNN, whose execution plan is built anew for every new key length (~130 ms a new shape, below), and a step
    brings a new length every time; FA2, or the memory-efficient kernel where a padding mask is passed."""
    return sdpa_context("fa2" if kernel == "cudnn" else kernel, device)


# cuDNN builds an execution plan for every new (shape, causal) it sees, while FA2's kernels take any shape for free
# (docs/performance.md: measurements behind the code). NIAH probes bring new shapes all the time, so a call goes
# to cuDNN only when its shape was planned before or its work is large enough to repay the plan: at cuDNN's
# nearly twice FA2's rate, 2e12 FLOPs per call over 32 layers save about a plan's cost.
CUDNN_MIN_CALL_FLOPS = 2e12


class CudnnPlans:
    """The shapes cuDNN has built a plan for, as far as this run knows: one per engine (so per run), never per
    process, so that one run's shapes do not change another's choices."""

    def __init__(self):
        self._planned: set[tuple] = set()

    def worth(self, q_shape, kv_len: int, causal: bool, *, recurring: bool = False) -> bool:
        """Whether a cuDNN call of this shape is worth it (see CUDNN_MIN_CALL_FLOPS); remembers planned shapes.
        `recurring` shapes (the fixed tiles of `attend_tiles`) are always worth it: their plan is built once per
        run."""
        key = (tuple(q_shape), kv_len, causal)
        if key in self._planned:
            return True
        if recurring:
            self._planned.add(key)
            return True
        b, h, t, d = q_shape
        flops = 4.0 * b * h * t * kv_len * d * (0.5 if causal else 1.0)
        if flops >= CUDNN_MIN_CALL_FLOPS:
            self._planned.add(key)
            return True
        return False


LAYER_KERNELS_ENV = "KANANA_LONGCTX_LAYER_KERNELS"  # "0": compiled layer halves where the kernel halves would run


def layer_halves(device_type: str, head_dim: int, *, fused_passes: bool, qk_norms: bool) -> str:
    """What the fast engine's fused layer halves run on: "kernels" (kernels.pointwise and kernels.rope, the
    residual adds in the matmuls: CUDA with Triton, an even power-of-two head_dim, no per-head q/k norms, which
    only the other halves apply), "compiled" (torch.compile) or "eager". `fused_passes`: whether the memory-bound
    passes are to be fused at all (fastpath.layers.compile_wanted: on CUDA, unless switched off)."""
    if not fused_passes:
        return "eager"
    kernels = (
        device_type == "cuda" and not qk_norms and head_dim >= 4 and head_dim & (head_dim - 1) == 0
        and os.environ.get(LAYER_KERNELS_ENV, "1") != "0" and triton_modules() is not None
    )
    return "kernels" if kernels else "compiled"


def triton_modules():
    """(triton, triton.language), or None where Triton is not installed (CPU-only torch builds have none): the
    fused merge and the decode kernels are built from them, or their torch fallbacks run."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def triton_kernels(build):
    """A cached loader of Triton kernels: `build(triton, tl)` defines and returns them, once, on the first call of
    the loader; the loader returns None where Triton is not installed (the callers' torch fallbacks run then)."""

    @functools.cache
    def load():
        modules = triton_modules()
        return None if modules is None else build(*modules)

    return load


def private_op(name: str):
    """A private aten op of this torch, or None (they move between versions)."""
    import torch

    return getattr(torch.ops.aten, name, None)


def lse_kernel_available(kernel: str, device) -> bool:
    """Whether the log-sum-exp returning op for `kernel` exists in this torch."""
    if device.type == "cuda":
        name = "_scaled_dot_product_cudnn_attention" if kernel == "cudnn" else "_scaled_dot_product_flash_attention"
        return private_op(name) is not None
    return private_op("_scaled_dot_product_flash_attention_for_cpu") is not None


def lse_op(q, kv_len: int, *, causal: bool, kernel: str, plans: CudnnPlans, recurring: bool = False) -> str:
    """Which op computes (out, lse) for queries `q` over `kv_len` keys: "cudnn", "efficient" (CUDA float32: the
    flash and cuDNN kernels are half-precision only), "flash", "flash_cpu" or "reference" (float32, any device)."""
    import torch

    cuda = q.device.type == "cuda"
    if kernel == "cudnn" and cuda and not plans.worth(q.shape, kv_len, causal, recurring=recurring):
        kernel = "fa2"
    if cuda and kernel == "cudnn" and private_op("_scaled_dot_product_cudnn_attention"):
        return "cudnn"
    if cuda and q.dtype == torch.float32 and private_op("_scaled_dot_product_efficient_attention"):
        return "efficient"
    if cuda and kernel in ("cudnn", "fa2", "sdpa") and private_op("_scaled_dot_product_flash_attention"):
        return "flash"
    if q.device.type == "cpu" and kernel != "eager" and private_op("_scaled_dot_product_flash_attention_for_cpu"):
        return "flash_cpu"
    return "reference"


def plain_call_kernel(q, kv_len: int, *, kernel: str, plans: CudnnPlans) -> str:
    """The SDPA kernel of a call that needs no mask (plain causal prefill, or one decode query over every key):
    cuDNN only where its plan pays, and SDPA's own float32-capable choice for float32."""
    import torch

    T = q.shape[2]
    if kernel == "cudnn" and (T == 1 or not plans.worth(q.shape, kv_len, True)):
        kernel = "fa2"
    if q.dtype == torch.float32:
        kernel = "sdpa"  # let SDPA pick a float32-capable backend
    return kernel


def edge_kernel(kernel: str) -> str:
    """The kernel of a ragged first or last tile, run at its exact shape: FA2 where the tiles run on cuDNN (no plan
    to build for a shape seen once), else the tiles' own."""
    return "fa2" if kernel == "cudnn" else kernel


# Tile of the fixed-shape attention (kernels.attention.attend_tiles). Only cuDNN needs it (a plan per shape); FA2
# and the CPU kernels take any shape for free, so there the exact split path is cheaper. 1024: from 1024 up the
# rectangle runs near cuDNN's full rate, a whole 128K grid needs about 128 plans, and padding costs about one
# tile of attention rows per probe: the smallest such tile wins (docs/performance.md: fixed-shape tiles).
CUDNN_TILE_TOKENS = 1024


TILE_ENV = "KANANA_LONGCTX_TILE"  # tokens: overrides the cuDNN tile (an experiment knob of docs/performance.md)


def tile_tokens(kernel: str, device_type: str) -> int:
    """The attention tile of a fast run (0: exact shapes)."""
    if kernel != "cudnn" or device_type != "cuda":
        return 0
    override = os.environ.get(TILE_ENV, "")
    return int(override) if override.isdigit() and int(override) >= 64 else CUDNN_TILE_TOKENS


SPLIT_MIN_KEYS = 1024  # keys per split at least: below this a split's fixed cost outweighs its share of the work


def choose_splits(rows: int, kv_heads: int, capacity: int, sms: int) -> int:
    """Splits of the capacity for masked split-KV decoding: a power of two dividing the capacity into splits of
    >= SPLIT_MIN_KEYS keys (a multiple of 16: the kernel's bias alignment), enough for ~2 thread blocks per SM
    (rows x kv heads x splits of them)."""
    splits = 1
    while (
        rows * kv_heads * splits < 2 * sms
        and capacity % (splits * 2) == 0
        and capacity // (splits * 2) >= SPLIT_MIN_KEYS
        and capacity // (splits * 2) % 16 == 0
    ):
        splits *= 2
    return splits


TRITON_SPLIT_MIN_KEYS = 256  # the Triton decode kernel's splits: a program's setup is a few blocks of 64 keys


def triton_split_count(rows: int, kv_heads: int, buffer_tokens: int, sms: int) -> int:
    """Splits per row for the Triton decode kernel (kernels.decode_triton): the first power of two giving at least
    4 programs per SM (rows x kv heads x splits of them: a program streams one split's keys, and more of them in
    flight hide memory latency) while a split of the whole buffer keeps >= TRITON_SPLIT_MIN_KEYS keys."""
    splits = 1
    while rows * kv_heads * splits < 4 * sms and buffer_tokens // (splits * 2) >= TRITON_SPLIT_MIN_KEYS:
        splits *= 2
    return splits


def live_split_count(rows: int, kv_heads: int, buffer_tokens: int, sms: int) -> int:
    """Splits per row for the variable-length layout: a power of two giving ~2 thread blocks per SM (rows x kv
    heads x splits of them) while a split of the whole buffer keeps >= SPLIT_MIN_KEYS keys. No divisibility is
    needed: split lengths are cut per batch (`SplitLayout.fit`)."""
    splits = 1
    while rows * kv_heads * splits < 2 * sms and buffer_tokens // (splits * 2) >= SPLIT_MIN_KEYS:
        splits *= 2
    return splits
