"""Property: whatever config.json, backup sidecar and option values `config` is given, it exits 0 or 2 (1 only for a
failed --check), prints no traceback, and leaves every file as it was unless the command succeeded."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kanana_longctx.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASES = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*-config.json"))]
runner = CliRunner()

odd_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2, 64, 4096, 32768, 10**9, 1e308, -1, 0.5, 4.4]),
)
odd_values = st.recursive(
    st.one_of(st.none(), st.booleans(), odd_numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
rope_block = st.dictionaries(
    st.sampled_from(
        ["rope_type", "type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "rope_theta",
         "mscale", "mscale_all_dim", "partial_rotary_factor", "attention_factor"]
    ),
    st.one_of(st.sampled_from(["yarn", "default", "linear", "llama3"]), odd_values),
    max_size=6,
)
KEYS = [
    "rope_theta", "max_position_embeddings", "original_max_position_embeddings", "head_dim", "hidden_size",
    "num_attention_heads", "qk_rope_head_dim", "kv_lora_rank", "layer_types", "model_type", "partial_rotary_factor",
]


@st.composite
def config_texts(draw) -> str:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "raw", "deep", "non-object"]))
    if kind == "raw":
        return draw(st.text(alphabet=string.printable, max_size=40))
    if kind == "deep":
        depth = draw(st.integers(min_value=60, max_value=3000))
        return '{"a": ' + "[" * depth + "]" * depth + "}"
    if kind == "non-object":
        return json.dumps(draw(st.one_of(st.lists(odd_values, max_size=3), odd_numbers, st.text(max_size=5))))
    config = dict(draw(st.sampled_from(BASES)))
    for key in draw(st.lists(st.sampled_from(KEYS + ["rope_scaling", "rope_parameters"]), max_size=4)):
        if key in ("rope_scaling", "rope_parameters"):
            value = draw(st.one_of(rope_block, odd_values, st.fixed_dictionaries({"full_attention": rope_block})))
        else:
            value = draw(odd_values)
        if draw(st.booleans()):
            config[key] = value
        else:
            config.pop(key, None)
    return json.dumps(config, indent=2)


@st.composite
def sidecars(draw) -> str | None:
    kind = draw(st.sampled_from(["none", "none", "garbage", "record"]))
    if kind == "none":
        return None
    if kind == "garbage":
        return draw(st.one_of(st.text(max_size=30), st.just("[]"), st.just("{}")))
    record = {
        "tool": "kanana-longctx",
        "format": 1,
        "params": {"factor": 4.4},
        "original_sha256": "0" * 64,
        "patched_sha256": "1" * 64,
        "replaced": {"rope_scaling": "null"},
        "original_text": None,
    }
    for key in draw(st.lists(st.sampled_from(sorted(record) + ["layer_types"]), max_size=3)):
        record[key] = draw(odd_values)
    return json.dumps(record)


number_text = st.one_of(
    odd_numbers.map(str), st.sampled_from(["nan", "inf", "-inf", "1e308", "abc", "", "4.4", "0"])
)


@st.composite
def option_lists(draw) -> list[str]:
    action = draw(st.sampled_from([[], ["--yarn"], ["--yarn", "--dry-run"], ["--no-yarn"], ["--no-yarn", "--dry-run"]]))
    extra: list[str] = []
    if action[:1] == ["--yarn"]:
        for flag in draw(
            st.lists(
                st.sampled_from(["--yarn-factor", "--factor", "--yarn-original", "--yarn-beta-fast", "--beta-slow",
                                 "--max-positions"]),
                max_size=3,
            )
        ):
            extra += [flag, draw(number_text)]
        if draw(st.booleans()):
            extra += ["--recipe", draw(st.sampled_from(["auto", "kanana-1.5", "kanana-2", "custom", "nope"]))]
        if draw(st.booleans()):
            extra += ["--layer-types", draw(st.sampled_from(["full_attention", "all", "bogus", ","]))]
        if draw(st.booleans()):
            extra.append("--force")
    if draw(st.integers(0, 4)) == 0 and action[:1] != ["--no-yarn"]:
        extra.append("--check")
    return action + extra


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=config_texts(), sidecar=sidecars(), options=option_lists())
def test_config_never_crashes_and_never_half_writes(text, sidecar, options):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "config.json").write_text(text)
        if sidecar is not None:
            (directory / "config.json.kanana-longctx.orig").write_text(sidecar)
        before = snapshot(directory)
        result = runner.invoke(app, ["config", str(directory), *options])
        allowed = {0, 1, 2} if "--check" in options else {0, 2}
        assert result.exit_code in allowed, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output and "internal error" not in result.output
        # Only a real --yarn/--no-yarn that got as far as writing may change files (a failed --check after a
        # successful --yarn exits 1 with the patch in place, as it says).
        writes = options[:1] in (["--yarn"], ["--no-yarn"]) and "--dry-run" not in options
        if not (writes and result.exit_code in (0, 1)):
            assert snapshot(directory) == before, (options, result.output)
        if result.exit_code == 2:  # one error line, last (a dry run's notes may precede it on stderr)
            lines = result.stderr.splitlines()
            assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, lines
