"""The grid benchmark: our runner vs the usual HF loop on a random-weight model of a named shape.

Usage: kanana-longctx bench --shape llama-8b --preset readme-32k --naive-subset 64 --json bench-32k.json

What it reports (the table of docs/performance.md): grid, probes, prompt tokens, FLOPs without reuse, the bf16
matmul rate measured in the same run, T_peak = FLOPs / that rate, our wall time (model load excluded) and its
ratio to T_peak, the naive loop's time on an evenly spread subset of probes and our time on the same subset
(speed-up), peak GPU memory, the attention kernel, and how close our last-token logits are to transformers'.
Timing thresholds live here, as reported numbers, never in tests.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kanana_longctx.errors import BadInput
from kanana_longctx.limits import MAX_LIMIT, MAX_MEMORY_GIB, MAX_NEW_TOKENS
from kanana_longctx.run.reporting import NullReporter


@dataclass(frozen=True)
class BenchRequest:
    shape: str = "llama-8b"
    preset: str = "readme-32k"
    lengths: str | None = None
    depths: str | None = None
    naive_subset: int = 64
    tokenizer: str = "smollm2"
    haystack: str = "builtin"
    form: str = "retform"
    attn: str = "auto"
    device: str = "auto"
    max_new_tokens: int = 0
    check_logits: int = 3  # probes whose last-token logits are compared with transformers
    max_memory_gib: float = 0.0  # our runner's GPU memory cap (RunOptions.max_memory_gib); 0: none
    subset_only: bool = False  # time ours and the naive loop on the subset only (the report's grid is the subset)
    engine: str = "auto"  # our runner's --engine (auto: fast where it applies, else reuse)


@dataclass(frozen=True)
class BenchReport:
    grid: str
    probes: int
    prompt_tokens: int
    flops: float
    matmul_tflops: float
    t_peak_s: float
    ours_s: float
    ours_vs_t_peak: float
    ours_computed_flops: float  # what prefix reuse left to compute
    ours_prefill_s: float
    ours_decode_s: float
    ours_setup_s: float
    naive_probes: int
    naive_s: float
    ours_subset_s: float
    speedup: float
    peak_memory_gib: float
    naive_peak_memory_gib: float
    kv_rows: int
    chunk_tokens: int
    max_memory_gib: float  # the cap our runner planned under (0: none)
    attention: str
    engine: str
    gpu: str
    shape: str
    max_new_tokens: int
    logits_rel_err_ours: float
    logits_rel_err_hf_eager: float
    argmax_agree: str
    versions: dict

    @property
    def ours_prefill_tflops(self) -> float:
        return self.ours_computed_flops / self.ours_prefill_s / 1e12 if self.ours_prefill_s > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class _NotesReporter(NullReporter):
    """No progress bar; the run's notes (engine, memory plan, compilation) go to the benchmark's log."""

    def __init__(self, say):
        self.note = say


def spread_subset(probes, count: int):
    """`count` probes evenly spread over the grid sorted by (length, depth): every length and many depths."""
    ordered = sorted(probes, key=lambda p: (p.length, p.depth))
    if count >= len(ordered):
        return ordered
    step = (len(ordered) - 1) / (count - 1) if count > 1 else 0
    return [ordered[round(i * step)] for i in range(count)]


def _naive_loop(loaded, probes, max_new_tokens: int, pad_id: int) -> tuple[float, float]:
    """One `generate` per probe, default SDPA, the full prompt every time: what the usual HF scripts do. Returns
    its seconds and peak GPU memory (GiB)."""
    import torch

    from kanana_longctx.backends import gpu
    from kanana_longctx.backends.hf import generate_batch

    naive = dataclasses.replace(loaded, attention="sdpa")  # no backend preference: SDPA's own choice
    gpu.reset_peak(loaded.device)
    gpu.synchronize(loaded.device)
    t = time.perf_counter()
    for p in probes:  # no stop ids: every call decodes max_new_tokens, like a script without EOS handling
        generate_batch(naive, [p.input_ids], max_new_tokens=max_new_tokens, stop_ids=set(), pad_id=pad_id)
    gpu.synchronize(loaded.device)
    seconds = time.perf_counter() - t
    torch.cuda.empty_cache() if loaded.device == "cuda" else None
    return seconds, gpu.peak_memory_gib(loaded.device)


def _our_logits(loaded, probes, engine: str):
    """`logits(ids)`: the last position's logits as our engine computes them: the fast forward, or (reuse) the
    model's own forward over a cached first half, cut back and extended as a probe's suffix is."""
    import torch

    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    if engine == "fast":
        fast = PrefixReusingLlama(loaded, max_tokens=max(p.n_tokens for p in probes) + 1)
        return lambda ids: fast.prefill(ids, 0)
    from kanana_longctx.backends.hfcache import PrefixCache
    from kanana_longctx.kernels.hf_prefix import prefix_attention

    def logits(ids):
        cache = PrefixCache(loaded.model)
        half = len(ids) // 2
        with torch.inference_mode(), prefix_attention(loaded.model):
            cache.extend(ids.tolist(), 0)
            return cache.extend(ids[half:].tolist(), half, want_logits=True)

    return logits


def _logit_agreement(model, loaded, probes, engine: str) -> tuple[float, float, str]:
    """Our engine vs transformers (sdpa) on a few probes; transformers eager vs sdpa is the bf16 noise floor."""
    import torch

    if not probes:
        return 0.0, 0.0, "0/0"
    errs, floors, agree = [], [], 0
    ours_of = _our_logits(loaded, probes, engine)
    device = next(model.parameters()).device
    for p in probes:
        ids = torch.tensor(list(p.input_ids), device=device)
        ours = ours_of(ids)
        with torch.inference_mode():
            model.config._attn_implementation = "sdpa"
            ref = model(ids[None], logits_to_keep=1).logits[0, -1].float()
            model.config._attn_implementation = "eager"
            try:
                eager = model(ids[None], logits_to_keep=1).logits[0, -1].float()
            finally:
                model.config._attn_implementation = "sdpa"
        errs.append(float((ours - ref).norm() / ref.norm()))
        floors.append(float((eager - ref).norm() / ref.norm()))
        agree += int(int(ours.argmax()) == int(ref.argmax()))
    del ours_of
    return max(errs), max(floors), f"{agree}/{len(probes)}"


def _check_numbers(request: BenchRequest) -> None:
    """The request's numbers within their bounds (kanana_longctx.limits), before a tokenizer or model loads."""
    for value, low, high, flag in (
        (request.naive_subset, 0, MAX_LIMIT, "--naive-subset"),
        (request.max_new_tokens, 0, MAX_NEW_TOKENS, "--max-new-tokens"),
        (request.max_memory_gib, 0, MAX_MEMORY_GIB, "--max-memory"),
    ):
        if not low <= value <= high:
            raise BadInput(f"{flag} must be between {low:,} and {high:,}, got {value!r}")


def prepare_bench(request: BenchRequest, say):
    """The probes, the measured matmul rate and the random model: (probe_set, grid name, peak, loaded, tokenizer)."""
    from kanana_longctx.backends.gpu import measure_matmul_tflops
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.bench.models import SHAPES, random_model
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.kernels.choice import pick_attention, pick_device
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.probes.grid import resolve_grid
    from kanana_longctx.tokenizer import load_tokenizer
    from kanana_longctx.yarn.live import yarn_in_config

    _check_numbers(request)
    if request.shape not in SHAPES:
        raise BadInput(f"unknown model shape '{request.shape}' (choose from {', '.join(SHAPES)})")
    device = pick_device(request.device)
    if device != "cuda" and not request.shape.startswith("tiny"):
        raise BadInput("the benchmark needs CUDA for real shapes (use a tiny-* shape for a CPU smoke run)")
    dtype = "bfloat16" if device == "cuda" else "float32"
    attention = pick_attention(request.attn, device)
    tokenizer = load_tokenizer(resolve_model(request.tokenizer))
    grid = resolve_grid(preset=None if request.lengths else request.preset, lengths=request.lengths, depths=request.depths)
    t = time.perf_counter()
    probe_set = build_probe_set(
        ProbeRequest.from_grid(grid, haystack=request.haystack, form=request.form, lang="en"), tokenizer
    )
    say(f"built {len(probe_set.probes)} probes in {time.perf_counter() - t:.1f} s")
    peak = measure_matmul_tflops() if device == "cuda" else 0.0
    say(f"bf16 matmul rate: {peak:.0f} TFLOP/s")
    t = time.perf_counter()
    model = random_model(request.shape, device=device, dtype=dtype, yarn=True)
    experts = getattr(model.config, "_experts_implementation", None) if getattr(model.config, "num_experts_per_tok", 0) else None
    say(f"built the random {request.shape} model ({type(model).__name__}"
        + (f", experts: {experts}" if experts else "") + f") in {time.perf_counter() - t:.1f} s")
    if model.config.vocab_size < len(tokenizer):
        raise BadInput(f"the tokenizer has {len(tokenizer)} tokens, more than the model's {model.config.vocab_size}")
    loaded = finish_loaded(model, device, dtype, attention, yarn_in_config(model.config))
    return probe_set, grid.name, peak, loaded, tokenizer


def _say_ours(say, what: str, ran, t_peak: float) -> None:
    from kanana_longctx.plan.memory import kv_rows_text

    ratio = f" = {ran.wall_seconds / t_peak:.2f} x T_peak" if t_peak else ""
    say(f"ours ({ran.backend.engine}) on {what}: {ran.wall_seconds:.1f} s{ratio}, peak {ran.peak_memory_gib:.1f} GiB "
        f"({kv_rows_text(ran.kv_rows)}, {ran.chunk_tokens}-token chunks), computed {ran.computed_flops:.3e} of "
        f"{ran.effective_flops:.3e} FLOPs; prefill {ran.prefill_seconds:.1f} s ({ran.prefill_tflops:.0f} TFLOP/s on "
        f"computed), decode {ran.decode_seconds:.1f} s, setup {ran.setup_seconds:.1f} s")


def run_bench(request: BenchRequest, progress=None) -> BenchReport:
    """Ours on the whole grid (unless `subset_only`), ours and the naive loop on the spread subset, the logits
    check; one report. With `subset_only` the report's grid, probes, FLOPs and T_peak are the subset's."""
    import torch
    import transformers

    from kanana_longctx import __version__
    from kanana_longctx.options import RunOptions
    from kanana_longctx.plan.flops import ModelShape, prefill_flops
    from kanana_longctx.run.check import default_max_new_tokens
    from kanana_longctx.run.runner import execute

    say = progress or (lambda message: None)
    if request.subset_only and not request.naive_subset:
        raise BadInput("--subset-only needs --naive-subset N (the probes to time)")
    probe_set, grid_name, peak, loaded, tokenizer = prepare_bench(request, say)
    subset = spread_subset(probe_set.probes, request.naive_subset) if request.naive_subset else []
    if request.subset_only:
        probe_set, grid_name = dataclasses.replace(probe_set, probes=tuple(subset)), f"{grid_name} subset"
    shape = ModelShape.from_config(loaded.model.config)
    flops = sum(prefill_flops(shape, p.n_tokens) for p in probe_set.probes)
    max_new = request.max_new_tokens or default_max_new_tokens(probe_set, tokenizer)
    options = RunOptions(model=f"random:{request.shape}", max_new_tokens=max_new, max_memory_gib=request.max_memory_gib,
                         engine=request.engine)
    t_peak = flops / (peak * 1e12) if peak else 0.0
    notes = _NotesReporter(say)
    with tempfile.TemporaryDirectory() as tmp:
        say(f"our runner on {grid_name} ({len(probe_set.probes)} probes, {flops:.3e} FLOPs without reuse, T_peak "
            f"{t_peak:.1f} s) ...")
        ours = execute(probe_set, options, Path(tmp) / "grid", loaded=loaded, tokenizer=tokenizer, reporter=notes)
        _say_ours(say, grid_name, ours, t_peak)
        ours_sub = ours if request.subset_only else None
        if subset and ours_sub is None:
            sub_set = dataclasses.replace(probe_set, probes=tuple(subset))
            ours_sub = execute(sub_set, options, Path(tmp) / "subset", loaded=loaded, tokenizer=tokenizer, reporter=notes)
            _say_ours(say, f"the {len(subset)}-probe subset", ours_sub, 0.0)
    naive, naive_peak = 0.0, 0.0
    if subset:
        say(f"naive loop on the same {len(subset)} probes ...")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        naive, naive_peak = _naive_loop(loaded, subset, max_new, pad)
        say(f"naive: {naive:.1f} s ({naive / ours_sub.wall_seconds:.2f}x ours), peak {naive_peak:.1f} GiB")
    pool = subset or list(probe_set.probes)
    # <= 8K tokens: the eager reference materialises heads x L x L scores (at 16K it ran out: docs/performance.md)
    check = [p for p in pool if p.n_tokens <= 8192][-request.check_logits :] if request.check_logits else []
    gc.collect()
    if loaded.device == "cuda":
        torch.cuda.empty_cache()
    err, floor, agree = _logit_agreement(loaded.model, loaded, check, ours.backend.engine)
    return BenchReport(
        grid=grid_name,
        probes=len(probe_set.probes),
        prompt_tokens=sum(p.n_tokens for p in probe_set.probes),
        flops=flops,
        matmul_tflops=peak,
        t_peak_s=t_peak,
        ours_s=ours.wall_seconds,
        ours_vs_t_peak=ours.wall_seconds / t_peak if t_peak else 0.0,
        ours_computed_flops=ours.computed_flops,
        ours_prefill_s=ours.prefill_seconds,
        ours_decode_s=ours.decode_seconds,
        ours_setup_s=ours.setup_seconds,
        naive_probes=len(subset),
        naive_s=naive,
        ours_subset_s=ours_sub.wall_seconds if ours_sub else 0.0,
        speedup=naive / ours_sub.wall_seconds if ours_sub and ours_sub.wall_seconds else 0.0,
        peak_memory_gib=ours.peak_memory_gib,
        naive_peak_memory_gib=naive_peak,
        kv_rows=ours.kv_rows,
        chunk_tokens=ours.chunk_tokens,
        max_memory_gib=request.max_memory_gib,
        attention=loaded.attention,
        engine=ours.backend.engine,
        gpu=loaded.gpu_name or loaded.device,
        shape=request.shape,
        max_new_tokens=max_new,
        logits_rel_err_ours=err,
        logits_rel_err_hf_eager=floor,
        argmax_agree=agree,
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "kanana-longctx": __version__},
    )


def write_report(report: BenchReport, path: Path) -> None:
    from kanana_longctx.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=2) + "\n")
