"""Data-parallel runs on CPU: cost-balanced sharding, merging of per-rank files, and a real 2-process torchrun
(gloo) run that completes and resumes a grid without losing or duplicating rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kanana_longctx.probes.spec import Probe
from kanana_longctx.results import ResultRecord, ResultsWriter, load_results
from kanana_longctx.run.distributed import done_ids, merge_rank_results, probe_cost, rank_files, shard


def _probe(length: int, depth: float) -> Probe:
    return Probe(length=length, depth=depth, n_tokens=length, needle_token_start=0, needle_token_end=1,
                 expected="1", needle="", question="", prompt="", form="qaform", lang="en", seed=0,
                 haystack="noise", haystack_hash="h")


def _record(probe_id: str, length: int = 100) -> ResultRecord:
    return ResultRecord(probe_id=probe_id, length=length, depth=0.0, score=1.0, expected="1", output="1",
                        n_tokens=length, needle_token_start=0)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_partition_the_grid_and_balance_cost(world):
    probes = [_probe(length, depth) for length in range(1000, 33000, 1000) for depth in (0, 50, 100)]
    shards = [shard(probes, r, world) for r in range(world)]
    ids = [p.probe_id for s in shards for p in s]
    assert sorted(ids) == sorted(p.probe_id for p in probes)  # every probe exactly once
    loads = [sum(probe_cost(p.n_tokens) for p in s) for s in shards]
    assert max(loads) - min(loads) <= max(probe_cost(p.n_tokens) for p in probes)
    assert shard(probes, 0, world) == shards[0]  # deterministic: ranks agree without talking


def test_merge_appends_missing_rows_once_and_removes_rank_files(tmp_path):
    with ResultsWriter(tmp_path / "results.jsonl") as w:
        w.append([_record("a")])
    with ResultsWriter(tmp_path / "results.rank0.jsonl") as w:
        w.append([_record("a"), _record("b")])
    with ResultsWriter(tmp_path / "results.rank1.jsonl") as w:
        w.append([_record("c")])
    with open(tmp_path / "results.rank1.jsonl", "ab") as handle:
        handle.write(b'{"probe_id": "d", "len')  # a rank killed mid-write
    assert done_ids(tmp_path) == {"a", "b", "c"}
    assert merge_rank_results(tmp_path) == 2
    assert rank_files(tmp_path) == []
    assert [r.probe_id for r in load_results(tmp_path)[0]] == ["a", "b", "c"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """A real on-disk model directory: tiny random Llama weights + SmolLM2's tokenizer (shapes, not behaviour)."""
    from kanana_longctx.bench.models import random_model

    path = tmp_path_factory.mktemp("tiny-model")
    random_model("tiny", device="cpu", dtype="float32", yarn=False).save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def _torchrun(model_dir, out, *extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "kanana_longctx", "niah", "-m", str(model_dir), "-H", "noise", "-l", "256,512",
               "-d", "0,50,100", "--device", "cpu", "--max-new-tokens", "3", "--out", str(out), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_run_completes_and_resumes_without_duplicates(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    first = _torchrun(tiny_model_dir, out, "--limit", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(load_results(out)[0]) == 3 and rank_files(out) == []
    second = _torchrun(tiny_model_dir, out)
    assert second.returncode == 0, second.stderr[-2000:]
    records, warnings = load_results(out)
    ids = [r.probe_id for r in records]
    assert not warnings and rank_files(out) == []
    assert len(ids) == len(set(ids)) == 6
    info = json.loads((out / "run.json").read_text())
    assert info["grid"]["probes"] == 6


def test_tensor_parallel_over_two_processes_matches_one_process(tiny_model_dir, tmp_path, session_cache):
    """--tp 2 relaunches under torchrun and shards every layer with transformers' tp_plan (gloo on CPU); the
    greedy outputs equal a single-process run of the same model."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["KANANA_LONGCTX_CACHE"] = str(session_cache)
    base = [sys.executable, "-m", "kanana_longctx", "niah", "-m", str(tiny_model_dir), "-H", "noise",
            "-l", "256", "-d", "0,100", "--device", "cpu", "--max-new-tokens", "4", "--engine", "hf"]
    single = subprocess.run([*base, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    tp = subprocess.run([*base, "--tp", "2", "--out", str(tmp_path / "tp")], env=env, capture_output=True, text=True,
                        timeout=600)
    assert tp.returncode == 0, tp.stderr[-2000:]
    one = {r.probe_id: r.output for r in load_results(tmp_path / "one")[0]}
    two = {r.probe_id: r.output for r in load_results(tmp_path / "tp")[0]}
    assert one == two and len(two) == 2
    assert not list((tmp_path / "tp").glob(".tp-rank*"))
    assert "tensor parallel over 2 processes" in tp.stdout.replace("\n", " ")
