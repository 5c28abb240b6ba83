"""How to serve a YaRN-patched Kanana model with each engine (facts from ../shared/YARN.md, ../shared/SERVING.md
section 7, and the kakao/kanana-2 README's "Processing 32K+ Length").

Usage: for hint in serving_hints("kakaocorp/kanana-1.5-8b-instruct-2505", YarnParams()): print(hint.command)

Each hint has the command for the patched config.json (the engine reads YaRN from the file; what it needs from the
command line is the context length, because each engine derives the maximum length differently) and, where the
engine takes one, the override that applies the same YaRN to an unpatched checkpoint (vLLM `--hf-overrides`,
SGLang `--json-model-override-args`, llama.cpp flags). For an MLA model the override block is the Kanana-2
README's DeepSeek-style one (`rope_type: deepseek_yarn`, with mscale and mscale_all_dim).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from kanana_longctx.yarn.params import YarnParams

# TGI's YaRN uses these betas whatever the config says (SERVING.md, T1).
TGI_BETAS = (32.0, 1.0)


@dataclass(frozen=True)
class EngineHint:
    engine: str
    supported: bool
    command: str  # for the patched config.json; empty when unsupported
    note: str
    without_patch: str = ""  # the same YaRN on an unpatched checkpoint, where the engine takes an override

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineHint":
        return cls(**dict(data))


def override_block(params: YarnParams, mla: bool = False) -> dict:
    """The rope_scaling block for an engine override: DeepSeek-style for MLA (as the Kanana-2 README gives it)."""
    block: dict[str, Any] = {"rope_type": "deepseek_yarn" if mla else "yarn", "factor": params.factor}
    block.update(beta_fast=params.beta_fast, beta_slow=params.beta_slow)
    for key in ("mscale", "mscale_all_dim"):
        if getattr(params, key) is not None:
            block[key] = getattr(params, key)
    block["original_max_position_embeddings"] = params.original_max_position_embeddings
    return block


# transformers architecture -> llama.cpp's GGUF architecture name (convert_hf_to_gguf.py's mapping for the
# families this tool serves); the GGUF key of the training context is NAME.context_length.
GGUF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "DeepseekV3ForCausalLM": "deepseek2",
}


def _json(value: Any) -> str:
    return shlex.quote(json.dumps(value, separators=(",", ":")))


def serving_hints(
    model: str,
    params: YarnParams,
    model_dir: str | None = None,
    *,
    mla: bool = False,
    layer_types: Sequence[str] | None = None,
    architecture: str | None = None,
) -> list[EngineHint]:
    """One hint per engine. `model` is what the user typed (a hub id or a path); `model_dir` the local directory
    (llama.cpp's converter needs files, not a hub id); `layer_types` the per-layer-type blocks that carry YaRN;
    `architecture` the config's first `architectures` entry (it names the GGUF key of the training context)."""
    m = shlex.quote(model)
    d = shlex.quote(model_dir or model)
    ctx = params.serve_context
    eff = params.effective_context
    overrides = {"rope_scaling": override_block(params, mla), "max_position_embeddings": eff}
    per_layer = bool(layer_types)
    layer_note = (
        f" YaRN sits in the {', '.join(layer_types or ())} blocks of per-layer-type rope_parameters "
        "(transformers 5's form); whether this engine reads that form was not verified here."
        if per_layer
        else ""
    )
    # llama-server caps a slot at the GGUF's training context (ARCH.context_length) whatever -c says, so a GGUF of
    # the unpatched model needs that key raised as well as the YaRN flags.
    gguf_arch = GGUF_ARCHITECTURES.get(architecture or "LlamaForCausalLM", "ARCH")
    llama_flags = (
        f"--rope-scaling yarn --rope-scale {params.factor:g} --yarn-orig-ctx {params.original_max_position_embeddings}"
        f" --yarn-beta-fast {params.beta_fast:g} --yarn-beta-slow {params.beta_slow:g}"
        f" --override-kv {gguf_arch}.context_length=int:{ctx}"
    )
    hints = [
        EngineHint(
            "vLLM",
            True,
            f"vllm serve {m} --max-model-len {ctx} --hf-overrides {_json({'max_position_embeddings': eff})}",
            "vLLM applies YaRN from rope_scaling/rope_parameters (its YaRN matches transformers). Older vLLM derives "
            f"max_model_len = original x factor = {eff}; since PR #56446 it no longer "
            "multiplies, so the override (or VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) lifts the limit. --rope-scaling was "
            "replaced by --hf-overrides." + layer_note,
            "" if per_layer else f"vllm serve {m} --max-model-len {ctx} --hf-overrides {_json(overrides)}",
        ),
        EngineHint(
            "SGLang",
            True,
            f"SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 python -m sglang.launch_server --model-path {m} "
            f"--context-length {ctx}",
            "SGLang counts the factor as 1 when it derives the context length (original_max_position_embeddings "
            "is present), so ask for the length explicitly." + layer_note,
            ""
            if per_layer
            else f"SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 python -m sglang.launch_server --model-path {m} "
            f"--context-length {ctx} --json-model-override-args {_json(overrides)}",
        ),
        EngineHint(
            "llama.cpp",
            True,
            f"python convert_hf_to_gguf.py {d} && llama-server -m MODEL.gguf -c {ctx}",
            "The converter writes rope.scaling.type=yarn, .factor, .original_context_length, .yarn_beta_fast and "
            ".yarn_beta_slow into the GGUF; the context length comes from max_position_embeddings, hence -c."
            + (" The GGUF keys hold one YaRN for every layer." + layer_note if per_layer else "")
            + (" The command-line flags cannot express mscale_all_dim: convert the patched config." if mla else "")
            + (" Unpatched: llama-server caps a slot at the GGUF's training context whatever -c says, hence "
               "--override-kv" + ("" if gguf_arch != "ARCH" else " (ARCH: the GGUF's general.architecture)") + "."
               if not (per_layer or mla) else ""),
            "" if per_layer or mla else f"llama-server -m MODEL.gguf -c {ctx} {llama_flags}",
        ),
    ]
    if (params.beta_fast, params.beta_slow) != TGI_BETAS:
        hints.append(
            EngineHint(
                "TGI",
                False,
                "",
                f"unsupported: TGI hard-codes beta_fast 32 / beta_slow 1 and ignores the config's "
                f"{params.beta_fast:g}/{params.beta_slow:g}, so it would run a different YaRN than the model was "
                "tuned for.",
            )
        )
    else:
        verified = not per_layer and not mla
        caveat = (
            "whether TGI reads per-layer-type rope_parameters was not verified"
            if per_layer
            else "its handling of mscale/mscale_all_dim was not verified"
        )
        hints.append(
            EngineHint(
                "TGI",
                verified,
                f"text-generation-launcher --model-id {d} --max-input-tokens {ctx - 1024} --max-total-tokens {ctx}"
                if verified
                else "",
                "TGI reads YaRN from config.json rope_scaling and hard-codes beta_fast 32 / beta_slow 1, which this "
                + ("recipe matches. TGI is in maintenance mode." if verified else "recipe matches; not offered: ")
                + ("" if verified else f"{caveat}."),
            )
        )
    return hints
