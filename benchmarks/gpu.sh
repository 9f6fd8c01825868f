#!/usr/bin/env bash
# The one-call GPU check (issue 18, item 6): the four benchmarks with --device cuda, in one
# command, in under 8 minutes, their JSON written to $OUT.
#
#   here, once:  bash benchmarks/gpu_wheels.sh            (fills the ignored .wheels/, ~5 MiB)
#   GPU machine: the device tool's run, carry [".wheels"], command `bash benchmarks/gpu.sh`
#   dry run on this CPU, everything shrunk:  GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 bash benchmarks/gpu.sh
#
# 1. Installs what the GPU image lacks (transformer_lens, datasets, ...) from .wheels/ into a
#    scratch folder on PYTHONPATH; the image's own torch, CUDA and numpy stack stay as they are.
#    (The dry run only checks that the wheels install for the image's Python, 3.12.)
# 2. env.json: Python, torch, CUDA, the GPU, the versions the benchmarks import.
# 3. The benchmarks, each under a time limit, their figures in $OUT/<name>.json:
#    - patching.py: equal/speed/organism (--quick) and the head x position sweep on an
#      OLMo-2-1B-shaped random model, 100 prompts x 64 tokens, beside transformer_lens.patching
#      on a sample of sites (its --olmo-budget-s caps the sweep);
#    - calibrate.py: the calibration suite on a Qwen2.5-0.5B-shaped random pair, bfloat16;
#    - cache.py --quick: store vs run_with_cache, caching overhead, bounded memory, kill + resume;
#    - probes.py --quick: batched probes vs sklearn (on the CPU, one thread each) and the same
#      sweep on the GPU. It runs beside the others from the start (its work is on the CPU; its
#      GPU sweep, milliseconds long, may share the GPU with patching's);
#    the others one after another, alone on the GPU. gpu.log has every benchmark's progress.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_SH_DEVICE:-cuda}
QUICK=${GPU_SH_QUICK:-0}
PY=${GPU_SH_PYTHON:-python3}  # the GPU image's python3 holds its torch
if [ "$DEVICE" = cpu ]; then  # the dry run: this checkout's venv, one thread per process
    [ -z "${GPU_SH_PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
    export OMP_NUM_THREADS=1
fi
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
say() { echo "[gpu.sh $(date +%T)] $*" | tee -a "$LOG"; }
START=$(date +%s)

# ---- 1. what the image lacks --------------------------------------------------------------
SITE=/tmp/steerlab-site
if compgen -G ".wheels/*.whl" >/dev/null; then
    if [ "$DEVICE" = cpu ]; then
        TARGET=(--python-version 3.12 --implementation cp --only-binary=:all:
            --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any)
        rm -rf "$SITE-check"
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE-check" "${TARGET[@]}" \
            .wheels/*.whl >>"$LOG" 2>&1 || { say "the wheels do not install for Python 3.12"; exit 1; }
        say "dry run: $(ls .wheels/*.whl | wc -l) wheels install for Python 3.12 (not used here)"
        rm -rf "$SITE-check"
    else
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .wheels/*.whl >>"$LOG" 2>&1 || { say "installing .wheels failed"; exit 1; }
        export PYTHONPATH="$SITE"
        say "installed $(ls .wheels/*.whl | wc -l) wheels into $SITE"
    fi
elif [ "$DEVICE" != cpu ]; then
    say "no .wheels/: run bash benchmarks/gpu_wheels.sh here and carry .wheels"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1

# ---- 2. the environment ---------------------------------------------------------------------
"$PY" - >"$OUT/env.json" 2>>"$LOG" <<'PY' || { say "the lab does not import: see gpu.log"; exit 1; }
import json, platform, sys
import importlib.metadata as md
import torch
import lab, probes.patching, transformer_lens.patching  # noqa: F401 (what the benchmarks need)
cuda = torch.cuda.is_available()
versions = {}
for name in ("torch", "transformers", "transformer-lens", "tokenizers", "numpy", "pandas",
             "datasets", "scikit-learn"):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
print(json.dumps({
    "python": sys.version.split()[0], "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
    "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None,
    "cuda_version": torch.version.cuda, "versions": versions,
}, indent=1))
PY
say "environment: $(tr -d '\n ' <"$OUT/env.json" | cut -c1-300)"

# ---- 3. the benchmarks ----------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then  # the dry run: every section, everything small
    OLMO=(--olmo-shape tiny --olmo-prompts 8 --olmo-pos 16 --olmo-budget-s 20 --olmo-sample 8)
    PRESET=tiny
    LIMITS=(900 600 600 900)  # patching calibrate cache probes, seconds (a loaded 2-core CPU)
else
    OLMO=(--olmo-shape olmo2-1b --olmo-prompts 100 --olmo-pos 64 --olmo-budget-s 120
        --olmo-sample 32)
    PRESET=qwen2.5-0.5b
    LIMITS=(300 100 110 300)
fi

bench() {  # name limit args...: one benchmark, its stdout to $OUT/name.json, stderr to the log
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    say "$name: starting (limit ${limit} s)"
    timeout -k 10 "$limit" "$PY" "$@" >"$OUT/$name.json" 2>>"$LOG"
    rc=$?
    say "$name: exit $rc after $(($(date +%s) - t0)) s$([ $rc = 124 ] && echo ' (time limit)')"
    return $rc
}

bench probes "${LIMITS[3]}" benchmarks/probes.py --quick --json --device "$DEVICE" &
PROBES=$!
FAILED=0
bench patching "${LIMITS[0]}" benchmarks/patching.py --quick --json --device "$DEVICE" \
    --sections equal,speed,organism,olmo "${OLMO[@]}" || FAILED=1
DTYPE=bfloat16
[ "$DEVICE" = cpu ] && DTYPE=float32
CAL=(--preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --repeat 1)
"$PY" benchmarks/calibrate.py --help 2>/dev/null | grep -q -- --json && CAL+=(--json)
bench calibrate "${LIMITS[1]}" benchmarks/calibrate.py "${CAL[@]}" || FAILED=1
bench cache "${LIMITS[2]}" benchmarks/cache.py --quick --json --device "$DEVICE" || FAILED=1
wait "$PROBES" || FAILED=1
say "all done in $(($(date +%s) - START)) s; figures in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit $FAILED
