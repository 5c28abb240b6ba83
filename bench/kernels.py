"""GPU check of the building blocks: attention kernels with a cached prefix, and the fast forward vs transformers.

Usage: python bench/kernels.py [--shape llama-8b] [--json OUT.json]

Prints (1) relative error of `attend` (split cuDNN + merge, FA2 lower-right, ...) against a float32 reference on
fresh random inputs, with TFLOP/s over the causal work; (2) for a random-weight model of the named shape, the
last-token logits of our prefix-reusing forward against transformers' own forward, and the time of a full
prefill, a suffix prefill over a cached prefix, and one decode step, at several lengths.
"""

from __future__ import annotations

import argparse

import torch

from kanana_longctx.bench.timing import write_rows
from kanana_longctx.kernels.attention import attend, reference_attention_with_lse


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def timed(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    times.sort()
    return times[len(times) // 2]


def attention_checks(rows):
    dev = "cuda"
    for q_len, prefix in [(256, 768), (16384, 16384), (4096, 126976), (32768, 0)]:
        hq, hkv, d = 32, 8, 128
        q = torch.randn(1, hq, q_len, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, prefix + q_len, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, hkv, prefix + q_len, d, device=dev, dtype=torch.bfloat16)
        flops = 2 * 2 * hq * d * (q_len * prefix + q_len * q_len / 2)
        err = {}
        if q_len * (prefix + q_len) <= 256 * 1024:
            ref, _ = reference_attention_with_lse(
                q.float(), k.float().repeat_interleave(4, 1), v.float().repeat_interleave(4, 1), causal=True, scale=d**-0.5
            )
        else:
            ref = None
        for kernel in ("cudnn", "fa2", "sdpa"):
            try:
                out = attend(q, k, v, q_start=prefix, kernel=kernel, scale=d**-0.5)
                seconds = timed(lambda: attend(q, k, v, q_start=prefix, kernel=kernel, scale=d**-0.5))
                err[kernel] = out
                row = {"what": "attention", "q_len": q_len, "prefix": prefix, "kernel": kernel,
                       "ms": round(seconds * 1e3, 2), "tflops": round(flops / seconds / 1e12, 1)}
                if ref is not None:
                    row["rel_err_vs_fp32"] = rel(out, ref)
                rows.append(row)
                print(row, flush=True)
            except Exception as exc:  # report and go on: this is a survey
                print({"what": "attention", "q_len": q_len, "prefix": prefix, "kernel": kernel, "error": str(exc)[:200]})
        if "cudnn" in err and "fa2" in err:
            rows.append({"what": "attention-agree", "q_len": q_len, "prefix": prefix, "cudnn_vs_fa2": rel(err["cudnn"], err["fa2"])})
            print(rows[-1], flush=True)


def model_checks(rows, shape: str, lengths):
    from kanana_longctx.bench.models import random_model
    from kanana_longctx.backends.local import finish_loaded
    from kanana_longctx.fastpath.llama import PrefixReusingLlama

    model = random_model(shape, device="cuda", yarn=True)
    for kernel in ("cudnn", "fa2"):
        loaded = finish_loaded(model, "cuda", "bfloat16", kernel, {"factor": 4.4, "original_max_position_embeddings": 32768})
        fast = PrefixReusingLlama(loaded, max_tokens=max(lengths) + 64)
        for n in lengths:
            ids = torch.randint(0, model.config.vocab_size, (n,), device="cuda")
            torch.cuda.reset_peak_memory_stats()
            t_full = timed(lambda: fast.prefill(ids, 0), repeats=2)
            half = n // 2
            t_suffix = timed(lambda: fast.prefill(ids[half:], half), repeats=2)
            logits = fast.prefill(ids[half:], half)
            t_decode = timed(lambda: fast._forward(ids[:1], n, want_logits=True), repeats=5)
            row = {"what": "forward", "shape": shape, "kernel": kernel, "tokens": n, "full_prefill_s": round(t_full, 3),
                   "suffix_half_s": round(t_suffix, 3), "decode_step_ms": round(t_decode * 1e3, 2),
                   "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}
            if n <= 8192:
                with torch.inference_mode():
                    ref = model(ids[None], logits_to_keep=1).logits[0, -1].float()
                row["logits_rel_err_vs_hf"] = rel(logits, ref)
                row["argmax_equal"] = bool(int(logits.argmax()) == int(ref.argmax()))
            rows.append(row)
            print(row, flush=True)
        fast = None
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-8b")
    parser.add_argument("--lengths", default="4096,32768,131072")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    rows: list[dict] = []
    print({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}, flush=True)
    attention_checks(rows)
    model_checks(rows, args.shape, [int(x) for x in args.lengths.split(",")])
    write_rows(rows, args.json)


if __name__ == "__main__":
    main()
