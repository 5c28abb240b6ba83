"""Small results of other NIAH tools, written in each format's documented shape (imported by the plot tests; holds no
tests). The values are made up here; no other project's data is copied.

Usage: write_gkamradt_v1(tmp_path / "results", [1000, 2000], [0.0, 100.0], score=lambda L, D: 10)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

Score = Callable[[int, float], float]


def write_gkamradt_v1(
    directory: Path, lengths: Sequence[int], depths: Sequence[float], score: Score = lambda L, D: 10,
    *, model: str = "kanana-flag-1.5-32.5b-base", versions: int = 1, with_model: bool = True,
) -> Path:
    """LLMTest_NeedleInAHaystack's results/ directory: `<model>_len_<L>_depth_<D*100>_results.json` per test."""
    directory.mkdir(parents=True, exist_ok=True)
    for version in range(1, versions + 1):
        for length in lengths:
            for depth in depths:
                result = {
                    "model": model, "context_length": int(length), "depth_percent": float(depth), "version": version,
                    "needle": "\nThe secret code of the blue harbour is 4711.\n",
                    "model_response": "The secret code is 4711.", "score": score(length, depth),
                    "test_duration_seconds": 1.5, "test_timestamp_utc": "2024-03-04 10:00:00+0000",
                }
                if not with_model:
                    del result["model"]
                suffix = "" if version == 1 else f"_v{version}"
                name = f"{model.replace('.', '_')}_len_{length}_depth_{int(depth * 100)}{suffix}_results.json"
                (directory / name).write_text(json.dumps(result), encoding="utf-8")
    return directory


def write_gkamradt_v2(
    path: Path, lengths: Sequence[int], depths: Sequence[float], score: Score = lambda L, D: 1.0,
    *, model_id: str = "openai-gpt-4o-mini", task_type: str = "single", seeds: Sequence[int] = (1,),
    errors: int = 0, append: bool = False,
) -> Path:
    """needle-in-a-haystack v2's JSONL store: one schema_version 2 row per probe; `errors` rows with status error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed in seeds:
        for length in lengths:
            for depth in depths:
                value = score(length, depth)
                lines.append({
                    "schema_version": 2, "run_name": "kanana-sweep", "model_id": model_id,
                    "model_request_name": model_id, "task_type": task_type, "context_length": int(length),
                    "target_depth_percent": float(depth),
                    "recipe": {"haystack": {"type": "files", "path": "essays"}, "inserter": "single_depth",
                               "needle_placements": [], "final_context_token_count": int(length)},
                    "needle_metadata": {}, "expected_answer": "4711", "prompt_question": "What is the code?",
                    "response": "4711" if value else "I don't know", "score": {"value": value, "details": {}},
                    "usage": {"input_tokens": int(length), "output_tokens": 5}, "cost_usd": 0.001,
                    "duration_seconds": 0.4, "status": "ok", "error": None,
                    "timestamp_utc": "2026-01-01T00:00:00+00:00", "seed": seed,
                })
    for i in range(errors):
        lines.append({**lines[i], "response": None, "score": None, "usage": None, "cost_usd": None,
                      "status": "error", "error": "rate limited"})
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))
    return path


def evalscope_key(length: int, depth: float) -> str:
    return f"Context#{length} Depth#{int(depth)}"


def write_evalscope_reviews(
    outputs: Path, lengths: Sequence[int], depths: Sequence[float], score: Score = lambda L, D: 1.0,
    *, model: str = "qwen-plus", subset: str = "english", judge: bool = False, repeats: int = 1,
    metadata: bool = True,
) -> Path:
    """EvalScope's reviews/<model>/needle_haystack_<subset>.jsonl: one ReviewResult per sample."""
    directory = outputs / "reviews" / model
    directory.mkdir(parents=True, exist_ok=True)
    lines, index = [], 0
    for length in lengths:
        for depth in depths:
            for repeat in range(repeats):
                key = evalscope_key(length, depth)
                score_obj = {"value": {key: score(length, depth)}, "status": "success", "main_score_name": key,
                             "prediction": "Eat a sandwich in Dolores Park.", "extracted_prediction": None,
                             "explanation": None, "metadata": {}, "judge_summary": None}
                if judge:
                    score_obj["judge_summary"] = {"status": "success", "scored": 1, "total": 1, "coverage": 1.0,
                                                  "judge_models": ["qwen2.5-72b-instruct"]}
                sample = {"score": score_obj, "sample_id": index, "group_id": index // repeats,
                          "generation_index": repeat,
                          "sample_metadata": {"context_length": length, "depth_percent": int(depth)} if metadata
                          else None}
                lines.append({"index": index, "target": "eat a sandwich", "messages": [], "sample_score": sample})
                index += 1
    path = directory / f"needle_haystack_{subset}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return outputs


def write_evalscope_report(
    outputs: Path, lengths: Sequence[int], depths: Sequence[float], score: Score = lambda L, D: 1.0,
    *, model: str = "qwen-plus", schema: int = 1, subsets: Sequence[str] = ("english",), num: int = 1,
) -> Path:
    """EvalScope's reports/<model>/needle_haystack.json; schema 1 names metrics `Context#L Depth#D`, schema 2 stores
    the canonical identity `context_L_depth_D`."""
    metrics = []
    for length in lengths:
        for depth in depths:
            subset_rows = [{"name": s, "score": score(length, depth), "num": num} for s in subsets]
            metric = {"categories": [{"name": ["default"], "subsets": subset_rows}], "num": num,
                      "score": score(length, depth)}
            if schema == 1:
                metric["name"] = evalscope_key(length, depth)
            else:
                metric["identity"] = {"name": f"context_{length}_depth_{int(depth)}", "aggregation": "mean",
                                      "dimensions": {}}
                metric["semantics"] = {"kind": "diagnostic"}
            metrics.append(metric)
    report = {"name": f"{model}@needle_haystack", "dataset_name": "needle_haystack", "model_name": model,
              "metrics": metrics, "analysis": "N/A"}
    if schema == 2:
        report["schema_version"] = 2
    path = outputs / "reports" / model / "needle_haystack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=4), encoding="utf-8")
    return path


def needlebench_abbr(length: int, depth: float, kind: str = "origin", lang: str = "en", size: str = "32k") -> str:
    return f"Length{length}Depth{int(depth)}_{kind}_{lang}_{size}"


def write_needlebench_results(
    results: Path, lengths: Sequence[int], depths: Sequence[float], score: Score = lambda L, D: 100.0,
    *, model: str = "internlm2-chat-7b", samples: int = 0, lang: str = "en", parallel: bool = False,
    kind: str = "origin",
) -> Path:
    """OpenCompass's results/<model_abbr>/<dataset_abbr>.json; `samples` > 0 adds the evaluator's per-sample
    details (score 0 or 100: the first round(score/100 * samples) found)."""
    directory = results / model
    directory.mkdir(parents=True, exist_ok=True)
    for length in lengths:
        for depth in depths:
            value = score(length, depth)
            data: dict = {"score": value}
            if samples:
                hits = round(value / 100 * samples)
                data["details"] = [{"pred": "4711" if i < hits else "no", "answer": "4711", "score": 100 if i < hits else 0}
                                   for i in range(samples)]
                data["score"] = 100 * hits / samples
            (directory / f"{needlebench_abbr(length, depth, kind, lang)}.json").write_text(json.dumps(data))
        if parallel:
            (directory / f"Length{length}_parallel_{lang}_32k.json").write_text(json.dumps({"score": 50.0}))
    return results


def write_needlebench_csv(
    path: Path, lengths: Sequence[int], depths: Sequence[float], scores: dict[str, Score], *, layout: str = "short",
    missing: tuple[str, int, float] | None = None,
) -> Path:
    """The summary CSV: `dataset,<model>...` (NeedleBench's summarizer) or `dataset,version,metric,mode,<model>...`
    (OpenCompass's default one); `missing` = (model, length, depth) written as '-'."""
    models = list(scores)
    header = ["dataset"] + (["version", "metric", "mode"] if layout == "long" else []) + models
    rows = [header]
    for length in lengths:
        for depth in depths:
            row = [needlebench_abbr(length, depth)] + (["a1b2c3", "score", "gen"] if layout == "long" else [])
            for model in models:
                hole = missing is not None and missing == (model, length, depth)
                row.append("-" if hole else f"{scores[model](length, depth):.2f}")
            rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_table(path: Path, rows: Sequence[dict]) -> Path:
    """A plain CSV (by suffix) or JSONL of result rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
