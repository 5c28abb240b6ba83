"""Options of a model run, as one frozen record (the CLI builds it, the runner consumes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RunOptions:
    model: str = "smollm2"  # MODEL as typed (dir, .gguf, hub id or alias)
    revision: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    attn: str = "auto"  # auto | cudnn | fa3 | fa2 | sdpa | eager
    yarn: bool | None = None  # True: apply YaRN in memory; False: force off; None: as the config says
    yarn_factor: float = 4.4
    yarn_original: int = 32768
    yarn_beta_fast: float = 64.0
    yarn_beta_slow: float = 2.0
    engine: str = "auto"  # auto | fast | hf  (fast: prefix-reusing runner; hf: one generate per batch)
    batch_size: int = 0  # 0: pick from free memory
    max_new_tokens: int = 0  # 0: derived from the expected answer's length
    trust_remote_code: bool = False
    overwrite: bool = False
    limit: int = 0  # run only the first N probes (0: all)
    tp: int = 0  # model parallel over N GPUs: tensor parallel under torchrun, else layer sharding (0/1: off)
    max_memory_gib: float = 0.0  # cap on the run's planned GPU peak (weights, KV rows, chunk, batches); 0: none

    def to_dict(self) -> dict:
        return asdict(self)
