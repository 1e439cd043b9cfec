# Sourced by the scripts in benches/: finds the release binaries and the load generator, makes a
# temp dir ($work) that goes away on exit with every process whose pid is in $pids, and starts
# the upstream fixture on 127.0.0.1 (its "READY <base>" line lands in $work/up.out).
root=$(cd "$(dirname "$0")/.." && pwd)
rel=$root/target/release
gen=$(ls -t "$rel"/deps/mcpload-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$rel/mcpgw" ] && [ -x "$rel/examples/upstream" ] && [ -n "$gen" ] || {
  echo "build first: cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run" >&2
  exit 2
}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$rel/examples/upstream" --listen 127.0.0.1:0 >"$work/up.out" 2>/dev/null &
pids+=($!)
