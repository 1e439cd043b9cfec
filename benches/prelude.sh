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

# listening FILE: the base URL an mcpgw prints to FILE once it listens, after the fixture is
# READY too; waits up to 30 s, else says so and fails.
listening() {
  local up url
  for _ in $(seq 1 300); do
    up=$(sed -n 's/^READY //p' "$work/up.out")
    url=$(sed -n 's|^mcpgw: listening on ||p' "$1")
    [ -n "$up" ] && [ -n "$url" ] && { echo "$url"; return 0; }
    sleep 0.1
  done
  echo "the fixture or mcpgw did not start" >&2
  return 1
}

# start_gateways FLAGS...: one `mcpgw serve --no-auth` on 127.0.0.1 per argument (its extra
# flags, word-split), each with the fixture registered as `up`; their pids land in $gws and
# their base URLs in $urls, in order.
start_gateways() {
  gws=()
  urls=()
  local i=0 flags url
  for flags in "$@"; do
    # shellcheck disable=SC2086
    "$rel/mcpgw" --data-dir "$work/d$i" serve --listen 127.0.0.1:0 --no-auth $flags \
      >"$work/gw$i.out" 2>/dev/null &
    pids+=($!)
    gws+=($!)
    i=$((i + 1))
  done
  for i in "${!gws[@]}"; do
    url=$(listening "$work/gw$i.out")
    up=$(sed -n 's/^READY //p' "$work/up.out")
    curl -sf -XPOST "$url/gateways" -H 'content-type: application/json' \
      -d "{\"name\":\"up\",\"url\":\"$up/mcp\"}" >/dev/null
    urls+=("$url")
  done
}

# cpu_c16 NAME URL PID [SECONDS]: one run of 16 clients calling `up__echo` through the gateway
# at URL (pid PID) for SECONDS (default 3); prints calls/s, p50 and the gateway's CPU per call
# (utime + stime from /proc, in clock ticks, over the run's calls).
cpu_c16() {
  local before after line
  before=$(awk '{print $14 + $15}' "/proc/$3/stat")
  line=$("$gen" load --url "$2/mcp" -c 16 -d "${4:-3}" --tool up__echo | tail -1)
  after=$(awk '{print $14 + $15}' "/proc/$3/stat")
  echo "$line" | awk -v name="$1" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    '{ printf "  %s  %6.0f calls/s  p50 %4d us  gateway %5.1f us CPU/call\n", name, $1, $2, t / hz * 1e6 / $6 }'
}
