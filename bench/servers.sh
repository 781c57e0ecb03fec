# bench/servers.sh — the one list of benchmark servers, sourced by bench/run
# and bench/run-lib.sh (so by every bench/run-* script). Needs $bin (the
# build's bin/ directory) and $srv_threads (poller threads) set first.
#
# h2 is the library's default server transport, so every perfc-* name that
# means the C core passes --transport core, and the h2 ones --transport h2:
# a name measures the same thing whatever the default becomes.
#
# server_cmd NAME prints the binary and its arguments, or returns 1 for a
# name it does not know; server_label NAME prints what the name stands for
# in reports.
#
# perfc-h2 is perfc on its own nghttp2 transport. When perfc-echo-server's
# --help lists --transport (perfc's call layer wired onto transport/h2),
# it is `perfc-echo-server --transport h2`: decode, arena, interceptors and
# handler as for `perfc`. Until then it is perfc-h2-echo-server
# (tests/h2), the bare transport: the request bytes echoed without any
# protobuf decoding or call layer, labelled "transport only, no decode" in
# every report. The choice is made once, from the --help text, never by
# guessing; PERFC_H2_MODE says which ("server" or "transport-only", empty
# when neither binary exists).

perfc_h2_mode=""
if [ -x "$bin/perfc-echo-server" ] &&
   "$bin/perfc-echo-server" --help 2>&1 | grep -q -- '--transport'; then
  perfc_h2_mode=server
elif [ -x "$bin/perfc-h2-echo-server" ]; then
  perfc_h2_mode=transport-only
fi
export PERFC_H2_MODE=$perfc_h2_mode

# server_cmd NAME: binary and arguments. perfc-m is perfc with the metrics
# interceptor on (--metrics-listen); perfc-bare is perfc without health and
# reflection (only Echo's methods registered, like the peers); perfc-preempt
# is perfc with its pollers under the normal scheduling policy instead of
# SCHED_BATCH (--poller-preempt 1); perfc-wpreempt the same for the worker
# pool's threads (--worker-preempt 1); perfc-sflush writes every stream
# reply at once, without batching (--stream-flush 1); perfc-rN posts at most
# N requests per method (--requests N), ccore-rN likewise for the C core
# ceiling; perfc-h2m, perfc-h2t0, perfc-h2t1 and perfc-h2bare are perfc-m,
# perfc-t0, perfc-t1 and perfc-bare on the h2 transport; cpp-full is the C++ peer with the default health service and
# reflection on, i.e. the same five methods as perfc as shipped; go is
# grpc-go with go-grpc-prometheus and /metrics, go-plain grpc-go without
# them. PERFC_EXTRA_ARGS is added to all the perfc-echo-server ones
# (bench/run-streaming sets --pool-threads, since each perfc streaming
# handler holds a worker thread); otherwise perfc runs with its defaults.
server_cmd() {
  # h2 is the library's default transport: every C core variant says so.
  local core="--transport core"
  case "$1" in
    ccore) echo "$bin/ccore-echo-server --listen 127.0.0.1:0 --threads $srv_threads" ;;
    ccore-r*) echo "$bin/ccore-echo-server --listen 127.0.0.1:0 --threads $srv_threads --requests ${1#ccore-r}" ;;
    perfc-r*) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --requests ${1#perfc-r} ${PERFC_EXTRA_ARGS:-}" ;;
    perfc) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-h2)
      case "$perfc_h2_mode" in
        server) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 ${PERFC_EXTRA_ARGS:-}" ;;
        # The bare transport takes none of perfc-echo-server's options.
        *) echo "$bin/perfc-h2-echo-server --listen 127.0.0.1:0 --threads $srv_threads" ;;
      esac ;;
    perfc-bare) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --bare 1 ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-preempt) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --poller-preempt 1 ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-wpreempt) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --worker-preempt 1 ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-sflush) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --stream-flush 1 ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-base)
      # The same server from another build (PERFC_BASE_BUILD, e.g. one made
      # from main), for before/after comparisons within one run.
      [ -n "${PERFC_BASE_BUILD:-}" ] || return 1
      echo "$(cd "$PERFC_BASE_BUILD" && pwd)/bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-m) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --metrics-listen 127.0.0.1:0 ${PERFC_EXTRA_ARGS:-}" ;;
    # perfc-t0/perfc-t1: a tracer attached, always_off / always_on (spans
    # exported to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; bench/run-overhead).
    perfc-t0) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --tracing always_off ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-t1) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads $core --tracing always_on ${PERFC_EXTRA_ARGS:-}" ;;
    # The same on perfc's own transport: h2 + metrics, h2 + tracing, h2
    # without health and reflection.
    perfc-h2m) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --metrics-listen 127.0.0.1:0 ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-h2t0) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --tracing always_off ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-h2t1) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --tracing always_on ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-h2bare) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --bare 1 ${PERFC_EXTRA_ARGS:-}" ;;
    # h2 with Stream's blocking handler on the pool instead of the loop
    # callbacks perfc-echo-server uses on h2 by default.
    perfc-h2pool) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --stream-executor pool ${PERFC_EXTRA_ARGS:-}" ;;
    perfc-h2spin) echo "$bin/perfc-echo-server --listen 127.0.0.1:0 --threads $srv_threads --transport h2 --busy-poll-us ${BENCH_BUSY_POLL_US:-50} ${PERFC_EXTRA_ARGS:-}" ;;
    # The callback API sizes its own pollers; --threads would be ignored.
    cpp) echo "$bin/cpp-echo-server --listen 127.0.0.1:0" ;;
    cpp-full) echo "$bin/cpp-echo-server-full --listen 127.0.0.1:0" ;;
    go) echo "$bin/go-echo-server --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --threads $srv_threads" ;;
    go-plain) echo "$bin/go-echo-server --listen 127.0.0.1:0 --threads $srv_threads" ;;
    *) return 1 ;;
  esac
}

server_label() {
  case "$1" in
    ccore) echo "C core ceiling (ccore-echo-server)" ;;
    perfc) echo "perfc, C core transport (perfc-echo-server --transport core)" ;;
    perfc-h2)
      case "$perfc_h2_mode" in
        server) echo "perfc, h2 transport (perfc-echo-server --transport h2)" ;;
        *) echo "perfc h2 transport only, no decode (perfc-h2-echo-server)" ;;
      esac ;;
    perfc-m) echo "perfc + metrics interceptor, C core transport (perfc-echo-server --transport core --metrics-listen)" ;;
    perfc-h2m) echo "perfc + metrics interceptor, h2 transport (perfc-echo-server --transport h2 --metrics-listen)" ;;
    perfc-h2bare) echo "perfc, h2 transport, no health/reflection (perfc-echo-server --transport h2 --bare 1)" ;;
    perfc-h2pool) echo "perfc, h2 transport, streams on the worker pool (perfc-echo-server --transport h2 --stream-executor pool)" ;;
    perfc-h2spin) echo "perfc, h2 transport, busy polling ${BENCH_BUSY_POLL_US:-50} µs (perfc-echo-server --transport h2 --busy-poll-us)" ;;
    perfc-bare) echo "perfc, C core transport, no health/reflection (perfc-echo-server --transport core --bare 1)" ;;
    cpp) echo "gRPC C++ callback (cpp-echo-server)" ;;
    cpp-full) echo "gRPC C++ callback + health + reflection (cpp-echo-server-full)" ;;
    go) echo "grpc-go + prometheus (go-echo-server --metrics-listen)" ;;
    go-plain) echo "grpc-go, no metrics (go-echo-server)" ;;
    *) echo "$1" ;;
  esac
}

# progress_start N: the number of runs ahead. progress I: prints "run I of
# N, M:SS elapsed, about M:SS left" on stderr (the estimate is the mean
# time per finished run so far times the runs left).
progress_start() { progress_n=$1 progress_t0=$(date +%s); }
progress() {
  local i=$1 now el left
  now=$(date +%s)
  el=$((now - progress_t0))
  if [ "$i" -gt 1 ]; then
    left=$(( el * (progress_n - i + 1) / (i - 1) ))
    printf 'bench: %s: run %d of %d, %d:%02d elapsed, about %d:%02d left\n' "${0##*/}" "$i" \
      "$progress_n" $((el / 60)) $((el % 60)) $((left / 60)) $((left % 60)) >&2
  else
    printf 'bench: %s: run %d of %d\n' "${0##*/}" "$i" "$progress_n" >&2
  fi
}

# cpu_model: the CPU's model name from /proc/cpuinfo, for every report.
cpu_model() { sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1; }
