"""Before the first probe is sent: does the server's context hold the longest probe plus its answer?

Usage: `check_context(info, longest_prompt=8192, max_tokens=24, hints=serving_hints(model, params))`

Each engine draws the line a little differently (p = prompt tokens, m = max_tokens, L = its limit): vLLM refuses
p + m > L; SGLang p + m >= L; llama-server refuses p >= L and silently cuts the answer short when only p + m > L,
so the answer must fit as well; TGI checks p against max_input_tokens and p + m against max_total_tokens. Where
the server reports no context (llama-cpp-python), nothing can be checked here; the server's own refusal is
recognised when a probe is sent (`ContextOverflow`).
"""

from __future__ import annotations

from typing import Sequence

from kanana_longctx.endpoint.discovery import LLAMA_CPP_PYTHON, LLAMA_SERVER, SGLANG, TGI, VLLM, ServerInfo
from kanana_longctx.errors import ContextTooSmall

# kind -> (the EngineHint.engine of `config --check` for it, the launch flag that sets the context)
_ENGINE_HINTS = {
    LLAMA_SERVER: ("llama.cpp", "-c N (with -np K slots each gets N/K)"),
    LLAMA_CPP_PYTHON: ("", "--n_ctx N"),
    VLLM: ("vLLM", "--max-model-len N"),
    SGLANG: ("SGLang", "--context-length N"),
    TGI: ("TGI", "--max-total-tokens N"),
}


def needed_context(info: ServerInfo, longest_prompt: int, max_tokens: int) -> int:
    """The smallest context this server must report for a `longest_prompt`-token probe and its answer."""
    total = longest_prompt + max_tokens
    return total + 1 if info.kind == SGLANG else total


def check_context(info: ServerInfo, longest_prompt: int, max_tokens: int, hints: Sequence = ()) -> str:
    """Raise ContextTooSmall when the probes cannot fit; return a note ("" when the context was checked)."""
    needed = needed_context(info, longest_prompt, max_tokens)
    if info.kind == TGI and info.max_input_tokens and longest_prompt > info.max_input_tokens:
        raise ContextTooSmall(
            f"the server takes prompts of at most {info.max_input_tokens:,} tokens and the longest probe has "
            f"{longest_prompt:,}; {context_advice(info, needed, hints)}",
            needed=longest_prompt, limit=info.max_input_tokens, hint=context_advice(info, needed, hints),
        )
    if info.context is None:
        return f"context {info.context_source}: the longest probe needs {needed:,} tokens and is not checked first"
    if needed > info.context:
        advice = context_advice(info, needed, hints)
        raise ContextTooSmall(
            f"the server's context is {info.context:,} tokens ({info.context_source}) and the longest probe needs "
            f"{needed:,} ({longest_prompt:,} prompt + {max_tokens} answer); {advice}",
            needed=needed, limit=info.context, hint=advice,
        )
    return ""


def context_advice(info: ServerInfo, needed: int, hints: Sequence = ()) -> str:
    """What to relaunch the server with: the `config --check` command for this engine where one is given (any
    object with `engine`, `supported` and `command`, e.g. yarn.serving.EngineHint), else the flag."""
    engine, flag = _ENGINE_HINTS.get(info.kind, ("", "a context length of N"))
    command = next(
        (h.command for h in hints if engine and h.engine == engine and h.supported and h.command), ""
    )
    advice = f"serve the model with a context of at least {needed:,} tokens ({flag.replace('N', f'{needed}', 1)})"
    return f"{advice}, as `config --check` suggests: {command}" if command else advice
