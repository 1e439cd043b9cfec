#!/usr/bin/env bash
# Instructions mcpgw executes per forwarded tools/call, counted by valgrind's callgrind: a
# figure that, unlike CPU time, does not move with whatever else the machine is doing.
#
#   cargo build --release --bin mcpgw --example upstream && cargo bench --bench mcpload --no-run
#   benches/instructions.sh [CALLS] [CONCURRENCY]        # default 2000 calls, 4 at a time
#   AUTH=token benches/instructions.sh                   # with bearer auth: a static token,
#   AUTH=jwt benches/instructions.sh                     # or a JWT from `mcpgw token create`
#   BIN=/tmp/mcpgw-before benches/instructions.sh        # another mcpgw build (this tree's fixture)
#
# Starts the fixture and mcpgw (under callgrind, --no-auth) on 127.0.0.1, registers the fixture,
# warms up with 400 calls, then counts only the measured calls (--instr-atstart=no, switched on
# with callgrind_control). Prints instructions per call in all, in memcpy (callgrind counts a
# `rep movsb` once per byte, so moves of large futures weigh far more here than in time), and
# the rest. Everything it started is stopped when it ends.
set -euo pipefail
calls=${1:-2000}
conc=${2:-4}
# shellcheck source=benches/prelude.sh
. "$(dirname "$0")/prelude.sh"
# The token goes in a file: the generator reads it there, curl reads the header from one.
auth=(--no-auth)
case ${AUTH:-none} in
  none) ;;
  token)
    echo "bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/token"
    printf '[auth]\ntokens = ["%s"]\n' "$(cat "$work/token")" >"$work/config.toml"
    auth=(--config "$work/config.toml")
    ;;
  jwt) auth=() ;;
  *) echo "AUTH is none, token or jwt" >&2; exit 2 ;;
esac
bin=${BIN:-$rel/mcpgw}
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
  "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 "${auth[@]}" \
  >"$work/gw.out" 2>"$work/gw.err" &
gw=$!
pids+=($gw)
gwurl=$(listening "$work/gw.out")
up=$(sed -n 's/^READY //p' "$work/up.out")
[ "${AUTH:-none}" = jwt ] && "$bin" --data-dir "$work/data" token create >"$work/token"
bearer=()
if [ -f "$work/token" ]; then
  echo "authorization: Bearer $(cat "$work/token")" >"$work/auth.header"
  bearer=(-H "@$work/auth.header")
  tokenfile=(--token-file "$work/token")
else
  tokenfile=()
fi
curl -sf -XPOST "$gwurl/gateways" -H 'content-type: application/json' "${bearer[@]}" \
  -d "{\"name\":\"up\",\"url\":\"$up/mcp\"}" >/dev/null
"$gen" load --url "$gwurl/mcp" -c "$conc" -n 400 --tool up__echo "${tokenfile[@]}" >/dev/null
callgrind_control -i on "$gw" >/dev/null 2>&1
"$gen" load --url "$gwurl/mcp" -c "$conc" -n "$calls" --tool up__echo "${tokenfile[@]}" | tail -2
callgrind_control -d "$gw" >/dev/null 2>&1
sleep 0.5
# CG_KEEP=FILE keeps the profile for callgrind_annotate.
if [ -n "${CG_KEEP:-}" ]; then cp "$work/cg.out.1" "$CG_KEEP"; fi
callgrind_annotate "$work/cg.out.1" 2>/dev/null | awk -v n="$calls" '
  /PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 }
  /__memcpy_avx_unaligned_erms|__memmove_avx_unaligned_erms/ && !m { gsub(",", "", $1); m = $1 }
  END { printf "instructions per call: %d (memcpy %d, rest %d)\n", t / n, m / n, (t - m) / n }'
