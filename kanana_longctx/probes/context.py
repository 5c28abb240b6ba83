"""What every probe of a set shares: the token stream, the template prefix, the forbidden digit runs, the question
suffixes, and the rule that turns an assembly into a `Probe` record.

Usage: `ctx = ProbeContext(tb, tokenizer, form, instruction, hay, request, sample_question=q, sample_prefix="",
        needle_tokens=12)`

Seeds: repeat 0 of a probe set with seed S draws its needles from `random.Random("S@OFFSET")` (the rule of the
first release, so its probes are unchanged), repeat r > 0 from `"SrR@OFFSET"`: independent draws, one haystack.
"""

from __future__ import annotations

import bisect

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.assemble import MAX_PAD, Assembler, Built
from kanana_longctx.probes.haystack import Haystack
from kanana_longctx.probes.spec import Probe
from kanana_longctx.probes.stream import Stream, build_stream
from kanana_longctx.probes.template import Template, build_template
from kanana_longctx.probes.tokens import TokenBytes

MIN_HAYSTACK_TOKENS = 32  # a probe with less haystack than this tests nothing


def seed_tag(seed: int, repeat: int) -> str:
    """The string the needle generators of one repeat are seeded with."""
    return str(seed) if repeat == 0 else f"{seed}r{repeat}"


class ProbeContext:
    """The stream and template of a probe set; builds suffixes and records for the task-specific builders."""

    def __init__(self, tb: TokenBytes, tokenizer, form: str, instruction: str, hay: Haystack, request, *,
                 sample_question: str, sample_prefix: str, needle_tokens: int):
        """`needle_tokens`: what every probe spends on needles (with the sample suffix: sizes the stream)."""
        self.tb, self.tokenizer, self.form, self.instruction = tb, tokenizer, form, instruction
        self.hay, self.request = hay, request
        self._templates: dict[tuple[str, str], tuple[Template, int]] = {}
        sample = build_template(tokenizer, form, instruction, sample_question, sample_prefix)
        self.prefix = sample.prefix
        self.prefix_len = len(tb.encode(sample.prefix))
        longest = max(request.lengths)
        reserve = needle_tokens + len(tb.encode(sample.suffix))
        need = longest - self.prefix_len - reserve + tb.window + tb.scan + MAX_PAD + 64
        self.stream: Stream = build_stream(tb, sample.prefix, hay, need)
        self.forbidden = frozenset(self.stream.digit_runs)
        self.assembler = Assembler(tb, self.stream, sample.suffix)

    def check_minimum(self, reserve: int, what: str) -> None:
        minimum = self.prefix_len + reserve + MIN_HAYSTACK_TOKENS
        if min(self.request.lengths) < minimum:
            raise ProbeError(
                f"length {min(self.request.lengths)} is too small for this template: the {self.form} template,"
                f" {what} take {minimum - MIN_HAYSTACK_TOKENS} tokens; use at least {minimum}"
            )

    def suffix(self, question: str, answer_prefix: str) -> tuple[Template, int]:
        """The template for one question (and its suffix's tokens); its prefix must be the stream's."""
        key = (question, answer_prefix)
        if key not in self._templates:
            template = build_template(self.tokenizer, self.form, self.instruction, question, answer_prefix)
            if template.prefix != self.prefix:
                raise ProbeError("the chat template writes a different prefix for another question")
            self._templates[key] = (template, len(self.tb.encode(template.suffix)))
        return self._templates[key]

    def span_end(self, length: int, reserve: int) -> tuple[list[int], int]:
        """Sentence ends a probe of `length` may hold needles at (stream positions), and the last of them: the
        haystack span a depth is a percentage of."""
        stream = self.stream
        bounds = stream.boundaries[: bisect.bisect_right(stream.boundaries, length - reserve)]
        return bounds, bounds[-1]

    def depth_of(self, cut: int, span_end: int) -> float:
        return round(100.0 * (cut - self.stream.start) / max(1, span_end - self.stream.start), 2)

    def record(self, built: Built, template: Template, *, length: int, depth: float, repeat: int, task: str,
               cell: int | None, cuts, span_end: int, needle: str, expected: str, question: str, **fields) -> Probe:
        """The Probe of an assembly. `cell`: index (in prompt order) of the needle at the cell's depth, None when
        the probe has none (absent); `cuts`: every needle's stream position, in prompt order."""
        stream = self.stream
        n = built.needle_tokens
        if cell is None:
            start = end = built.end + n  # nothing placed: the probe leaves the stream where its question starts
            actual = depth
        else:
            start, end = built.spans[cell]
            actual = self.depth_of(cuts[cell], span_end)
        return Probe(
            length=length,
            depth=depth,
            n_tokens=len(built.ids),
            needle_token_start=start,
            needle_token_end=end,
            expected=expected,
            needle=needle,
            question=question,
            prompt=built.prompt,
            form=template.form,
            lang=self.request.lang,
            seed=self.request.seed,
            haystack=self.hay.name,
            haystack_hash=self.hay.sha256,
            haystack_repeats=stream.copies_used(built.end),
            actual_depth=actual,
            haystack_start=stream.start,
            haystack_end=built.end + n,
            pad_tokens=built.pad_tokens,
            pad=built.pad,
            answer_prefix=template.answer_prefix,
            task=task,
            repeat=repeat,
            needle_spans=built.spans,
            needle_depths=tuple(self.depth_of(c, span_end) for c in cuts),
            input_ids=tuple(built.ids),
            **fields,
        )
