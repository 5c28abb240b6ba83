"""The run directory before anything runs: a new one is made, a matching one resumes (rank files included), a
different configuration or results without run.json refuse and change nothing, --overwrite clears."""

from __future__ import annotations

import pytest

from kanana_longctx.errors import ResultsError
from kanana_longctx.results import ResultRecord, ResultsWriter, RunInfo, write_run_info
from kanana_longctx.run.distributed import RankInfo
from kanana_longctx.run.rundir import prepare_out_dir, results_path


def _info(**changes) -> RunInfo:
    fields = dict(model="m", form="qaform", lang="en", haystack="noise:en", haystack_hash="h", grid={"probes": 2},
                  seed=0, yarn=None, max_new_tokens=20)
    return RunInfo(**{**fields, **changes})


def _write(path, *probe_ids):
    with ResultsWriter(path) as writer:
        writer.append([ResultRecord(probe_id=i, length=1, depth=0.0, score=1.0, expected="", output="", n_tokens=1,
                                    needle_token_start=0) for i in probe_ids])


def test_a_new_directory_is_made_and_nothing_is_done(tmp_path):
    out = tmp_path / "a" / "b"
    assert prepare_out_dir(out, _info(), overwrite=False) == set()
    assert out.is_dir()


def test_a_matching_run_resumes_with_its_and_its_ranks_rows(tmp_path):
    write_run_info(tmp_path, _info(device="cuda", engine="fast"))
    _write(tmp_path / "results.jsonl", "L1-D0")
    _write(tmp_path / "results.rank1.jsonl", "L1-D100")
    # kernel, device and engine may differ between a run and its resume; the answers' settings may not
    assert prepare_out_dir(tmp_path, _info(device="cpu", engine="hf"), overwrite=False) == {"L1-D0", "L1-D100"}


@pytest.mark.parametrize("change", [{"seed": 1}, {"yarn": {"factor": 4.4}}, {"max_new_tokens": 8}, {"model": "x"}])
def test_another_configuration_refuses_and_names_what_changed(tmp_path, change):
    write_run_info(tmp_path, _info())
    _write(tmp_path / "results.jsonl", "L1-D0")
    before = (tmp_path / "results.jsonl").read_bytes()
    with pytest.raises(ResultsError, match=f"different configuration \\({next(iter(change))}\\)"):
        prepare_out_dir(tmp_path, _info(**change), overwrite=False)
    assert (tmp_path / "results.jsonl").read_bytes() == before


def test_results_without_run_json_refuse(tmp_path):
    _write(tmp_path / "results.jsonl", "L1-D0")
    with pytest.raises(ResultsError, match="without run.json"):
        prepare_out_dir(tmp_path, _info(), overwrite=False)


def test_overwrite_clears_results_and_rank_files_on_the_first_rank_only(tmp_path):
    write_run_info(tmp_path, _info())
    _write(tmp_path / "results.jsonl", "L1-D0")
    _write(tmp_path / "results.rank0.jsonl", "L1-D100")
    assert prepare_out_dir(tmp_path, _info(seed=5), overwrite=True, first_rank=False) == set()
    assert (tmp_path / "results.jsonl").exists()  # another rank waits for the first one to clear
    assert prepare_out_dir(tmp_path, _info(seed=5), overwrite=True) == set()
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "results.rank0.jsonl").exists()


def test_each_process_appends_to_its_own_file(tmp_path):
    assert results_path(tmp_path, None, False) == tmp_path / "results.jsonl"
    assert results_path(tmp_path, RankInfo(1, 2), True) == tmp_path / "results.rank1.jsonl"
    assert results_path(tmp_path, RankInfo(0, 2), False) == tmp_path / "results.jsonl"  # tensor parallel: rank 0
    assert results_path(tmp_path, RankInfo(1, 2), False) == tmp_path / ".tp-rank1.jsonl"
