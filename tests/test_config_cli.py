"""`kanana-longctx config` through typer's runner, on real files in tmp dirs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kanana-like-8b-config.json"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["config", *map(str, args)])


@pytest.fixture
def model(tmp_path) -> Path:
    directory = tmp_path / "kanana"
    directory.mkdir()
    shutil.copyfile(EXAMPLE, directory / "config.json")
    return directory


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_show_without_action(model):
    result = invoke(model)
    assert result.exit_code == 0, result.output
    assert "default (no block)" in result.stdout and "500000 (top-level)" in result.stdout
    assert "--yarn would apply recipe kanana-1.5" in result.stdout
    assert "transformers" in result.stdout and "No YaRN" in result.stdout


def test_yarn_then_twice_then_check_then_no_yarn(model):
    config = model / "config.json"
    original = config.read_bytes()
    result = invoke(model, "--yarn")
    assert result.exit_code == 0, result.output
    assert "Applied YaRN" in result.stdout
    after = json.loads(config.read_text())
    assert after["rope_scaling"]["factor"] == 4.4 and after["rope_parameters"]["rope_theta"] == 500000.0
    again = invoke(model, "--yarn")
    assert again.exit_code == 0 and "already applied" in again.stdout and "nothing changed" in again.stdout
    checked = invoke(model, "--check")
    assert checked.exit_code == 0, checked.output
    assert "1.148160" in checked.stdout and "PASS" in checked.stdout and "4.4" in checked.stdout
    assert "vllm serve" in checked.stdout and "--context-length 131072" in checked.stdout
    assert "TGI" in checked.stdout and "unsupported" in checked.stdout
    shown = invoke(model)
    assert "yarn (rope_scaling)" in shown.stdout and "144179" in shown.stdout
    removed = invoke(model, "--no-yarn")
    assert removed.exit_code == 0 and "byte for byte" in removed.stdout
    assert config.read_bytes() == original and snapshot(model).keys() == {"config.json"}


def test_dry_run_prints_diff_and_writes_nothing(model):
    before = snapshot(model)
    result = invoke(model, "--yarn", "--dry-run", "--factor", "2", "--beta-fast", "32", "--beta-slow", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("--- a/config.json\n+++ b/config.json\n")
    assert '+    "factor": 2.0,' in result.stdout and '-  "rope_scaling": null,' in result.stdout
    assert "nothing written" in result.stderr and "nothing written" not in result.stdout
    assert snapshot(model) == before


def test_dry_run_check_is_in_memory(model):
    before = snapshot(model)
    result = invoke(model / "config.json", "--yarn", "--dry-run", "--check")
    assert result.exit_code == 0, result.output
    assert "in memory" in result.stdout and "PASS" in result.stdout
    assert snapshot(model) == before


def test_check_on_unpatched_file_fails_with_exit_1(model):
    result = invoke(model, "--check")
    assert result.exit_code == 1
    assert "does not declare YaRN" in result.stdout and "FAIL" in result.stdout
    assert result.stderr.startswith("error: YaRN check failed") and "Traceback" not in result.output


def test_v5_saved_config(tmp_path):
    directory = tmp_path / "v5"
    directory.mkdir()
    config = {k: v for k, v in json.loads(EXAMPLE.read_text()).items() if k not in ("rope_theta", "rope_scaling")}
    config["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    config["transformers_version"] = "5.24.0"
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    result = invoke(directory, "--yarn", "--check")
    assert result.exit_code == 0, result.output
    after = json.loads((directory / "config.json").read_text())
    assert after["rope_theta"] == 500000.0 == after["rope_parameters"]["rope_theta"]
    assert "copied rope_theta" in result.stdout and "PASS" in result.stdout


def test_existing_llama3_needs_force_and_comes_back(model):
    config = model / "config.json"
    llama3 = {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    }
    config.write_text(config.read_text().replace('"rope_scaling": null', '"rope_scaling": ' + json.dumps(llama3)))
    before = snapshot(model)
    refused = invoke(model, "--yarn")
    assert refused.exit_code == 2 and "--force" in refused.stderr and snapshot(model) == before
    forced = invoke(model, "--yarn", "--force")
    assert forced.exit_code == 0 and "replaced the existing 'llama3'" in forced.stdout
    assert invoke(model, "--no-yarn").exit_code == 0
    assert snapshot(model) == before


def make_hf_cache(root: Path, text: str, repo: str = "kakaocorp/kanana-like-8b") -> tuple[Path, Path, Path]:
    """models--org--name/{blobs/<sha>, snapshots/<a..|b..>/config.json -> ../../blobs/<sha>, refs/main -> a..}."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / ("0" * 40)
    blob.parent.mkdir(parents=True)
    blob.write_text(text)
    links = []
    for commit in ("a" * 40, "b" * 40):
        (repo_dir / "snapshots" / commit).mkdir(parents=True)
        links.append(repo_dir / "snapshots" / commit / "config.json")
        links[-1].symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    return blob, links[0], links[1]


def test_hub_id_in_hf_cache_with_revision(tmp_path, monkeypatch):
    hub = tmp_path / "hf_home" / "hub"  # conftest points HF_HOME at tmp_path / "hf_home"
    blob, main_link, other_link = make_hf_cache(hub, EXAMPLE.read_text())
    result = invoke("kakaocorp/kanana-like-8b", "--yarn", "--revision", "b" * 40)
    assert result.exit_code == 0, result.output
    assert not other_link.is_symlink() and main_link.is_symlink()  # the revision asked for, only
    assert blob.read_text() == EXAMPLE.read_text()
    assert invoke("kakaocorp/kanana-like-8b", "--no-yarn", "--revision", "b" * 40).exit_code == 0
    assert other_link.is_symlink() and os.readlink(other_link) == os.readlink(main_link)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))  # HF_HUB_CACHE wins over HF_HOME
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    assert invoke("kakaocorp/kanana-like-8b").exit_code == 0


def bad_model(tmp_path: Path, kind: str) -> str:
    directory = tmp_path / "bad"
    directory.mkdir()
    if kind == "missing":
        return str(tmp_path / "nope")
    if kind == "no-config":
        return str(directory)
    if kind == "unknown-hub":
        return "org/not-cached"
    path = directory / "config.json"
    path.write_text({"invalid": '{"a": 1,', "array": "[1, 2, 3]"}[kind])
    return str(path)


@pytest.mark.parametrize(
    "kind,fragment",
    [
        ("missing", "no such file"),
        ("no-config", "no config.json"),
        ("invalid", "invalid JSON at line 1, column 9: expecting"),
        ("array", "must hold a JSON object"),
        ("unknown-hub", "not in the local Hugging Face cache"),
    ],
)
def test_bad_model_input(tmp_path, kind, fragment):
    spec = bad_model(tmp_path, kind)
    before = snapshot(tmp_path / "bad")
    result = invoke(spec, "--yarn")
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert snapshot(tmp_path / "bad") == before


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--yarn", "--factor", "1"], "factor must be greater than 1"),
        (["--yarn", "--factor", "0.5"], "factor must be greater than 1"),
        (["--yarn", "--beta-fast", "2", "--beta-slow", "2"], "must be greater than beta_slow"),
        (["--yarn", "--max-position-embeddings", "0"], "--max-positions must be a positive integer"),
        (["--yarn", "--max-positions", "0"], "--max-positions must be a positive integer"),
        (["--factor", "2"], "--factor only applies with --yarn"),
        (["--no-yarn", "--force"], "--force only applies with --yarn"),
        (["--dry-run"], "--dry-run needs --yarn or --no-yarn"),
        (["--no-yarn", "--check"], "--check verifies YaRN"),
    ],
)
def test_bad_options(model, args, fragment):
    before = snapshot(model)
    result = invoke(model, *args)
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(model) == before


def test_unwritable_file(model):
    config = model / "config.json"
    config.chmod(0o444)
    result = invoke(model, "--yarn")
    assert result.exit_code == 2 and "read-only" in result.stderr
    assert snapshot(model) == {"config.json": EXAMPLE.read_bytes()}


def test_cli_import_stays_light():
    import subprocess
    import sys

    code = "import sys, kanana_longctx.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


EXAMPLES = EXAMPLE.parent
ALL_EXAMPLES = sorted(EXAMPLES.glob("*-config.json"))


def invoke80(*args: str):
    return runner.invoke(app, ["config", *map(str, args)], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})


def test_help_fits_80_columns_with_one_naming():
    result = invoke80("--help")
    assert result.exit_code == 0
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    for flag in ("--yarn-factor", "--yarn-original", "--yarn-beta-fast", "--yarn-beta-slow", "--recipe",
                 "--layer-types", "--max-positions"):
        assert flag in result.stdout
    for old in ("--factor ", "--original-max-position-embeddings", "--beta-fast ", "--max-position-embeddings"):
        assert old not in result.stdout  # still accepted, no longer shown


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda p: p.name)
def test_tables_fit_80_columns(tmp_path, example):
    directory = tmp_path / "m"
    directory.mkdir()
    shutil.copyfile(example, directory / "config.json")
    for args in ([], ["--yarn", "--check"], []):
        result = invoke80(directory, *args)
        assert result.exit_code == 0, result.output
        table_lines = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
        assert table_lines and all(len(line) <= 80 for line in table_lines)
        assert "…" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    "example,recipe,changed",
    [
        ("kanana-like-8b", "recipe kanana-1.5 (chosen from the config: LlamaForCausalLM", '+    "beta_fast": 64.0,'),
        ("kanana-2-30b-a3b-like", "recipe kanana-2 (chosen from the config: MLA", '+    "mscale_all_dim": 1.0,'),
        ("kanana-2-1.3b-like", "layer types: full_attention", '+      "factor": 4.0,'),
    ],
)
def test_examples_dry_run(example, recipe, changed):
    path = EXAMPLES / f"{example}-config.json"
    before = snapshot(EXAMPLES)
    result = invoke(path, "--yarn", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"--- a/{path.name}\n+++ b/{path.name}\n") and changed in result.stdout
    assert recipe in result.stderr and "dry run: nothing written" in result.stderr
    assert snapshot(EXAMPLES) == before


def test_recipe_is_reported_and_old_spellings_still_work(model):
    config = model / "config.json"
    result = invoke(model, "--yarn", "--recipe", "kanana-2", "--factor", "2", "--beta-fast", "16")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("recipe kanana-2 (asked for with --recipe): factor 2 over 32768, beta_fast 16")
    assert json.loads(config.read_text())["rope_scaling"]["beta_slow"] == 1.0
    same = invoke(model, "--yarn", "--recipe", "kanana-2", "--yarn-factor", "2", "--yarn-beta-fast", "16")
    assert "already applied as asked" in same.stdout
    clash = invoke(model, "--yarn", "--yarn-factor", "2", "--factor", "3")
    assert clash.exit_code == 2 and "--yarn-factor 2.0 and --factor 3.0 disagree" in clash.stderr


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--yarn", "--yarn-factor", "1e308"], "factor must be at most 128"),
        (["--yarn", "--yarn-factor", "abc"], "--yarn-factor must be a number, got 'abc'"),
        (["--yarn", "--yarn-factor", "nan"], "--yarn-factor must be a finite number"),
        (["--yarn", "--yarn-original", "4.5"], "--yarn-original must be an integer, got '4.5'"),
        (["--yarn", "--recipe", "kanana-9"], "--recipe must be one of auto, kanana-1.5, kanana-2, custom"),
        (["--yarn", "--recipe", "custom"], "--recipe custom needs --yarn-factor"),
        (["--yarn", "--layer-types", "full_attention"], "--layer-types needs per-layer-type rope_parameters"),
        (["--recipe", "kanana-2"], "--recipe only applies with --yarn"),
    ],
)
def test_bad_numbers_and_recipes_write_nothing(model, args, fragment):
    before = snapshot(model)
    result = invoke(model, *args)
    assert result.exit_code == 2 and fragment in result.stderr and result.stderr.count("\n") == 1, result.output
    assert snapshot(model) == before


def test_json_error_reads_well(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "a": 1,\n  "b": "open')  # a file cut off mid-string
    result = invoke(path, "--yarn")
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: invalid JSON at line 3, column 8: unterminated string\n"


def test_yarn_check_on_a_config_transformers_cannot_load_writes_nothing(model):
    config = model / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 32', '"num_hidden_layers": "many"'))
    before = snapshot(model)
    result = invoke(model, "--yarn", "--check")
    assert result.exit_code == 2 and "cannot load this config" in result.stderr, result.output
    assert snapshot(model) == before


def test_per_layer_yarn_shipped_in_the_config_is_kept_unless_forced(tmp_path):
    directory = tmp_path / "small"
    directory.mkdir()
    shipped = json.loads((EXAMPLES / "kanana-2-1.3b-like-config.json").read_text())
    shipped["rope_parameters"]["full_attention"] = {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32768, "rope_theta": 1e6,
    }
    (directory / "config.json").write_text(json.dumps(shipped, indent=2))
    before = snapshot(directory)
    shown = invoke(directory)
    assert "yarn (its block)" in shown.stdout and "YaRN is declared" in shown.stdout
    refused = invoke(directory, "--yarn")
    assert refused.exit_code == 2 and "(full_attention layers) already carries YaRN (factor 2" in refused.stderr
    assert snapshot(directory) == before
    assert invoke(directory, "--check").exit_code == 0  # what it ships is verified per layer type
    forced = invoke(directory, "--yarn", "--force", "--check")
    assert forced.exit_code == 0 and "PASS" in forced.stdout, forced.output
    assert invoke(directory, "--no-yarn").exit_code == 0
    assert snapshot(directory) == before
