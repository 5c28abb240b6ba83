"""`kanana-longctx niah`: build exact needle-in-a-haystack probes, then inspect them (--dry-run) or run them.

Usage: kanana-longctx niah --model smollm2 --dry-run --out runs/demo [--preset readme-32k] [--lang ko]

Thin shell: validate the cheap options first (grid, language, haystack) so that a typo costs no tokenizer load,
then load only the tokenizer, call `kanana_longctx.probes.build_probe_set`, and either write prompts.jsonl with a
rich summary or hand the probe set to the runner (kanana_longctx.run.runner; under torchrun where --gpus or --tp
asks for it: kanana_longctx.run.distributed). Nothing is written before every probe has been built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kanana_longctx.cli import app
from kanana_longctx.cli.endpoint_options import (
    ApiKeyEnvOpt, ConcurrencyOpt, EndpointOpt, PrefixOrderOpt, ServedModelOpt, endpoint_checks, model_given,
)
from kanana_longctx.cli.errors import debug_enabled, fail, friendly_errors, stderr
from kanana_longctx.cli.next_steps import plot_hint, rerun_hint
from kanana_longctx.cli.options import RevisionOpt, parse_number

stdout = Console(highlight=False, soft_wrap=True)

_GRID = "Grid"
_PROBE = "Probes"
_RUN = "Run (ignored with --dry-run)"


def model_slug(spec: str) -> str:
    """A short, path-safe name for MODEL: smollm2, the last part of a hub id, a directory or file stem."""
    name = spec.rstrip("/\\").replace("\\", "/").split("/")[-1] or "model"
    name = name[: -len(".gguf")] if name.endswith(".gguf") else name
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"


def _summary_table(summary, seconds: float) -> Table:
    from kanana_longctx.probes.summary import DEPTH_TOLERANCE, human

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    lengths = summary.lengths
    repeats = f" x {summary.repeats} repeats" if summary.repeats > 1 else ""
    table.add_row("probes", f"{summary.probes} = {len(lengths)} lengths x {len(summary.depths)} depths{repeats}")
    table.add_row("task", summary.task)
    table.add_row("lengths", f"{lengths[0]:,} .. {lengths[-1]:,} tokens" if len(lengths) > 1 else f"{lengths[0]:,}")
    table.add_row("depths", ", ".join(f"{d:g}" for d in summary.depths) + " %")
    table.add_row("form / lang", f"{summary.form} / {summary.lang}")
    repeats = f", repeated x{summary.haystack_repeats}" if summary.haystack_repeats > 1 else ""
    table.add_row("haystack", escape(f"{summary.haystack} (sha256 {summary.haystack_hash[:12]}{repeats})"))
    table.add_row(
        "tokens",
        f"{summary.total_tokens:,} in all; {summary.reuse_tokens:,} to prefill with prefix reuse"
        f" ({summary.reuse_share:.1%} reused)",
    )
    table.add_row("shared prefix", f"{summary.shared_prefix_tokens:,} tokens")
    depth_note = f"max |actual - requested| {summary.max_depth_error:g} points"
    if summary.off_depth:
        depth_note += (
            f" [yellow]({summary.off_depth} probes off by more than {DEPTH_TOLERANCE:g}: few sentence ends)[/]"
        )
    table.add_row("depth", depth_note)
    exact = "n_tokens == length for every probe" if summary.exact else "[red]NOT EXACT[/]"
    table.add_row("exactness", f"{exact}; {summary.padded} padded (at most {summary.max_pad} tokens)")
    if summary.params is not None:
        table.add_row(
            "prefill FLOPs",
            f"{human(summary.flops)}FLOP at {human(summary.params)} params (2 x params x tokens; attention extra);"
            f" {human(summary.reuse_flops)}FLOP with prefix reuse",
        )
    table.add_row("answer budget", f"{summary.max_new_tokens} new tokens (from a right answer's tokens)")
    table.add_row("built in", f"{seconds:.2f} s")
    return table


def _yarn_numbers(yarn: bool | None, factor, original, beta_fast, beta_slow) -> dict:
    """The YaRN numbers typed, as RunOptions fields (absent ones keep the recipe's defaults); like `config`, they
    only apply with --yarn, so a number given without it is refused rather than silently ignored."""
    from kanana_longctx.errors import BadInput

    typed = {
        "yarn_factor": ("--yarn-factor", factor, float),
        "yarn_original": ("--yarn-original", original, int),
        "yarn_beta_fast": ("--yarn-beta-fast", beta_fast, float),
        "yarn_beta_slow": ("--yarn-beta-slow", beta_slow, float),
    }
    given = [flag for flag, text, _ in typed.values() if text is not None]
    if given and yarn is not True:
        raise BadInput(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --yarn")
    numbers = {name: parse_number(text, flag, kind) for name, (flag, text, kind) in typed.items()}
    return {name: value for name, value in numbers.items() if value is not None}


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Model dir, .gguf file, hub id in the local cache, or smollm2."),
]
TrustRemoteCodeOpt = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Allow the model's own tokenizer/model code."),
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Only build the probes: write DIR/prompts.jsonl and a summary."),
]
OutOpt = Annotated[
    Optional[Path],
    typer.Option("--out", "-o", help="Run directory \\[default: runs/MODEL[-TASK]-FORM-LANG-GRID].", show_default=False),
]
PresetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--preset",
        "-p",
        help="quick | readme-32k | readme-128k \\[default: quick unless --lengths].",
        rich_help_panel=_GRID,
        show_default=False,
    ),
]
LengthsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--lengths",
        "-l",
        help="Token lengths: 1000,2000 or 1000:32000:1000 (inclusive).",
        rich_help_panel=_GRID,
    ),
]
DepthsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--depths",
        "-d",
        help="Depths in percent: 0,50,100 or a range START:STOP:STEP.",
        rich_help_panel=_GRID,
    ),
]
DepthCountOpt = Annotated[
    Optional[int],
    typer.Option(
        "--depth-count",
        help="Number of depths from 0 to 100 (with --depth-spacing).",
        rich_help_panel=_GRID,
    ),
]
DepthSpacingOpt = Annotated[
    str,
    typer.Option("--depth-spacing", help="linear | sigmoid (denser near 0 and 100).", rich_help_panel=_GRID),
]
HaystackOpt = Annotated[
    str,
    typer.Option(
        "--haystack",
        "-H",
        help="builtin[:LANG] | noise[:LANG] | a directory of .txt files | a file.",
        rich_help_panel=_PROBE,
    ),
]
FormOpt = Annotated[
    str,
    typer.Option(
        "--form",
        "-f",
        help="auto | retform (base models) | qaform (chat template).",
        rich_help_panel=_PROBE,
    ),
]
LangOpt = Annotated[
    str,
    typer.Option("--lang", help="en | ko: language of instruction, needle, question.", rich_help_panel=_PROBE),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        "-s",
        help="Seed of the needle values (per probe: SEED:LENGTH:DEPTH).",
        rich_help_panel=_PROBE,
    ),
]
NeedleOpt = Annotated[
    Optional[str],
    typer.Option(
        "--needle",
        help="Custom needle; {value} is replaced by the random 7-digit value.",
        rich_help_panel=_PROBE,
    ),
]
QuestionOpt = Annotated[
    Optional[str],
    typer.Option("--question", help="Custom question.", rich_help_panel=_PROBE),
]
ExpectedOpt = Annotated[
    Optional[str],
    typer.Option(
        "--expected",
        help="Answer the custom needle contains \\[default: the value].",
        rich_help_panel=_PROBE,
        show_default=False,
    ),
]
AnswerPrefixOpt = Annotated[
    Optional[str],
    typer.Option(
        "--answer-prefix",
        help="Text the prompt ends with; 'default' = the language's; '' = none.",
        rich_help_panel=_PROBE,
    ),
]
TaskOpt = Annotated[
    str,
    typer.Option(
        "--task",
        "-t",
        help="single | multikey | multivalue | multiquery | absent.",
        rich_help_panel=_PROBE,
    ),
]
DistractorsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--distractors",
        help="Needles of other keys per probe \\[default: 3 for multikey, else 0].",
        rich_help_panel=_PROBE,
        show_default=False,
    ),
]
ValuesOpt = Annotated[
    Optional[int],
    typer.Option(
        "--values", help="Values of the key (multivalue) \\[default: 4].", rich_help_panel=_PROBE, show_default=False
    ),
]
QueriesOpt = Annotated[
    Optional[int],
    typer.Option(
        "--queries", help="Keys asked at once (multiquery) \\[default: 4].", rich_help_panel=_PROBE, show_default=False
    ),
]
RepeatsOpt = Annotated[
    int,
    typer.Option("--repeats", "-r", help="Probes per cell, each with its own draws.", rich_help_panel=_PROBE),
]
VerifyOpt = Annotated[
    str,
    typer.Option(
        "--verify",
        help="junctions (fast, exact for byte-level BPE) | full (re-encode every prompt).",
        rich_help_panel=_PROBE,
    ),
]
WithIdsOpt = Annotated[
    bool,
    typer.Option("--with-ids", help="Also write input_ids into prompts.jsonl.", rich_help_panel=_PROBE),
]
ParamsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--params",
        help="Parameter count (8e9, 8B, 135M) for the prefill FLOP estimate.",
        rich_help_panel=_PROBE,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto | cpu | cuda.", rich_help_panel=_RUN),
]
DtypeOpt = Annotated[
    str,
    typer.Option("--dtype", help="auto | bfloat16 | float16 | float32.", rich_help_panel=_RUN),
]
AttnOpt = Annotated[
    str,
    typer.Option("--attn", help="auto | cudnn | fa3 | fa2 | sdpa | eager.", rich_help_panel=_RUN),
]
YarnOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--yarn/--no-yarn",
        help="Apply YaRN in memory / force it off \\[default: as the config says].",
        rich_help_panel=_RUN,
        show_default=False,
    ),
]
# The YaRN numbers under the names `config` uses (kanana_longctx.cli.options), read as text and converted with
# parse_number: "--yarn-factor abc" is one line and exit 2. None: the recipe's value (--yarn-recipe).
YarnFactorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-factor", help="YaRN factor \\[default: the recipe's]", metavar="FLOAT", rich_help_panel=_RUN,
        show_default=False,
    ),
]
YarnOriginalOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-original",
        help="The trained context length \\[default: the model's native context]",
        metavar="INT",
        rich_help_panel=_RUN,
        show_default=False,
    ),
]
YarnBetaFastOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-beta-fast", help="YaRN beta_fast \\[default: the recipe's]", metavar="FLOAT",
        rich_help_panel=_RUN, show_default=False,
    ),
]
YarnBetaSlowOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-beta-slow", help="YaRN beta_slow \\[default: the recipe's]", metavar="FLOAT",
        rich_help_panel=_RUN, show_default=False,
    ),
]
YarnRecipeOpt = Annotated[
    str,
    typer.Option("--yarn-recipe", help="With --yarn: auto (the config's family: kanana-2 for MLA or per-layer-type "
                 "RoPE, else kanana-1.5) | kanana-1.5 | kanana-2 | custom, as `config --recipe`.", rich_help_panel=_RUN),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine", help="auto | fast (prefix reuse, Llama family) | reuse (prefix reuse, any cache) | hf.",
        rich_help_panel=_RUN,
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", help="Probes per batch, or decoded together by reuse (0: from free memory).", rich_help_panel=_RUN),
]
MaxNewTokensOpt = Annotated[
    int,
    typer.Option("--max-new-tokens", help="0: from the expected answer's length.", rich_help_panel=_RUN),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Discard results already in --out.", rich_help_panel=_RUN),
]
LimitOpt = Annotated[
    int,
    typer.Option("--limit", help="Run only the first N pending probes (0: all).", rich_help_panel=_RUN),
]

GpusOpt = Annotated[
    int,
    typer.Option(
        "--gpus",
        help="Data parallel: shard the probes over N processes (one per GPU) through torchrun; 0/1: one process.",
        rich_help_panel=_RUN,
    ),
]

MaxMemoryOpt = Annotated[
    float,
    typer.Option(
        "--max-memory",
        help="GiB the run may plan to take on the GPU, weights included (KV rows, prefill chunk, batch size); "
        "0: its own share of the card. For a GPU shared with a server, or to plan like a smaller card.",
        min=0.0,
        metavar="GIB",
        rich_help_panel=_RUN,
    ),
]


TpOpt = Annotated[
    int,
    typer.Option(
        "--tp",
        help="Model parallel over N GPUs: transformers tensor parallelism (relaunched under torchrun) where the "
        "architecture has a plan, else accelerate device_map=auto layer sharding in one process.",
        rich_help_panel=_RUN,
    ),
]


@app.command("niah")
@friendly_errors
def niah(
    ctx: typer.Context,
    model: ModelOpt = "smollm2",
    revision: RevisionOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    dry_run: DryRunOpt = False,
    out: OutOpt = None,
    preset: PresetOpt = None,
    lengths: LengthsOpt = None,
    depths: DepthsOpt = None,
    depth_count: DepthCountOpt = None,
    depth_spacing: DepthSpacingOpt = "linear",
    haystack: HaystackOpt = "builtin",
    form: FormOpt = "auto",
    lang: LangOpt = "en",
    seed: SeedOpt = 0,
    needle: NeedleOpt = None,
    question: QuestionOpt = None,
    expected: ExpectedOpt = None,
    answer_prefix: AnswerPrefixOpt = None,
    task: TaskOpt = "single",
    distractors: DistractorsOpt = None,
    values: ValuesOpt = None,
    queries: QueriesOpt = None,
    repeats: RepeatsOpt = 1,
    verify: VerifyOpt = "junctions",
    with_ids: WithIdsOpt = False,
    params: ParamsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "auto",
    yarn: YarnOpt = None,
    yarn_factor: YarnFactorOpt = None,
    yarn_original: YarnOriginalOpt = None,
    yarn_beta_fast: YarnBetaFastOpt = None,
    yarn_beta_slow: YarnBetaSlowOpt = None,
    yarn_recipe: YarnRecipeOpt = "auto",
    engine: EngineOpt = "auto",
    batch_size: BatchSizeOpt = 0,
    max_new_tokens: MaxNewTokensOpt = 0,
    overwrite: OverwriteOpt = False,
    limit: LimitOpt = 0,
    gpus: GpusOpt = 0,
    tp: TpOpt = 0,
    max_memory: MaxMemoryOpt = 0.0,
    endpoint: EndpointOpt = None,
    served_model: ServedModelOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    prefix_order: PrefixOrderOpt = True,
) -> None:
    """Needle-in-a-haystack probes of exactly LENGTH tokens in the model's own tokenizer, English or Korean.

    Every prompt re-encodes to exactly its length; the needle sits at the
    sentence end nearest to the requested depth; all probes share one tokenized
    haystack prefix. --dry-run loads only the tokenizer. A run ends with the
    next command: kanana-longctx plot DIR.

    [bold]Examples[/]

      kanana-longctx niah                     [dim]# the demo: SmolLM2 on the CPU[/]

      kanana-longctx niah --dry-run --out runs/demo

      kanana-longctx niah -m ./kanana-8b -p readme-128k --lang ko --dry-run

      kanana-longctx niah -m ./kanana-base -f retform -l 1000:8000:1000 -H noise

      kanana-longctx niah --needle "Code {value}." --question "Code?" --dry-run

      kanana-longctx niah --task multikey --distractors 5 --repeats 3 --dry-run

      kanana-longctx niah -m ./kanana-8b -p readme-128k --yarn -o runs/k8b-128k

      kanana-longctx niah -m ./kanana-8b --endpoint http://127.0.0.1:8000/v1
    """
    from kanana_longctx.errors import BadInput
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.probes import build_probe_set, load_haystack, resolve_grid
    from kanana_longctx.probes.build import ProbeRequest
    from kanana_longctx.probes.languages import language_pack
    from kanana_longctx.probes.needle import resolve_needle
    from kanana_longctx.probes.summary import parse_count, summarize, write_prompts
    from kanana_longctx.probes.template import FORMS
    from kanana_longctx.results import RESULTS_NAME
    from kanana_longctx.options import RunOptions
    from kanana_longctx.writable import check_writable_dir

    # Cheap checks first: a typo must not cost a tokenizer load.
    grid = resolve_grid(preset, lengths, depths, depth_count, depth_spacing)
    pack = language_pack(lang)
    if form.strip().lower() not in FORMS:
        raise BadInput(f"unknown form '{form}' (choose auto, retform or qaform)")
    resolve_needle(pack, "retform", needle=needle, question=question, expected=expected, answer_prefix=answer_prefix)
    param_count = parse_count(params) if params is not None else None
    from kanana_longctx.yarn.recipes import RECIPE_NAMES

    if yarn_recipe not in RECIPE_NAMES:
        raise BadInput(f"--yarn-recipe must be one of {', '.join(RECIPE_NAMES)}; got '{yarn_recipe}'")
    request = ProbeRequest.from_grid(
        grid, haystack=haystack, form=form.strip().lower(), lang=pack.code, seed=seed, needle=needle,
        question=question, expected=expected, answer_prefix=answer_prefix, verify=verify, task=task,
        distractors=distractors, values=values, queries=queries, repeats=repeats,
    )
    hay = load_haystack(haystack, pack.code)
    endpoint_checks(ctx, endpoint, concurrency=concurrency)
    yarn_numbers = _yarn_numbers(yarn, yarn_factor, yarn_original, yarn_beta_fast, yarn_beta_slow)
    run_options = RunOptions(
        model=model, revision=revision, device=device, dtype=dtype, attn=attn, yarn=yarn, **yarn_numbers,
        yarn_recipe=yarn_recipe, yarn_given=tuple(name.removeprefix("yarn_") for name in yarn_numbers),
        engine=engine, batch_size=batch_size, max_new_tokens=max_new_tokens,
        trust_remote_code=trust_remote_code, overwrite=overwrite, limit=limit, tp=tp, max_memory_gib=max_memory,
        endpoint=endpoint or "", served_model=served_model, api_key_env=api_key_env or "",
        concurrency=concurrency or 0, prefix_order=prefix_order,
    )
    if endpoint and not model_given(ctx):  # the probes need the served model's tokenizer
        from dataclasses import replace

        from kanana_longctx.backends.endpoint import served_tokenizer_model

        model = served_tokenizer_model(run_options)
        run_options = replace(run_options, model=model)
    from kanana_longctx.run.check import validate_options

    validate_options(run_options, gpus=gpus)  # every name and number, before anything is loaded or written
    if gpus > 1 and tp > 1:
        raise BadInput("--gpus (data parallel) and --tp (model parallel) cannot be combined yet: choose one")
    what = "--out" if out is not None else "run directory"
    check_writable_dir(out if out is not None else Path("runs"), what)  # before the tokenizer, probes, weights

    from kanana_longctx.tokenizer import load_tokenizer

    source = resolve_model(model, revision)
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    if not dry_run:  # device, kernel and context from the config, before a single probe is built
        from kanana_longctx.run.runner import preflight

        preflight(run_options, max(grid.lengths), tokenizer=tokenizer)
    started = time.perf_counter()
    probe_set = build_probe_set(request, tokenizer, haystack=hay)
    task_part = "" if probe_set.task == "single" else f"-{probe_set.task}"
    out_dir = out or Path("runs") / f"{model_slug(model)}{task_part}-{probe_set.form}-{probe_set.lang}-{grid.name}"
    check_writable_dir(out_dir, what)

    if dry_run:
        if (out_dir / RESULTS_NAME).exists() and not overwrite:
            raise BadInput(f"{out_dir} already holds a run ({RESULTS_NAME}); use --overwrite or another --out")
        from kanana_longctx.run.lock import run_dir_lock

        with run_dir_lock(out_dir, "kanana-longctx niah --dry-run"):  # never beside a run that is writing
            path = write_prompts(probe_set, out_dir, with_ids=with_ids)
        seconds = time.perf_counter() - started
        stdout.print(_summary_table(summarize(probe_set, param_count), seconds))
        stdout.print(f"wrote {escape(str(path))}")  # outside the table: a path must never be cut short
        stdout.print("to run these probes on the model, give the same command without --dry-run:")
        stdout.print(escape(rerun_hint(ctx, "niah", out_dir, drop={"dry_run", "with_ids", "params"})))
        return
    if out is None:
        stderr.print(f"run directory: {escape(str(out_dir))}", highlight=False)
    from kanana_longctx.run.distributed import rank_from_env, relaunch

    if (gpus > 1 or tp > 1) and rank_from_env() is None and out is None:
        raise BadInput("--gpus and --tp need an explicit --out")  # every rank must agree on the directory
    code = relaunch(gpus, tp, source, run_options)
    if code is not None:
        raise typer.Exit(code)
    from kanana_longctx.run.runner import run_niah

    try:
        run_niah(probe_set, run_options, out_dir, stdout, tokenizer=tokenizer)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        # every finished probe is already fsynced: say so, and how to go on, instead of a bare "interrupted"
        raise fail(f"interrupted; the finished probes are kept in {out_dir}: the same command resumes", 130) from None
    rank = rank_from_env()
    if rank is None or rank.rank == 0:
        stdout.print(escape(plot_hint(out_dir)))
