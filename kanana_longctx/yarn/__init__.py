"""YaRN for Kanana configs: recipes, parameters, an independent implementation of the math, JSON-text patching,
backups and their restore, the transformers-based verification and the serving flags of each engine.

Usage: recipe = recipe_for(config); apply_yarn_to_config_dict(config, recipe.params, layer_types=recipe.layer_types)

Module map (each imports neither torch nor transformers at import time):
- recipes.py: the recipe a config's family needs (kanana-1.5, kanana-2, custom) and the dicts for a live config.
- params.py: `YarnParams` (bounded) and what a config says (`RopeSettings`, per layer type where it has them).
- rope_math.py: inverse frequencies and attention factor of default RoPE and YaRN, in plain Python floats.
- jsontext.py: top-level (and one-level-down) member spans of a JSON object, so a patch edits text in place.
- patch.py: the patch itself (text and dict), and its inverse.
- backup.py: the sidecar record `--no-yarn` restores from, checked before it is trusted.
- files.py: config.json on disk: locate it, patch it atomically under a lock, restore it.
- check.py: what the installed transformers computes for one RoPE block, compared with rope_math.
- verify.py: the whole --check: every block, plus what the model classes do (MLA softmax scale, per-layer rotary).
- serving.py: vLLM, SGLang, llama.cpp and TGI commands for a patched model, and overrides for an unpatched one.
- live.py: YaRN put on a live transformers config in memory (`niah --yarn`), read back from the built model.
"""
