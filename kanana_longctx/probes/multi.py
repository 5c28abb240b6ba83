"""Probes of the keyed tasks (multikey, multivalue, multiquery, absent): several needles, one at the cell's depth.

Usage: `KeyedBuilder(tb, tokenizer, form, pack, resolve_task("multikey"), hay, request).probe(8000, 50, 0)`

Where the needles go, and why (the prefix-reuse trade-off). A probe shares the haystack stream with every other
probe only up to its first needle, and shares more with the probes that hold the same tokens further on. So:

- The needle at the cell's depth (the first asked one) is placed as in the single task: at the sentence end nearest
  to the depth, its key and value drawn from `"SEED@OFFSET"`.
- The other needles, the *column* needles (distractors, the other values or keys asked), are drawn once per
  length and repeat, from `"SEED:TASK:LENGTH"`: with n of them, one uniform draw in each n-th of the length's
  haystack span (the shares dealt out in a drawn order, so no kind of needle keeps to one end), each at the
  nearest free sentence end, with keys and values of their own. Every depth of a length holds the same column
  needles at the same places, so K stays exact for every probe, the needles spread over the whole probe, and the
  probes of one column are identical up to their own needle: computed once, they cost what single-task probes do.
  What is lost against the single task is the stream between the first column needle and the deepest cell
  needle, once per length and repeat (docs/probes.md gives the measured shares).

An absent probe holds only the column needles (none by default) and asks for a key drawn per cell from
`"SEED@absent:L<length>-D<depth>"`: the cells of a length share every haystack token and differ in the key asked.
"""

from __future__ import annotations

import random

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.assemble import MAX_PAD, nearest
from kanana_longctx.probes.context import ProbeContext, seed_tag
from kanana_longctx.probes.grid import round_half_up
from kanana_longctx.probes.keyed import AskedTexts, asked_texts, available_keys, keyed_words
from kanana_longctx.probes.needle import VALUE_DIGITS, draw_value, needle_rng
from kanana_longctx.probes.spec import Probe
from kanana_longctx.probes.tasks import TaskSpec

_MARGIN = MAX_PAD + 8  # tokens a probe's needles and question may take beyond the sample's
_TRIES = 100


class KeyedBuilder:
    def __init__(self, tb, tokenizer, form: str, pack, task: TaskSpec, hay, request):
        self.tb, self.task, self.request = tb, task, request
        self.words = words = keyed_words(pack.code)
        all_keys = words.keys()
        sample_value = "0" * VALUE_DIGITS
        samples = [" " + words.needle_text(k, sample_value) for k in all_keys]
        needle_lengths = [len(ids) for ids in tb.encode_many(samples)]
        self.needle_tokens = max(needle_lengths)
        longest_key = all_keys[needle_lengths.index(self.needle_tokens)]
        sample = asked_texts(words, task, (longest_key,) * task.queries, (sample_value,) * task.asked_needles)
        self.ctx = ctx = ProbeContext(
            tb, tokenizer, form, words.instruction, hay, request, sample_question=sample.question,
            sample_prefix=self._prefix(sample, form), needle_tokens=task.needles * self.needle_tokens,
        )
        self.form = form
        stream = ctx.stream
        self.keys = available_keys(words, stream.data[: stream.cum[stream.usable]].decode("utf-8", "ignore"))
        if len(self.keys) < task.needles + 1:
            raise ProbeError(f"the haystack spells all but {len(self.keys)} of the task's keys; too few to draw from")
        _, sample_suffix = ctx.suffix(sample.question, self._prefix(sample, form))
        self.reserve = task.needles * self.needle_tokens + sample_suffix + _MARGIN
        ctx.check_minimum(self.reserve, f"{task.needles} needles and the question")
        self._columns: dict[tuple[int, int], tuple[list[tuple[int, str, str, bool]], str]] = {}

    def _prefix(self, texts: AskedTexts, form: str) -> str:
        """The answer prefix: the task's own in retform (or with --answer-prefix default), none in qaform."""
        chosen = self.request.answer_prefix
        if chosen is None:
            return texts.answer_prefix if form == "retform" else ""
        return texts.answer_prefix if chosen.strip().lower() == "default" else chosen.strip()

    # -- the needles every depth of a length shares -------------------------------------------------------------
    def _column(self, length: int, repeat: int):
        """(stream position, key, value, asked) of the column needles, ascending, and the asked key of multivalue."""
        if (length, repeat) in self._columns:
            return self._columns[(length, repeat)]
        ctx, task = self.ctx, self.task
        start = ctx.stream.start
        bounds, span_end = ctx.span_end(length, self.reserve)
        free = [b for b in bounds if b > start]  # depth 0 stays the cell needle's
        if len(free) < task.needles + 1:
            raise ProbeError(
                f"a {length}-token probe has room for {len(free)} sentence ends besides its {task.needles} needles"
                f" ({self.needle_tokens} tokens each with this tokenizer) and question; use longer lengths or"
                " fewer needles"
            )
        rng = random.Random(f"{seed_tag(self.request.seed, repeat)}:{task.name}:{length}")
        asked_key = self._draw_key(rng, set()) if task.name == "multivalue" else ""
        asked = max(0, task.asked_needles - 1)
        needles: list[tuple[int, str, str, bool]] = []
        keys = {asked_key} - {""}
        strata = list(range(task.column_needles))  # one needle per equal share of the span, in a drawn order
        rng.shuffle(strata)
        for index, stratum in enumerate(strata):
            is_asked = index < asked
            key = asked_key if asked_key and is_asked else self._draw_key(rng, keys)
            keys.add(key)
            value = draw_value(rng, ctx.forbidden | {n[2] for n in needles})
            taken = {n[0] for n in needles}
            text = self.words.needle_text(key, value)
            cut = self._column_cut(rng, free, span_end, (stratum, len(strata)), taken, text)
            needles.append((cut, key, value, is_asked))
        column = (sorted(needles), asked_key)
        self._columns[(length, repeat)] = column
        return column

    def _column_cut(self, rng, free: list[int], span_end: int, share: tuple[int, int], taken: set[int], text: str):
        """A free, stable sentence end for a column needle, near a uniform draw from share i of n of the span."""
        tb, stream = self.tb, self.ctx.stream
        stratum, strata = share
        for _ in range(_TRIES):
            target = stream.start + round((stratum + rng.random()) / strata * (span_end - stream.start))
            for cut in nearest(free, target):
                if cut in taken:
                    continue
                left = stream.ids[tb.left_edge(stream.ids, cut) : cut]
                right = stream.ids[cut : tb.right_edge(stream.ids, cut, stream.usable)]
                if tb.encode_between(left, " " + text, right) is not None:
                    return cut
        raise ProbeError("no free sentence end gives the column needles stable token junctions")

    def _draw_key(self, rng: random.Random, used: set[str]) -> str:
        return rng.choice([k for k in self.keys if k not in used])

    # -- one probe ----------------------------------------------------------------------------------------------
    def probe(self, length: int, depth: float, repeat: int = 0) -> Probe:
        column, asked_key = self._column(length, repeat)
        if not self.task.present:
            return self._absent(length, depth, repeat, column)
        ctx, stream = self.ctx, self.ctx.stream
        bounds, span_end = ctx.span_end(length, self.reserve)
        target = stream.start + int(round_half_up(depth / 100.0 * (span_end - stream.start)))
        taken = {n[0] for n in column}
        used_keys = {n[1] for n in column}
        used_values = {n[2] for n in column}
        placed = False
        for cut in nearest(bounds, target):
            if cut in taken:
                continue
            rng = needle_rng(seed_tag(self.request.seed, repeat), cut - stream.start)
            key = asked_key or self._draw_key(rng, used_keys)
            place = rng.randrange(self.task.queries)  # where the cell's key goes in a multiquery question
            tried: set[str] = set()
            for _ in range(_TRIES):
                value = draw_value(rng, ctx.forbidden | used_values | tried)
                tried.add(value)
                probe = self._try(length, depth, repeat, column, (cut, key, value, True), place, span_end)
                if probe is None:
                    if placed:
                        continue  # this value's digits upset a junction that others keep: draw again
                    break  # no exact, stable assembly here: the next sentence end
                placed = True
                if _unique(probe):
                    return probe
            if placed:
                break  # values were drawn and rejected at a cut that assembles: moving the needle would not help
        raise ProbeError(
            f"cannot place the needles of {self.task.name} L{length}-D{depth:g}: no sentence end near haystack token"
            f" {target - stream.start} gives stable token junctions and unique values"
        )

    def _try(self, length, depth, repeat, column, cell, place: int, span_end: int) -> Probe | None:
        """The probe with `cell` among the column needles, None when it does not assemble."""
        needles = sorted([*column, cell])
        index = needles.index(cell)
        asked = [n for n in needles if n[3]]
        if self.task.name == "multiquery":
            others = [n for n in column if n[3]]  # in prompt order; the cell's key at a drawn place among them
            order = [*others[:place], cell, *others[place:]]
            keys, values = tuple(n[1] for n in order), tuple(n[2] for n in order)
        else:
            keys, values = (cell[1],), tuple(n[2] for n in asked)
        return self._assemble(length, depth, repeat, needles, index, keys, values, span_end, cell)

    def _absent(self, length: int, depth: float, repeat: int, column) -> Probe:
        bounds, span_end = self.ctx.span_end(length, self.reserve)
        rng = random.Random(f"{seed_tag(self.request.seed, repeat)}@absent:L{length}-D{depth:g}")
        used = {n[1] for n in column}
        for _ in range(_TRIES):
            key = self._draw_key(rng, used)
            used.add(key)
            probe = self._assemble(length, depth, repeat, list(column), None, (key,), (), span_end, None)
            if probe is not None and _unique(probe):
                return probe
        raise ProbeError(f"cannot assemble the absent probe L{length}-D{depth:g} with stable token junctions")

    def _assemble(self, length, depth, repeat, needles, index, keys, values, span_end, cell) -> Probe | None:
        ctx, words = self.ctx, self.words
        texts = asked_texts(words, self.task, keys, values)
        prefix = self._prefix(texts, self.form)
        template, suffix_len = ctx.suffix(texts.question, prefix)
        pieces = [(n[0], words.needle_text(n[1], n[2])) for n in needles]
        built = ctx.assembler.assemble(length, pieces, template.suffix, suffix_len)
        if built is None:
            return None
        return ctx.record(
            built, template, length=length, depth=depth, repeat=repeat, task=self.task.name, cell=index,
            cuts=tuple(n[0] for n in needles), span_end=span_end,
            needle=pieces[index][1] if cell else "",
            expected=", ".join(values) if values else words.none_word,
            question=texts.question,
            keys=keys,
            expected_values=values,
            distractor_values=tuple(n[2] for n in needles if not n[3]),
            answer=texts.completion if prefix else texts.answer,
        )


def _unique(probe: Probe) -> bool:
    """Every value of the probe's needles occurs once in its prompt (in its needle)."""
    return all(probe.prompt.count(v) == 1 for v in (*probe.expected_values, *probe.distractor_values))
