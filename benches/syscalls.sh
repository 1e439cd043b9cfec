#!/usr/bin/env bash
# System calls mcpgw makes per forwarded tools/call, counted by `perf stat` on its syscall
# tracepoints (needs root or perf_event_paranoid <= 1). Shows whether the upstream wait runs
# (ppoll), whether reads and writes are at the proxy's minimum (two each per call) and how
# often the workers sleep (epoll_wait) and wake each other (futex).
#
#   cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run
#   benches/syscalls.sh [CONCURRENCY] [SECONDS] [SERVE FLAGS...]   # default 16, 3 s
set -euo pipefail
conc=${1:-16}
secs=${2:-3}
shift $(($# < 2 ? $# : 2))
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
start_gateways "$*"
"$gen" load --url "${urls[0]}/mcp" -c "$conc" -n 2000 --tool up__echo >/dev/null
events=ppoll,recvfrom,read,writev,write,sendto,epoll_wait,futex
perf stat -x, -e "$(echo "$events" | sed 's/\([a-z_]*\)/syscalls:sys_enter_\1/g')" \
  -p "${gws[0]}" -o "$work/perf.csv" &
perf=$!
sleep 0.3
line=$("$gen" load --url "${urls[0]}/mcp" -c "$conc" -d "$secs" --tool up__echo | tail -1)
kill -INT "$perf"
wait "$perf" || true
calls=$(echo "$line" | awk '{print $6}')
echo "concurrency $conc, $calls calls, $(echo "$line" | awk '{printf "%.0f calls/s, p50 %d us", $1, $2}')"
awk -F, -v n="$calls" '/sys_enter_/ { sub(".*sys_enter_", "", $3); printf "  %-11s %7.3f per call\n", $3, $1 / n }' "$work/perf.csv"
