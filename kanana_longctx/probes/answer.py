"""The answer budget: how many new tokens a probe set's answers may take, from the tokens of a right answer.

Usage: `max_new = options.max_new_tokens or answer_budget(probe_set.probes, tokenizer)`

Every probe records `answer`, what a right answer reads like in its form and language: in qaform the question
restated and then the value(s) ("The special magic number mentioned in the text is 1234567."; in Korean
"글에서 언급된 특별한 마법의 숫자는 1234567입니다."), in retform what follows the answer prefix (" 1234567.").
The budget is the longest such answer in the model's own tokens, plus half again (at least 8 tokens) for the ways a
model phrases it. So a byte-level tokenizer that spends two tokens per Hangul syllable gets a Korean budget about
twice the English one, instead of one that cuts the answer off before its number. An answer that uses up the
budget is scored `truncated` unless it holds what was asked (kanana_longctx.scoring).
"""

from __future__ import annotations

from typing import Iterable

SLACK_SHARE = 0.5  # of the right answer's tokens, for phrasing
SLACK_MIN = 8


def budget_for(answer_tokens: int) -> int:
    """New tokens allowed for an answer whose right form takes `answer_tokens` tokens."""
    return answer_tokens + max(SLACK_MIN, int(answer_tokens * SLACK_SHARE))


def reference_answer(probe) -> str:
    """The probe's right answer; for a probe of an older prompts.jsonl (no `answer`), its expected value."""
    return probe.answer or (" " + probe.expected if probe.expected else "")


def answer_budget(probes: Iterable, tokenizer) -> int:
    """max_new_tokens for a run of `probes` with `tokenizer`: the largest budget_for of their right answers."""
    texts = sorted({reference_answer(p) for p in probes})
    if not texts:
        return budget_for(0)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return budget_for(max(len(ids) for ids in encoded))
