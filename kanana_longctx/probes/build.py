"""Exact-length needle-in-a-haystack probes, assembled from token ids: `build_probe_set(request, tokenizer)`.

Usage: `build_probe_set(ProbeRequest(lengths=(1000, 2000), depths=(0, 50, 100), lang="ko"), tokenizer)`

A probe of length L is `stream[:cut] + needle + stream[cut:end] + tail`, where `stream` is the template prefix and
the haystack tokenized once, `cut` is the sentence end nearest to the requested depth, and `tail` is the question
part of the template (question, end of turn, generation prompt, answer prefix). So the pre-needle tokens of every
probe are a prefix of one stream, which the runner computes once. `end` is chosen so that the probe has exactly L
tokens (kanana_longctx.probes.assemble). Every junction is re-encoded locally (`TokenBytes.splice_ok`), so
`tokenizer(prompt, add_special_tokens=False)` gives back `input_ids` exactly; `verify="full"` re-encodes every
whole prompt as well. The keyed tasks (several needles, kanana_longctx.probes.multi) are built the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kanana_longctx.errors import ProbeError
from kanana_longctx.limits import MAX_LENGTH, MAX_REPEATS, MAX_SEED
from kanana_longctx.probes.answer import answer_budget
from kanana_longctx.probes.assemble import nearest
from kanana_longctx.probes.context import ProbeContext, seed_tag
from kanana_longctx.probes.grid import Grid, round_half_up
from kanana_longctx.probes.haystack import Haystack, load_haystack
from kanana_longctx.probes.languages import language_pack
from kanana_longctx.probes.needle import NeedleSpec, draw_value, needle_rng, resolve_needle
from kanana_longctx.probes.spec import Probe, ProbeSet
from kanana_longctx.probes.tasks import resolve_task
from kanana_longctx.probes.template import resolve_form
from kanana_longctx.probes.tokens import TokenBytes

VERIFY_MODES = ("junctions", "full")


@dataclass(frozen=True)
class ProbeRequest:
    """Everything that decides the probes besides the tokenizer."""

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    haystack: str = "builtin"  # builtin[:LANG] | noise[:LANG] | directory | file
    form: str = "auto"  # auto | retform | qaform
    lang: str = "en"  # en | ko
    seed: int = 0
    needle: str | None = None  # custom needle; {value} stands for the random value
    question: str | None = None
    expected: str | None = None  # the answer the custom needle holds (default: the value)
    answer_prefix: str | None = None  # None: the form's default; "default": the language's; else the text
    preset: str = ""  # grid name, for the records
    verify: str = "junctions"  # junctions | full (re-encode every prompt: slow at 128K)
    haystack_root: str | None = field(default=None, compare=False)  # built-in haystack directory override
    task: str = "single"  # single | multikey | multivalue | multiquery | absent
    distractors: int | None = None  # None: the task's default
    values: int | None = None
    queries: int | None = None
    repeats: int = 1  # probes per cell, each with its own draws

    @classmethod
    def from_grid(cls, grid: Grid, **kwargs) -> "ProbeRequest":
        return cls(lengths=grid.lengths, depths=grid.depths, preset=grid.name, **kwargs)

    def __post_init__(self) -> None:
        if not self.lengths:
            raise ProbeError("no lengths to build")
        if not self.depths:
            raise ProbeError("no depths to build")
        try:
            lengths = tuple(sorted({int(x) for x in self.lengths}))
            depths = tuple(sorted({float(x) for x in self.depths}))
        except (TypeError, ValueError):
            raise ProbeError(f"lengths and depths must be numbers: {self.lengths!r}, {self.depths!r}") from None
        for x in self.lengths:
            if float(x) != int(x) or int(x) < 1:
                raise ProbeError(f"length {x} is not a positive whole number of tokens")
            if int(x) > MAX_LENGTH:
                raise ProbeError(f"length {int(x):,} is more than {MAX_LENGTH:,} tokens")
        for depth in depths:
            if not 0.0 <= depth <= 100.0:
                raise ProbeError(f"depth {depth:g} is outside 0..100 (percent)")
        object.__setattr__(self, "lengths", lengths)  # frozen: normalise once, here
        object.__setattr__(self, "depths", depths)
        if self.verify not in VERIFY_MODES:
            raise ProbeError(f"unknown verify mode '{self.verify}' (choose junctions or full)")
        language_pack(self.lang)
        task = resolve_task(self.task, distractors=self.distractors, values=self.values, queries=self.queries)
        object.__setattr__(self, "task", task.name)
        if task.keyed and (self.needle is not None or self.question is not None or self.expected is not None):
            raise ProbeError("--needle, --question and --expected work with --task single only")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ProbeError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if not 1 <= int(self.repeats) <= MAX_REPEATS:
            raise ProbeError(f"--repeats must be between 1 and {MAX_REPEATS}, got {self.repeats}")

    @property
    def task_spec(self):
        return resolve_task(self.task, distractors=self.distractors, values=self.values, queries=self.queries)


def build_probe_set(request: ProbeRequest, tokenizer, *, haystack: Haystack | None = None) -> ProbeSet:
    """Build every probe of `request`; raise ProbeError/HaystackError before anything is written."""
    pack = language_pack(request.lang)
    form = resolve_form(request.form, tokenizer)
    task = request.task_spec
    hay = haystack or load_haystack(request.haystack, pack.code, root=request.haystack_root)
    tb = TokenBytes(tokenizer)
    if task.keyed:
        from kanana_longctx.probes.multi import KeyedBuilder

        builder = KeyedBuilder(tb, tokenizer, form, pack, task, hay, request)
    else:
        builder = _SingleBuilder(tb, tokenizer, form, pack, hay, request)
    probes = [
        builder.probe(length, depth, repeat)
        for length in request.lengths
        for depth in request.depths
        for repeat in range(request.repeats)
    ]
    if request.verify == "full":
        verify_full(tokenizer, probes)
    longest = max(p.haystack_end - sum(b - a for a, b in p.needle_spans) for p in probes)
    return ProbeSet(
        probes=tuple(probes),
        shared_prefix_ids=tuple(builder.ctx.stream.ids[:longest]),
        form=form,
        lang=pack.code,
        haystack=hay.name,
        haystack_hash=hay.sha256,
        seed=request.seed,
        haystack_repeats=max(p.haystack_repeats for p in probes),
        preset=request.preset,
        tokenizer=str(getattr(tokenizer, "name_or_path", "") or ""),
        task=task.name,
        distractors=task.distractors,
        values=task.values,
        queries=task.queries,
        repeats=request.repeats,
        max_new_tokens=answer_budget(probes, tokenizer),
    )


def verify_full(tokenizer, probes, batch: int = 8) -> None:
    """Re-encode every prompt whole and compare with its ids (the slow, unconditional check)."""
    for i in range(0, len(probes), batch):
        group = probes[i : i + batch]
        encoded = tokenizer([p.prompt for p in group], add_special_tokens=False, verbose=False)["input_ids"]
        for probe, ids in zip(group, encoded):
            if list(ids) != list(probe.input_ids):
                raise ProbeError(f"probe {probe.probe_id}: the prompt re-encodes to {len(ids)} tokens, not its ids")


class _SingleBuilder:
    """The README's probe: one needle, at the sentence end nearest to the cell's depth."""

    def __init__(self, tb: TokenBytes, tokenizer, form: str, pack, hay: Haystack, request: ProbeRequest):
        self.request = request
        self.spec: NeedleSpec = resolve_needle(
            pack, form, needle=request.needle, question=request.question,
            expected=request.expected, answer_prefix=request.answer_prefix,
        )
        self.sample_needle = len(tb.encode(" " + self.spec.needle_text("0" * 7)))
        self.ctx = ProbeContext(
            tb, tokenizer, form, pack.instruction, hay, request, sample_question=self.spec.question,
            sample_prefix=self.spec.answer_prefix, needle_tokens=self.sample_needle,
        )
        self.template, self.suffix_len = self.ctx.suffix(self.spec.question, self.spec.answer_prefix)
        self.reserve = self.sample_needle + self.suffix_len
        self.ctx.check_minimum(self.reserve, "needle and question")
        self.answer = self._answer_text(pack)

    def _answer_text(self, pack) -> str:
        """A right answer, {value} standing for the value: the completion of the answer prefix if the prompt ends
        with one, else a whole sentence."""
        prefix = self.spec.answer_prefix
        if self.spec.custom:
            return f" {self.spec.expected}." if prefix else f"{pack.generic_answer_prefix} {self.spec.expected}."
        return pack.completion if prefix else pack.answer

    def probe(self, length: int, depth: float, repeat: int = 0) -> Probe:
        ctx, spec = self.ctx, self.spec
        stream = ctx.stream
        bounds, span_end = ctx.span_end(length, self.reserve)
        target = stream.start + int(round_half_up(depth / 100.0 * (span_end - stream.start)))
        tag = seed_tag(self.request.seed, repeat)
        placed = False  # some sentence end gave a stable assembly (only the answer's uniqueness failed)
        for cut in nearest(bounds, target):
            rng = needle_rng(tag, cut - stream.start)
            tried: set[str] = set()
            for _ in range(100 if spec.uses_value else 1):
                value = draw_value(rng, ctx.forbidden | tried) if spec.uses_value else ""
                tried.add(value)
                needle, expected = spec.needle_text(value), spec.expected_text(value)
                built = ctx.assembler.assemble(length, [(cut, needle)], self.template.suffix, self.suffix_len)
                if built is None:
                    if placed:
                        continue  # this value's digits upset a junction that others keep: draw again
                    break  # no exact, stable assembly here: the next sentence end
                placed = True
                if built.prompt.count(expected) != needle.count(expected):
                    continue  # the answer also occurs outside the needle (e.g. across a junction): draw again
                return ctx.record(
                    built, self.template, length=length, depth=depth, repeat=repeat, task="single", cell=0,
                    cuts=(cut,), span_end=span_end, needle=needle, expected=expected, question=spec.question,
                    expected_values=(expected,), answer=self.answer.replace("{value}", expected),
                )
            if placed:
                break  # values were drawn and rejected at a cut that assembles: moving the needle would not help
        if not placed:
            raise ProbeError(
                f"cannot place the needle at depth {depth:g}% of a {length}-token probe: no sentence end near"
                f" haystack token {target - stream.start} gives stable token junctions"
            )
        if spec.uses_value:
            raise ProbeError(f"probe L{length}-D{depth:g}: every value drawn also occurs elsewhere in the prompt")
        raise ProbeError(f"the expected answer {spec.expected!r} also occurs outside the needle (L{length}-D{depth:g})")
