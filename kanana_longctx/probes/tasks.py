"""The probe tasks: what is hidden, what is asked, and what a right answer says.

Usage: `task = resolve_task("multikey", distractors=5); task.needles  # 6`

| task | needles in the prompt | asked | right answer |
|---|---|---|---|
| single | 1 (the README's needle, no key) | its number | the value |
| multikey | 1 + K distractors (other keys) | the one key | its value, not a distractor's |
| multivalue | V with one key (+ K distractors) | every value of the key | all V values (score: share) |
| multiquery | Q keys (+ K distractors) | the Q keys at once | Q values (score: share) |
| absent | K distractors (default none) | a key that is not there | a refusal ("none", "없음") |

In every task with needles one of them (the first asked) sits at the cell's depth; the others are the probe's
"column" needles, at positions drawn from the seed for each length (kanana_longctx.probes.layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from kanana_longctx.errors import ProbeError

TASKS = ("single", "multikey", "multivalue", "multiquery", "absent")
DEFAULT_DISTRACTORS = {"multikey": 3}  # RULER's multikey: 4 keys, one asked
DEFAULT_VALUES = 4  # RULER's multivalue
DEFAULT_QUERIES = 4  # RULER's multiquery
MAX_NEEDLES = 32


@dataclass(frozen=True)
class TaskSpec:
    name: str
    distractors: int = 0  # needles of keys that are not asked
    values: int = 1  # values of the asked key (multivalue)
    queries: int = 1  # keys asked (multiquery)

    @property
    def keyed(self) -> bool:
        return self.name != "single"

    @property
    def present(self) -> bool:
        """Whether the asked key is in the prompt (everything but absent)."""
        return self.name != "absent"

    @property
    def asked_needles(self) -> int:
        return self.values * self.queries if self.present else 0

    @property
    def needles(self) -> int:
        return self.asked_needles + self.distractors

    @property
    def column_needles(self) -> int:
        """Needles placed per length, the same at every depth: all but the one at the cell's depth."""
        return self.needles - (1 if self.present else 0)

    def describe(self) -> str:
        if self.name == "single":
            return "single: one needle"
        parts = {
            "multikey": f"1 asked key + {self.distractors} distractor{'s' * (self.distractors != 1)}",
            "multivalue": f"1 key with {self.values} values",
            "multiquery": f"{self.queries} keys asked at once",
            "absent": "the asked key is absent",
        }[self.name]
        extra = f" + {self.distractors} distractors" if self.name != "multikey" and self.distractors else ""
        return f"{self.name}: {parts}{extra} ({self.needles} needle{'s' * (self.needles != 1)} per probe)"


def resolve_task(
    name: str = "single", *, distractors: int | None = None, values: int | None = None, queries: int | None = None
) -> TaskSpec:
    """The task with its defaults filled in; ProbeError for an unknown task or an option it does not take."""
    task = (name or "single").strip().lower()
    if task not in TASKS:
        raise ProbeError(f"unknown task '{name}' (choose one of: {', '.join(TASKS)})")
    if task == "single" and distractors:
        raise ProbeError("the single task has no distractors (use --task multikey)")
    if values is not None and task != "multivalue":
        raise ProbeError("--values applies to --task multivalue only")
    if queries is not None and task != "multiquery":
        raise ProbeError("--queries applies to --task multiquery only")
    k = DEFAULT_DISTRACTORS.get(task, 0) if distractors is None else int(distractors)
    v = (DEFAULT_VALUES if values is None else int(values)) if task == "multivalue" else 1
    q = (DEFAULT_QUERIES if queries is None else int(queries)) if task == "multiquery" else 1
    if k < 0:
        raise ProbeError(f"--distractors must be 0 or more, got {k}")
    if task == "multivalue" and v < 2:
        raise ProbeError(f"--values must be at least 2 (one value is --task multikey), got {v}")
    if task == "multiquery" and q < 2:
        raise ProbeError(f"--queries must be at least 2 (one key is --task multikey), got {q}")
    spec = TaskSpec(task, k, v, q)
    if spec.needles > MAX_NEEDLES:
        raise ProbeError(f"{spec.needles} needles per probe is more than {MAX_NEEDLES}")
    return spec
