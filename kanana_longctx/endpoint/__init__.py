"""Client for OpenAI-compatible servers (llama-server, llama-cpp-python, vLLM, SGLang, TGI): discovery,
pre-flight, exact-length probes and bounded concurrent sending (pure: no torch).

Usage:
    config = EndpointConfig("http://127.0.0.1:8080/v1")
    info = discover(config)                                   # kind, model, context, version, prompt form
    check_context(info, longest_prompt, max_tokens, hints)    # ContextTooSmall before anything is sent
    send_probes(config, info, probes, GenerationSettings(max_tokens), on_reply,
                shared_prefix_ids=probe_set.shared_prefix_ids)
"""

from kanana_longctx.endpoint.completion import EndpointReply, GenerationSettings, request_body
from kanana_longctx.endpoint.discovery import KINDS, ServerInfo, discover
from kanana_longctx.endpoint.dispatch import SendReport, send_probes
from kanana_longctx.endpoint.order import prefix_order, warmup_ids
from kanana_longctx.endpoint.overflow import ContextRefusal, context_refusal
from kanana_longctx.endpoint.preflight import check_context, context_advice, needed_context
from kanana_longctx.endpoint.transport import EndpointConfig, RetryPolicy, split_base_url

__all__ = [
    "KINDS",
    "ContextRefusal",
    "EndpointConfig",
    "EndpointReply",
    "GenerationSettings",
    "RetryPolicy",
    "SendReport",
    "ServerInfo",
    "check_context",
    "context_advice",
    "context_refusal",
    "discover",
    "needed_context",
    "prefix_order",
    "request_body",
    "send_probes",
    "split_base_url",
    "warmup_ids",
]
