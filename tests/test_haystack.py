"""Haystack sources (built-in, noise, directory, file), their hashes and errors, and sentence ends."""

from __future__ import annotations

import pytest

from kanana_longctx.errors import HaystackError, ProbeError
from kanana_longctx.probes.haystack import builtin_root, load_haystack, sha256_text, txt_files
from kanana_longctx.probes.sentences import sentence_ends


def _last_words(text: str) -> list[str]:
    return [text[:e].split()[-1] for e in sentence_ends(text)]


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_builtin_haystacks_exist_and_are_natural_prose(lang):
    hay = load_haystack("builtin", lang)
    assert hay.name == f"builtin:{lang}" and hay.kind == "builtin"
    assert (builtin_root() / lang).is_dir()
    assert len(hay.text) > 10_000 and len(sentence_ends(hay.text)) > 200
    assert hay.sha256 == sha256_text(hay.text) and len(hay.sha256) == 64
    assert not any(ch.isdigit() for ch in hay.text)  # a needle value can never collide with the text
    if lang == "ko":
        hangul = sum("가" <= ch <= "힣" for ch in hay.text)
        assert hangul > len(hay.text) / 2


def test_builtin_language_can_differ_from_the_probe_language():
    assert load_haystack("builtin:ko", "en").name == "builtin:ko"
    assert load_haystack("noise:en", "ko").text.startswith("The grass is green.")


@pytest.mark.parametrize("lang, first", [("en", "The grass is green."), ("ko", "풀은 초록색이다.")])
def test_noise_haystack(lang, first):
    hay = load_haystack("noise", lang)
    assert hay.kind == "noise" and hay.separator == " " and hay.text.startswith(first)
    assert len(sentence_ends(hay.text)) == 5
    assert hay.repeated(3).count(first) == 3


def test_directory_files_are_sorted_by_name_and_joined_with_paragraph_breaks(tmp_path):
    names = ["b.txt", "a.txt", "10.txt", "2.txt", "notes.md", ".hidden.txt"]
    for name in names:
        (tmp_path / name).write_text(f"File {name} says hello.\n", encoding="utf-8")
    hay = load_haystack(str(tmp_path))
    assert [f.name for f in hay.files] == ["10.txt", "2.txt", "a.txt", "b.txt"]
    assert hay.text == "\n\n".join(f"File {n} says hello." for n in ["10.txt", "2.txt", "a.txt", "b.txt"])
    assert [p.name for p in txt_files(tmp_path)] == ["10.txt", "2.txt", "a.txt", "b.txt"]
    assert hay.kind == "dir" and hay.name == f"{tmp_path.name}/"


def test_hash_follows_content_not_file_system(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    for directory, order in ((one, ["a", "b"]), (two, ["b", "a"])):  # created in different orders
        for stem in order:
            (directory / f"{stem}.txt").write_text(f"Text {stem}.", encoding="utf-8")
    assert load_haystack(str(one)).sha256 == load_haystack(str(two)).sha256
    (two / "b.txt").write_text("Text c.", encoding="utf-8")
    assert load_haystack(str(one)).sha256 != load_haystack(str(two)).sha256


def test_text_is_normalised(tmp_path):
    path = tmp_path / "bom.txt"
    decomposed = "\u1112\u1161\u11ab"  # 한 as conjoining jamo (as macOS writes it)
    path.write_bytes(("\ufeffLine one.\r\nLine two " + decomposed + ".\r\n\r\n").encode("utf-8"))
    hay = load_haystack(str(path))
    assert hay.text == "Line one.\nLine two 한." and hay.kind == "file" and hay.name == "bom.txt"


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda d: d / "missing.txt", "not found"),
        (lambda d: (d / "e.txt").write_text("  \n\n", encoding="utf-8") and d / "e.txt", "is empty"),
        (
            lambda d: (d / "l.txt").write_bytes("café".encode("latin-1")) and d / "l.txt",
            "not UTF-8 text (byte 0xe9 at offset 3)",
        ),
        (lambda d: (d / "sub").mkdir() or d / "sub", "holds no .txt files"),
    ],
)
def test_bad_haystacks(tmp_path, setup, fragment):
    path = setup(tmp_path)
    with pytest.raises(HaystackError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_haystack(str(path))


def test_empty_files_in_a_directory_add_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Only text.", encoding="utf-8")
    assert load_haystack(str(tmp_path)).text == "Only text."
    (tmp_path / "b.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(HaystackError, match="is empty"):
        load_haystack(str(tmp_path))


def test_unknown_builtin_language_and_missing_builtin(tmp_path):
    with pytest.raises(ProbeError, match="unknown language 'fr'"):
        load_haystack("builtin:fr")
    with pytest.raises(HaystackError, match="no built-in Korean haystack"):
        load_haystack("builtin", "ko", root=tmp_path)


def test_sentence_ends_english_skips_abbreviations_and_initials():
    text = 'Mr. Darcy met Dr. Watson at St. Paul\'s. He said "Hello." Then J. Smith left, e.g. quickly. Why? Wow!'
    assert _last_words(text) == ["Paul's.", '"Hello."', "quickly.", "Why?", "Wow!"]


def test_sentence_ends_korean_and_cjk():
    text = "그는 엄격하고 매서웠다. \"정말 그랬소?\" 하고 물었다.\n다음 줄이다。끝…"
    assert _last_words(text) == ["매서웠다.", '그랬소?"', "물었다.", "줄이다。", "줄이다。끝…"]


def test_sentence_end_needs_following_space_or_end():
    text = "3.14 is pi. Version1.2 is here."
    assert sentence_ends(text) == [len("3.14 is pi."), len(text)]
