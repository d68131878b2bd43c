#!/usr/bin/env bash
# The project's whole GPU verification in one call on a lent GPU machine (docs/gpu_check.md).
#
# Runs THERE, from the folder tools/gpu_prepare.sh filled here and the device tool carried:
#     bash gpu/gpu_check.sh                 # $OUT set by the device tool
# It builds nothing. Every step runs under its own `timeout`, a failure does not stop the
# steps after it, and the whole run stays under a hard budget (GPU_CHECK_BUDGET_S, 480 s):
# a step never gets more time than is left, optional steps are skipped once
# GPU_CHECK_OPTIONAL_UNTIL_S (390 s) have passed.
#
# Steps, in order of value:
#   00 env               nvidia-smi facts, CUDA libraries (libcuda, libcublasLt, libnvrtc):
#                        found on the loader path, else searched for (find / as last resort)
#                        and added to LD_LIBRARY_PATH for every dapo step; dapo starts
#   01 selftest          dapo selftest --device cuda (every kernel incl. *_bf16, matmul f32/tf32/bf16)
#   02 golden_gpt2       the carried test executables, filter `cuda`, GEPA_TEST_DATA=<folder>/data
#   03 golden_bf16
#   04 objective
#   05 bench-f32-kernels dapo bench --kernels-only, f32 storage + TF32 GEMMs
#   06 bench-bf16-kernels  the same in bf16
#   07 bench-f32         dapo bench train,decode,rl-step (+ kernel table again: a repeat)
#   08 bench-bf16        the same in bf16
#   09 torch-tf32        bench/torch_gpt2_gpu.py (f32 weights, TF32)
#   10 torch-bf16        bench/torch_gpt2_gpu.py --dtype bf16 (autocast)
#   11 memcheck          optional: compute-sanitizer --tool memcheck dapo selftest
#   12 torch-kernels     optional: bench/torch_reference.py (PyTorch eager on the kernel table's shapes)
#
# Output: logs are written to a work folder and, after every step, mirrored to
# $OUT/gpu-check-<date>/ as three files (the device tool returns at most 8 files from $OUT):
#   summary.txt   device facts, assumptions, one line per step (PASS/FAIL/TIMEOUT/SKIP/NOGPU, seconds)
#   all.log       every step's log concatenated (command, output, exit code, seconds)
#   logs.tar.gz   the NN-<step>.log files, summary.txt and the PyTorch JSON files
# Without $OUT they go to ./gpu-check-out/. The summary is printed last (the tool's reply keeps
# the end of the output). Exit code 0 when every step that ran passed, else 1.
#
# Environment (all optional):
#   GPU_CHECK_STEPS            comma-separated step names or numbers to run (00 env always runs)
#   GPU_CHECK_BUDGET_S         hard cap for the whole run, seconds (480)
#   GPU_CHECK_OPTIONAL_UNTIL_S no optional step starts after this many seconds (390)
#   GPU_CHECK_BENCH_ARGS       extra arguments for every `dapo bench` (e.g. "--iters 3")
#   GPU_CHECK_TORCH_ARGS       extra arguments for torch_gpt2_gpu.py
#   GPU_CHECK_WORK             where the work folder goes (${TMPDIR:-/tmp})
#   PEAK_TF32 / PEAK_BF16      MFU denominators in TFLOP/s (494.7 / 989.4, H100/H200 SXM dense)

set -u
set -o pipefail

T0=$(date +%s.%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN="$HERE/bin"
DATA="$HERE/data"
PYB="$HERE/bench"
BUDGET=${GPU_CHECK_BUDGET_S:-480}
OPTIONAL_UNTIL=${GPU_CHECK_OPTIONAL_UNTIL_S:-390}
STEPS=${GPU_CHECK_STEPS:-}
BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-}
TORCH_ARGS=${GPU_CHECK_TORCH_ARGS:-}
PEAK_TF32=${PEAK_TF32:-494.7}
PEAK_BF16=${PEAK_BF16:-989.4}
KILL_AFTER=10   # seconds between timeout's TERM and its KILL
MARGIN=15       # kept back from every step's timeout for the KILL grace and the bookkeeping
MIN_STEP=20     # a step that would get less than this is skipped

STAMP=$(date -u +%Y-%m-%d-%H%M%S)
NAME="gpu-check-$STAMP"
OUTROOT=${OUT:-$PWD/gpu-check-out}
RES="$OUTROOT/$NAME"
WORK="${GPU_CHECK_WORK:-${TMPDIR:-/tmp}}/$NAME"
mkdir -p "$RES" "$WORK" || { echo "gpu_check: cannot create $RES or $WORK" >&2; exit 1; }
STEPLINES="$WORK/.steps"
: >"$STEPLINES"
DEVICE_FACTS="(not read yet)"
LIB_FACTS="(not read yet)"
DAPO_LDP=${LD_LIBRARY_PATH:-}
LIB_LINE=""
NFAIL=0

have() { command -v "$1" >/dev/null 2>&1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%d", b - a }'; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Chosen by GPU_CHECK_STEPS (empty: every step)?
selected() { # num name
    [ -z "$STEPS" ] && return 0
    local s
    IFS=',' read -r -a sel <<<"$STEPS"
    for s in "${sel[@]}"; do
        s=${s// /}
        [ "$s" = "$1" ] || [ "$s" = "$2" ] || [ "$s" = "$((10#$1))" ] && return 0
    done
    return 1
}

summary() {
    {
        echo "$NAME  (started $(date -u -d "@${T0%.*}" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null || echo "$STAMP"))"
        [ -f "$HERE/MANIFEST.txt" ] && sed 's/^/build: /' "$HERE/MANIFEST.txt"
        echo "assumed (H200 SXM, datasheet; leads, not readings): 141 GB HBM3e, 4.8 TB/s (~4.3 TB/s measured copy here before),"
        echo "  bf16 dense ~990 TFLOP/s (989.4; ~790 measured on random data), TF32 dense ~495 (494.7), L2 60 MB"
        echo "MFU peaks passed: f32 storage + TF32 GEMMs ${PEAK_TF32} TFLOP/s, bf16 ${PEAK_BF16} TFLOP/s"
        echo "device: $DEVICE_FACTS"
        echo "libraries: $LIB_FACTS"
        echo "budget: ${BUDGET} s hard cap, optional steps until ${OPTIONAL_UNTIL} s; selected: ${STEPS:-all}"
        echo
        printf '%-3s %-19s %-8s %7s  %s\n' "NN" "step" "status" "secs" "rc / note"
        cat "$STEPLINES"
    } >"$WORK/summary.txt"
}

# Mirror the work folder to $OUT: summary.txt, all.log, logs.tar.gz (called after every step).
sync_out() {
    summary
    cp -f "$WORK/summary.txt" "$RES/summary.txt" 2>/dev/null
    local f
    : >"$RES/all.log.tmp"
    for f in "$WORK"/[0-9][0-9]-*.log; do
        [ -e "$f" ] || continue
        { echo "=================== $(basename "$f")"; cat "$f"; echo; } >>"$RES/all.log.tmp"
    done
    mv -f "$RES/all.log.tmp" "$RES/all.log"
    tar -czf "$RES/logs.tar.gz.tmp" -C "$(dirname "$WORK")" "$NAME" 2>/dev/null &&
        mv -f "$RES/logs.tar.gz.tmp" "$RES/logs.tar.gz"
}

record() { # num name status secs rc note-lines...
    local num=$1 name=$2 status=$3 secs=$4 rc=$5
    shift 5
    printf '%-3s %-19s %-8s %7s  %s\n' "$num" "$name" "$status" "$secs" "$rc" >>"$STEPLINES"
    local l
    for l in "$@"; do
        [ -n "$l" ] && printf '      %s\n' "${l:0:200}" >>"$STEPLINES"
    done
    case $status in PASS | SKIP | EMPTY) ;; *) NFAIL=$((NFAIL + 1)) ;; esac
    printf '[%4ss] %s %-19s %-8s %ss %s\n' "$(elapsed)" "$num" "$name" "$status" "$secs" "$rc"
    sync_out
}

# The timeout a step gets: min(cap, what the budget leaves), or nothing (skip) when too little.
step_timeout() { # cap optional(0|1)
    local e left
    e=$(elapsed)
    if [ "$2" = 1 ] && [ "$e" -ge "$OPTIONAL_UNTIL" ]; then
        return 1
    fi
    left=$((BUDGET - e - MARGIN - KILL_AFTER))
    [ "$left" -lt "$MIN_STEP" ] && return 1
    [ "$1" -lt "$left" ] && left=$1
    echo "$left"
}

# run_step NUM NAME CAP OPTIONAL NOTE_REGEX -- command...
# Logs the command, its output (stdout and stderr together), exit code and seconds to
# $WORK/NUM-NAME.log; the last lines matching NOTE_REGEX go into the summary.
run_step() {
    local num=$1 name=$2 cap=$3 opt=$4 notes=$5
    shift 6
    local log="$WORK/$num-$name.log" t start rc status secs
    if ! selected "$num" "$name"; then
        return 0
    fi
    if ! t=$(step_timeout "$cap" "$opt"); then
        echo "# skipped at $(elapsed) s: budget (${BUDGET} s cap, optional until ${OPTIONAL_UNTIL} s)" >"$log"
        record "$num" "$name" SKIP 0 "budget"
        return 0
    fi
    {
        echo "# step $num $name"
        echo "# command: $*"
        echo "# LD_LIBRARY_PATH for dapo: ${DAPO_LDP:-<unset>}"
        echo "# timeout: ${t} s (cap ${cap} s); started $(date -u '+%H:%M:%S UTC') at +$(elapsed) s"
        echo
    } >"$log"
    start=$(now)
    timeout --kill-after="$KILL_AFTER" "$t" "$@" >>"$log" 2>&1 </dev/null
    rc=$?
    secs=$(secs_since "$start")
    if [ "$rc" = 0 ]; then
        status=PASS
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status=TIMEOUT
    else
        status=FAIL
    fi
    # Test executables pass without a GPU after printing why: on the GPU host that is a failure.
    if [ "$status" = PASS ] && grep -q "skipped, no GPU" "$log"; then
        status=NOGPU
    fi
    if [ "$status" = PASS ] && grep -q "^running 0 tests" "$log" && ! grep -q "^running [1-9]" "$log"; then
        status=EMPTY
    fi
    printf '\n# exit code: %s (%s)  seconds: %s\n' "$rc" "$status" "$secs" >>"$log"
    local -a lines=()
    if [ -n "$notes" ]; then
        mapfile -t lines < <(grep -E -- "$notes" "$log" | grep -v '^# ' | tail -n 8)
    fi
    record "$num" "$name" "$status" "$secs" "rc=$rc" "${lines[@]}"
}

# ------------------------------------------------------------------ 00 env: facts and libraries

# Can the dynamic loader open $1 with LD_LIBRARY_PATH=$DAPO_LDP (as dapo's dlopen would)?
probe_lib() {
    if have python3; then
        LD_LIBRARY_PATH="$DAPO_LDP" timeout 30 python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$1" \
            >/dev/null 2>&1
        return
    fi
    local d
    IFS=':' read -r -a dirs <<<"$DAPO_LDP"
    for d in "${dirs[@]}"; do
        [ -n "$d" ] && [ -e "$d/$1" ] && return 0
    done
    ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$1 "
}

# A folder holding $1: the usual places first, then find / (bounded).
find_lib_dir() {
    local name=$1 d sp
    local -a cands=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64
        /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu)
    for d in /usr/local/cuda-*/lib64 /usr/local/cuda-*/targets/x86_64-linux/lib; do cands+=("$d"); done
    if have python3; then
        while read -r sp; do
            for d in "$sp"/nvidia/*/lib "$sp"/nvidia/cu*/lib; do cands+=("$d"); done
        done < <(timeout 30 python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
    fi
    for d in "${cands[@]}"; do
        if [ -e "$d/$name" ]; then
            echo "$d"
            return 0
        fi
    done
    # One bounded search of / for all three libraries, the first time one is missing.
    if [ ! -e "$WORK/.libfind" ]; then
        echo "  searching / for libcuda.so*, libcublasLt.so*, libnvrtc.so* (at most 40 s)" >&2
        timeout 40 find / \( -path /proc -o -path /sys -o -path /dev -o -path "$HERE" -o -path "$WORK" \) -prune -o \
            \( -name 'libcuda.so*' -o -name 'libcublasLt.so*' -o -name 'libnvrtc.so*' \) -print \
            >"$WORK/.libfind" 2>/dev/null
        sed 's/^/  found: /' "$WORK/.libfind" >&2
    fi
    d=$(grep -m1 "/$name\$" "$WORK/.libfind")
    [ -n "$d" ] && dirname "$d"
    return 0
}

# One library group, e.g. `ensure_lib cublasLt libcublasLt.so.13 libcublasLt.so.12`: when none
# of the names loads, searches for them and prepends the folder to DAPO_LDP. Sets LIB_LINE to
# one line saying what it found; returns 1 when nothing loads.
ensure_lib() {
    local what=$1 n dir
    shift
    for n in "$@"; do
        if probe_lib "$n"; then
            LIB_LINE="$what: $n loads"
            return 0
        fi
    done
    LIB_LINE="$what: NOT FOUND ($*)"
    for n in "$@"; do
        dir=$(find_lib_dir "$n")
        [ -n "$dir" ] || continue
        DAPO_LDP="$dir${DAPO_LDP:+:$DAPO_LDP}"
        if probe_lib "$n"; then
            LIB_LINE="$what: $n loads after adding $dir to LD_LIBRARY_PATH"
            return 0
        fi
        LIB_LINE="$what: $n found in $dir but does not load"
    done
    return 1
}

step_env() {
    local num=00 name=env log="$WORK/00-env.log" start rc=0 secs q
    local -a problems=()
    start=$(now)
    {
        echo "# step 00 env: nvidia-smi facts, CUDA libraries for dapo, the carried files"
        echo "# started $(date -u '+%Y-%m-%d %H:%M:%S UTC'); folder $HERE; OUT=${OUT:-<unset>}"
        echo
        echo "## host"
        uname -a
        grep -E '^(PRETTY_NAME)=' /etc/os-release 2>/dev/null
        echo "cpus: $(nproc 2>/dev/null)"
        free -g 2>/dev/null | head -2
        echo
        echo "## carried"
        cat "$HERE/MANIFEST.txt" 2>/dev/null || echo "(no MANIFEST.txt)"
        chmod +x "$BIN"/* 2>/dev/null
        ls -la "$BIN" "$DATA" "$PYB" 2>&1
        echo
        echo "## nvidia-smi"
    } >"$log" 2>&1
    if have nvidia-smi; then
        timeout 30 nvidia-smi >>"$log" 2>&1 || problems+=("nvidia-smi failed")
        q=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
        local cuda clocks misc
        cuda=$(timeout 20 nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*' | head -n 1)
        clocks=$(timeout 20 nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem \
            --format=csv,noheader 2>/dev/null | head -n 1)
        misc=$(timeout 20 nvidia-smi --query-gpu=pstate,temperature.gpu,power.draw,power.limit,compute_mode,mig.mode.current,ecc.mode.current \
            --format=csv,noheader 2>/dev/null | head -n 1)
        DEVICE_FACTS="${q:-?}; ${cuda:-CUDA Version ?}; clocks sm,mem,max sm,max mem: ${clocks:-?}; pstate,temp,power,limit,compute,MIG,ECC: ${misc:-?}"
        {
            echo
            echo "query: $DEVICE_FACTS"
            echo
            echo "## nvidia-smi -q -d CLOCK,PERFORMANCE"
            timeout 20 nvidia-smi -q -d CLOCK,PERFORMANCE 2>&1 | head -n 80
        } >>"$log"
    else
        DEVICE_FACTS="no nvidia-smi on PATH"
        problems+=("no nvidia-smi")
        echo "nvidia-smi: not on PATH" >>"$log"
    fi
    {
        echo
        echo "## tools"
        for t in nvcc compute-sanitizer ncu python3; do
            printf '%s: %s\n' "$t" "$(command -v "$t" 2>/dev/null || echo '-')"
        done
        have nvcc && timeout 20 nvcc --version 2>&1 | tail -n 2
        echo
        echo "## loader cache (cuda, cublasLt, nvrtc)"
        ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libcublasLt\.so|libnvrtc\.so' || echo "(none in ldconfig -p)"
        echo
        echo "## libraries dapo opens at run time"
    } >>"$log" 2>&1
    local f1 f2 f3
    ensure_lib driver libcuda.so.1 libcuda.so 2>>"$log" || problems+=("libcuda")
    f1=$LIB_LINE
    ensure_lib cublasLt libcublasLt.so.13 libcublasLt.so.12 2>>"$log" || problems+=("libcublasLt")
    f2=$LIB_LINE
    # NVRTC is only needed when the binary carries no PTX (MANIFEST.txt says); a miss is noted.
    ensure_lib nvrtc libnvrtc.so.13 libnvrtc.so.12 2>>"$log"
    f3=$LIB_LINE
    LIB_FACTS="$f1; $f2; $f3; LD_LIBRARY_PATH for dapo: ${DAPO_LDP:-<unchanged>}"
    {
        printf '%s\n%s\n%s\n' "$f1" "$f2" "$f3"
        echo "LD_LIBRARY_PATH for dapo and the test executables: ${DAPO_LDP:-<unset>}"
        echo
        echo "## dapo starts"
        echo "\$ ldd $BIN/dapo"
        LD_LIBRARY_PATH="$DAPO_LDP" ldd "$BIN/dapo" 2>&1
        echo "\$ dapo --version"
    } >>"$log" 2>&1
    if ! LD_LIBRARY_PATH="$DAPO_LDP" timeout 20 "$BIN/dapo" --version >>"$log" 2>&1; then
        problems+=("dapo does not start")
    fi
    secs=$(secs_since "$start")
    local status=PASS
    if [ "${#problems[@]}" -gt 0 ]; then
        status=FAIL
        rc=1
    fi
    printf '\n# exit code: %s (%s)  seconds: %s  problems: %s\n' "$rc" "$status" "$secs" "${problems[*]:-none}" >>"$log"
    record "$num" "$name" "$status" "$secs" "problems: ${problems[*]:-none}" "$DEVICE_FACTS" "$f1" "$f2" "$f3"
}

# ------------------------------------------------------------------ the steps

echo "gpu_check: $NAME  budget ${BUDGET} s  logs -> $RES (work folder $WORK)"
step_env

D=(env "LD_LIBRARY_PATH=$DAPO_LDP" "GEPA_TEST_DATA=$DATA" RUST_BACKTRACE=1)
DAPO="$BIN/dapo"
SELFTEST_NOTES='passed \(|[[:space:]]FAIL[[:space:]]|^kernels:|^device:|rror'
TEST_NOTES='^test result:|skipped, no GPU|panicked|^error'
BENCH_NOTES='^dapo +(train|decode|rl-step)|^(copy|matmul) |rror'
TORCH_NOTES='^torch +(train|decode|rl-step)|Error|OOM|not available'

run_step 01 selftest 120 0 "$SELFTEST_NOTES" -- "${D[@]}" "$DAPO" selftest --device cuda

n=2
for t in golden_gpt2 golden_bf16 objective; do
    num=$(printf '%02d' "$n")
    n=$((n + 1))
    if [ -f "$BIN/$t" ]; then
        # libtest's flags only where the executable is a libtest harness (harness = false is not)
        targs=(cuda)
        if timeout 10 "${D[@]}" "$BIN/$t" --help 2>&1 | grep -q -- '--test-threads'; then
            targs+=(--test-threads=1 --nocapture)
        fi
        run_step "$num" "$t" 90 0 "$TEST_NOTES" -- "${D[@]}" "$BIN/$t" "${targs[@]}"
    elif selected "$num" "$t"; then
        record "$num" "$t" SKIP 0 "not carried: $BIN/$t"
    fi
done

# shellcheck disable=SC2086  # BENCH_ARGS / TORCH_ARGS: word splitting wanted
{
    run_step 05 bench-f32-kernels 60 0 "$BENCH_NOTES" -- "${D[@]}" "$DAPO" bench --device cuda \
        --dtype f32 --matmul-precision tf32 --peak-tflops "$PEAK_TF32" --kernels-only $BENCH_ARGS
    run_step 06 bench-bf16-kernels 60 0 "$BENCH_NOTES" -- "${D[@]}" "$DAPO" bench --device cuda \
        --dtype bf16 --peak-tflops "$PEAK_BF16" --kernels-only $BENCH_ARGS
    run_step 07 bench-f32 150 0 "$BENCH_NOTES" -- "${D[@]}" "$DAPO" bench --device cuda --model gpt2 \
        --dtype f32 --matmul-precision tf32 --peak-tflops "$PEAK_TF32" --only train,decode,rl-step $BENCH_ARGS
    run_step 08 bench-bf16 150 0 "$BENCH_NOTES" -- "${D[@]}" "$DAPO" bench --device cuda --model gpt2 \
        --dtype bf16 --peak-tflops "$PEAK_BF16" --only train,decode,rl-step $BENCH_ARGS
    run_step 09 torch-tf32 150 0 "$TORCH_NOTES" -- env PYTHONUNBUFFERED=1 python3 "$PYB/torch_gpt2_gpu.py" \
        --dtype f32 --peak-tflops "$PEAK_TF32" --json "$WORK/09-torch-tf32.json" $TORCH_ARGS
    run_step 10 torch-bf16 150 0 "$TORCH_NOTES" -- env PYTHONUNBUFFERED=1 python3 "$PYB/torch_gpt2_gpu.py" \
        --dtype bf16 --peak-tflops "$PEAK_BF16" --json "$WORK/10-torch-bf16.json" $TORCH_ARGS
}

SAN=$(command -v compute-sanitizer 2>/dev/null)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer; do
    [ -z "$SAN" ] && [ -x "$c" ] && SAN=$c
done
if [ -n "$SAN" ]; then
    run_step 11 memcheck 150 1 'ERROR SUMMARY|passed \(|Invalid' -- "${D[@]}" "$SAN" --tool memcheck \
        --error-exitcode 86 --print-limit 20 "$DAPO" selftest --device cuda
elif selected 11 memcheck; then
    record 11 memcheck SKIP 0 "compute-sanitizer not found"
fi
run_step 12 torch-kernels 90 1 '^(copy|logprob|group_adv|policy_loss|grn)' -- env PYTHONUNBUFFERED=1 \
    python3 "$PYB/torch_reference.py" --json "$WORK/12-torch-kernels.json"

# ------------------------------------------------------------------ the end

if have nvidia-smi; then
    after=$(timeout 15 nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used \
        --format=csv,noheader 2>/dev/null | head -n 1)
    echo "after: clocks sm,mem, temp, power, memory used: ${after:-?}" >>"$STEPLINES"
fi
echo "total: $(elapsed) s of ${BUDGET} s; steps not passed: $NFAIL" >>"$STEPLINES"
sync_out

# Failed steps' last lines, then the summary (the device tool's reply keeps the end of stdout).
for f in "$WORK"/[0-9][0-9]-*.log; do
    [ -e "$f" ] || continue
    if grep -qE '^# exit code: [0-9]+ \((FAIL|TIMEOUT|NOGPU)\)' "$f"; then
        echo
        echo "---- tail of $(basename "$f")"
        grep -v '^# exit code' "$f" | tail -n 8 | cut -c1-220
    fi
done
echo
cat "$WORK/summary.txt"
echo
echo "files: $RES/{summary.txt,all.log,logs.tar.gz}"
[ "$NFAIL" = 0 ]
