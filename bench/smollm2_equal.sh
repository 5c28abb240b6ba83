#!/usr/bin/env bash
# Greedy outputs of the fast engine (prefix reuse, split attention, CUDA-graph decode) vs the plain transformers
# loop on SmolLM2 to 16K (YaRN x4 so every length is inside the model's reach), in float32 and in bfloat16.
# Usage: bash bench/smollm2_equal.sh PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf OUTDIR
set -u
M=$1; O=$2
# compare_outputs.py is a script in bench/: the repository must be on the path for it to import the package
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
for dt in float32 bfloat16; do
  for eng in fast hf; do
    python3 -m kanana_longctx niah -m $M --overwrite -H builtin -l 1000,2000,4000,8000,16000 --depth-count 5 \
      --yarn --yarn-factor 4 --yarn-original 8192 --dtype $dt --engine $eng --out $O/eq-$dt-$eng | tail -4
  done
  echo "== $dt: fast vs hf"
  python3 bench/compare_outputs.py $O/eq-$dt-fast $O/eq-$dt-hf
done
