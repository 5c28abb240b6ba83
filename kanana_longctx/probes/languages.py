"""The words of a probe in each language: instruction, needle, question, answer prefix and noise filler.

Usage: `pack = language_pack("ko"); pack.needle.replace("{value}", "1234567")`

Every text is written in the language itself (not machine-translated from the English one). The needle ends with a
sentence end so that it reads as one more sentence of the haystack and tokenizes cleanly at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.errors import ProbeError

VALUE = "{value}"


@dataclass(frozen=True)
class LanguagePack:
    code: str
    name: str
    instruction: str  # before the haystack
    needle: str  # contains {value}
    question: str  # after the haystack
    answer_prefix: str  # what a retform prompt ends with (the model completes it)
    generic_answer_prefix: str  # the answer prefix used with a custom needle/question
    noise: tuple[str, ...]  # filler sentences of the `noise` haystack (RULER style)
    answer: str  # a full qaform answer: the question restated, then {value}
    completion: str  # what follows the answer prefix in retform ({value} and the sentence end)
    refusals: tuple[str, ...]  # phrases that say "there is none" (lower case; whole words in English)


EN = LanguagePack(
    code="en",
    name="English",
    instruction=(
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards."
    ),
    needle="The special magic number is: {value}.",
    question="What is the special magic number mentioned in the text?",
    answer_prefix="The special magic number is",
    generic_answer_prefix="Answer:",
    # RULER's single-needle noise haystack, verbatim.
    noise=(
        "The grass is green.",
        "The sky is blue.",
        "The sun is yellow.",
        "Here we go.",
        "There and back again.",
    ),
    answer="The special magic number mentioned in the text is {value}.",
    completion=" {value}.",
    refusals=(
        "none", "no such", "there is no", "there are no", "no special magic number", "no magic number", "no number",
        "not mentioned", "isn't mentioned", "no mention", "not found", "not present", "not provided",
        "not specified", "not in the text", "does not contain", "doesn't contain", "does not mention",
        "doesn't mention", "cannot find", "can't find", "could not find", "couldn't find", "unable to find",
        "cannot be found", "not given",
    ),
)

KO = LanguagePack(
    code="ko",
    name="Korean",
    instruction=(
        "다음 글 어딘가에 특별한 마법의 숫자가 숨겨져 있습니다. "
        "그 숫자를 잘 기억해 두세요. "
        "글을 다 읽고 나면 그 숫자에 대해 물어보겠습니다."
    ),
    needle="특별한 마법의 숫자는 {value}입니다.",
    question="글에서 언급된 특별한 마법의 숫자는 무엇입니까?",
    answer_prefix="특별한 마법의 숫자는",
    generic_answer_prefix="답:",
    # The same rhythm as RULER's filler: short, content-free, digit-free sentences.
    noise=(
        "풀은 초록색이다.",
        "하늘은 파랗다.",
        "해는 노랗다.",
        "자, 가 보자.",
        "갔다가 다시 돌아온다.",
    ),
    answer="글에서 언급된 특별한 마법의 숫자는 {value}입니다.",
    completion=" {value}입니다.",
    # Korean has no word boundaries to match on: these are stems ("없" + 음/습니다/어요/다/는...), matched anywhere.
    # "none" is here too: it is the word many models answer with whatever the language of the question.
    refusals=(
        "없음", "없습니다", "없어요", "없다", "없는", "없으", "없네", "언급되지 않", "언급되어 있지 않", "언급이 없",
        "나와 있지 않", "나오지 않", "찾을 수 없", "존재하지 않", "포함되어 있지 않", "알 수 없", "none",
    ),
)

LANGUAGES: dict[str, LanguagePack] = {EN.code: EN, KO.code: KO}


def language_pack(code: str) -> LanguagePack:
    """The pack for `code` (en | ko); ProbeError for anything else."""
    key = (code or "").strip().lower()
    if key not in LANGUAGES:
        raise ProbeError(f"unknown language '{code}' (choose one of: {', '.join(LANGUAGES)})")
    return LANGUAGES[key]


def noise_text(code: str) -> str:
    """One block of the noise haystack: the filler sentences joined by spaces."""
    return " ".join(language_pack(code).noise)
