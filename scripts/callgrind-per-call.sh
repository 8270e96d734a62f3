#!/usr/bin/env bash
# Instructions per call on each side of a getty-bench run, counted by callgrind: unlike
# seconds, these counts do not depend on what else the machine is doing.
#
#   scripts/callgrind-per-call.sh BINARY [server|client] [CONNS INFLIGHT PAYLOAD]
#
# Runs the named side under callgrind and the other natively, twice (2 s and 6 s measured), and
# prints the difference of instructions over the difference of calls, so start-up
# cancels out (no warm-up: every call is counted). Defaults: the server side, 1 conn x 1 in flight x 64 B (the latency scenario).
# Extra client flags (e.g. `--reverse`) go in GETTY_CG_FLAGS.
set -euo pipefail
bin=$1 side=${2:-server} c=${3:-1} p=${4:-1} b=${5:-64}
out=${GETTY_CG_OUT:-$(mktemp -d -t getty-cg.XXXXXX)}
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
vg() { exec valgrind --tool=callgrind --callgrind-out-file="$1" "${@:2}"; }

run() { # SECS -> "instructions calls"
  local secs=$1 port f calls spid
  port=$(free_port) f="$out/cg.$side.$secs"
  if [ "$side" = server ]; then
    vg "$f" "$bin" server --addr "127.0.0.1:$port" 2>"$f.log" &
  else
    "$bin" server --addr "127.0.0.1:$port" 2>"$f.log" &
  fi
  spid=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local cl=("$bin" client --addr "127.0.0.1:$port" --conns "$c" --inflight "$p" --payload "$b"
    --secs "$secs" --warmup-secs 0 ${GETTY_CG_FLAGS:-})
  if [ "$side" = server ]; then "${cl[@]}" >"$f.json"; else (vg "$f" "${cl[@]}") >"$f.json" 2>>"$f.log"; fi
  # The server's counts are taken with a dump while it runs (its shutdown under valgrind can take
  # minutes), then it is killed.
  if [ "$side" = server ]; then
    callgrind_control -d "$spid" >/dev/null
    kill -KILL "$spid" 2>/dev/null || true
  else
    kill -INT "$spid" 2>/dev/null || true
  fi
  wait "$spid" 2>/dev/null || true
  # Without warm-up the client counts every call but those still in flight at the end.
  calls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["calls"])' "$f.json")
  echo "$(cat "$f"* 2>/dev/null | awk '/^summary:/ {n += $2} END {print n}') $calls"
}
read -r i1 n1 < <(run 2)
read -r i2 n2 < <(run 6)
python3 - "$i1" "$n1" "$i2" "$n2" "$side" <<'PY'
import sys
i1, n1, i2, n2 = map(int, sys.argv[1:5])
print(f"{sys.argv[5]}: {(i2 - i1) / max(1, n2 - n1):,.0f} instructions per call "
      f"({n1} and {n2} calls measured; {i1:,} and {i2:,} instructions in all)")
PY
