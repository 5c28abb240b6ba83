"""Byte-exact token bookkeeping for byte-level BPE tokenizers (GPT-2 / Llama-3 style: SmolLM2, Kanana).

Usage: `tb = TokenBytes(tokenizer); tb.bytes_of(ids); tb.splice_ok(ids, [junction, ...])`

Every token of a byte-level BPE tokenizer stands for a fixed byte string, so the text of any id sequence is the
concatenation of its tokens' bytes: probes are assembled from token ids and their `prompt` is built from bytes,
never by decoding and re-encoding whole texts. Re-encoding a concatenation gives back the concatenated ids only when
no junction changes the pre-tokenization, and that is what `splice_ok` verifies, locally:

A *clean* position is one where every pre-tokenizer of this family starts a fresh match whatever came before:
next to an added (special) token, or before a token that starts with a space followed by a visible character when
the previous character is visible too (no GPT-2 or Llama-3 regex alternative spans "x y"). Encoding the text between
two clean positions around a junction reproduces the probe's ids there exactly when the full encode does, so a
window of a few dozen tokens per junction stands in for re-encoding 128K tokens.
"""

from __future__ import annotations

from kanana_longctx.errors import ProbeError

_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
_SELF_TEST = "Hello, world!\n\n  Tabs\tand “quotes” — 한국어 문장입니다. 123 …\n"


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenBytes:
    """id -> bytes table of a byte-level BPE tokenizer, plus the encode and junction checks built on it."""

    def __init__(self, tokenizer, *, window: int = 8, scan: int = 48):
        self.tokenizer = tokenizer
        self.window = window  # tokens on each side of a junction, at least
        self.scan = scan  # how far to look for a clean window edge
        added = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        size = max([len(tokenizer)] + [i + 1 for i in added])
        names = tokenizer.convert_ids_to_tokens(list(range(size)))
        decoder = _byte_decoder()
        table: list[bytes] = []
        for i, name in enumerate(names):
            if i in added:
                table.append(added[i].encode("utf-8"))
            elif name is None:
                table.append(b"")
            else:
                try:
                    table.append(bytes(decoder[ch] for ch in name))
                except KeyError:
                    table.append(b"\x00<not byte-level>")  # caught by the self-test below
        self.table = table
        self.special = frozenset(added)
        self.special_texts = tuple(sorted({t for t in added.values() if t}, key=len, reverse=True))
        ids = self.encode(_SELF_TEST)
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if self.bytes_of(ids) != _SELF_TEST.encode("utf-8"):
            raise ProbeError(
                f"tokenizer {name} is not a byte-level BPE tokenizer (GPT-2/Llama-3 style); exact probes need one"
            )

    # -- encoding ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    def bytes_of(self, ids) -> bytes:
        table = self.table
        return b"".join([table[i] for i in ids])

    # -- junctions --------------------------------------------------------------------------------------------
    def clean(self, ids, i: int) -> bool:
        """Whether a fresh encode starting (or stopping) at position i reproduces the tokens around it."""
        if i <= 0 or i >= len(ids):
            return True
        before, here = ids[i - 1], ids[i]
        if before in self.special or here in self.special:
            return True
        token, previous = self.table[here], self.table[before]
        return (
            len(token) > 1
            and token[0] == 0x20
            and token[1] not in _WHITESPACE
            and bool(previous)
            and previous[-1] not in _WHITESPACE
        )

    def left_edge(self, ids, j: int) -> int:
        """A clean position at or before j - window (0 at worst)."""
        i = max(0, j - self.window)
        floor = max(0, i - self.scan)
        while i > floor and not self.clean(ids, i):
            i -= 1
        return i

    def right_edge(self, ids, j: int, limit: int | None = None) -> int:
        """A clean position at or after j + window (`limit`, default the end, at most)."""
        limit = len(ids) if limit is None else limit
        i = min(limit, j + self.window)
        ceiling = min(limit, i + self.scan)
        while i < ceiling and not self.clean(ids, i):
            i += 1
        return i

    def splice_ok(self, ids, junctions) -> bool:
        """True when re-encoding the text of `ids` around every junction gives back exactly those ids."""
        spans, texts = [], []
        for j in junctions:
            a, b = self.left_edge(ids, j), self.right_edge(ids, j)
            try:
                texts.append(self.bytes_of(ids[a:b]).decode("utf-8"))
            except UnicodeDecodeError:  # a junction inside a character can never round-trip
                return False
            spans.append((a, b))
        return all(enc == list(ids[a:b]) for enc, (a, b) in zip(self.encode_many(texts), spans))

    def encode_between(self, left: list[int], text: str, right: list[int]) -> list[int] | None:
        """The ids of `text` as it tokenizes between the tokens `left` and `right`, or None when the junctions
        are not stable (encoding the joined text changes `left` or `right`). `left`/`right` must start/end at
        clean positions."""
        try:
            joined = self.bytes_of(left).decode("utf-8") + text + self.bytes_of(right).decode("utf-8")
        except UnicodeDecodeError:
            return None
        enc = self.encode(joined)
        mid_end = len(enc) - len(right)
        if mid_end < len(left) or enc[: len(left)] != list(left) or enc[mid_end:] != list(right):
            return None
        middle = enc[len(left) : mid_end]
        return middle if self.bytes_of(middle) == text.encode("utf-8") else None
