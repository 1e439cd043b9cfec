#!/usr/bin/env bash
# Two mcpgw builds side by side: gateway CPU per forwarded call at concurrency 16, one fixture,
# rounds alternating between them so that a noisy machine shifts both alike. For a change whose
# effect is smaller than the noise between runs at different times.
#
#   cp target/release/mcpgw /tmp/mcpgw-before      # ...change, rebuild...
#   benches/ab.sh /tmp/mcpgw-before target/release/mcpgw [ROUNDS] [SERVE FLAGS...]   # default 5
set -euo pipefail
bins=("$1" "$2")
rounds=${3:-5}
shift $(($# < 3 ? $# : 3))
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
gws=()
urls=()
for i in 0 1; do
  # shellcheck disable=SC2068
  "${bins[$i]}" --data-dir "$work/d$i" serve --listen 127.0.0.1:0 --no-auth $@ \
    >"$work/gw$i.out" 2>/dev/null &
  pids+=($!)
  gws+=($!)
done
for i in 0 1; do
  url=$(listening "$work/gw$i.out")
  up=$(sed -n 's/^READY //p' "$work/up.out")
  curl -sf -XPOST "$url/gateways" -H 'content-type: application/json' \
    -d "{\"name\":\"up\",\"url\":\"$up/mcp\"}" >/dev/null
  urls+=("$url")
  "$gen" load --url "$url/mcp" -c 16 -n 2000 --tool up__echo >/dev/null
done
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  for i in 0 1; do
    cpu_c16 "$(printf '%-28s' "${bins[$i]}")" "${urls[$i]}" "${gws[$i]}"
  done
done
