#!/usr/bin/env bash
# dapo beside its peers on the CPU, in one run: each workload runs dapo and its peer
# interleaved (dapo, peer, dapo, peer, ... --rounds times), every process with the same thread
# count, then one table of medians and dapo/peer ratios (issue 16, point 1).
#
#   workload          dapo                                     peer
#   fwd+bwd, fwd      dapo bench --only fwd-bwd                bench/torch_cpu_gpt2.py (PyTorch eager)
#   decode greedy     dapo bench --only decode                 bench/peers/hf_decode.py (HF generate)
#   decode sampled    dapo bench --only decode --decode-sample bench/peers/hf_decode.py --mode sample
#   rl-step 124M      dapo bench --only rl-step                bench/peers/trl_step.py --task gpt2 (TRL)
#   rl-step tiny      dapo train (the built-in default's       bench/peers/trl_step.py --task tiny (TRL)
#                     shapes on its warm-started model)
#   peak RSS          /usr/bin/time around both rl-step processes
#
# Usage: PYTHON=/path/to/venv/bin/python bench/compare_cpu.sh [--rounds 3] [--threads 2]
#            [--dapo target/release/dapo] [--out DIR] [--only fwd-bwd,decode,decode-sample,rl-124m,rl-tiny]
# The peers need bench/requirements.txt (pip install -r bench/requirements.txt); the script
# refuses other versions. dapo must be built from a tree whose `dapo bench` has --only and
# --decode-sample (cargo build --release). Raw logs, the exact commands and the table go to
# --out (default bench/results/<date>-compare-cpu/). On a quiet 2-core machine a round of all
# workloads takes about 3-4 minutes (--rounds 3: ~12 min, plus ~30 s of preparation); on a
# loaded one much longer (OpenMP's spinning threads suffer most when cores are taken).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
ROUNDS=3
THREADS=2
DAPO=target/release/dapo
OUT=""
ALL_WORKLOADS="fwd-bwd,decode,decode-sample,rl-124m,rl-tiny"
ONLY=$ALL_WORKLOADS
# The tiny task: steps per process; the figure is the median of steps 2.. (the first is cold).
TINY_STEPS=10

usage() {
    # The comment block at the top of this file, without its '#'.
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

die() {
    echo "compare_cpu.sh: error: $*" >&2
    exit 1
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --rounds) ROUNDS=$2; shift 2 ;;
            --threads) THREADS=$2; shift 2 ;;
            --dapo) DAPO=$2; shift 2 ;;
            --out) OUT=$2; shift 2 ;;
            --only) ONLY=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) echo "unknown argument: $1" >&2; usage 2 ;;
        esac
    done
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got $ROUNDS"
    [[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer, got $THREADS"
    local w
    for w in ${ONLY//,/ }; do
        [[ ",$ALL_WORKLOADS," == *",$w,"* ]] || die "unknown workload '$w' in --only (known: $ALL_WORKLOADS)"
    done
}

# Everything this needs, checked before anything long starts.
check_tools() {
    cd "$ROOT"
    [ -x "$DAPO" ] || die "no dapo binary at $DAPO (cargo build --release, or pass --dapo PATH)"
    DAPO=$(cd "$(dirname "$DAPO")" && pwd)/$(basename "$DAPO")
    # Every workload but rl-tiny runs `dapo bench --only ...`, which older binaries lack.
    if [ "$ONLY" != rl-tiny ] && ! "$DAPO" bench --help | grep -q -- '--decode-sample'; then
        die "$DAPO's bench has no --only/--decode-sample: build it from this branch"
    fi
    [ -x /usr/bin/time ] || die "/usr/bin/time is needed for peak RSS (apt-get install time)"
    command -v "$PYTHON" >/dev/null || die "no Python at '$PYTHON' (set PYTHON=/path/to/python)"
    # Prints the installed peer versions, or why they differ from the pins.
    PEER_VERSIONS=$("$PYTHON" bench/peers/versions.py bench/requirements.txt) || exit 1
}

# The thread count for every process: dapo by --threads, the peers by torch.set_num_threads
# (in the scripts) and the OpenMP / MKL environment, so neither side uses more cores.
set_thread_env() {
    export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
    export RAYON_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false
    export TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
}

make_out_dir() {
    if [ -z "$OUT" ]; then
        OUT=bench/results/$(date +%Y-%m-%d)-compare-cpu
        # Never overwrite an earlier run's folder: number the new one.
        local base=$OUT n=2
        while [ -e "$OUT" ]; do OUT=$base-$n; n=$((n + 1)); done
    fi
    [ ! -e "$OUT/summary.txt" ] || die "$OUT already holds a run (summary.txt); pass another --out"
    mkdir -p "$OUT/raw"
    : >"$OUT/values.tsv"
    : >"$OUT/commands.txt"
    # Scratch for what must not land in the results: the 500 MB TRL model, dapo's run folders.
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-cpu.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
}

write_header() {
    local model cores dirty=""
    model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
    cores=$(lscpu | sed -n 's/^CPU(s):[[:space:]]*//p' | head -1)
    git diff --quiet HEAD 2>/dev/null || dirty=" (dirty: uncommitted changes)"
    {
        echo "# bench/compare_cpu.sh: dapo beside its peers on the CPU"
        echo "date:     $(date -Iseconds)"
        echo "machine:  $model, $cores CPU(s) ($(nproc) usable), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)"
        echo "commit:   $(git rev-parse --short HEAD)$dirty"
        echo "dapo:     $DAPO ($("$DAPO" --version), built $(date -r "$DAPO" -Iseconds), sha256 $(sha256sum "$DAPO" | cut -c1-16))"
        echo "peers:    $PEER_VERSIONS"
        echo "settings: --rounds $ROUNDS --threads $THREADS; OMP/MKL/OPENBLAS/RAYON_NUM_THREADS=$THREADS"
        echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)"
    } >"$OUT/header.txt"
    cat "$OUT/header.txt"
}

# run_logged LOG CMD...: runs CMD under /usr/bin/time with its output in LOG (the exact command
# first, its peak RSS and wall time last), and records the command in commands.txt.
run_logged() {
    local log=$1
    shift
    printf '%q ' "$@" | sed 's/ $//' >>"$OUT/commands.txt"
    echo >>"$OUT/commands.txt"
    { printf '$ '; printf '%q ' "$@"; echo; } >"$log"
    if ! /usr/bin/time -f 'maxrss_kb=%M wall_s=%e' -o "$log.time" "$@" >>"$log" 2>&1; then
        cat "$log.time" >>"$log" 2>/dev/null || true
        rm -f "$log.time"
        echo "--- last lines of $log:" >&2
        tail -20 "$log" >&2
        die "a run failed: $*"
    fi
    cat "$log.time" >>"$log"
    rm -f "$log.time"
}

# field LOG LINE_PREFIX KEY: the value of KEY=... on the first line of LOG starting with the
# prefix (e.g. `field x.log "dapo   fwd+bwd" median_s`).
field() {
    local v
    v=$(grep -m1 -- "^$2" "$1" | grep -o "$3=[0-9.eE+-]*" | head -1 | cut -d= -f2) || true
    [ -n "$v" ] || die "no $3 on a line starting '$2' in $1"
    echo "$v"
}

# The process's peak RSS in MiB, from /usr/bin/time's line in the log.
rss_mib() {
    awk -F'[= ]' '/^maxrss_kb=/ {printf "%.0f\n", $2 / 1024}' "$1"
}

# record WORKLOAD UNIT ROUND SIDE VALUE: one measurement for the table.
record() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/values.tsv"
}

# --- the workloads: one function per side, each one process, recording its figures ---------

dapo_fwd_bwd() {
    local log=$OUT/raw/fwd-bwd-dapo-r$1.log
    run_logged "$log" "$DAPO" bench --device cpu --threads "$THREADS" --only fwd-bwd
    record "fwd+bwd 124M B=4 T=256" s "$1" dapo "$(field "$log" "dapo   fwd+bwd" median_s)"
    record "fwd 124M B=4 T=256" s "$1" dapo "$(field "$log" "dapo   fwd " median_s)"
}

peer_fwd_bwd() {
    local log=$OUT/raw/fwd-bwd-peer-r$1.log
    run_logged "$log" "$PYTHON" bench/torch_cpu_gpt2.py --threads "$THREADS" --iters 5 --warmup 2
    record "fwd+bwd 124M B=4 T=256" s "$1" peer "$(field "$log" "torch  fwd+bwd" median_s)"
    record "fwd 124M B=4 T=256" s "$1" peer "$(field "$log" "torch  fwd " median_s)"
}

dapo_decode() {
    local log=$OUT/raw/decode-dapo-r$1.log
    run_logged "$log" "$DAPO" bench --device cpu --threads "$THREADS" --only decode
    record "decode greedy 8x(16->+32)" s "$1" dapo "$(field "$log" "dapo   decode" median_s)"
}

peer_decode() {
    local log=$OUT/raw/decode-peer-r$1.log
    run_logged "$log" "$PYTHON" bench/peers/hf_decode.py --threads "$THREADS" --mode greedy
    record "decode greedy 8x(16->+32)" s "$1" peer "$(field "$log" "peer   decode" median_s)"
}

dapo_decode_sample() {
    local log=$OUT/raw/decode-sample-dapo-r$1.log
    run_logged "$log" "$DAPO" bench --device cpu --threads "$THREADS" --only decode --decode-sample
    record "decode sampled T=1 8x(16->+32)" s "$1" dapo "$(field "$log" "dapo   decode" median_s)"
}

peer_decode_sample() {
    local log=$OUT/raw/decode-sample-peer-r$1.log
    run_logged "$log" "$PYTHON" bench/peers/hf_decode.py --threads "$THREADS" --mode sample
    record "decode sampled T=1 8x(16->+32)" s "$1" peer "$(field "$log" "peer   decode" median_s)"
}

dapo_rl_124m() {
    local log=$OUT/raw/rl-124m-dapo-r$1.log
    run_logged "$log" "$DAPO" bench --device cpu --threads "$THREADS" --only rl-step
    record "rl-step 124M 4x4x16 (warm)" s "$1" dapo "$(field "$log" "dapo   rl-step" total_s)"
    record "peak RSS, rl-step 124M process" MiB "$1" dapo "$(rss_mib "$log")"
}

peer_rl_124m() {
    local log=$OUT/raw/rl-124m-peer-r$1.log
    run_logged "$log" "$PYTHON" bench/peers/trl_step.py run --task gpt2 --model-dir "$WORK/trl-gpt2" \
        --threads "$THREADS"
    record "rl-step 124M 4x4x16 (warm)" s "$1" peer "$(field "$log" "peer   rl-step" warm_s)"
    record "peak RSS, rl-step 124M process" MiB "$1" peer "$(rss_mib "$log")"
}

dapo_rl_tiny() {
    local log=$OUT/raw/rl-tiny-dapo-r$1.log run=$WORK/tiny-run
    # The built-in default's RL settings (src/cli/train.rs builtin_defaults) on its
    # warm-started model, spelled out because --model leaves the built-in default.
    run_logged "$log" "$DAPO" train --device cpu --threads "$THREADS" --model "$WORK/tiny/final" \
        --dataset "$WORK/tiny/train6.jsonl" --output-dir "$run" --overwrite-output-dir --steps "$TINY_STEPS" \
        --batch-size 32 --group-size 8 --max-new-tokens 5 --temperature 1 --learning-rate 3e-4 \
        --eval-every 0 --logging-steps 1 --seed 0
    # dapo's per-step seconds (rollout + score + reference + update) from its JSONL log.
    "$PYTHON" bench/peers/step_seconds.py "$run/dapo_log.jsonl" >>"$log"
    record "rl-step tiny 32x8x5 (warm)" s "$1" dapo "$(field "$log" "dapo   rl-step" warm_s)"
    record "peak RSS, tiny-task process" MiB "$1" dapo "$(rss_mib "$log")"
}

peer_rl_tiny() {
    local log=$OUT/raw/rl-tiny-peer-r$1.log
    run_logged "$log" "$PYTHON" bench/peers/trl_step.py run --task tiny --model-dir "$WORK/tiny/final" \
        --dataset "$WORK/tiny/train6.jsonl" --threads "$THREADS" --steps "$TINY_STEPS"
    record "rl-step tiny 32x8x5 (warm)" s "$1" peer "$(field "$log" "peer   rl-step" warm_s)"
    record "peak RSS, tiny-task process" MiB "$1" peer "$(rss_mib "$log")"
}

# --- preparation, untimed --------------------------------------------------------------------

prepare() {
    local w=",$ONLY,"
    if [[ $w == *,rl-tiny,* ]]; then
        # The built-in default's starting policy: 900 SFT steps of the tiny GPT-2 on the
        # addition task, no RL step; saved as an HF directory both sides load.
        echo "prepare: the built-in default's warm-started tiny model (dapo train --steps 0)" >&2
        run_logged "$OUT/raw/prepare-tiny.log" "$DAPO" train --device cpu --threads "$THREADS" \
            --output-dir "$WORK/tiny" --steps 0 --eval-every 0 --seed 0
        # Only the 6-character prompts ("12+34="): TRL left-pads a batch's prompts without
        # position ids, so mixed lengths would shift GPT-2's positions on its side; one length
        # gives both sides the same shapes. (7,299 of the 9,000 tasks.)
        grep '"prompt":"[^"]\{6\}"' "$WORK/tiny/data/train.jsonl" >"$WORK/tiny/train6.jsonl"
    fi
    if [[ $w == *,rl-124m,* ]]; then
        echo "prepare: a random-weight GPT-2 124M directory for TRL (it loads its reference from the path)" >&2
        run_logged "$OUT/raw/prepare-trl-gpt2.log" "$PYTHON" bench/peers/trl_step.py prepare-gpt2 \
            --out "$WORK/trl-gpt2"
    fi
}

# --- main ------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    check_tools
    set_thread_env
    make_out_dir
    write_header
    prepare
    : >"$OUT/durations.tsv"
    local w fn r t0
    for w in ${ONLY//,/ }; do
        fn=${w//-/_}
        t0=$(date +%s)
        # Interleaved, so that slow drifts (other load, heat) hit both sides alike.
        for r in $(seq 1 "$ROUNDS"); do
            echo "[$(date +%H:%M:%S)] $w round $r/$ROUNDS: dapo" >&2
            "dapo_$fn" "$r"
            echo "[$(date +%H:%M:%S)] $w round $r/$ROUNDS: peer" >&2
            "peer_$fn" "$r"
        done
        printf '%s\t%s\n' "$w" "$(($(date +%s) - t0))" >>"$OUT/durations.tsv"
    done
    {
        cat "$OUT/header.txt"
        echo
        "$PYTHON" bench/peers/summarize.py "$OUT/values.tsv" "$OUT/durations.tsv"
        echo
        echo "commands (each round runs the same; raw logs in raw/):"
        awk '!seen[$0]++ {print "  " $0}' "$OUT/commands.txt"
    } >"$OUT/summary.txt"
    sed -n '/^workload/,$p' "$OUT/summary.txt"
    echo "results: $OUT/summary.txt" >&2
}

main "$@"
