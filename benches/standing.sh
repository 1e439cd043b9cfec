#!/usr/bin/env bash
# What a standing upstream GET stream costs the gateway: two gateways side by side, one with the
# fixture registered as it starts by default (2026-07-28, no stream outside a request), the other
# with a session-era fixture that announces `listChanged` (the gateway keeps a GET stream open to
# it from the connection on). Prints each gateway's CPU over 10 idle seconds, then gateway CPU per
# call at c=16 in alternating rounds, and the second fixture's stats (`gets`: streams opened).
#
#   cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run
#   benches/standing.sh [ROUNDS]        # default 3 rounds of 3 s runs, about 45 s
set -euo pipefail
rounds=${1:-3}
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
"$rel/examples/upstream" --listen 127.0.0.1:0 --list-changed --session-only >"$work/up2.out" 2>/dev/null &
pids+=($!)
start_gateways "" ""
up2=$(sed -n 's/^READY //p' "$work/up2.out")
curl -sf -XDELETE "${urls[1]}/gateways/up" >/dev/null
curl -sf -XPOST "${urls[1]}/gateways" -H 'content-type: application/json' \
  -d "{\"name\":\"up\",\"url\":\"$up2/mcp\"}" >/dev/null
for u in "${urls[@]}"; do "$gen" load --url "$u/mcp" -c 16 -n 2000 --tool up__echo >/dev/null; done
hz=$(getconf CLK_TCK)
for i in 0 1; do
  b=$(awk '{print $14 + $15}' "/proc/${gws[$i]}/stat")
  sleep 10
  a=$(awk '{print $14 + $15}' "/proc/${gws[$i]}/stat")
  echo "gateway $i idle for 10 s: $(((a - b) * 1000 / hz)) ms CPU"
done
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  cpu_c16 "no standing stream   " "${urls[0]}" "${gws[0]}" 3
  cpu_c16 "standing GET stream  " "${urls[1]}" "${gws[1]}" 3
done
echo "listChanged fixture: $(curl -s "$up2/stats")"
