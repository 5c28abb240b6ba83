"""An in-process transformers model, for the backends that run on one (fast, hf): its config first, then its
weights, once, whichever backend runs on it; and what those backends share (stop ids, decoding ids into a
Generation, how they describe themselves, choosing among them under `--engine auto`).

Usage: model = LocalModel(request); model.context(); loaded = model.load()
       loaded = load_model(resolve_model("smollm2"), RunOptions(device="cpu"))

The device, dtype and attention kernel come from kanana_longctx.kernels.choice and are recorded in `LoadedModel`;
YaRN is applied in memory to the config before the weights load, the recipe of the config's family with the
same blocks `kanana-longctx config --yarn` writes (kanana_longctx.yarn.live, .recipes), and read back from the
built rotary embedding. Torch and transformers
are imported inside functions only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kanana_longctx.backends import gpu
from kanana_longctx.backends.base import (
    BackendInfo, BackendRequest, ContextLimits, DeviceFigures, Generation, GenerationSink, LoopStats, RunJob,
)
from kanana_longctx.errors import DeviceError, ModelNotFound, ProbeError
from kanana_longctx.hub import ModelSource, malformed_json
from kanana_longctx.kernels.choice import hf_attn_implementation, pick_attention, pick_device, pick_dtype
from kanana_longctx.options import RunOptions
from kanana_longctx.plan.flops import ModelShape
from kanana_longctx.probes.spec import Probe
from kanana_longctx.tokenizer import quiet_transformers
from kanana_longctx.yarn.live import apply_recipe, context_limits, remove_yarn, rotary_attention_factor, yarn_in_config


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


def load_config(source: ModelSource, options: RunOptions, notes: list[str] | None = None):
    """Load the transformers config (no weights) and apply or remove YaRN in memory as asked (`notes` gets the
    recipe chosen and why)."""
    from transformers import AutoConfig

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(
            source.directory, trust_remote_code=options.trust_remote_code, **source.transformers_kwargs()
        )
    except Exception as exc:
        broken = "" if source.gguf_file else malformed_json(source.directory)  # where transformers only says "invalid"
        first = broken or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"cannot load a model config from {source.spec}: {first}") from exc
    if options.yarn is True:
        recipe = apply_recipe(config, options.yarn_recipe, **options.yarn_numbers())
        if notes is not None:
            notes.extend([f"YaRN {recipe.describe()}", *recipe.notes])
    elif options.yarn is False:
        remove_yarn(config)
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
    yarn_notes: list[str] = []
    config, yarn = load_config(source, options, yarn_notes)
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
    loaded.notes.extend(yarn_notes)
    if parallel_note:
        loaded.notes.append(parallel_note)
    return loaded


def finish_loaded(model, device: str, dtype: str, attention: str, yarn: dict | None) -> LoadedModel:
    """Wrap an already built model (also used by the benchmark's random-weight models)."""
    import torch

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


STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>")  # end-of-turn tokens of common templates


def stop_token_ids(tokenizer, model) -> set[int]:
    """The ids that end an answer: the tokenizer's and the generation config's EOS, and the end-of-turn tokens
    of common chat templates where the vocabulary has them."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for token in STOP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


def make_stop(tokenizer, stop_ids: set[int], form: str) -> Callable[[list[int]], bool]:
    """`stop(ids) -> bool` for greedy decoding: a stop id, or for retform a line break after some content (base
    models ramble on)."""

    def stop(out: list[int]) -> bool:
        if out[-1] in stop_ids:
            return True
        if form == "retform":
            text = tokenizer.decode(out, skip_special_tokens=True)
            return "\n" in text.lstrip()
        return False

    return stop


class LocalModel:
    """The in-process model of a run: `context()` reads the config only (or the given model's), `load()` the
    weights, once. Backends that run on it share it."""

    def __init__(self, request: BackendRequest):
        self.request = request
        self.options: RunOptions = request.options
        self.tokenizer = request.tokenizer
        self.loaded: LoadedModel | None = request.loaded
        self.stop_ids: set[int] = set()

    def context(self) -> ContextLimits:
        """The config's limits; before that, the device, dtype and kernel are resolved as `load` will, so that a
        kernel this machine lacks is refused before the run directory is touched."""
        if self.loaded is not None:
            config, yarn = self.loaded.model.config, yarn_in_config(self.loaded.model.config)
        else:
            device = pick_device(self.options.device)
            pick_attention(self.options.attn, device, pick_dtype(self.options.dtype, device))
            config, yarn = load_config(self.request.source, self.options)
        native, maximum = context_limits(config, yarn)
        return ContextLimits(native=native, maximum=maximum, yarn=yarn)

    def load(self) -> LoadedModel:
        if self.loaded is None:
            index = self.request.device_index
            if index is not None and self.options.device != "cpu":
                import torch

                if torch.cuda.is_available():
                    torch.cuda.set_device(index % torch.cuda.device_count())
            self.loaded = load_model(self.request.source, self.options)
        if not self.stop_ids:
            self.stop_ids = stop_token_ids(self.tokenizer, self.loaded.model)
        return self.loaded

    def info(self, engine: str, notes: Sequence[str] = ()) -> BackendInfo:
        """How a backend on this model describes itself."""
        import torch
        import transformers

        loaded = self.loaded
        yarn = "on " + str(loaded.yarn.get("factor")) if loaded.yarn else "off"
        headline = (
            f"model {self.options.model} on {loaded.gpu_name or loaded.device} ({loaded.dtype}), attention"
            f" {loaded.attention}, engine {engine}, YaRN {yarn} (rotary attention factor"
            f" {loaded.rope_attention_factor:.6f})"
        )
        return BackendInfo(
            engine=engine,
            versions={"torch": torch.__version__, "transformers": transformers.__version__},
            native_context=loaded.native_context,
            max_context=loaded.max_context,
            yarn=loaded.yarn,
            device=loaded.device,
            dtype=loaded.dtype,
            attention=loaded.attention,
            gpu_name=loaded.gpu_name,
            notes=(*notes, *loaded.notes),
            headline=headline,
            shape=ModelShape.from_config(loaded.model.config),
            extra={"rope_attention_factor": loaded.rope_attention_factor},
        )

    def generation(self, probe: Probe, output_ids, seconds: float, prefill_tokens: int, stop, max_new: int):
        """A probe's generated ids as a Generation: decoded (special tokens skipped), and whether the answer ran
        into `max_new` without a stop."""
        hit = len(output_ids) >= max_new and not (output_ids and stop(list(output_ids)))
        return Generation(
            probe=probe,
            text=self.tokenizer.decode(output_ids, skip_special_tokens=True),
            new_tokens=len(output_ids),
            hit_max_new_tokens=hit,
            seconds=seconds,
            prefill_tokens=prefill_tokens,
        )

    def release(self, ran: bool) -> DeviceFigures:
        """The run's peak memory, then its memory handed back, then the matmul rate (after a run with probes)."""
        device = self.loaded.device if self.loaded is not None else "cpu"
        peak = gpu.peak_memory_gib(device)
        gpu.release_memory(device)
        return DeviceFigures(peak_memory_gib=peak, matmul_tflops=gpu.matmul_rate(device, ran))


class LocalBackend:
    """Base of the backends that run on a LocalModel. A subclass names itself, says which loaded models it
    supports, and implements `run`."""

    name = ""
    label = ""  # what the run's notes call it when `auto` falls back to it

    def __init__(self, model: LocalModel):
        self.model = model

    @staticmethod
    def supports(loaded: LoadedModel, options: RunOptions) -> tuple[bool, str]:
        """Whether this backend can run `loaded`; the reason when it cannot."""
        return True, ""

    def context(self) -> ContextLimits:
        return self.model.context()

    def load(self, notes: Sequence[str] = ()) -> BackendInfo:
        loaded = self.model.load()
        ok, why = self.supports(loaded, self.model.options)
        if not ok:
            raise ProbeError(f"--engine {self.name}: {why}")
        return self.model.info(self.name, notes)

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        raise NotImplementedError

    def close(self, ran: bool) -> DeviceFigures:
        return self.model.release(ran)


class AutoLocalBackend:
    """`--engine auto` on an in-process model: after loading, the first of `candidates` (LocalBackend classes, in
    the registry's order) that supports the model runs, and the run's notes say why the ones before it did not."""

    def __init__(self, model: LocalModel, candidates: Sequence[type]):
        self.model = model
        self.candidates = list(candidates)
        self.chosen: LocalBackend | None = None

    def context(self) -> ContextLimits:
        return self.model.context()

    def load(self) -> BackendInfo:
        loaded = self.model.load()
        refused = ""
        for cls in self.candidates:
            ok, why = cls.supports(loaded, self.model.options)
            if ok:
                self.chosen = cls(self.model)
                return self.chosen.load([f"{cls.label}: {refused}"] if refused else [])
            refused = refused or why
        raise ProbeError(f"no engine runs this model: {refused}")

    def run(self, job: RunJob, sink: GenerationSink) -> LoopStats:
        return self.chosen.run(job, sink)

    def close(self, ran: bool) -> DeviceFigures:
        return self.model.release(ran)
