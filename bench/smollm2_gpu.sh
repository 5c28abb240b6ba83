#!/usr/bin/env bash
# The real-model GPU checks: SmolLM2-135M-Instruct (8K native) at 4K-32K with and without YaRN, and greedy
# outputs of the fast prefix-reusing engine vs the plain transformers loop on a grid to 16K.
# Usage: bash bench/smollm2_gpu.sh PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf OUTDIR
set -u
M=$1; O=$2
N="python3 -m kanana_longctx niah -m $M --overwrite"
$N -H noise -l 4000,8000,16000,32000 --depth-count 5 --no-yarn --out $O/smol-noyarn
$N -H noise -l 4000,8000,16000,32000 --depth-count 5 --yarn --yarn-factor 4 --yarn-original 8192 --out $O/smol-yarn4
$N -H builtin -l 1000,2000,4000,8000,16000 --depth-count 5 --engine fast --out $O/eq-fast
$N -H builtin -l 1000,2000,4000,8000,16000 --depth-count 5 --engine hf --out $O/eq-hf
python3 bench/compare_outputs.py $O/eq-fast $O/eq-hf
