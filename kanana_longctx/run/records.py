"""From a backend's generations to scored, durable result records (pure: no torch).

Usage: sink = RecordSink(writer, reporter, max_new); backend.run(job, sink)  # or record_of(generation)

The runner, not the backend, turns an answer into a ResultRecord, so every backend is scored the same way:
the text is cleaned for its form (`clean_output`), scored and classed (kanana_longctx.scoring), and written
with the backend's own per-row facts in the record's `extra`.
"""

from __future__ import annotations

from typing import Sequence

from kanana_longctx.backends.base import Generation
from kanana_longctx.results import ResultRecord, ResultsWriter
from kanana_longctx.scoring import judge_probe


def clean_output(text: str, form: str) -> str:
    """Retform completions end at the first line break after some content (base models ramble on)."""
    if form == "retform":
        stripped = text.lstrip()
        cut = stripped.find("\n")
        return stripped if cut < 0 else stripped[:cut]
    return text.strip()


def record_of(generation: Generation, max_new_tokens: int = 0) -> ResultRecord:
    """A generation as the scored record results.jsonl holds: its score and failure class (kanana_longctx.scoring)
    from the probe's own values and language; `max_new_tokens` is the budget it ran with."""
    probe = generation.probe
    text = clean_output(generation.text, probe.form)
    judged = judge_probe(probe, text, generation.hit_max_new_tokens)
    return ResultRecord(
        probe_id=probe.probe_id,
        length=probe.length,
        depth=probe.depth,
        score=judged.score,
        expected=probe.expected,
        output=text,
        n_tokens=probe.n_tokens,
        needle_token_start=probe.needle_token_start,
        needle_token_end=probe.needle_token_end,
        seed=probe.seed,
        form=probe.form,
        lang=probe.lang,
        haystack=probe.haystack,
        new_tokens=generation.new_tokens,
        prefill_tokens=generation.prefill_tokens,
        seconds=round(generation.seconds, 4),
        extra=dict(generation.extras),
        task=probe.task,
        repeat=probe.repeat,
        outcome=judged.outcome,
        max_new_tokens=max_new_tokens,
        keys=tuple(probe.keys),
        expected_values=tuple(probe.answers),
        found_values=judged.found,
        distractor_values=tuple(probe.distractor_values),
        named_distractors=judged.named_distractors,
    )


class RecordSink:
    """The runner's GenerationSink: each finished batch scored, appended (one fsynced write) and reported."""

    def __init__(self, writer: ResultsWriter, reporter, max_new_tokens: int = 0):
        self.writer = writer
        self.reporter = reporter
        self.max_new_tokens = max_new_tokens

    def write(self, generations: Sequence[Generation]) -> None:
        records = [record_of(g, self.max_new_tokens) for g in generations]
        self.writer.append(records)
        for record in records:
            self.reporter.advance(record)

    def note(self, message: str) -> None:
        self.reporter.note(message)
