"""The keyed tasks and repeats with SmolLM2's tokenizer: exact lengths, needles at sentence ends, every value once,
exactly the task's needles, reproducible draws, and the prefix sharing their layout promises."""

from __future__ import annotations

import re

import pytest

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes import ProbeRequest, build_probe_set
from kanana_longctx.probes.answer import answer_budget, budget_for
from kanana_longctx.probes.keyed import keyed_words
from kanana_longctx.probes.sentences import sentence_ends
from kanana_longctx.probes.spec import Probe
from kanana_longctx.probes.summary import read_prompts, summarize, write_prompts
from kanana_longctx.probes.tasks import resolve_task
from test_probes_exact import llama3_style_tokenizer  # noqa: F401  (a fixture: Kanana-style pre-tokenizer)

KEYED = ("multikey", "multivalue", "multiquery", "absent")
NEEDLE = {"en": re.compile(r'The special magic number for "([^"]+)" is: (\d+)\.'),
          "ko": re.compile(r'"([^"]+)"의 특별한 마법의 숫자는 (\d+)입니다\.')}


def _build(tokenizer, **kwargs):
    return build_probe_set(ProbeRequest(**kwargs), tokenizer)


def assert_keyed_probe(tokenizer, probe: Probe, needles: int):
    ids = tokenizer(probe.prompt, add_special_tokens=False)["input_ids"]
    assert ids == list(probe.input_ids), probe.probe_id
    assert probe.n_tokens == probe.length == len(ids)
    found = NEEDLE[probe.lang].findall(probe.prompt)
    assert len(found) == len(probe.needle_spans) == len(probe.needle_depths) == needles, probe.probe_id
    for (start, end), (key, value) in zip(probe.needle_spans, found):
        text = tokenizer.decode(ids[start:end]).strip()
        assert NEEDLE[probe.lang].fullmatch(text).groups() == (key, value)
        before = tokenizer.decode(ids[probe.haystack_start : start])
        assert not before or re.search(r"[.!?。][\"'”’]*\s*$", before), before[-30:]  # at a sentence end
    values = [value for _, value in found]
    assert len(set(values)) == len(values)
    assert sorted(values) == sorted((*probe.expected_values, *probe.distractor_values))
    for value in values:
        assert probe.prompt.count(value) == 1 and len(value) == 7
    keys = [key for key, _ in found]
    for key in probe.keys:
        assert f'"{key}"' in probe.prompt.split(probe.question)[-1] or f'"{key}"' in probe.question
    haystack = tokenizer.decode(ids[probe.haystack_start : probe.haystack_end])
    for key in set(keys) | set(probe.keys):
        assert haystack.count(key) == keys.count(key)  # keys occur in their needles only
    return found


@pytest.mark.parametrize("lang, lengths", [("en", (900, 1777, 3000, 5001)), ("ko", (2300, 3456, 6000))])
@pytest.mark.parametrize("form", ["qaform", "retform"])
@pytest.mark.parametrize("task", KEYED)
def test_every_task_is_exact_with_its_needles(smollm2_tokenizer, task, form, lang, lengths):
    depths = (0, 14, 50, 86, 100)
    probe_set = _build(smollm2_tokenizer, lengths=lengths, depths=depths, form=form, lang=lang, task=task)
    spec = resolve_task(task)
    assert len(probe_set.probes) == len(lengths) * len(depths) and probe_set.task == task
    for probe in probe_set.probes:
        found = assert_keyed_probe(smollm2_tokenizer, probe, spec.needles)
        assert (probe.task, probe.form, probe.lang, probe.repeat) == (task, form, lang, 0)
        assert probe.question in probe.prompt and probe.prompt.endswith(probe.answer_prefix)
        asked = {key for key, _ in found} & set(probe.keys)
        if task == "multikey":
            assert len(probe.keys) == 1 and len(probe.expected_values) == 1 and len(probe.distractor_values) == 3
            assert probe.expected == probe.expected_values[0] and probe.expected in probe.needle
        elif task == "multivalue":
            assert len(probe.keys) == 1 and len(probe.expected_values) == 4 and not probe.distractor_values
            assert {key for key, _ in found} == set(probe.keys)
        elif task == "multiquery":
            assert len(set(probe.keys)) == 4 == len(probe.expected_values) and asked == set(probe.keys)
            pairs = dict(found)
            assert tuple(pairs[k] for k in probe.keys) == probe.expected_values  # values in question order
        else:
            assert not asked and not probe.expected_values and probe.expected == keyed_words(lang).none_word
            assert probe.needle_token_start == probe.needle_token_end == probe.haystack_end
        if task != "absent":
            spans = [span[0] for span in probe.needle_spans]
            cell_value = found[spans.index(probe.needle_token_start)][1]
            assert cell_value in probe.expected_values and cell_value in probe.needle  # an asked needle
            assert abs(probe.actual_depth - probe.depth) <= (12 if probe.length < 2000 else 8), probe.probe_id


def test_depth_100_and_0_hold_the_cell_needle_at_the_ends(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(4000,), depths=(0, 100), task="multikey")
    zero, hundred = probe_set.probes
    assert zero.needle_token_start == zero.haystack_start and zero.actual_depth == 0
    assert zero.needle_spans[0][0] == zero.haystack_start  # first in the haystack, before every distractor
    assert hundred.needle_spans[-1][0] == hundred.needle_token_start  # the last needle
    after = smollm2_tokenizer.decode(hundred.input_ids[hundred.needle_token_end : hundred.haystack_end])
    assert len(sentence_ends(after)) <= 2  # at most a sentence or so of margin follows it


def test_a_length_shares_its_column_needles_and_every_token_before_a_probes_own_needle(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(3000, 6000), depths=(0, 21, 50, 79, 100), task="multikey")
    by_length: dict[int, list[Probe]] = {}
    for probe in probe_set.probes:
        by_length.setdefault(probe.length, []).append(probe)
    layouts = []
    for probes in by_length.values():
        distractors = {p.distractor_values for p in probes}
        assert len(distractors) == 1  # the same distractors at every depth
        layouts.append(distractors.pop())
        for a in probes:
            for b in probes:
                if a.needle_token_start <= b.needle_token_start:
                    cut = a.needle_token_start
                    assert a.input_ids[:cut] == b.input_ids[:cut]
        assert len({p.expected for p in probes}) == len(probes)  # the asked value differs per depth
    assert layouts[0] != layouts[1]  # each length draws its own
    shared = probe_set.shared_prefix_ids
    for probe in probe_set.probes:
        first = probe.needle_spans[0][0]
        assert probe.input_ids[:first] == shared[:first]
    total = sum(p.n_tokens for p in probe_set.probes)
    planned = summarize(probe_set).reuse_tokens
    # the plan computes each column once up to its deepest needle, then every probe only from its own needle
    own = sum(p.n_tokens - p.needle_token_start for p in probe_set.probes)
    assert planned <= own + sum(by_length) and planned < 0.8 * total


def test_absent_probes_of_a_length_differ_only_in_the_key_asked(smollm2_tokenizer):
    probe_set = _build(smollm2_tokenizer, lengths=(2000, 3000), depths=(0, 50, 100), task="absent")
    for length in (2000, 3000):
        probes = [p for p in probe_set.probes if p.length == length]
        assert len({p.keys for p in probes}) == 3
        # every haystack token is the stream's (the keys' lengths move where each probe's question starts)
        assert all(p.input_ids[: p.haystack_end] == probe_set.shared_prefix_ids[: p.haystack_end] for p in probes)
    # the stream once, then each probe's question only
    questions = sum(p.n_tokens - p.haystack_end for p in probe_set.probes)
    assert summarize(probe_set).reuse_tokens <= len(probe_set.shared_prefix_ids) + questions
    with_distractors = _build(smollm2_tokenizer, lengths=(3000,), depths=(50,), task="absent", distractors=2)
    probe = with_distractors.probes[0]
    found = assert_keyed_probe(smollm2_tokenizer, probe, 2)
    assert probe.keys[0] not in {key for key, _ in found} and len(probe.distractor_values) == 2


def test_task_options_set_the_needle_counts(smollm2_tokenizer):
    cases = [("multikey", {"distractors": 6}, 7), ("multikey", {"distractors": 0}, 1), ("multivalue", {"values": 2}, 2),
             ("multiquery", {"queries": 3, "distractors": 2}, 5), ("multivalue", {"values": 3, "distractors": 1}, 4)]
    for task, options, needles in cases:
        probe_set = _build(smollm2_tokenizer, lengths=(2500,), depths=(30, 70), task=task, **options)
        for probe in probe_set.probes:
            assert_keyed_probe(smollm2_tokenizer, probe, needles)
        assert probe_set.distractors == options.get("distractors", 0)


def test_repeats_draw_independently_and_keep_the_first_repeat(smollm2_tokenizer):
    for task in ("single", "multikey"):
        once = _build(smollm2_tokenizer, lengths=(1500, 2500), depths=(0, 50), task=task)
        thrice = _build(smollm2_tokenizer, lengths=(1500, 2500), depths=(0, 50), task=task, repeats=3)
        assert len(thrice.probes) == 3 * len(once.probes) and thrice.repeats == 3
        first = [p for p in thrice.probes if p.repeat == 0]
        assert [p.prompt for p in first] == [p.prompt for p in once.probes]
        ids = [p.probe_id for p in thrice.probes]
        assert len(set(ids)) == len(ids)
        for length in (1500, 2500):
            for depth in (0.0, 50.0):
                cell = [p for p in thrice.probes if (p.length, p.depth) == (length, depth)]
                assert [p.repeat for p in cell] == [0, 1, 2]
                assert len({p.expected for p in cell}) == 3  # independent values
                assert len({p.prompt for p in cell}) == 3
        assert summarize(thrice).reuse_tokens < 3 * summarize(once).reuse_tokens - 2000  # reuse across repeats
    assert thrice.probes[1].probe_id == "multikey-L1500-D0-R1" and first[0].probe_id == "multikey-L1500-D0"
    single = _build(smollm2_tokenizer, lengths=(1500,), depths=(50,), repeats=2).probes
    assert [p.probe_id for p in single] == ["L1500-D50", "L1500-D50-R1"]


def test_probes_are_reproducible_and_independent_of_the_rest_of_the_grid(smollm2_tokenizer):
    for task in KEYED:
        a = _build(smollm2_tokenizer, lengths=(2000, 3000), depths=(0, 50, 100), task=task, seed=5, lang="ko")
        b = _build(smollm2_tokenizer, lengths=(2000, 3000), depths=(0, 50, 100), task=task, seed=5, lang="ko")
        c = _build(smollm2_tokenizer, lengths=(3000,), depths=(50,), task=task, seed=5, lang="ko")
        other = _build(smollm2_tokenizer, lengths=(3000,), depths=(50,), task=task, seed=6, lang="ko")
        assert [p.prompt for p in a.probes] == [p.prompt for p in b.probes]
        same = [p for p in a.probes if p.probe_id == c.probes[0].probe_id][0]
        assert same.prompt == c.probes[0].prompt and same.input_ids == c.probes[0].input_ids
        assert other.probes[0].prompt != same.prompt


def test_prompts_round_trip_with_every_field_and_old_records_still_load(smollm2_tokenizer, tmp_path):
    probe_set = _build(smollm2_tokenizer, lengths=(2000,), depths=(50,), task="multiquery", repeats=2)
    write_prompts(probe_set, tmp_path, with_ids=True)
    rows = read_prompts(tmp_path)
    assert [Probe.from_dict(r) for r in rows] == list(probe_set.probes)
    assert rows[1]["probe_id"] == "multiquery-L2000-D50-R1" and rows[1]["repeat"] == 1
    old = {k: v for k, v in rows[0].items() if k in (
        "length", "depth", "n_tokens", "needle_token_start", "needle_token_end", "expected", "needle", "question",
        "prompt", "form", "lang", "seed", "haystack", "haystack_hash")}
    probe = Probe.from_dict({**old, "expected": "1234567"})
    assert (probe.task, probe.repeat, probe.answers, probe.probe_id) == ("single", 0, ("1234567",), "L2000-D50")


def test_answer_budget_follows_the_language_form_and_task(smollm2_tokenizer):
    budgets = {}
    for lang, lengths in (("en", (2500,)), ("ko", (2500,))):
        for form in ("qaform", "retform"):
            for task in ("single", "multikey", "multiquery", "absent"):
                probe_set = _build(smollm2_tokenizer, lengths=lengths, depths=(50,), lang=lang, form=form, task=task)
                probe = probe_set.probes[0]
                answer_ids = smollm2_tokenizer(probe.answer, add_special_tokens=False)["input_ids"]
                assert probe_set.max_new_tokens == budget_for(len(answer_ids))
                assert probe_set.max_new_tokens == answer_budget(probe_set.probes, smollm2_tokenizer)
                budgets[(lang, form, task)] = probe_set.max_new_tokens
                if task != "absent":
                    assert all(v in probe.answer for v in probe.expected_values)
    probe = _build(smollm2_tokenizer, lengths=(2500,), depths=(50,), lang="ko").probes[0]
    assert probe.answer == f"글에서 언급된 특별한 마법의 숫자는 {probe.expected}입니다."
    for form in ("qaform", "retform"):
        assert budgets[("ko", form, "single")] > budgets[("en", form, "single")]
        assert budgets[("en", form, "multiquery")] > budgets[("en", form, "multikey")]
    assert budgets[("ko", "qaform", "single")] > 7 + 16  # the old budget cut Korean answers short
    assert budgets[("en", "retform", "single")] < budgets[("en", "qaform", "single")]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"task": "ruler"}, "unknown task 'ruler'"),
        ({"task": "single", "distractors": 2}, "no distractors"),
        ({"task": "multikey", "values": 3}, "--values applies to --task multivalue only"),
        ({"task": "multivalue", "queries": 3}, "--queries applies to --task multiquery only"),
        ({"task": "multivalue", "values": 1}, "at least 2"),
        ({"task": "multikey", "distractors": -1}, "0 or more"),
        ({"task": "multikey", "distractors": 40}, "more than 32"),
        ({"task": "multikey", "needle": "The key is {value}."}, "--task single only"),
        ({"repeats": 0}, "--repeats must be between"),
        ({"task": "multiquery", "lang": "ko", "lengths": (1000,)}, "use longer lengths"),
        ({"task": "multiquery", "lang": "ko", "lengths": (600,)}, "use at least"),
    ],
)
def test_bad_task_requests(smollm2_tokenizer, kwargs, fragment):
    kwargs = {"lengths": (3000,), "depths": (50,), **kwargs}
    with pytest.raises(ProbeError, match=re.escape(fragment)):
        _build(smollm2_tokenizer, **kwargs)


def test_keys_spelled_by_the_haystack_are_never_drawn(smollm2_tokenizer, tmp_path):
    words = keyed_words("en")
    text = " ".join(f"The {key} stood by the door. Nothing else happened." for key in words.keys()[:200])
    (tmp_path / "keys.txt").write_text(text, encoding="utf-8")
    probe_set = _build(smollm2_tokenizer, lengths=(4000,), depths=(0, 50), task="multikey", haystack=str(tmp_path))
    allowed = set(words.keys()[200:])
    for probe in probe_set.probes:
        found = assert_keyed_probe(smollm2_tokenizer, probe, 4)
        assert {key for key, _ in found} <= allowed


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_keyed_tasks_on_the_noise_and_reference_haystacks(smollm2_tokenizer, shared_haystacks, lang):
    for haystack in ("noise", str(shared_haystacks / lang)):
        for task in ("multikey", "multiquery", "absent"):
            probe_set = _build(smollm2_tokenizer, lengths=(3000, 9000), depths=(0, 43, 100), task=task, lang=lang,
                               haystack=haystack, form="retform", repeats=2)
            for probe in probe_set.probes:
                assert_keyed_probe(smollm2_tokenizer, probe, resolve_task(task).needles)


def test_keyed_tasks_are_exact_with_a_llama3_style_pretokenizer(llama3_style_tokenizer):
    for lang, lengths in (("en", (1200, 3333)), ("ko", (2600, 4001))):
        for task in KEYED:
            probe_set = _build(llama3_style_tokenizer, lengths=lengths, depths=(0, 36, 100), task=task, lang=lang,
                               form="retform")
            for probe in probe_set.probes:
                assert_keyed_probe(llama3_style_tokenizer, probe, resolve_task(task).needles)
