# bench/run-lib.sh — helpers shared by bench/run-streaming, run-idle,
# run-client and run-overhead (sourced, not run). The same method as
# bench/run: every server started fresh per measured run and pinned to its
# CPU, the load generator pinned to the other, the server's CPU time from
# /proc/PID/stat, and how busy both CPU sets were from /proc/stat, so that
# another process stealing the server's core shows up as "others".
# Kept apart from bench/run on purpose (that script is being edited on
# another branch); folding the two together is a later step.

BUILD=${1:-build}
ROUNDS=${BENCH_ROUNDS:-3}
SERVER_CPUS=${BENCH_SERVER_CPUS:-0}
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-1}
PIN=${BENCH_PIN:-1}
LOAD_TIMEOUT=${BENCH_TIMEOUT:-120}
MAX_OTHERS=${BENCH_MAX_OTHERS:-0.10}
RETRIES=${BENCH_RETRIES:-2}
RETRY_PAUSE=${BENCH_RETRY_PAUSE:-5}

here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$BUILD" && pwd)/bin
report=$here/tools/report.py

die() { echo "bench: $*" >&2; exit 2; }
note() { echo "bench: $*" >&2; }

ncpu=$(nproc)
srv_threads=$(echo "$SERVER_CPUS" | tr ',' '\n' | awk -F- '{n += (NF == 2 ? $2 - $1 + 1 : 1)} END {print n}')
srv_pin=() cli_pin=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$ncpu" -ge 2 ]; then
  srv_pin=(taskset -c "$SERVER_CPUS")
  cli_pin=(taskset -c "$CLIENT_CPUS")
  pinning="server on CPU $SERVER_CPUS, load generator on CPU $CLIENT_CPUS (taskset)"
  srv_set=$SERVER_CPUS cli_set=$CLIENT_CPUS
else
  pinning="not pinned"
  srv_threads=$ncpu
  srv_set=0-$((ncpu - 1)) cli_set=0-$((ncpu - 1))
fi

# server_cmd, server_label, progress, cpu_model: bench/servers.sh, the one
# server list bench/run shares.
# shellcheck source=bench/servers.sh
source "$here/servers.sh"

# present_servers LIST: the names whose binary exists, in order.
present_servers() {
  local s cmd
  for s in $1; do
    cmd=$(server_cmd "$s") || die "unknown server '$s'"
    if [ -x "${cmd%% *}" ]; then echo "$s"; else note "skipping $s: ${cmd%% *} not built"; fi
  done
}

srv_pid="" load_pid=""
cleanup() {
  if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then kill -TERM "$load_pid" 2>/dev/null || true; fi
  if [ -n "$srv_pid" ] && kill -0 "$srv_pid" 2>/dev/null; then kill -KILL "$srv_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME LOG: sets srv_pid and srv_port, or returns 1. The
# descriptor limit is raised to the hard limit (idle connections need it).
start_server() {
  local name=$1 log=$2 cmd
  cmd=$(server_cmd "$name")
  rm -f "$log.out" "$log.err"
  # shellcheck disable=SC2086
  (ulimit -n "$(ulimit -Hn)"; exec "${srv_pin[@]}" $cmd) >"$log.out" 2>"$log.err" &
  srv_pid=$!
  srv_port=""
  for _ in $(seq 100); do
    srv_port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$log.out" 2>/dev/null | head -n1)
    [ -n "$srv_port" ] && return 0
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.1
  done
  note "$name did not report 'listening on' within 10 s:"
  sed 's/^/  /' "$log.err" >&2
  stop_server
  return 1
}

stop_server() {
  local rc=0
  [ -n "$srv_pid" ] || return 0
  kill -TERM "$srv_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$srv_pid" 2>/dev/null; then
    note "server $srv_pid ignored SIGTERM for 10 s; killing it"
    kill -KILL "$srv_pid" 2>/dev/null || true
  fi
  wait "$srv_pid" 2>/dev/null || rc=$?
  srv_pid=""
  return $rc
}

# run_load OUTFILE CMD...: the load generator, pinned, bounded by a timeout,
# in the background so that signals reach the traps at once.
run_load() {
  local out=$1 rc=0
  shift
  timeout -k 5 "$LOAD_TIMEOUT" "${cli_pin[@]}" "$@" >"$out" 2>&1 &
  load_pid=$!
  wait "$load_pid" || rc=$?
  load_pid=""
  return $rc
}

cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
threads_of() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
clk_tck=$(getconf CLK_TCK)
expand_cpus() { echo "$1" | tr ',' '\n' | awk -F- '{for (i = $1; i <= (NF == 2 ? $2 : $1); i++) print "cpu" i}'; }
cpuset_ticks() {
  expand_cpus "$1" | awk 'NR == FNR {want[$1] = 1; next}
    ($1 in want) {t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; total += t}
    END {print busy, total}' - /proc/stat
}
busy_frac() {
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " ");
    d = y[2] - x[2]; printf "%.3f", (d > 0 ? (y[1] - x[1]) / d : 0)}'
}

# Sampling around a measured load: sample_begin; ...load...; sample_end.
# Sets srv_cpu_s (server CPU seconds), wall_s, srv_cpus_busy, cli_cpus_busy
# and others (share of the server's CPUs used by anything but the server).
sample_begin() {
  st0=$(cpu_ticks "$srv_pid") ss0=$(cpuset_ticks "$srv_set") sc0=$(cpuset_ticks "$cli_set")
  sw0=$(date +%s.%N)
}
sample_end() {
  local t1
  sw1=$(date +%s.%N)
  t1=$(cpu_ticks "$srv_pid" 2>/dev/null || echo "$st0")
  srv_cpus_busy=$(busy_frac "$ss0" "$(cpuset_ticks "$srv_set")")
  cli_cpus_busy=$(busy_frac "$sc0" "$(cpuset_ticks "$cli_set")")
  srv_cpu_s=$(awk -v d=$((t1 - st0)) -v hz="$clk_tck" 'BEGIN {printf "%.3f", d / hz}')
  wall_s=$(awk -v a="$sw0" -v b="$sw1" 'BEGIN {printf "%.3f", b - a}')
  others=0
  if [ ${#srv_pin[@]} -gt 0 ]; then
    others=$(awk -v c="$srv_cpus_busy" -v s="$srv_cpu_s" -v w="$wall_s" -v n="$srv_threads" \
      'BEGIN {x = c - s / w / n; printf "%.3f", (x > 0 ? x : 0)}')
  fi
}

# too_busy: whether the last run saw others above MAX_OTHERS.
too_busy() { awk -v o="$others" -v m="$MAX_OTHERS" 'BEGIN {exit !(o > m)}'; }

# rotate ROUND NAME...: the names rotated by ROUND-1, one per line.
rotate() {
  local r=$1
  shift
  local a=("$@") k
  k=$(( (r - 1) % ${#a[@]} ))
  printf '%s\n' "${a[@]:k}" "${a[@]:0:k}"
}

machine_meta() {
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) CPUs, $(cpu_model), Linux $(uname -r), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
  [ -z "${PERFC_H2_MODE:-}" ] || echo "- perfc-h2: $(server_label perfc-h2)"
  echo "- pinning: $pinning; server poller threads: $srv_threads"
  echo "- gRPC: C core $(pkg-config --modversion grpc 2>/dev/null || echo '?'), $(go version 2>/dev/null | awk '{print $3}' || echo 'no go')"
}

# make_body PAYLOAD FILE: the h2load request body, as bench/run makes it: the
# 5-byte gRPC prefix and an EchoRequest with PAYLOAD bytes (any size; below
# 128 byte for byte what bench/run sends). Sets body_len.
make_body() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
n, path = int(sys.argv[1]), sys.argv[2]
varint, v = b"", n
while True:
    varint += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
    v >>= 7
    if not v:
        break
msg = b"\x0a" + varint + bytes(i & 0xFF for i in range(n))
open(path, "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY
  body_len=$(stat -c %s "$2")
}

# h2load_measure TAG N CONNS STREAMS BODY: one h2load load of N unary calls
# against srv_port, checked like bench/run checks it (all succeeded, every
# response carried one echoed message). Sets ok/reason, rps, p50, p99 (µs)
# and ccpu, h2load's own CPU µs per call (GNU time, when installed).
h2load_measure() {
  local tag=$1 n=$2 c=$3 m=$4 b=$5 rc=0 succ failed data
  local timer=()
  rps=0 p50=0 p99=0 ccpu=0
  [ ! -x /usr/bin/time ] || timer=(/usr/bin/time -f 'cpu_s %U %S' -o "$tag.time")
  run_load "$tag.h2load" "${timer[@]}" h2load -n "$n" -c "$c" -m "$m" -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$b" --log-file="$tag.h2log" \
    "http://127.0.0.1:$srv_port/bench.v1.Echo/Unary" || rc=$?
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$tag.h2load")
  succ=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$tag.h2load")
  failed=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' "$tag.h2load")
  data=$(sed -n 's/^traffic: .*(\([0-9]*\)) data$/\1/p' "$tag.h2load")
  rps=${rps:-0} succ=${succ:-0} failed=${failed:-0} data=${data:-0}
  if [ -s "$tag.h2log" ]; then
    read -r p50 p99 _ < <(python3 "$report" latency "$tag.h2log")
  fi
  rm -f "$tag.h2log"
  if [ -s "$tag.time" ]; then
    ccpu=$(awk -v n="$n" '/^cpu_s/ {printf "%.2f", ($2 + $3) * 1e6 / n}' "$tag.time")
  fi
  if [ "$rc" -ne 0 ]; then
    ok=0 reason="h2load exit $rc"
  elif [ "$succ" != "$n" ] || [ "$failed" != 0 ]; then
    ok=0 reason="$succ of $n succeeded, $failed failed"
  elif [ "$data" != $((n * body_len)) ]; then
    ok=0 reason="DATA bytes $data != $n x $body_len (a gRPC error?)"
  fi
}
