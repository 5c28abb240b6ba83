"""The one place that owns the model, device, dtype and attention kernel, and says what it chose.

Usage: loaded = load_model(resolve_model("smollm2"), RunOptions(device="cpu"))

Every choice (device, dtype, kernel, YaRN) is made here, recorded in `LoadedModel`, and reported by the caller;
nothing else in the package picks a device or a kernel. YaRN is applied in memory to the config before the weights
load, with the same parameters `kanana-longctx config --yarn` writes, and verified on the built rotary embedding.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field

from kanana_longctx.errors import DeviceError, ModelNotFound
from kanana_longctx.hub import ModelSource
from kanana_longctx.options import RunOptions
from kanana_longctx.tokenizer import quiet_transformers

ATTN_CHOICES = ("auto", "cudnn", "fa3", "fa2", "sdpa", "eager")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass
class LoadedModel:
    """A model ready to run, with every choice that was made for it (recorded in run.json)."""

    model: object  # transformers PreTrainedModel
    device: str  # "cpu" | "cuda"
    dtype: str  # "float32" | "bfloat16" | "float16"
    attention: str  # the kernel actually used: cudnn | fa3 | fa2 | sdpa | eager
    gpu_name: str = ""
    native_context: int = 0  # positions the model was trained for (original_max_position_embeddings with YaRN)
    max_context: int = 0  # positions it can address (native x factor with YaRN)
    yarn: dict | None = None  # the YaRN parameters in force, or None
    rope_attention_factor: float = 1.0  # what the built rotary embedding really uses
    notes: list[str] = field(default_factory=list)


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


@contextlib.contextmanager
def _quiet_gguf_progress():
    """transformers' GGUF loader draws a tqdm bar that ignores its own progress-bar switch; silence it for the
    duration of one load (our rich progress is the one the user should see)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def load_config(source: ModelSource, options: RunOptions):
    """Load the transformers config (no weights) and apply or remove YaRN in memory as asked."""
    from transformers import AutoConfig

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(
            source.directory, trust_remote_code=options.trust_remote_code, **source.transformers_kwargs()
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"cannot load a model config from {source.spec}: {first}") from exc
    from kanana_longctx.yarn.live import set_config_yarn, yarn_in_config

    if options.yarn is True:
        set_config_yarn(config, options)
    elif options.yarn is False:
        set_config_yarn(config, None)
    return config, yarn_in_config(config)


def has_tensor_parallel_plan(config) -> bool:
    """Whether transformers ships a tensor-parallel plan for this architecture (Llama, Qwen2, Mistral, ...)."""
    return bool(getattr(config, "base_model_tp_plan", None))


def model_parallel_kwargs(config, options: RunOptions) -> tuple[dict, str]:
    """from_pretrained arguments for `--tp N` and a line saying what was chosen.

    Under torchrun with N processes: transformers' own tensor parallelism (`tp_plan="auto"`, one shard of every
    layer per GPU). In one process: accelerate's `device_map="auto"`, whole layers spread over the visible GPUs.
    """
    import os

    if options.tp <= 1:
        return {}, ""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        if world != options.tp:
            raise DeviceError(f"--tp {options.tp} needs exactly {options.tp} torchrun processes, not {world}")
        if not has_tensor_parallel_plan(config):
            raise DeviceError(
                f"transformers has no tensor-parallel plan for '{config.model_type}': run --tp {options.tp} "
                "without torchrun to spread its layers over the GPUs instead"
            )
        return {"tp_plan": "auto"}, f"tensor parallel over {world} processes (transformers tp_plan)"
    return {"device_map": "auto"}, f"layers spread over the visible devices (accelerate device_map, --tp {options.tp})"


def load_model(source: ModelSource, options: RunOptions) -> LoadedModel:
    """Load weights on the chosen device/dtype with the chosen kernel; report every choice."""
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(options.device)
    dtype = pick_dtype(options.dtype, device)
    attention = pick_attention(options.attn, device, dtype)
    config, yarn = load_config(source, options)
    torch_dtype = getattr(torch, dtype)
    parallel, parallel_note = model_parallel_kwargs(config, options)
    try:
        with _quiet_gguf_progress():
            model = AutoModelForCausalLM.from_pretrained(
                source.directory,
                config=config,
                dtype=torch_dtype,
                attn_implementation=hf_attn_implementation(attention),
                trust_remote_code=options.trust_remote_code,
                **parallel,
                **source.transformers_kwargs(),
            )
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"cannot load model weights from {source.spec}: {first}") from exc
    if not parallel:  # a sharded model is already where transformers/accelerate put it
        model = model.to(device=device, dtype=torch_dtype)
    loaded = finish_loaded(model.eval(), device, dtype, attention, yarn)
    if parallel_note:
        loaded.notes.append(parallel_note)
    return loaded


def finish_loaded(model, device: str, dtype: str, attention: str, yarn: dict | None) -> LoadedModel:
    """Wrap an already built model (also used by the benchmark's random-weight models)."""
    import torch

    from kanana_longctx.yarn.live import context_limits, rotary_attention_factor

    gpu_name = torch.cuda.get_device_name() if device == "cuda" else ""
    native, maximum = context_limits(model.config, yarn)
    return LoadedModel(
        model=model,
        device=device,
        dtype=dtype,
        attention=attention,
        gpu_name=gpu_name,
        native_context=native,
        max_context=maximum,
        yarn=yarn,
        rope_attention_factor=rotary_attention_factor(model),
    )
