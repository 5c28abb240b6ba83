"""The plain transformers path: `generate` on batches of equal-length probes.

Usage: outputs = generate_batch(loaded, [ids, ids, ...], max_new_tokens=16, stop_ids={eos})

Used for models the fast path does not cover, as `--engine hf`, and as the "naive loop" the benchmark compares
against. Even here we never materialise logits for the whole prompt (generate keeps only the last position), and
a batch that runs out of memory is halved and retried instead of crashing the run.
"""

from __future__ import annotations

from typing import Sequence


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def generate_batch(loaded, batch: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: set[int], pad_id: int):
    """Greedy-generate for equal-length prompts; return the new token ids per prompt (cut at the first stop id)."""
    import torch

    from kanana_longctx.kernels.attention import sdpa_context

    model = loaded.model
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(ids) for ids in batch], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    with torch.inference_mode(), sdpa_context(loaded.attention, device):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad_id,
        )
    results = []
    for row in out[:, input_ids.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        results.append(row[:cut])
    return results


def generate_with_fallback(loaded, batch, *, max_new_tokens: int, stop_ids: set[int], pad_id: int):
    """Like generate_batch, but halves the batch on out-of-memory (down to one prompt) instead of failing.
    Returns (outputs, batch size that worked)."""
    import torch

    size = len(batch)
    while True:
        try:
            outputs = []
            for i in range(0, len(batch), size):
                outputs += generate_batch(
                    loaded, batch[i : i + size], max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id
                )
            return outputs, size
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not _is_oom(exc) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
