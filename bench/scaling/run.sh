#!/usr/bin/env bash
# The scaling curves of BENCHMARKS.md "How cost grows" (issue 18): getty beside raw and tarpc, one
# run per point per impl, on loopback, by the benchmark contract (shared/bench/README.md).
#   connections curve: C in CONNS, 1 call in flight each, 64 B payloads
#   payload curve:     B in PAYLOADS, at 4 connections x 16 in flight
# Each run appends one JSON line to $OUT_DIR/scaling-<curve>.jsonl:
#   {"curve":..,"name":..,"point":..,"warmup_s":..,"load1":..,"cpu":{client,server,other},"server_hwm_kib":..,
#    "server_rss_kib":..,"exit":..,"wall_s":..,"listen_overflows":..,"error":..,"result":<the client's JSON line or null>}
# A client that fails (exit != 0, or no JSON line) is recorded with "result":null, its exit status
# and the last line it wrote on stderr as "error": a point an impl cannot do stays in the data.
# wall_s is the client's whole life (connecting, warm-up, measured seconds, exit); listen_overflows
# the kernel's ListenOverflows counter over it (connects whose SYN was dropped because the server's
# accept queue was full: each one costs the dialler a 1 s SYN retransmit).
# server_hwm_kib is the server's peak RSS (VmHWM in /proc/PID/status), read just before it is killed.
# load1 is the 1-minute load average when the run started; cpu is % of one core over the client's
# lifetime (client, server, and everything else on the box), as shared/peerbench/run.sh reports.
#
# Environment (all optional):
#   CURVES='connections payload'   which curves
#   IMPLS='getty raw tarpc'        which impls (getty = our getty-bench; raw, tarpc = peerbench)
#   CONNS='1 10 100 1000 10000'    the connections curve's points
#   PAYLOADS='64 1024 16384 65536 262144 1048576'   the payload curve's points (bytes)
#   SECS=3 WARMUP=1                measured / warm-up seconds per run
#   WARMUP_PER_CONN=0.0004         connections curve: the warm-up is at least this many seconds per
#                                  connection (4 s at 10,000). The first calls of C connections all
#                                  start at once and take a while to drain; with a 1 s warm-up the
#                                  10,000 point measures that burst (p99 close to the whole run)
#                                  rather than the steady state. The warm-up used is in the line.
#   OUT_DIR=bench/results          where the jsonl files go (appended to; TRUNCATE=1 empties them first)
#   PEERBENCH=<repo>/../shared/peerbench   the peer harness's sources (read-only is fine)
#   PB_TARGET=/work/pb-target      cargo target dir for peerbench
#   GETTY_BIN, PEERBENCH_BIN       prebuilt binaries (skips the matching build)
#   LOAD_BELOW=1.5 BUSY_BELOW=10 LOAD_UNTIL=
#                                  before the first run, wait until the 1-minute load average is
#                                  below LOAD_BELOW and the machine is less than BUSY_BELOW % busy
#                                  over 5 s, or until the clock reads LOAD_UNTIL (HH:MM, UTC);
#                                  empty LOAD_UNTIL: do not wait at all
#   QUIET_MAX=5                    seconds to wait, before each run, for the rest of the machine to idle
# 10,000 connections are 10,000 open files in each of the two processes: the script raises the
# soft open-file limit to 20,000 (or to the hard limit, if lower; then the 10k point may fail, and
# is recorded so).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
CURVES=${CURVES:-connections payload}
IMPLS=${IMPLS:-getty raw tarpc}
CONNS=${CONNS:-1 10 100 1000 10000}
PAYLOADS=${PAYLOADS:-64 1024 16384 65536 262144 1048576}
SECS=${SECS:-3} WARMUP=${WARMUP:-1}
OUT_DIR=${OUT_DIR:-$REPO/bench/results}
PEERBENCH=${PEERBENCH:-$REPO/../shared/peerbench}
PB_TARGET=${PB_TARGET:-/work/pb-target}
LOG=$(mktemp -d -t getty-scaling.XXXXXX)

hard=$(ulimit -Hn)
want=20000
[[ $hard != unlimited ]] && ((hard < want)) && want=$hard
ulimit -n "$want"

if [[ -z ${GETTY_BIN:-} && " $IMPLS " == *" getty "* ]]; then
  cargo build --release -q -p getty-bench
  GETTY_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/getty-bench
fi
if [[ -z ${PEERBENCH_BIN:-} && " $IMPLS " =~ " "(raw|tarpc)" " ]]; then
  CARGO_TARGET_DIR=$PB_TARGET cargo build --release -q --manifest-path "$PEERBENCH/Cargo.toml"
  PEERBENCH_BIN=$PB_TARGET/release/peerbench
fi
cmd_of() { if [[ $1 == getty ]]; then echo "$GETTY_BIN"; else echo "$PEERBENCH_BIN $1"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }   # machine busy ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # one process's ticks
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# The kernel's count of connections dropped because a listen queue was full (machine-wide).
overflows() { awk '/^TcpExt:/ {if (!h) {split($0, k); h = 1} else {split($0, v); for (i in k) if (k[i] == "ListenOverflows") print v[i]}}' /proc/net/netstat; }
wait_quiet() {
  for _ in $(seq "${QUIET_MAX:-5}"); do
    local b0; b0=$(busy); sleep 1
    (($(busy) - b0 < 25)) && return
  done
  echo "# machine still busy; measuring anyway (see load1 and cpu.other)" >&2
}

# % of the whole machine (all CPUs) busy over the next 5 seconds.
busy_pct() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(awk '/^cpu /{b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
  sleep 5
  read -r b1 t1 < <(awk '/^cpu /{b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
  echo $(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}
if [[ -n ${LOAD_UNTIL:-} ]]; then
  # The 1-minute average lags: a falling average can dip below the bar while other builds are
  # already running again, so the machine must also be nearly idle right now (BUSY_BELOW %).
  until [[ $(date -u +%H:%M) > $LOAD_UNTIL || $(date -u +%H:%M) == "$LOAD_UNTIL" ]]; do
    l=$(load1) b=$(busy_pct)
    awk -v l="$l" -v m="${LOAD_BELOW:-1.5}" -v b="$b" -v c="${BUSY_BELOW:-10}" 'BEGIN {exit !(l < m && b < c)}' && break
    echo "# load $l (bar ${LOAD_BELOW:-1.5}), ${b}% busy (bar ${BUSY_BELOW:-10}%); waiting (until $LOAD_UNTIL UTC at the latest)" >&2
    sleep 10
  done
fi
echo "# starting at $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# One run: server, wait for its port, client, one JSON line appended to $out.
run_one() {
  local curve=$1 name=$2 point=$3 C=$4 P=$5 B=$6 out=$7 cmd port spid rc=0 line err warm=$WARMUP
  [[ $curve == connections ]] &&
    warm=$(awk -v w="$WARMUP" -v c="$C" -v k="${WARMUP_PER_CONN:-0.0004}" 'BEGIN {print (c * k > w ? c * k : w)}')
  cmd=$(cmd_of "$name")
  wait_quiet
  port=$(free_port)
  # shellcheck disable=SC2086 # $cmd is a binary and maybe an impl word
  $cmd server --addr "127.0.0.1:$port" 2>"$LOG/server-$name.log" &
  spid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "# $curve $name C=$C P=$P B=$B warm-up ${warm}s on :$port" >&2
  local l1 b0 s0 t0 t1 s1 b1 hwm rss o0 o1
  l1=$(load1) b0=$(busy) s0=$(ticks "$spid") t0=$(date +%s%N) o0=$(overflows)
  TIMEFORMAT='%3U %3S'
  # shellcheck disable=SC2086
  { time timeout $((${SECS%.*} + ${warm%.*} + 120)) $cmd client --addr "127.0.0.1:$port" \
    --conns "$C" --inflight "$P" --payload "$B" --secs "$SECS" --warmup-secs "$warm" \
    >"$LOG/out" 2>"$LOG/client.err"; } 2>"$LOG/time" || rc=$?
  t1=$(date +%s%N) s1=$(ticks "$spid") b1=$(busy) o1=$(overflows)
  hwm=$(status_kib "$spid" VmHWM) rss=$(status_kib "$spid" VmRSS)
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  cat "$LOG/client.err" >>"$LOG/client-$name.log"
  line=$(tail -n 1 "$LOG/out")
  err=
  if ((rc != 0)) || ! python3 -c 'import json, sys; json.loads(sys.argv[1])' "$line" 2>/dev/null; then
    line=
    err=$(tail -n 1 "$LOG/client.err")
    [[ -n $err ]] || err="no JSON line"
    echo "# $name failed (exit $rc): $err" >&2
  fi
  local cpu
  cpu=$(awk -v w=$(((t1 - t0) / 1000000)) -v s=$((s1 - s0)) -v b=$((b1 - b0)) '{c = ($1 + $2) * 100000 / w
    o = (b - s) * 1000 / w - c; printf "{\"client\":%.0f,\"server\":%.0f,\"other\":%.0f}", c, s * 1000 / w, (o > 0 ? o : 0)}' "$LOG/time" 2>/dev/null || echo null)
  python3 - "$curve" "$name" "$point" "$warm" "$l1" "$cpu" "${hwm:-}" "${rss:-}" "$rc" "$(((t1 - t0) / 1000000))" "$((o1 - o0))" "$err" "$line" >>"$out" <<'EOF'
import json, sys
curve, name, point, warm, l1, cpu, hwm, rss, rc, wall_ms, drops, err, line = sys.argv[1:]
num = lambda s: int(s) if s else None
print(json.dumps({"curve": curve, "name": name, "point": int(point),
                  "warmup_s": float(warm), "load1": float(l1),
                  "cpu": json.loads(cpu), "server_hwm_kib": num(hwm), "server_rss_kib": num(rss),
                  "exit": int(rc), "wall_s": int(wall_ms) / 1000,
                  "listen_overflows": int(drops), "error": err or None,
                  "result": json.loads(line) if line else None}, separators=(",", ":")))
EOF
  tail -n 1 "$out" >&2
}

mkdir -p "$OUT_DIR"
for curve in $CURVES; do
  out=$OUT_DIR/scaling-$curve.jsonl
  [[ -n ${TRUNCATE:-} ]] && : >"$out"
  case $curve in
    connections) points=$CONNS ;;
    payload) points=$PAYLOADS ;;
    *) echo "# unknown curve: $curve" >&2; exit 2 ;;
  esac
  for x in $points; do
    for name in $IMPLS; do
      if [[ $curve == connections ]]; then
        run_one "$curve" "$name" "$x" "$x" 1 64 "$out"
      else
        run_one "$curve" "$name" "$x" 4 16 "$x" "$out"
      fi
    done
  done
done
echo "# done at $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $LOG" >&2
