"""Exact-length needle-in-a-haystack probes, assembled from token ids: `build_probe_set(request, tokenizer)`.

Usage: `build_probe_set(ProbeRequest(lengths=(1000, 2000), depths=(0, 50, 100), lang="ko"), tokenizer)`

A probe of length L is `stream[:cut] + needle + stream[cut:end] + tail`, where `stream` is the template prefix and
the haystack tokenized once, `cut` is the sentence end nearest to the requested depth, and `tail` is the question
part of the template (question, end of turn, generation prompt, answer prefix). So the pre-needle tokens of every
probe are a prefix of one stream, which the runner computes once. `end` is chosen so that the probe has exactly L
tokens; when that position falls inside a multi-byte character (Korean with a small vocabulary) or on an unstable
junction, the haystack ends a token or three earlier and a short filler ("…") makes up the difference, recorded as
`pad_tokens`. Every junction is re-encoded locally (`TokenBytes.splice_ok`), so `tokenizer(prompt,
add_special_tokens=False)` gives back `input_ids` exactly; `verify="full"` re-encodes every whole prompt as well.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.grid import Grid, round_half_up
from kanana_longctx.probes.haystack import Haystack, load_haystack
from kanana_longctx.probes.languages import language_pack
from kanana_longctx.probes.needle import NeedleSpec, draw_value, needle_rng, resolve_needle
from kanana_longctx.probes.spec import Probe, ProbeSet
from kanana_longctx.probes.stream import Stream, build_stream
from kanana_longctx.probes.template import SEPARATOR, Template, build_template, resolve_form
from kanana_longctx.probes.tokens import TokenBytes

VERIFY_MODES = ("junctions", "full")
MIN_HAYSTACK_TOKENS = 32  # a probe with less haystack than this tests nothing
MAX_PAD = 4
_MAX_CANDIDATES = 64  # sentence ends tried per probe, nearest to the requested depth first
# Fillers, preferred first: an ellipsis reads as "the text was cut here", which it was.
_BRIDGES = (
    "…", "……", "………", "…………", "……………", " …", " ……", " ………", "[…]", " […]", "(…)", " (…)",
)
_BRIDGE_UNITS = ("…", ".", "—", "-", ",", "*")  # fallbacks for tokenizers that merge the ones above


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
        for depth in depths:
            if not 0.0 <= depth <= 100.0:
                raise ProbeError(f"depth {depth:g} is outside 0..100 (percent)")
        object.__setattr__(self, "lengths", lengths)  # frozen: normalise once, here
        object.__setattr__(self, "depths", depths)
        if self.verify not in VERIFY_MODES:
            raise ProbeError(f"unknown verify mode '{self.verify}' (choose junctions or full)")
        language_pack(self.lang)


def build_probe_set(request: ProbeRequest, tokenizer, *, haystack: Haystack | None = None) -> ProbeSet:
    """Build every probe of `request`; raise ProbeError/HaystackError before anything is written."""
    pack = language_pack(request.lang)
    form = resolve_form(request.form, tokenizer)
    spec = resolve_needle(
        pack, form, needle=request.needle, question=request.question,
        expected=request.expected, answer_prefix=request.answer_prefix,
    )
    hay = haystack or load_haystack(request.haystack, pack.code, root=request.haystack_root)
    tb = TokenBytes(tokenizer)
    template = build_template(tokenizer, form, pack.instruction, spec.question, spec.answer_prefix)
    assembler = _Assembler(tb, template, spec, hay, request, max(request.lengths))
    probes = [assembler.probe(length, depth) for length in request.lengths for depth in request.depths]
    if request.verify == "full":
        verify_full(tokenizer, probes)
    longest = max(p.haystack_end - (p.needle_token_end - p.needle_token_start) for p in probes)
    return ProbeSet(
        probes=tuple(probes),
        shared_prefix_ids=tuple(assembler.stream.ids[:longest]),
        form=form,
        lang=pack.code,
        haystack=hay.name,
        haystack_hash=hay.sha256,
        seed=request.seed,
        haystack_repeats=max(p.haystack_repeats for p in probes),
        preset=request.preset,
        tokenizer=str(getattr(tokenizer, "name_or_path", "") or ""),
    )


def verify_full(tokenizer, probes, batch: int = 8) -> None:
    """Re-encode every prompt whole and compare with its ids (the slow, unconditional check)."""
    for i in range(0, len(probes), batch):
        group = probes[i : i + batch]
        encoded = tokenizer([p.prompt for p in group], add_special_tokens=False, verbose=False)["input_ids"]
        for probe, ids in zip(group, encoded):
            if list(ids) != list(probe.input_ids):
                raise ProbeError(f"probe {probe.probe_id}: the prompt re-encodes to {len(ids)} tokens, not its ids")


class _Assembler:
    """Holds the stream and the template pieces; builds one probe at a time."""

    def __init__(self, tb: TokenBytes, template: Template, spec: NeedleSpec, hay: Haystack, request, longest: int):
        self.tb, self.template, self.spec, self.hay, self.request = tb, template, spec, hay, request
        self.sample_needle = len(tb.encode(" " + spec.needle_text("0" * 7)))
        self.suffix_len = len(tb.encode(template.suffix))
        prefix_len = len(tb.encode(template.prefix))
        self.minimum = prefix_len + self.sample_needle + self.suffix_len + MIN_HAYSTACK_TOKENS
        if min(request.lengths) < self.minimum:
            raise ProbeError(
                f"length {min(request.lengths)} is too small for this template: the {template.form} template,"
                f" needle and question take {self.minimum - MIN_HAYSTACK_TOKENS} tokens; use at least {self.minimum}"
            )
        need = longest - prefix_len - self.sample_needle - self.suffix_len + tb.window + tb.scan + MAX_PAD + 64
        self.stream: Stream = build_stream(tb, template.prefix, hay, need)
        self.forbidden = set(self.stream.digit_runs)
        self.bridges = self._bridges()

    def _bridges(self) -> list[list[str]]:
        """Filler texts grouped by how many tokens they add before the suffix (index = tokens)."""
        groups: list[list[str]] = [[""]] + [[] for _ in range(MAX_PAD)]
        generated = [
            lead + " ".join([unit] * count)
            for unit in _BRIDGE_UNITS
            for count in range(1, MAX_PAD + 1)
            for lead in ("", " ")
        ]
        for text in (*_BRIDGES, *generated):
            extra = len(self.tb.encode(text + self.template.suffix)) - self.suffix_len
            if 1 <= extra <= MAX_PAD and text not in groups[extra]:
                groups[extra].append(text)
        return groups

    # -- one probe ----------------------------------------------------------------------------------------------
    def probe(self, length: int, depth: float) -> Probe:
        stream, spec = self.stream, self.spec
        span = length - stream.start - self.sample_needle - self.suffix_len  # haystack tokens of this probe
        bounds = stream.boundaries[: bisect.bisect_right(stream.boundaries, stream.start + span)]
        span_end = bounds[-1]  # the end of the last complete sentence in the span
        target = stream.start + int(round_half_up(depth / 100.0 * (span_end - stream.start)))
        placed = False  # some sentence end gave a stable assembly (only the answer's uniqueness failed)
        for cut in _nearest(bounds, target):
            rng = needle_rng(self.request.seed, cut - stream.start)
            tried: set[str] = set()
            for _ in range(100 if spec.uses_value else 1):
                value = draw_value(rng, self.forbidden | tried) if spec.uses_value else ""
                tried.add(value)
                built = self._assemble(length, cut, value)
                if built is None:
                    if placed:
                        continue  # this value's digits upset a junction that others keep: draw again
                    break  # no exact, stable assembly here: the next sentence end
                placed = True
                needle, expected = spec.needle_text(value), spec.expected_text(value)
                if built.prompt.count(expected) != needle.count(expected):
                    continue  # the answer also occurs outside the needle (e.g. across a junction): draw again
                return self._probe(length, depth, built, needle, expected, span_end)
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

    def _probe(self, length: int, depth: float, built: "_Built", needle: str, expected: str, span_end: int) -> Probe:
        stream, spec = self.stream, self.spec
        return Probe(
            length=length,
            depth=depth,
            n_tokens=len(built.ids),
            needle_token_start=built.cut,
            needle_token_end=built.cut + built.n_needle,
            expected=expected,
            needle=needle,
            question=spec.question,
            prompt=built.prompt,
            form=self.template.form,
            lang=self.request.lang,
            seed=self.request.seed,
            haystack=self.hay.name,
            haystack_hash=self.hay.sha256,
            haystack_repeats=stream.copies_used(built.end),
            actual_depth=round(100.0 * (built.cut - stream.start) / max(1, span_end - stream.start), 2),
            haystack_start=stream.start,
            haystack_end=built.end + built.n_needle,
            pad_tokens=built.pad_tokens,
            pad=built.pad,
            answer_prefix=spec.answer_prefix,
            input_ids=tuple(built.ids),
        )

    def _assemble(self, length: int, cut: int, value: str) -> "_Built | None":
        """The probe with the needle at stream position `cut`, or None when no exact, stable assembly exists."""
        tb, stream = self.tb, self.stream
        core = self.spec.needle_text(value)
        # At the haystack's very start the needle is a paragraph of its own; elsewhere it follows a sentence end.
        text = core + SEPARATOR if cut == stream.start else " " + core
        left = stream.ids[tb.left_edge(stream.ids, cut) : cut]
        right = stream.ids[cut : tb.right_edge(stream.ids, cut, stream.usable)]
        needle = tb.encode_between(left, text, right)
        if needle is None:
            return None
        n = len(needle)
        for pad_tokens, bridges in enumerate(self.bridges):
            for bridge in bridges:
                end = length - n - self.suffix_len - pad_tokens  # stream position where the haystack stops
                for _ in range(2):  # once more when bridge + suffix tokenize to another length in context
                    if not (cut <= end <= stream.usable and stream.char_complete(end)):
                        break
                    tail = self._tail(cut, needle, end, bridge)
                    if tail is None:
                        break
                    if end + n + len(tail) == length:
                        ids = stream.ids[:cut] + needle + stream.ids[cut:end] + tail
                        if not tb.splice_ok(ids, (cut, cut + n, end + n)):
                            break
                        data, cum = stream.data, stream.cum
                        raw = data[: cum[cut]] + text.encode("utf-8") + data[cum[cut] : cum[end]] + tb.bytes_of(tail)
                        padded = max(0, len(tail) - self.suffix_len) if bridge else 0
                        return _Built(ids, raw.decode("utf-8"), cut, n, end, padded, bridge)
                    end = length - n - len(tail)
        return None

    def _tail(self, cut: int, needle: list[int], end: int, bridge: str) -> list[int] | None:
        """The ids of bridge + suffix as they tokenize after the probe's haystack part, which ends at `end`."""
        tb, ids = self.tb, self.stream.ids
        keep = tb.window + tb.scan + 2  # a shorter head only happens at the true start of the prompt (clean)
        if end - cut >= keep:
            head = ids[max(0, end - keep) : end]
        else:
            head = (ids[max(0, cut - keep) : cut] + needle + ids[cut:end])[-keep:]
        return tb.encode_between(head[tb.left_edge(head, len(head)) :], bridge + self.template.suffix, [])


@dataclass(frozen=True)
class _Built:
    ids: list[int]
    prompt: str
    cut: int  # needle start
    n_needle: int
    end: int  # stream position where the post-needle haystack stops
    pad_tokens: int
    pad: str


def _nearest(bounds: list[int], target: int, limit: int = _MAX_CANDIDATES):
    """Elements of the sorted `bounds` by distance to `target` (the earlier one first on a tie)."""
    hi = bisect.bisect_left(bounds, target)
    lo = hi - 1
    for _ in range(limit):
        if lo < 0 and hi >= len(bounds):
            return
        if hi >= len(bounds) or (lo >= 0 and target - bounds[lo] <= bounds[hi] - target):
            yield bounds[lo]
            lo -= 1
        else:
            yield bounds[hi]
            hi += 1
