#!/usr/bin/env bash
# Fills gpu/ with everything tools/gpu_check.sh needs on a lent GPU machine, which has no Rust
# toolchain (docs/gpu_check.md). Runs HERE, from any folder:
#     tools/gpu_prepare.sh              # build (release) and copy
#     tools/gpu_prepare.sh --no-build   # copy what an earlier build left in the target folder
#
# gpu/
#   gpu_check.sh          tools/gpu_check.sh
#   MANIFEST.txt          commit, date, NVRTC / embedded PTX, sizes and sha256 of the binaries
#   bin/dapo              the release binary, stripped
#   bin/golden_gpt2 ...   the test executables (`cargo test --release --no-run`), stripped,
#                         under stable names; they read their data from $GEPA_TEST_DATA
#   data/golden, data/objective   the subset of tests/data they read
#   bench/                the PyTorch references (torch_gpt2_gpu.py, torch_reference.py, bench_common.py)
# gpu/ is added to .git/info/exclude (idempotently), so it travels only when `carry` names it.
# Fails when gpu/ plus the working tree that travels with it exceeds 60 MiB (the limit is 64).
#
# Environment (all optional):
#   CARGO_TARGET_DIR   where to build (default: target-gpu, so that this build's NVRTC setting
#                      does not rebuild the main target/ folder back and forth)
#   NVRTC_LIB_DIR      a folder with libnvrtc.so.12/.13, so that build.rs embeds PTX (default:
#                      target/nvrtc-cu12/... from .ci/run, else NVIDIA's 12.8 wheel is installed
#                      into $CARGO_TARGET_DIR/nvrtc-cu12 as .ci/run does). NVRTC 12.8's PTX
#                      (ISA 8.7) loads on the GPU host's driver 580 (CUDA 13.0); an NVRTC newer
#                      than the driver would emit PTX the driver rejects.
#   GEPA_CUDA_ARCH     the PTX's virtual architecture (build.rs default: compute_80)
#   GPU_PREPARE_TESTS  the test targets to carry (default: golden_gpt2 objective golden_bf16,
#                      those of them that exist)

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD=1
case "${1:-}" in
    --no-build) BUILD=0 ;;
    "") ;;
    *)
        echo "usage: tools/gpu_prepare.sh [--no-build]" >&2
        exit 2
        ;;
esac

LIMIT_MIB=60
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-gpu}"
TESTS=${GPU_PREPARE_TESTS:-golden_gpt2 objective golden_bf16}
GPU="$ROOT/gpu"

say() { printf 'gpu_prepare: %s\n' "$*"; }
die() {
    printf 'gpu_prepare: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- gpu/ stays out of git
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
grep -qxF '/gpu/' "$exclude" || echo '/gpu/' >>"$exclude"

# ---------------------------------------------------------------- NVRTC, so that PTX is embedded
if [ -z "${NVRTC_LIB_DIR:-}" ]; then
    for d in "$ROOT/target/nvrtc-cu12/nvidia/cuda_nvrtc/lib" "$CARGO_TARGET_DIR/nvrtc-cu12/nvidia/cuda_nvrtc/lib"; do
        if [ -e "$d/libnvrtc.so.12" ]; then
            export NVRTC_LIB_DIR="$d"
            break
        fi
    done
fi
if [ -z "${NVRTC_LIB_DIR:-}" ] && [ "$BUILD" = 1 ]; then
    say "installing nvidia-cuda-nvrtc-cu12==12.8.93 into $CARGO_TARGET_DIR/nvrtc-cu12 (as .ci/run does)"
    if python3 -m pip install --disable-pip-version-check --no-deps --upgrade \
        --target "$CARGO_TARGET_DIR/nvrtc-cu12" nvidia-cuda-nvrtc-cu12==12.8.93; then
        export NVRTC_LIB_DIR="$CARGO_TARGET_DIR/nvrtc-cu12/nvidia/cuda_nvrtc/lib"
    else
        say "WARNING: no NVRTC here: the binary will carry no PTX and compile its kernels with the GPU host's NVRTC at first use"
    fi
fi
say "NVRTC_LIB_DIR=${NVRTC_LIB_DIR:-<none>}  CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

# ---------------------------------------------------------------- build
declare -A EXE=()
wanted=()
for t in $TESTS; do
    if [ -f "tests/$t.rs" ] || [ -f "tests/$t/main.rs" ]; then
        wanted+=("$t")
    else
        say "no test target $t (tests/$t.rs): not carried"
    fi
done

if [ "$BUILD" = 1 ]; then
    say "cargo build --release --bin dapo"
    cargo build --release --bin dapo
    if [ "${#wanted[@]}" -gt 0 ]; then
        args=()
        for t in "${wanted[@]}"; do args+=(--test "$t"); done
        say "cargo test --release --no-run ${args[*]}"
        json="$CARGO_TARGET_DIR/gpu-prepare-tests.json"
        cargo test --release --no-run --message-format=json "${args[@]}" >"$json"
        # "executable" of each test target's compiler-artifact line
        while IFS=$'\t' read -r name exe; do
            EXE[$name]=$exe
        done < <(python3 - "$json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(f'{m["target"]["name"]}\t{m["executable"]}')
EOF
        )
    fi
else
    # The newest executable of each test target an earlier `cargo test --release` left: the
    # one whose dep-info (.d) names tests/<name>.rs (a bench of the same name is not it).
    for t in "${wanted[@]}"; do
        while read -r _ exe; do
            if [ -f "$exe.d" ] && grep -q "tests/$t\(\.rs\|/main\.rs\)" "$exe.d"; then
                EXE[$t]=$exe
                break
            fi
        done < <(find "$CARGO_TARGET_DIR/release/deps" -maxdepth 1 -type f -perm -u+x -name "$t-*" \
            ! -name '*.d' -printf '%T@ %p\n' 2>/dev/null | sort -rn)
    done
fi
DAPO="$CARGO_TARGET_DIR/release/dapo"
[ -x "$DAPO" ] || die "$DAPO not found (build first, or set CARGO_TARGET_DIR)"

# ---------------------------------------------------------------- gpu/
rm -rf "${GPU:?}/bin" "${GPU:?}/data" "${GPU:?}/bench"
mkdir -p "$GPU/bin" "$GPU/data" "$GPU/bench"
STRIP=$(command -v strip || true)
copy_bin() { # src dst
    cp "$1" "$2"
    chmod 755 "$2"
    if [ -n "$STRIP" ]; then "$STRIP" "$2" || say "WARNING: strip failed on $2"; fi
}
copy_bin "$DAPO" "$GPU/bin/dapo"
for t in "${wanted[@]}"; do
    if [ -n "${EXE[$t]:-}" ] && [ -f "${EXE[$t]}" ]; then
        copy_bin "${EXE[$t]}" "$GPU/bin/$t"
    else
        say "WARNING: no executable for test target $t"
    fi
done
cp -r tests/data/golden tests/data/objective "$GPU/data/"
cp bench/torch_gpt2_gpu.py bench/torch_reference.py bench/bench_common.py "$GPU/bench/"
cp tools/gpu_check.sh "$GPU/gpu_check.sh"
chmod 755 "$GPU/gpu_check.sh"

# ---------------------------------------------------------------- what was built, for the results
ptx=$(strings -n 8 "$GPU/bin/dapo" 2>/dev/null | grep -m1 -E '^\.version [0-9]+\.[0-9]+' || true)
target=$(strings -n 8 "$GPU/bin/dapo" 2>/dev/null | grep -m1 -E '^\.target (sm|compute)_[0-9]+' || true)
dirty=""
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" + uncommitted changes"
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$dirty ($(git log -1 --format=%s 2>/dev/null | cut -c1-80))"
    echo "prepared: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -m), $(ldd --version 2>/dev/null | head -n 1)"
    echo "dapo: $("$GPU/bin/dapo" --version 2>/dev/null || echo '?'); embedded PTX: ${ptx:-none (NVRTC at first use)} ${target}; NVRTC_LIB_DIR=${NVRTC_LIB_DIR:-none} GEPA_CUDA_ARCH=${GEPA_CUDA_ARCH:-default}"
    (cd "$GPU" && for f in bin/*; do printf '%s  %s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)"; done)
} >"$GPU/MANIFEST.txt"
cat "$GPU/MANIFEST.txt"
[ -n "$ptx" ] || say "WARNING: no PTX embedded in gpu/bin/dapo: on the GPU host every kernel file is compiled by NVRTC at first use (needs libnvrtc there)"

# ---------------------------------------------------------------- size
gpu_bytes=$(du -sb "$GPU" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
total=$((gpu_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
du -sh "$GPU"/* | sed 's/^/  /'
say "gpu/ $(mib "$gpu_bytes") MiB + working tree $(mib "$tree_bytes") MiB = $(mib "$total") MiB (limit ${LIMIT_MIB} MiB; the device tool's is 64)"
[ "$total" -le $((LIMIT_MIB * 1048576)) ] || die "over ${LIMIT_MIB} MiB: carry less"
say "ready: run with carry [\"gpu\"] and command \"bash gpu/gpu_check.sh\" (docs/gpu_check.md)"
