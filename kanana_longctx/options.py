"""Options of a model run, as one frozen record (the CLI builds it, the runner and the backends consume it).

Usage: options = RunOptions(model="smollm2", engine="fast", yarn=True); options.yarn_params()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kanana_longctx.yarn.params import (
    DEFAULT_BETA_FAST, DEFAULT_BETA_SLOW, DEFAULT_FACTOR, DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS, YarnParams,
)


@dataclass(frozen=True)
class RunOptions:
    model: str = "smollm2"  # MODEL as typed (dir, .gguf, hub id or alias)
    revision: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    attn: str = "auto"  # auto | cudnn | fa3 | fa2 | sdpa | eager
    yarn: bool | None = None  # True: apply YaRN in memory; False: force off; None: as the config says
    yarn_recipe: str = "auto"  # with yarn=True: the recipe (kanana_longctx.yarn.recipes); auto: the config's family's
    yarn_factor: float = DEFAULT_FACTOR
    yarn_original: int | None = None  # None: the model's own native context (the runner says which it took)
    yarn_beta_fast: float = DEFAULT_BETA_FAST
    yarn_beta_slow: float = DEFAULT_BETA_SLOW
    yarn_given: tuple[str, ...] = ()  # numbers given explicitly (factor, original, beta_fast, beta_slow)
    engine: str = "auto"  # auto or a name of kanana_longctx.backends.registry (fast: prefix reuse; hf: generate)
    batch_size: int = 0  # 0: pick from free memory
    max_new_tokens: int = 0  # 0: derived from the expected answer's length
    trust_remote_code: bool = False
    overwrite: bool = False
    limit: int = 0  # run only the first N probes (0: all)
    tp: int = 0  # model parallel over N GPUs: tensor parallel under torchrun, else layer sharding (0/1: off)
    max_memory_gib: float = 0.0  # cap on the run's planned GPU peak (weights, KV rows, chunk, batches); 0: none
    endpoint: str = ""  # an OpenAI-compatible base URL: the probes go to that server (backends.endpoint)
    served_model: str | None = None  # the model name sent to the server (None: the one /v1/models lists)
    api_key_env: str = ""  # the name of the environment variable holding the API key (the key is never stored)
    concurrency: int = 0  # requests in flight (0: the server's default, endpoint.ServerInfo.default_concurrency)
    prefix_order: bool = True  # send probes so that the server's prefix cache serves what they share

    def to_dict(self) -> dict:
        return asdict(self)

    def yarn_numbers(self) -> dict:
        """The YaRN numbers that override the recipe's: those named in `yarn_given` and any that differ from the
        defaults (a caller that set `yarn_factor=2.0` meant it)."""
        values = {"factor": self.yarn_factor, "original": self.yarn_original,
                  "beta_fast": self.yarn_beta_fast, "beta_slow": self.yarn_beta_slow}
        defaults = {"factor": DEFAULT_FACTOR, "original": DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS,
                    "beta_fast": DEFAULT_BETA_FAST, "beta_slow": DEFAULT_BETA_SLOW}
        return {k: v for k, v in values.items() if k in self.yarn_given or v != defaults[k]}

    def yarn_params(self, native: int | None = None) -> YarnParams:
        """The YaRN parameters `--yarn` applies (validated: bad values raise BadInput), over `yarn_original` or,
        when that is None, the model's `native` context (the recipe's 32768 when neither is known)."""
        return YarnParams(
            factor=self.yarn_factor,
            original_max_position_embeddings=self.yarn_original or native or DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS,
            beta_fast=self.yarn_beta_fast,
            beta_slow=self.yarn_beta_slow,
        )
