#!/usr/bin/env bash
# Gateway CPU per forwarded call at concurrency 16, four gateway set-ups side by side against one
# fixture: default workers or --workers 1, each with the upstream wait on (default) or off
# (--upstream-spin-us 0). Rounds alternate between them so that a noisy machine shifts all
# alike. CPU is utime+stime from /proc (10 ms ticks) over each run, divided by its calls.
#
#   cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run
#   benches/cpu-c16.sh [ROUNDS] [SECONDS]        # default 3 rounds of 3 s runs, about 40 s
set -euo pipefail
rounds=${1:-3}
secs=${2:-3}
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
names=("default workers, wait on " "default workers, wait off" "--workers 1,     wait on " "--workers 1,     wait off")
flags=("" "--upstream-spin-us 0" "--workers 1" "--workers 1 --upstream-spin-us 0")
start_gateways "${flags[@]}"
for url in "${urls[@]}"; do
  "$gen" load --url "$url/mcp" -c 16 -n 2000 --tool up__echo >/dev/null
done
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  for i in 0 1 2 3; do
    cpu_c16 "${names[$i]}" "${urls[$i]}" "${gws[$i]}" "$secs"
  done
done
