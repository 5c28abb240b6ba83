"""The backend seam: a backend added as one class and one registry line runs through the unchanged runner
(resume, scoring, results, run.json, the summary), and `--engine` picks among the registered ones."""

from __future__ import annotations

import json

import pytest

from kanana_longctx.backends import registry
from kanana_longctx.backends.base import BackendInfo, ContextLimits, DeviceFigures, Generation, LoopStats
from kanana_longctx.backends.registry import BackendEntry, open_backend
from kanana_longctx.errors import BadInput, ProbeError
from kanana_longctx.options import RunOptions
from kanana_longctx.probes.build import ProbeRequest, build_probe_set
from kanana_longctx.results import load_results, read_run_info
from kanana_longctx.run.runner import execute


class EchoBackend:
    """A text-in, text-out backend without torch, like a serving endpoint: it answers every probe of depth 0 with
    the expected value (wrapped in a sentence) and the others with a wrong number, and reports per-row facts."""

    opened = []

    def __init__(self, request):
        self.request = request
        EchoBackend.opened.append(self)

    @staticmethod
    def claims(options) -> bool:
        return True  # (an endpoint backend: when the options name a server)

    def context(self) -> ContextLimits:
        return ContextLimits(native=4096, maximum=4096, fixed=True)

    def load(self) -> BackendInfo:
        return BackendInfo(
            engine="echo", versions={"echo-server": "1.0"}, native_context=4096, max_context=4096,
            endpoint={"url": "http://127.0.0.1:1/v1", "served_model": "echo"}, notes=("echo answers from memory",),
        )

    def run(self, job, sink) -> LoopStats:
        for probe in job.pending:
            text = f" The number is {probe.expected}.\n" if probe.depth == 0 else " 1234567"
            sink.note(f"echo: {probe.probe_id}")
            sink.write([Generation(probe, text, new_tokens=6, hit_max_new_tokens=False, seconds=0.01,
                                   prefill_tokens=probe.n_tokens, extras={"usage_prompt_tokens": probe.n_tokens})])
        return LoopStats(computed_flops=0.0)

    def close(self, ran: bool) -> DeviceFigures:
        return DeviceFigures()


@pytest.fixture
def echo_registered(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "echo", BackendEntry("test_backends_registry:EchoBackend", local=False))
    EchoBackend.opened.clear()


@pytest.fixture(scope="module")
def probe_set(smollm2_tokenizer):
    return build_probe_set(ProbeRequest(lengths=(300, 600), depths=(0, 100), haystack="noise"), smollm2_tokenizer)


def test_a_registered_backend_runs_through_the_unchanged_runner(echo_registered, probe_set, smollm2_tokenizer, tmp_path,
                                                               keeping_reporter):
    notes = keeping_reporter()
    options = RunOptions()
    summary = execute(probe_set, options, tmp_path, reporter=notes, tokenizer=smollm2_tokenizer)
    assert len(EchoBackend.opened) == 1 and summary.backend.engine == "echo"
    records = {r.probe_id: r for r in load_results(tmp_path)[0]}
    assert sorted(records) == sorted(p.probe_id for p in probe_set.probes) == sorted(notes.advanced)
    for probe in probe_set.probes:
        r = records[probe.probe_id]
        assert r.score == (1.0 if probe.depth == 0 else 0.0)  # the runner scored the text the backend gave
        assert r.output == (f"The number is {probe.expected}." if probe.depth == 0 else "1234567")  # cleaned
        assert r.extra == {"usage_prompt_tokens": probe.n_tokens}
    info = read_run_info(tmp_path)
    assert info.engine == "echo" and info.device == "" and info.versions["echo-server"] == "1.0"
    assert info.extra["endpoint"]["url"] == "http://127.0.0.1:1/v1" and info.extra["native_context"] == 4096
    assert "echo answers from memory" in summary.notes
    assert summary.backend.describe() == "engine echo, endpoint http://127.0.0.1:1/v1"
    assert summary.accuracy == 0.5 and "echo: L300-D0" in notes.lines
    again = execute(probe_set, options, tmp_path, reporter=keeping_reporter(), tokenizer=smollm2_tokenizer)
    assert (again.skipped, again.ran) == (4, 0)  # resume knows nothing of the backend either


def test_a_fixed_context_is_a_hard_limit(echo_registered, smollm2_tokenizer, tmp_path):
    long_set = build_probe_set(ProbeRequest(lengths=(5000,), depths=(50,), haystack="noise"), smollm2_tokenizer)
    with pytest.raises(ProbeError, match="the model addresses 4,096$"):
        execute(long_set, RunOptions(), tmp_path, tokenizer=smollm2_tokenizer)
    assert not (tmp_path / "run.json").exists()  # refused before the run directory was touched


def test_engine_names_come_from_the_registry(echo_registered):
    assert registry.engine_choices() == ("auto", "fast", "reuse", "hf", "endpoint", "echo")
    with pytest.raises(BadInput, match="unknown engine 'fastest' .*auto, fast, reuse, hf, endpoint, echo"):
        open_backend(registry.BackendRequest(RunOptions(engine="fastest"), None, None))
    named = open_backend(registry.BackendRequest(RunOptions(engine="echo"), None, None))
    assert isinstance(named, EchoBackend)


def test_auto_picks_the_first_local_backend_that_supports_the_model(tiny, smollm2_tokenizer, probe_set, tmp_path,
                                                                    monkeypatch):
    from kanana_longctx.backends.fast import FastBackend

    _, loaded = tiny
    options = RunOptions(max_new_tokens=2)
    fast = execute(probe_set, options, tmp_path / "fast", tokenizer=smollm2_tokenizer, loaded=loaded)
    assert fast.backend.engine == "fast" and not fast.notes
    from kanana_longctx.backends.reuse import ReuseBackend

    monkeypatch.setattr(FastBackend, "supports", staticmethod(lambda loaded, options: (False, "not this one")))
    reuse = execute(probe_set, options, tmp_path / "reuse", tokenizer=smollm2_tokenizer, loaded=loaded)
    assert reuse.backend.engine == "reuse" and reuse.notes == ("prefix reuse on the transformers cache: not this one",)
    monkeypatch.setattr(ReuseBackend, "supports", staticmethod(lambda loaded, options: (False, "nor this")))
    plain = execute(probe_set, options, tmp_path / "hf", tokenizer=smollm2_tokenizer, loaded=loaded)
    assert plain.backend.engine == "hf" and plain.notes == ("plain transformers loop: not this one",)
    assert json.loads((tmp_path / "hf" / "run.json").read_text())["engine"] == "hf"
    with pytest.raises(ProbeError, match="--engine fast: not this one"):
        execute(probe_set, RunOptions(engine="fast"), tmp_path / "named", tokenizer=smollm2_tokenizer, loaded=loaded)
