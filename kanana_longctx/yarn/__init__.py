"""YaRN for Kanana configs: parameters, an independent implementation of the math, JSON-text patching, the
transformers-based verification and the serving flags of each engine.

Usage: apply_yarn_to_config_dict(config, YarnParams())  # from .params and .patch; see files.py for config.json

Module map (each imports neither torch nor transformers at import time):
- params.py: `YarnParams` (the README's defaults: factor 4.4 over 32768 tokens, betas 64/2) and what a config says.
- rope_math.py: inverse frequencies and attention factor of default RoPE and YaRN, in plain Python floats.
- jsontext.py: top-level member spans of a JSON object, so a patch edits text instead of re-serialising it.
- patch.py: the patch itself (text and dict), and its inverse.
- files.py: config.json on disk: locate it, patch it atomically, keep the backup sidecar, restore it.
- check.py: what the installed transformers computes, compared with rope_math (imports transformers lazily).
- serving.py: vLLM, SGLang and llama.cpp flags for a patched model; why TGI is unsupported.
- live.py: YaRN put on a live transformers config in memory (`niah --yarn`), read back from the built model.
"""
