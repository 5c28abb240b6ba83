"""The probe record shared by the probe builder, the runner and `prompts.jsonl`.

A probe is fully described by its record: `input_ids` are exactly the tokens of `prompt` (with
`tokenizer(prompt, add_special_tokens=False)`), `n_tokens == length`, and the tokens before its first needle are the
first tokens of the probe set's `shared_prefix_ids` (template prefix + haystack), which is what lets the runner reuse
one cached prefix across every depth and length. Fields added after the first release have defaults, so older
prompts.jsonl files still load (as single-task probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Probe:
    length: int  # requested length in tokens
    depth: float  # requested depth, percent of the haystack span
    n_tokens: int  # actual tokens of `prompt` (== length)
    needle_token_start: int  # first token of the needle at the cell's depth (absent: where the question starts)
    needle_token_end: int  # one past its last token
    expected: str  # the answer a correct model produces (e.g. the 7-digit value)
    needle: str
    question: str
    prompt: str  # exact model input, special tokens written out
    form: str  # retform | qaform
    lang: str  # en | ko
    seed: int
    haystack: str  # haystack name
    haystack_hash: str  # content hash of the haystack source text
    haystack_repeats: int = 1  # how many times the source was repeated to be long enough
    actual_depth: float = 0.0  # where the needle really starts, percent of the haystack span
    haystack_start: int = 0  # index of the first haystack token (the template prefix's length)
    haystack_end: int = 0  # one past the last haystack token (pad and suffix follow)
    pad_tokens: int = 0  # filler tokens between haystack and suffix that keep n_tokens == length exact
    pad: str = ""  # their text, e.g. "…" when the span would end inside a character ("" when none)
    answer_prefix: str = ""  # the answer prefix the prompt ends with ("" for none)
    task: str = "single"  # single | multikey | multivalue | multiquery | absent
    repeat: int = 0  # which of the cell's probes (--repeats): each draws its own needles
    keys: tuple[str, ...] = ()  # the keys the question asks, in its order (keyed tasks)
    expected_values: tuple[str, ...] = ()  # every value a right answer gives (none for absent)
    distractor_values: tuple[str, ...] = ()  # values of the needles that are not asked
    needle_spans: tuple[tuple[int, int], ...] = ()  # token span of every needle, in prompt order
    needle_depths: tuple[float, ...] = ()  # where each needle is, percent of the haystack span
    answer: str = ""  # what a right answer reads like in this form (sizes the answer budget)
    input_ids: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @property
    def probe_id(self) -> str:
        """Identifies the probe in its grid (resume key together with the run configuration):
        `L1000-D50` for the first single-task probe of a cell, `multikey-L1000-D50-R2` for the third multikey one."""
        name = f"L{self.length}-D{self.depth:g}" + (f"-R{self.repeat}" if self.repeat else "")
        return name if self.task == "single" else f"{self.task}-{name}"

    @property
    def answers(self) -> tuple[str, ...]:
        """The values a right answer gives (a probe of an older file: its `expected`)."""
        if self.expected_values or self.task == "absent":
            return self.expected_values
        return (self.expected,) if self.expected else ()

    def to_dict(self, *, with_ids: bool = False) -> dict:
        # Not dataclasses.asdict: it deep-copies input_ids (up to 128K ints) only for them to be dropped.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "input_ids"}
        if with_ids:
            data["input_ids"] = list(self.input_ids)
        data["probe_id"] = self.probe_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Probe":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for name in ("input_ids", "keys", "expected_values", "distractor_values", "needle_depths"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        if "needle_spans" in kwargs:
            kwargs["needle_spans"] = tuple(tuple(span) for span in kwargs["needle_spans"])
        return cls(**kwargs)


@dataclass(frozen=True)
class ProbeSet:
    """All probes of one grid, plus the token stream every probe's pre-needle part is a prefix of."""

    probes: tuple[Probe, ...]
    shared_prefix_ids: tuple[int, ...] = field(repr=False)
    form: str = "qaform"
    lang: str = "en"
    haystack: str = ""
    haystack_hash: str = ""
    seed: int = 0
    haystack_repeats: int = 1  # copies of the haystack source the longest probe uses
    preset: str = ""  # grid name (quick | readme-32k | readme-128k | custom ...)
    tokenizer: str = ""  # name_or_path of the tokenizer the ids belong to
    task: str = "single"
    distractors: int = 0  # needles per probe whose key is not asked
    values: int = 1  # values of the asked key (multivalue)
    queries: int = 1  # keys asked at once (multiquery)
    repeats: int = 1  # probes per cell
    max_new_tokens: int = 0  # the answer budget (kanana_longctx.probes.answer.answer_budget)
