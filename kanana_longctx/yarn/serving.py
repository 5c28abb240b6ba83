"""How to serve a YaRN-patched Kanana model with each engine (facts from ../shared/YARN.md, "What each engine does").

Usage: for hint in serving_hints("kakaocorp/kanana-1.5-8b-instruct-2505", YarnParams()): print(hint.command)

The engines read the patched config.json themselves; what they need from the command line is the context length,
because each derives the maximum length differently.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from kanana_longctx.yarn.params import YarnParams


@dataclass(frozen=True)
class EngineHint:
    engine: str
    supported: bool
    command: str  # empty when unsupported
    note: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineHint":
        return cls(**dict(data))


def serving_hints(model: str, params: YarnParams, model_dir: str | None = None) -> list[EngineHint]:
    """One hint per engine. `model` is what the user typed (a hub id or a path); `model_dir` the local directory
    (llama.cpp's converter needs files, not a hub id)."""
    m = shlex.quote(model)
    d = shlex.quote(model_dir or model)
    ctx = params.serve_context
    overrides = shlex.quote(json.dumps({"max_position_embeddings": params.effective_context}))
    return [
        EngineHint(
            "vLLM",
            True,
            f"vllm serve {m} --max-model-len {ctx} --hf-overrides {overrides}",
            "vLLM applies YaRN from rope_scaling/rope_parameters (its YaRN matches transformers). Older vLLM derives "
            f"max_model_len = original x factor = {params.effective_context}; since PR #56446 it no longer "
            "multiplies, so the override (or VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) lifts the limit. --rope-scaling was "
            "replaced by --hf-overrides.",
        ),
        EngineHint(
            "SGLang",
            True,
            f"SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 python -m sglang.launch_server --model-path {m} "
            f"--context-length {ctx}",
            "SGLang counts the factor as 1 when it derives the context length (original_max_position_embeddings "
            "is present), so ask for the length explicitly.",
        ),
        EngineHint(
            "llama.cpp",
            True,
            f"python convert_hf_to_gguf.py {d} && llama-server -m MODEL.gguf -c {ctx}",
            "The converter writes rope.scaling.type=yarn, .factor, .original_context_length, .yarn_beta_fast and "
            ".yarn_beta_slow into the GGUF; the context length comes from max_position_embeddings, hence -c. For a "
            f"GGUF converted without YaRN: --rope-scaling yarn --rope-scale {params.factor:g} --yarn-orig-ctx "
            f"{params.original_max_position_embeddings} --yarn-beta-fast {params.beta_fast:g} "
            f"--yarn-beta-slow {params.beta_slow:g}.",
        ),
        EngineHint(
            "TGI",
            False,
            "",
            f"unsupported: TGI hard-codes beta_fast 32 / beta_slow 1 and ignores the config's "
            f"{params.beta_fast:g}/{params.beta_slow:g}, so it would run a different YaRN than the model was tuned "
            "for.",
        ),
    ]
