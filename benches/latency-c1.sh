#!/usr/bin/env bash
# Added latency at concurrency 1, four gateway set-ups side by side against one fixture:
# default workers or --workers 1, each with the upstream wait on (default, 100 us) or off
# (--upstream-spin-us 0). Rounds alternate between them so that a noisy machine shifts all
# alike; p50 of each 2 s run is printed with the direct path's.
#
#   cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run
#   benches/latency-c1.sh [ROUNDS]        # default 4 rounds, about 10 s each
set -euo pipefail
rounds=${1:-4}
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
names=("default workers, wait on " "default workers, wait off" "--workers 1,     wait on " "--workers 1,     wait off")
flags=("" "--upstream-spin-us 0" "--workers 1" "--workers 1 --upstream-spin-us 0")
start_gateways "${flags[@]}"
p50() { "$gen" load --url "$1" -c 1 -d 2 --tool "$2" | tail -1 | awk '{print $2}'; }
for r in $(seq 1 "$rounds"); do
  direct=$(p50 "$up/mcp" echo)
  echo "round $r: direct p50 ${direct} us"
  for i in 0 1 2 3; do
    through=$(p50 "${urls[$i]}/mcp" up__echo)
    echo "  ${names[$i]}  p50 ${through} us  added +$((through - direct)) us"
  done
done
