"""The plain transformers backend: every probe is generated exactly once, also when a batch runs out of memory
and the rest of its length runs at the halved size; its outputs equal transformers' own generate."""

from __future__ import annotations

import torch

from kanana_longctx.backends import hf
from kanana_longctx.backends.base import BackendRequest, RunJob
from kanana_longctx.backends.hf import PlainBackend
from kanana_longctx.backends.local import LocalModel
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.spec import Probe, ProbeSet


def _probes(n: int, length: int = 40) -> list[Probe]:
    gen = torch.Generator().manual_seed(length)
    return [
        Probe(length=length, depth=float(d), n_tokens=length, needle_token_start=0, needle_token_end=1, expected="7",
              needle="", question="", prompt="", form="qaform", lang="en", seed=0, haystack="h", haystack_hash="h",
              input_ids=tuple(torch.randint(0, 1000, (length,), generator=gen).tolist()))
        for d in range(n)
    ]


class Collect:
    def __init__(self):
        self.generations = []

    def write(self, generations):
        self.generations.extend(generations)

    def note(self, message): ...


def _run(tiny, smollm2_tokenizer, probes, **options):
    _, loaded = tiny
    backend = PlainBackend(LocalModel(BackendRequest(RunOptions(**options), None, smollm2_tokenizer, loaded=loaded)))
    assert backend.load().engine == "hf"
    sink = Collect()
    probe_set = ProbeSet(probes=tuple(probes), shared_prefix_ids=(), form="qaform")
    stats = backend.run(RunJob(probe_set, tuple(probes), 3), sink)
    return sink.generations, stats


def test_a_batch_out_of_memory_is_halved_and_no_probe_is_skipped(tiny, smollm2_tokenizer, monkeypatch):
    calls = []

    def generate(loaded, batch, *, max_new_tokens, stop_ids, pad_id):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [[11, 12, 13] for _ in batch]

    monkeypatch.setattr(hf, "generate_batch", generate)
    probes = _probes(8)
    generations, _ = _run(tiny, smollm2_tokenizer, probes, batch_size=4)
    assert sorted(g.probe.probe_id for g in generations) == sorted(p.probe_id for p in probes)
    assert calls == [4, 2, 2, 2, 2]  # 4 failed; halved for it, and the rest of the length runs at 2
    assert all(g.new_tokens == 3 and g.hit_max_new_tokens for g in generations)


def test_plain_outputs_are_transformers_generate(tiny, smollm2_tokenizer):
    model, _ = tiny
    probes = _probes(3, length=30) + _probes(2, length=50)
    generations, stats = _run(tiny, smollm2_tokenizer, probes)
    assert [g.probe.n_tokens for g in generations] == [50, 50, 30, 30, 30]  # longest first
    for g in generations:
        with torch.no_grad():
            ref = model.generate(torch.tensor([g.probe.input_ids]), max_new_tokens=3, do_sample=False)
        assert g.text == smollm2_tokenizer.decode(ref[0, g.probe.n_tokens :], skip_special_tokens=True)
        assert g.prefill_tokens == g.probe.n_tokens
    assert stats.computed_flops > 0 and stats.kv_rows == 0
