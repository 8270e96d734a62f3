#!/usr/bin/env bash
# Fuzzes the decoders for a bounded time each; fails if any target finds a crash.
#
#   scripts/fuzz.sh [SECONDS]     run every target in fuzz/ for SECONDS each (default 60)
#
# Targets (fuzz/fuzz_targets/): frame_decode (RPC frame decoder, arbitrary bytes),
# frame_roundtrip (structured frames: encode -> decode, chunked streams), deframe_stream (the
# session's deframing loop with LengthPrefixed and FrameCodec), body_decode (Json / Prost bodies),
# registry_url (registry URL parsing: no panic, InvalidUrl errors, passwords never shown),
# compressed_body (zstd bodies through the inflate path with a 4 KiB limit: at most the limit
# or a typed error).
#
# Only stable Rust is needed: cargo-fuzz's `-Z` flags are allowed with RUSTC_BOOTSTRAP=1.
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`, about 1.5 min) when it is missing.
# Environment:
#   GETTY_FUZZ_TARGETS     space-separated subset of targets (default: all)
#   GETTY_FUZZ_SANITIZER   none (default: the code under test has no `unsafe`) or address
# Inputs that crash are saved under fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a <target> fuzz/artifacts/<target>/<file>
# The seed corpus in fuzz/corpus/<target>/ is read, never written: what a run discovers goes to
# fuzz/target/corpus-work/<target>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
san="${GETTY_FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "fuzz.sh: $*" >&2; }
start=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
    log "cargo-fuzz installed in $((SECONDS - start)) s"
fi

# -a: debug assertions and overflow checks on, so an arithmetic overflow is a crash too.
flags=(-s "$san" -a)
targets="${GETTY_FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list)}"
t0=$SECONDS
cargo fuzz build "${flags[@]}"
log "built in $((SECONDS - t0)) s"

failed=()
for t in $targets; do
    work="fuzz/target/corpus-work/$t"
    mkdir -p "$work" "fuzz/artifacts/$t"
    t0=$SECONDS
    log "running $t for $secs s"
    if cargo fuzz run "${flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"fuzz/target/$t.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/target/$t.log" | grep -o '[0-9]*$' || true)
        log "$t: ok, ${runs:-?} runs in $((SECONDS - t0)) s"
    else
        log "$t: FAILED (log: fuzz/target/$t.log)"
        grep -A25 -m1 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "fuzz/target/$t.log" >&2 || tail -40 "fuzz/target/$t.log" >&2
        ls -1 "fuzz/artifacts/$t" >&2 || true
        failed+=("$t")
    fi
done

log "total $((SECONDS - start)) s"
if ((${#failed[@]})); then
    log "crashes in: ${failed[*]}"
    exit 1
fi
log "all targets passed"
