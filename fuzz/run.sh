#!/usr/bin/env bash
# Run every fuzz target for a bounded time: fuzz/run.sh [SECONDS per target, default 60].
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; not for CI.
# The checked-in seeds in fuzz/corpus/<target>/ are read; what libFuzzer finds goes to
# fuzz/work/<target>/ (not committed: thousands of files). A crash is written to
# fuzz/artifacts/<target>/ and the script exits non-zero: copy that input into
# fuzz/corpus/<target>/, fix the cause, and `cargo test --test fuzz_corpus` replays it from
# then on.
set -euo pipefail
seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz); nothing fuzzed." >&2
    echo "fuzz/run.sh: the corpus still runs as a stable test: cargo test --test fuzz_corpus" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly); nothing fuzzed." >&2
    echo "fuzz/run.sh: the corpus still runs as a stable test: cargo test --test fuzz_corpus" >&2
    exit 2
fi

status=0
for target in jsonrpc_envelope sse_parser config_loader pem_loader; do
    echo "== $target: ${seconds}s"
    mkdir -p "work/$target"
    # -max_len keeps inputs small enough to be read and kept as regression cases.
    if ! cargo +nightly fuzz run "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048; then
        echo "== $target: FAILED (see fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit "$status"
