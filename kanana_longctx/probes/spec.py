"""The probe record shared by the probe builder, the runner and `prompts.jsonl`.

A probe is fully described by its record: `input_ids` are exactly the tokens of `prompt` (with
`tokenizer(prompt, add_special_tokens=False)`), `n_tokens == length`, and `input_ids[:needle_token_start]` are the
first tokens of the probe set's `shared_prefix_ids` (template prefix + haystack), which is what lets the runner reuse
one cached prefix across every depth and length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class Probe:
    length: int  # requested length in tokens
    depth: float  # requested depth, percent of the haystack span
    n_tokens: int  # actual tokens of `prompt` (== length)
    needle_token_start: int  # index of the needle's first token in input_ids
    needle_token_end: int  # one past the needle's last token
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
    input_ids: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @property
    def probe_id(self) -> str:
        """Identifies the cell of the grid (resume key together with the run configuration)."""
        return f"L{self.length}-D{self.depth:g}"

    def to_dict(self, *, with_ids: bool = False) -> dict:
        data = asdict(self)
        data.pop("input_ids")
        if with_ids:
            data["input_ids"] = list(self.input_ids)
        data["probe_id"] = self.probe_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Probe":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "input_ids" in kwargs:
            kwargs["input_ids"] = tuple(kwargs["input_ids"])
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
