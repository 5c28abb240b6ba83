"""The words of the keyed tasks (multikey, multivalue, multiquery, absent): needles that name a key in quotes,
questions that ask for one key, every value of a key, or several keys, and the keys themselves.

Usage: `words = keyed_words("ko"); words.needle_text("은빛 등불", "1234567")`

As in RULER and OneRuler, a keyed needle says which key its number belongs to, so the other needles of a prompt
read the same and only the key tells them apart; every question allows the answer "none" ("없음"), so a prompt whose
key is absent reads like any other. Keys are a colour and a thing ("amber lantern", "호박색 등불"): two words
that prose rarely puts side by side, and any key that does occur in the haystack is never drawn
(`available_keys`). Every text is written in its language, not translated word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.tasks import TaskSpec

KEY, VALUE = "{key}", "{value}"


@dataclass(frozen=True)
class KeyedWords:
    code: str
    instruction: str
    needle: str  # {key}, {value}
    question_one: str  # {keys}: one key, one value
    question_all: str  # {keys}: one key, every value of it
    question_many: str  # {keys}: several keys
    prefix_one: str  # retform answer prefixes, {keys}
    prefix_all: str
    prefix_many: str
    answer_one: str  # full qaform answers, {key} {value} / {key} {values}
    answer_all: str
    answer_pair: str  # one key of a multi-key answer: {key} {value}
    answer_many: str  # {pairs}
    answer_none: str  # {key}
    completion_none: str  # retform: what follows the prefix when the key is absent
    none_word: str  # the answer the question asks for when there is no such number
    sentence_end: str  # after a list of values in a retform completion
    and_word: str  # joins the last two items of a list ("" for a plain comma list)
    colours: tuple[str, ...]
    things: tuple[str, ...]

    def needle_text(self, key: str, value: str) -> str:
        return self.needle.replace(KEY, key).replace(VALUE, value)

    def listing(self, items) -> str:
        """`a, b and c` (English) or `a, b, c` (Korean)."""
        items = list(items)
        if len(items) <= 1 or not self.and_word:
            return ", ".join(items)
        return ", ".join(items[:-1]) + f" {self.and_word} " + items[-1]

    def quoted(self, keys) -> str:
        return self.listing(f'"{k}"' for k in keys)

    def keys(self) -> tuple[str, ...]:
        return tuple(f"{colour} {thing}" for colour in self.colours for thing in self.things)


EN = KeyedWords(
    code="en",
    instruction=(
        "Special magic numbers may be hidden within the following text, each one for a name in quotes. "
        "Make sure to memorize them. I will quiz you about them afterwards."
    ),
    needle='The special magic number for "{key}" is: {value}.',
    question_one='What is the special magic number for {keys} mentioned in the text? If there is none, answer "none".',
    question_all=(
        'What are all the special magic numbers for {keys} mentioned in the text? If there are none, answer "none".'
    ),
    question_many=(
        'What are the special magic numbers for {keys} mentioned in the text? If there are none, answer "none".'
    ),
    prefix_one="The special magic number for {keys} is",
    prefix_all="The special magic numbers for {keys} are",
    prefix_many="The special magic numbers for {keys} are",
    answer_one='The special magic number for "{key}" mentioned in the text is {value}.',
    answer_all='The special magic numbers for "{key}" mentioned in the text are {values}.',
    answer_pair='the special magic number for "{key}" is {value}',
    answer_many="In the text, {pairs}.",
    answer_none='The text mentions no special magic number for "{key}", so the answer is "none".',
    completion_none=" none.",
    none_word="none",
    sentence_end=".",
    and_word="and",
    colours=(
        "amber", "azure", "bronze", "cobalt", "copper", "coral", "crimson", "golden",
        "ivory", "jade", "lilac", "maroon", "olive", "pearl", "saffron", "teal",
    ),
    things=(
        "anchor", "beacon", "compass", "falcon", "harbor", "kettle", "lantern", "meadow",
        "orchard", "pebble", "quill", "saddle", "thimble", "violin", "walrus", "windmill",
    ),
)

KO = KeyedWords(
    code="ko",
    instruction=(
        "다음 글 어딘가에 따옴표 속 이름마다 특별한 마법의 숫자가 숨겨져 있을 수 있습니다. "
        "그 숫자들을 잘 기억해 두세요. "
        "글을 다 읽고 나면 그 숫자들에 대해 물어보겠습니다."
    ),
    needle='"{key}"의 특별한 마법의 숫자는 {value}입니다.',
    question_one='글에서 언급된 {keys}의 특별한 마법의 숫자는 무엇입니까? 없으면 "없음"이라고 답하세요.',
    question_all='글에서 언급된 {keys}의 특별한 마법의 숫자를 모두 말해 주세요. 없으면 "없음"이라고 답하세요.',
    question_many='글에서 언급된 {keys}의 특별한 마법의 숫자는 각각 무엇입니까? 없으면 "없음"이라고 답하세요.',
    prefix_one="{keys}의 특별한 마법의 숫자는",
    prefix_all="{keys}의 특별한 마법의 숫자는 모두",
    prefix_many="{keys}의 특별한 마법의 숫자는 각각",
    answer_one='글에서 언급된 "{key}"의 특별한 마법의 숫자는 {value}입니다.',
    answer_all='글에서 언급된 "{key}"의 특별한 마법의 숫자는 {values}입니다.',
    answer_pair='"{key}"의 특별한 마법의 숫자는 {value}',
    answer_many="글에서 {pairs}입니다.",
    answer_none='글에는 "{key}"의 특별한 마법의 숫자가 없으므로 답은 "없음"입니다.',
    completion_none=" 없습니다.",
    none_word="없음",
    sentence_end="입니다.",
    and_word="",
    colours=(
        "호박색", "하늘색", "청동색", "남색", "구리색", "산호색", "진홍색", "금빛",
        "상아색", "비취색", "연보라색", "밤색", "올리브색", "진주색", "주황색", "청록색",
    ),
    things=(
        "닻", "등대", "나침반", "매", "항구", "주전자", "등불", "초원",
        "과수원", "조약돌", "깃펜", "안장", "골무", "바이올린", "바다코끼리", "풍차",
    ),
)

KEYED: dict[str, KeyedWords] = {EN.code: EN, KO.code: KO}


def keyed_words(code: str) -> KeyedWords:
    try:
        return KEYED[code]
    except KeyError:
        raise ProbeError(f"no keyed-task wording for language '{code}'") from None


def available_keys(words: KeyedWords, haystack_text: str) -> tuple[str, ...]:
    """The keys that occur nowhere in the haystack (case-insensitively), in their fixed order."""
    folded = haystack_text.casefold()
    return tuple(key for key in words.keys() if key.casefold() not in folded)


@dataclass(frozen=True)
class AskedTexts:
    """What a keyed probe asks and what a right answer to it reads like."""

    question: str
    answer_prefix: str  # the retform default
    answer: str  # a full qaform answer (the question restated, then the values): sizes the answer budget
    completion: str  # what follows the answer prefix in a right retform answer


def asked_texts(words: KeyedWords, task: TaskSpec, keys: tuple[str, ...], values: tuple[str, ...]) -> AskedTexts:
    """The texts of a probe that asks for `keys` (in question order) whose right answer is `values` (in the same
    order; several per key for multivalue, none for absent)."""
    asked = words.quoted(keys)
    listed = words.listing(values)
    if task.name == "multivalue":
        return AskedTexts(
            words.question_all.replace("{keys}", asked),
            words.prefix_all.replace("{keys}", asked),
            words.answer_all.replace(KEY, keys[0]).replace("{values}", listed),
            f" {listed}{words.sentence_end}",
        )
    if task.name == "multiquery":
        pairs = words.listing(words.answer_pair.replace(KEY, k).replace(VALUE, v) for k, v in zip(keys, values))
        return AskedTexts(
            words.question_many.replace("{keys}", asked),
            words.prefix_many.replace("{keys}", asked),
            words.answer_many.replace("{pairs}", pairs),
            f" {listed}{words.sentence_end}",
        )
    question = words.question_one.replace("{keys}", asked)
    prefix = words.prefix_one.replace("{keys}", asked)
    if not task.present:
        return AskedTexts(question, prefix, words.answer_none.replace(KEY, keys[0]), words.completion_none)
    answer = words.answer_one.replace(KEY, keys[0]).replace(VALUE, values[0])
    return AskedTexts(question, prefix, answer, f" {values[0]}{words.sentence_end}")
