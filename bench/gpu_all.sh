#!/usr/bin/env bash
# Every task's GPU benchmark in one run, for a host with a CUDA GPU.
#
#   bash bench/gpu_all.sh OUTDIR [--quality SECONDS]
#
# Runs the `meas-ml bench` command of each task with `--device cuda` (and the
# photo-z prediction on the host's CPU as well, for the ratio), one after the
# other, each under its own time limit, and writes OUTDIR/<bench>.log; a
# failing benchmark does not stop the others.  OUTDIR/summary.txt lists the
# exit status and duration of each.  With `--quality SECONDS`, the morphology
# quality run (`meas-ml morphology-quality --full`) then follows on the GPU
# (the trainers choose CUDA when present) for at most that many seconds.
#
# MEAS_ML (default `python3 -m lsst.meas.ml.cli`) is the command used; THREADS
# (default: the host's cores) the torch CPU threads of each benchmark; ONLY
# (e.g. "dia embedding") runs only the benchmarks named.
set -u
out=${1:?usage: bash bench/gpu_all.sh OUTDIR [--quality SECONDS]}
shift
quality=0
if [ "${1:-}" = "--quality" ]; then quality=${2:?--quality needs seconds}; fi
mkdir -p "$out"
MEAS_ML=${MEAS_ML:-python3 -m lsst.meas.ml.cli}
THREADS=${THREADS:-$(nproc)}
export PYTHONUNBUFFERED=1
summary="$out/summary.txt"
: > "$summary"

run() {  # run NAME LIMIT_S ARGS...
    local name=$1 limit=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
    local t0=$SECONDS
    echo "== $name: $MEAS_ML $*" | tee -a "$summary"
    timeout "$limit" $MEAS_ML "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$summary"
    tail -n 25 "$out/$name.log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'); import os; print(os.cpu_count(), 'CPU cores')"
} | tee -a "$summary"

run engine 120 bench core --only engine --device cuda
run dia 120 bench dia --device cuda --threads "$THREADS"
run morphology_dat 150 bench morphology --device cuda --threads "$THREADS" --galaxies 8000
run morphology_resnet 120 bench morphology --device cuda --threads "$THREADS" --galaxies 8000 \
    --architecture morph_resnet
run embedding 240 bench embedding --device cuda --threads "$THREADS" --stamps 8192 --vectors 1000000
run asteroids 120 bench asteroids --device cuda
run dla 150 bench dla --device cuda --threads "$THREADS" --spectra 2000
run photoz_cuda 200 bench photoz-memory --device cuda --rows 1000000 --baseline-max-rows 1000000 \
    --pdf-format quantiles
run photoz_cpu 200 bench photoz-memory --device cpu --threads "$THREADS" --rows 1000000 \
    --baseline-max-rows 0 --pdf-format quantiles

if [ "$quality" -gt 0 ]; then
    run morphology_quality "$quality" morphology-quality --full --seed 0 --threads "$THREADS" \
        --json "$out/morphology_quality.json"
fi
echo "done" | tee -a "$summary"
