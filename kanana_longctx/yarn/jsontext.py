"""Edit the top-level members of a JSON object *as text*, leaving every other byte of the file as it was.

Usage: text = JsonDoc.parse(text).set("rope_scaling", {"rope_type": "yarn"}); text = JsonDoc.parse(text).delete("x")
       text = JsonDoc.parse(text).set_nested("rope_parameters", "full_attention", {...})  # one member inside

Re-serialising a whole config.json would rewrite numbers (`1e-5` vs `1e-05`), escapes and spacing that the user
or another tool chose; transformers' own save_pretrained also drops keys (YARN.md). So the patch works on spans:
each top-level member's key and value are located with the standard library's JSON scanner, and only the spans of
the members we change are replaced. New values are formatted in the file's own style (indent unit, key separator,
line ending), and new members go where the file's ordering suggests (sorted position in a sorted file). A member of
a top-level object (one layer type's block inside per-layer-type `rope_parameters`) is edited the same way, one
level down, so its siblings keep their bytes too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from kanana_longctx.errors import ConfigError, json_error_text

_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Member:
    """One top-level `"key": value` pair; offsets index the document text."""

    key: str
    ws_start: int  # start of the whitespace before the key (just after '{' or ',')
    key_start: int
    key_end: int  # just after the key's closing quote
    value_start: int
    value_end: int


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def json_error(name: str, exc: json.JSONDecodeError) -> str:
    """'FILE: invalid JSON at line 14, column 3: unterminated string' (kanana_longctx.errors.json_error_text)."""
    return json_error_text(name, exc)


# Real configs nest 3 or 4 levels; anything far deeper is malformed, and would make recursive code downstream
# (copies, transformers' config classes) hit Python's recursion limit.
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_json(text: str, name: str = "config.json"):
    """json.loads with one-line errors for every malformed input: syntax, NaN/Infinity (not JSON), numbers with
    thousands of digits, nesting deeper than MAX_DEPTH."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(json_error(name, exc)) from None
    except RecursionError:
        raise ConfigError(f"{name}: invalid JSON: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # parse_constant, and int() refusing a number of more than 4300 digits
        raise ConfigError(f"{name}: invalid JSON: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{name}: invalid JSON: nested more than {MAX_DEPTH} levels deep")
    return data


def load_object(text: str, name: str = "config.json") -> dict:
    """load_json, and the document must be an object."""
    data = load_json(text, name)
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a JSON object, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class JsonDoc:
    """A parsed JSON object document with the spans of its top-level members."""

    text: str
    members: tuple[Member, ...]
    open_brace: int
    close_brace: int

    @classmethod
    def parse(cls, text: str, name: str = "config.json") -> "JsonDoc":
        load_object(text, name)  # clear errors first; the scan below can then assume valid JSON
        i = _skip_ws(text, 0)
        open_brace = i
        members: list[Member] = []
        i += 1
        while True:
            ws_start = i
            i = _skip_ws(text, i)
            if text[i] == "}":
                return cls(text, tuple(members), open_brace, i)
            key_start = i
            key, key_end = json.decoder.scanstring(text, i + 1)
            i = _skip_ws(text, key_end) + 1  # past ':'
            value_start = _skip_ws(text, i)
            _, value_end = _DECODER.raw_decode(text, value_start)
            members.append(Member(key, ws_start, key_start, key_end, value_start, value_end))
            i = _skip_ws(text, value_end)
            if text[i] == ",":
                i += 1

    # -- reading -------------------------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return [m.key for m in self.members]

    def find(self, key: str) -> Member | None:
        found = [m for m in self.members if m.key == key]
        if len(found) > 1:
            raise ConfigError(f"config.json has the key '{key}' {len(found)} times; fix it by hand first")
        return found[0] if found else None

    def value_text(self, key: str) -> str | None:
        member = self.find(key)
        return None if member is None else self.text[member.value_start : member.value_end]

    # -- style ---------------------------------------------------------------------------------------------------

    def _item_ws(self) -> str:
        """The whitespace that precedes a key: '\\n  ' in a pretty file, ' ' or '' on one line."""
        if not self.members:
            return "\n  "
        member = self.members[1] if len(self.members) > 1 else self.members[0]
        return self.text[member.ws_start : member.key_start]

    def _key_sep(self) -> str:
        if not self.members:
            return ": "
        m = self.members[0]
        sep = self.text[m.key_end : m.value_start]
        return sep if sep.strip() == ":" else ": "

    def sorted_keys(self) -> bool:
        keys = self.keys()
        return len(keys) > 1 and keys == sorted(keys)

    def indent_unit(self) -> str:
        """The whitespace one nesting level adds ('  ', '    ', a tab), or '' for a one-line file."""
        ws = self._item_ws()
        return ws.rsplit("\n", 1)[1] if "\n" in ws else ""

    def format_value(self, value: Any, unit: str | None = None) -> str:
        """`value` as JSON text in this file's style, ready to sit where this document's members sit. `unit` is the
        file's indent unit when this document is itself nested (its members are indented by more than one unit)."""
        ws = self._item_ws()
        key_sep = self._key_sep()
        if "\n" in ws:
            newline = "\r\n" if "\r\n" in ws else "\n"
            depth = ws.rsplit("\n", 1)[1]
            step = unit or depth or "  "
            dumped = json.dumps(value, indent=step, separators=(",", key_sep), ensure_ascii=False)
            return dumped.replace("\n", newline + depth)
        item_sep = "," + ws if ws else ", "
        return json.dumps(value, separators=(item_sep, key_sep), ensure_ascii=False)

    # -- editing (each returns the new text; parse again before the next edit) ------------------------------------

    def replace_value(self, key: str, value_text: str) -> str:
        member = self.find(key)
        if member is None:
            raise KeyError(key)
        return self.text[: member.value_start] + value_text + self.text[member.value_end :]

    def insert(self, key: str, value_text: str, anchors: Sequence[str] = ()) -> str:
        """Add a member: in sorted position if the file's keys are sorted, else after the first present anchor,
        else at the end."""
        pair = json.dumps(key, ensure_ascii=False) + self._key_sep() + value_text
        ws = self._item_ws()
        if not self.members:
            closing = "\n" if "\n" in ws else ""
            return self.text[: self.open_brace + 1] + ws + pair + closing + self.text[self.close_brace :]
        if self.sorted_keys():
            for member in self.members:
                if member.key > key:
                    at = member.key_start
                    return self.text[:at] + pair + "," + ws + self.text[at:]
            after = self.members[-1]
        else:
            present = [self.find(a) for a in anchors]
            after = next((m for m in present if m is not None), self.members[-1])
        at = after.value_end
        return self.text[:at] + "," + ws + pair + self.text[at:]

    def set(self, key: str, value: Any, anchors: Sequence[str] = (), unit: str | None = None) -> str:
        """Replace the value of `key` (formatted in the file's style), or insert the member if it is absent."""
        value_text = self.format_value(value, unit)
        if self.find(key) is not None:
            return self.replace_value(key, value_text)
        return self.insert(key, value_text, anchors)

    def set_nested(self, key: str, inner_key: str, value: Any) -> str:
        """Set one member of the object at top-level `key`, leaving its other members' text as it was."""
        outer = self.value_text(key)
        if outer is None or not outer.startswith("{"):
            raise ConfigError(f"config.json's '{key}' is not an object")
        inner = JsonDoc.parse(outer, key).set(inner_key, value, unit=self.indent_unit() or None)
        return self.replace_value(key, inner)

    def set_text(self, key: str, value_text: str, anchors: Sequence[str] = ()) -> str:
        """Like `set` with value text taken verbatim (to put back exactly what a file had)."""
        if self.find(key) is not None:
            return self.replace_value(key, value_text)
        return self.insert(key, value_text, anchors)

    def delete(self, key: str) -> str:
        member = self.find(key)
        if member is None:
            return self.text
        index = self.members.index(member)
        if index > 0:  # drop ", <ws> key: value" after the previous member
            start, end = self.members[index - 1].value_end, member.value_end
        elif len(self.members) > 1:  # first member: drop "key: value, <ws>" up to the next key
            start, end = member.key_start, self.members[1].key_start
        else:
            start, end = member.key_start, member.value_end
        return self.text[:start] + self.text[end:]
