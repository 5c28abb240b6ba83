"""The text around the haystack: what comes before it (prefix) and after it (suffix), per form.

Usage: `tpl = build_template(tokenizer, "qaform", instruction, question, answer_prefix="")`

- retform (base models): [BOS] instruction, blank line, haystack, blank line, question, answer prefix; the model
  completes the answer prefix ("... The special magic number is").
- qaform (instruct models): the tokenizer's own chat template with instruction + haystack + question as the user
  turn, then the generation prompt, optionally followed by an answer prefix in the assistant turn.

The chat template is rendered once with a marker where the haystack goes and split there, so the probe carries
exactly the special tokens and whitespace the model's template writes (a default system prompt included).
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.errors import ProbeError

FORMS = ("auto", "retform", "qaform")
SEPARATOR = "\n\n"  # between instruction, haystack and question
_MARKER = "\u2063KANANA_LONGCTX_HAYSTACK\u2063"


@dataclass(frozen=True)
class Template:
    form: str  # retform | qaform
    prefix: str  # text before the haystack, special tokens written out
    suffix: str  # text after the haystack, up to where the model starts writing
    answer_prefix: str  # already part of `suffix`; kept for the record


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_form(form: str, tokenizer) -> str:
    """`auto` becomes qaform when the tokenizer has a chat template, else retform."""
    form = (form or "auto").strip().lower()
    if form not in FORMS:
        raise ProbeError(f"unknown form '{form}' (choose auto, retform or qaform)")
    if form == "auto":
        return "qaform" if has_chat_template(tokenizer) else "retform"
    if form == "qaform" and not has_chat_template(tokenizer):
        raise ProbeError("qaform needs a chat template and this tokenizer has none (use --form retform)")
    return form


def leading_special_text(tokenizer) -> str:
    """What the tokenizer puts before a text by default (BOS for Llama-style base models), written out."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    extra = len(full) - len(plain)
    if extra <= 0 or full[extra:][: len(plain)] != plain:
        return ""
    return tokenizer.decode(full[:extra], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def build_template(tokenizer, form: str, instruction: str, question: str, answer_prefix: str = "") -> Template:
    """Prefix and suffix texts for `form` (already resolved: retform | qaform)."""
    if form == "retform":
        prefix = leading_special_text(tokenizer) + instruction + SEPARATOR
        suffix = SEPARATOR + question + (" " + answer_prefix if answer_prefix else "")
        return Template(form, prefix, suffix, answer_prefix)
    if form != "qaform":
        raise ProbeError(f"unknown form '{form}' (choose retform or qaform)")
    content = instruction + SEPARATOR + _MARKER + SEPARATOR + question
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # jinja errors, templates that need other roles...
        raise ProbeError(f"the tokenizer's chat template cannot be rendered: {exc}") from None
    if not isinstance(rendered, str) or rendered.count(_MARKER) != 1:
        raise ProbeError("the tokenizer's chat template does not keep the user message intact")
    prefix, suffix = rendered.split(_MARKER)
    return Template(form, prefix, suffix + answer_prefix, answer_prefix)
