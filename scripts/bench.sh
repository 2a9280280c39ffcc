#!/usr/bin/env bash
# `make bench`: one load run on this machine, each figure beside raw Redis.
#
#  1. baseline: redis-benchmark XADD of a 1 KiB value, 64 clients, against a
#     private redis-server (loopback, free port, no persistence);
#  2. throughput: bin/signalbox serve against that redis-server with one Broker
#     (default/bench) and one Trigger delivering to sbload's subscriber; sbload
#     posts 1 KiB binary-mode CloudEvents with 64 closed-loop senders ->
#     accepted/s, delivered/s, the gateway's CPU and peak RSS;
#  3. latency: the same pipeline at a fixed 2,000 events/s (open loop) ->
#     POST-to-subscriber and POST-to-202 percentiles;
#  4. the same throughput and latency runs on the embedded bus (JetStream in
#     the gateway, files in a temporary --data-dir), beside Redis's figures.
# It is informative, not a gate: it fails only when the pipeline cannot run.
#
# Before the gateway starts, sbload also posts to its own subscriber for a few
# seconds: a broker that does no work, the ceiling of HTTP on this machine.
#
# Knobs: BENCH_DURATION (10s), BENCH_RATE (2000), BENCH_LATENCY_DURATION (10s),
# BENCH_CEILING_DURATION (5s),
# BENCH_XADD_REQUESTS (200000), BENCH_SIGNALBOX (bin/signalbox: another build to
# compare), BENCH_KEEP=1 keeps the work dir (logs, JSON reports).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${BENCH_DURATION:-10s}"
rate="${BENCH_RATE:-2000}"
lat_duration="${BENCH_LATENCY_DURATION:-10s}"
ceiling_duration="${BENCH_CEILING_DURATION:-5s}"
xadd_requests="${BENCH_XADD_REQUESTS:-200000}"
signalbox="${BENCH_SIGNALBOX:-bin/signalbox}"
clients=64
size=1024

for tool in redis-server redis-benchmark redis-cli jq curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench: $tool not found; install it: apt-get install -y redis-server redis-tools jq curl" >&2
    exit 1
  fi
done
if [[ ! -x "$signalbox" ]]; then
  echo "bench: $signalbox missing; run it as 'make bench' (which builds it first)" >&2
  exit 1
fi
go build -o bin/sbload ./cmd/sbload

work="$(mktemp -d -t signalbox-bench.XXXXXX)"
redis_pid="" gateway_pid=""
cleanup() {
  # The gateway first, so it does not log a lost bus while shutting down.
  if [[ -n "$gateway_pid" ]]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  if [[ -n "$redis_pid" ]]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  if [[ "${BENCH_KEEP:-}" == 1 ]]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

die() {
  echo "bench: $*" >&2
  if [[ -s "$work/gateway.log" ]]; then
    echo "--- last lines of the gateway's log ---" >&2
    tail -n 30 "$work/gateway.log" >&2
  fi
  exit 1
}

# free_port prints a loopback port nobody answers on. Ports come from below
# the kernel's ephemeral range so outgoing connections do not hold them.
taken=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ "$taken" == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
# Other work on the machine skews every figure; the report shows how busy it
# was when the bench started.
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

redis_port="$(free_port)"; taken+="$redis_port "
gateway_port="$(free_port)"; taken+="$gateway_port "
sub_port="$(free_port)"; taken+="$sub_port "

# cpu_ticks PID: user+system CPU of a process in clock ticks. The fields are
# counted after the ")" that closes the command name.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
hz="$(getconf CLK_TCK)"

# ---- private redis-server ----------------------------------------------------
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
  [[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" == PONG ]] && break
  sleep 0.1
done
[[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" == PONG ]] || die "redis-server did not answer on $redis_port"
redis_version="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"

# ---- 1. baseline ---------------------------------------------------------------
# redis-benchmark's -d sizes only its built-in SET/GET tests and a custom
# command gets no __data__ placeholder (just __rand_int__ and friends), so the
# 1 KiB value is spelled out.
value="$(head -c "$size" /dev/zero | tr '\0' x)"
echo "bench: redis-benchmark XADD, $xadd_requests requests, $clients clients, $size-byte value" >&2
redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$clients" -n "$xadd_requests" -q \
  XADD benchstream '*' e "$value" >"$work/xadd.out" 2>&1 || die "redis-benchmark failed: $(tail -c 300 "$work/xadd.out")"
xadd="$(tr '\r' '\n' <"$work/xadd.out" | grep -o '[0-9.]* requests per second' | tail -n 1 | awk '{print $1}')"
[[ -n "$xadd" ]] || die "no rate in redis-benchmark's output: $(tail -c 300 "$work/xadd.out")"
# redis-benchmark counts error replies as requests too: make sure each was
# an entry of the right size.
xlen="$(redis-cli -p "$redis_port" XLEN benchstream)"
[[ "$xlen" == "$xadd_requests" ]] || die "baseline stored $xlen entries, expected $xadd_requests"
stored="$(redis-cli -p "$redis_port" XRANGE benchstream - + COUNT 1 | tail -n 1)"
[[ "${#stored}" == "$size" ]] || die "baseline stored a ${#stored}-byte value, expected $size"
redis-cli -p "$redis_port" DEL benchstream >/dev/null

# sbload NAME URL ARGS...: one sbload run, JSON report in $work/NAME.json. A
# run that leaves events undelivered exits 3 but still reports; that is a
# finding, not a reason to stop.
sbload() {
  local name="$1" target="$2" rc=0
  shift 2
  bin/sbload -url "$target" -listen "127.0.0.1:$sub_port" -size "$size" -json -log-level warn "$@" \
    >"$work/$name.json" 2>"$work/$name.log" || rc=$?
  if [[ $rc != 0 && $rc != 3 ]]; then
    die "sbload ($name) failed with status $rc: $(cat "$work/$name.log")"
  fi
}

# ---- ceiling: sbload posting to its own subscriber -----------------------------
# A broker that does no work: what sbload and HTTP alone reach on this
# machine, so the gateway's figures can be read against it.
echo "bench: HTTP ceiling ($ceiling_duration, sbload posting to its own subscriber)" >&2
sbload ceiling "http://127.0.0.1:$sub_port/" -duration "$ceiling_duration" -concurrency "$clients" -drain 5s
# The same at the latency run's fixed rate: the share of the latency budget
# that sbload and the machine take before any broker is involved.
echo "bench: latency floor ($ceiling_duration at $rate/s, sbload posting to its own subscriber)" >&2
GOMAXPROCS=1 sbload floor "http://127.0.0.1:$sub_port/" -duration "$ceiling_duration" -rate "$rate" \
  -concurrency "$clients" -drain 5s

# ---- gateway -------------------------------------------------------------------
mkdir "$work/config"
cat >"$work/config/bench.yaml" <<YAML
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: bench
  namespace: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: sbload
  namespace: default
spec:
  broker: bench
  subscriber:
    uri: http://127.0.0.1:$sub_port/
YAML
# start_gateway BUS_FLAGS...: runs the gateway with the bench config and waits
# until it is ready.
start_gateway() {
  "$signalbox" serve --addr "127.0.0.1:$gateway_port" "$@" \
    --config "$work/config" --replica-id bench --log-level warn --shutdown-timeout 2s >"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 150); do
    kill -0 "$gateway_pid" 2>/dev/null || die "the gateway exited at start"
    curl -fs -o /dev/null "http://127.0.0.1:$gateway_port/readyz" && break
    sleep 0.1
  done
  curl -fs -o /dev/null "http://127.0.0.1:$gateway_port/readyz" || die "the gateway was not ready after 15s"
}
stop_gateway() {
  kill "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}
start_gateway --bus "redis://127.0.0.1:$redis_port/0"
url="http://127.0.0.1:$gateway_port/default/bench"

j() { jq -r "$2" "$work/$1.json"; }

# backlog: events the bus still holds for a group (not yet read, or read and
# not yet acknowledged), over every stream in the private redis.
backlog() {
  local total=0 key n
  # redis-cli 7.0 has no --type filter for --scan: ask each key.
  while IFS= read -r key; do
    [[ "$(redis-cli -p "$redis_port" TYPE "$key")" == stream ]] || continue
    n="$(redis-cli -p "$redis_port" XINFO GROUPS "$key" |
      awk 'prev == "pending" || prev == "lag" {s += ($0 ~ /^[0-9]+$/) ? $0 : 0} {prev = $0} END {print s + 0}')"
    total=$((total + n))
  done < <(redis-cli -p "$redis_port" --scan)
  echo "$total"
}
wait_backlog() {
  for _ in $(seq 150); do
    [[ "$(backlog)" == 0 ]] && return 0
    sleep 0.2
  done
  echo "bench: the bus still holds $(backlog) events; measuring anyway" >&2
}

# ---- warm-up: connections, pools, and proof that the pipeline delivers -----------
echo "bench: warm-up (2s at 500/s)" >&2
sbload warmup "$url" -duration 2s -rate 500 -concurrency "$clients" -drain 10s
[[ "$(j warmup .accepted)" -gt 0 ]] || die "warm-up: the ingress accepted nothing: $(j warmup -c '.statuses, .first_error')"
[[ "$(j warmup .delivered)" -gt 0 ]] || die "warm-up: $(j warmup .accepted) events accepted, none delivered to the subscriber"
wait_backlog

# ---- 2. throughput -------------------------------------------------------------
echo "bench: throughput ($duration, $clients closed-loop senders)" >&2
g0="$(cpu_ticks "$gateway_pid")"; r0="$(cpu_ticks "$redis_pid")"
GOMAXPROCS="${BENCH_THROUGHPUT_PROCS:-}" sbload throughput "$url" -duration "$duration" -concurrency "$clients" -drain 20s
kill -0 "$gateway_pid" 2>/dev/null || die "the gateway died during the throughput run"
g1="$(cpu_ticks "$gateway_pid")"; r1="$(cpu_ticks "$redis_pid")"
peak_rss_kb="$(status_kb "$gateway_pid" VmHWM)"
wait_backlog

# ---- 3. latency at a fixed rate ------------------------------------------------
# sbload runs on one OS thread here: at a modest rate Go's idle threads
# spinning for work would double its CPU and its own latency on a machine
# whose other core the gateway needs.
echo "bench: latency ($lat_duration at $rate/s, open loop)" >&2
l0="$(cpu_ticks "$gateway_pid")"; t0="$(date +%s.%N)"
GOMAXPROCS=1 sbload latency "$url" -duration "$lat_duration" -rate "$rate" -concurrency "$clients" -drain 10s
l1="$(cpu_ticks "$gateway_pid")"; t1="$(date +%s.%N)"
kill -0 "$gateway_pid" 2>/dev/null || die "the gateway died during the latency run"
peak_rss_kb="$(status_kb "$gateway_pid" VmHWM)"

# ---- 4. the embedded bus -------------------------------------------------------
# Same runs; sbload's drain waits for every accepted event to arrive, which
# stands in for the Redis backlog check.
stop_gateway
start_gateway --bus embedded --data-dir "$work/data"
echo "bench: embedded bus: warm-up, throughput ($duration), latency ($lat_duration at $rate/s)" >&2
sbload warmup_embedded "$url" -duration 2s -rate 500 -concurrency "$clients" -drain 10s
[[ "$(j warmup_embedded .delivered)" -gt 0 ]] || die "embedded warm-up: nothing delivered"
e0="$(cpu_ticks "$gateway_pid")"
GOMAXPROCS="${BENCH_THROUGHPUT_PROCS:-}" sbload throughput_embedded "$url" -duration "$duration" -concurrency "$clients" -drain 20s
e1="$(cpu_ticks "$gateway_pid")"
GOMAXPROCS=1 sbload latency_embedded "$url" -duration "$lat_duration" -rate "$rate" -concurrency "$clients" -drain 10s
kill -0 "$gateway_pid" 2>/dev/null || die "the gateway died during the embedded runs"
emb_rss_kb="$(status_kb "$gateway_pid" VmHWM)"

# ---- report --------------------------------------------------------------------
accepted_ps="$(j throughput .accepted_per_s)"
delivered_ps="$(j throughput .delivered_per_s)"
accepted_n="$(j throughput .accepted)"
p99="$(j latency .end_to_end.p99_ms)"

awk -v xadd="$xadd" -v ceil="$(j ceiling .accepted_per_s)" -v acc="$accepted_ps" -v del="$delivered_ps" \
  -v n="$accepted_n" -v gcpu="$((g1 - g0))" -v rcpu="$((r1 - r0))" -v lcpu="$((l1 - l0))" -v hz="$hz" \
  -v lwall="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" -v rss="$peak_rss_kb" \
  -v cores="$(nproc)" -v loadavg="$load_before" -v redisv="$redis_version" -v size="$size" -v clients="$clients" \
  -v rate="$rate" -v lacc="$(j latency .accepted_per_s)" -v lmiss="$(j latency .missing)" \
  -v lag99="$(j latency .start_lag.p99_ms)" -v en="$(j latency .end_to_end.count)" \
  -v e50="$(j latency .end_to_end.p50_ms)" -v p99="$p99" -v e999="$(j latency .end_to_end.p999_ms)" \
  -v emax="$(j latency .end_to_end.max_ms)" \
  -v i50="$(j latency .post_latency.p50_ms)" -v i99="$(j latency .post_latency.p99_ms)" \
  -v f50="$(j floor .end_to_end.p50_ms)" -v f99="$(j floor .end_to_end.p99_ms)" -v f999="$(j floor .end_to_end.p999_ms)" '
function commas(x,   s, out) {
  s = sprintf("%.0f", x); out = ""
  while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
  return s out
}
function verdict(ok) { return ok ? "met" : "MISSED" }
BEGIN {
  printf "\nsignalbox bench: one run on this machine (%d cores, load average %s at start), Redis %s, " \
    "%d-byte payloads, %d concurrent\n\n", cores, loadavg, redisv, size, clients
  printf "  %-40s %14s %8s   %s\n", "", "measured", "x XADD", "target"
  printf "  %-40s %12s/s %8s\n", "redis-benchmark XADD (baseline)", commas(xadd), "1.00"
  printf "  %-40s %12s/s %8.2f   (no broker work: sbload to itself)\n", "HTTP ceiling on this machine", commas(ceil), ceil / xadd
  ri = acc / xadd; rd = del / xadd
  printf "  %-40s %12s/s %8.2f   >= 0.35 x XADD   %s\n", "ingress accepted (202), closed loop", commas(acc), ri, verdict(ri >= 0.35)
  printf "  %-40s %12s/s %8.2f   >= 0.20 x XADD   %s\n", "delivered end to end, same run", commas(del), rd, verdict(rd >= 0.20)
  printf "  %-40s %11.2f ms %8s   p99 <= 2 ms      %s\n", "p99 POST -> subscriber at " commas(rate) "/s", p99, "", \
    verdict(en > 0 && lmiss == 0 && p99 <= 2)
  printf "\n  latency at %s/s (open loop, %d events delivered, %d never, %s/s accepted, sender start lag p99 %.2f ms):\n", \
    commas(rate), en, lmiss, commas(lacc), lag99
  printf "    POST -> subscriber  p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms   max %.2f ms\n", e50, p99, e999, emax
  printf "    POST -> 202         p50 %.2f ms   p99 %.2f ms\n", i50, i99
  printf "    floor (sbload to itself, no broker)   p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms\n", f50, f99, f999
  # Timer granularity alone gives about 1 ms of lag; much more means sbload
  # itself waited for a CPU, and so did everything else.
  if (lag99 > 3)
    printf "    WARNING: sbload started its POSTs up to %.1f ms late (p99): the machine was busy, latencies are unreliable\n", lag99
  printf "  gateway: %.2f CPU s per 10k events (throughput run, ingress + delivery), %.0f%% of a core at %s/s, " \
    "peak RSS %.1f MiB (whole bench)\n", (n > 0 ? gcpu / hz / n * 10000 : 0), (lwall > 0 ? lcpu / hz / lwall * 100 : 0), \
    commas(rate), rss / 1024
  printf "  redis-server: %.2f CPU s per 10k events (throughput run)\n", (n > 0 ? rcpu / hz / n * 10000 : 0)
}'

awk -v xadd="$xadd" -v acc="$(j throughput_embedded .accepted_per_s)" -v del="$(j throughput_embedded .delivered_per_s)" \
  -v n="$(j throughput_embedded .accepted)" -v cpu="$((e1 - e0))" -v hz="$hz" -v rss="$emb_rss_kb" -v rate="$rate" \
  -v e50="$(j latency_embedded .end_to_end.p50_ms)" -v e99="$(j latency_embedded .end_to_end.p99_ms)" \
  -v e999="$(j latency_embedded .end_to_end.p999_ms)" -v miss="$(j latency_embedded .missing)" '
BEGIN {
  printf "\n  embedded bus (JetStream in the gateway, fsync every 1s), same load:\n"
  printf "    ingress accepted %.0f/s (%.2f x XADD), delivered %.0f/s (%.2f x XADD), %.2f CPU s per 10k events, peak RSS %.1f MiB\n", \
    acc, acc / xadd, del, del / xadd, (n > 0 ? cpu / hz / n * 10000 : 0), rss / 1024
  printf "    at %d/s: POST -> subscriber p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms   (%d never delivered)\n", \
    rate, e50, e99, e999, miss
}'

for run in throughput latency throughput_embedded latency_embedded; do
  jq -r --arg run "$run" '"  \($run) run: sent \(.sent), accepted \(.accepted), non-202 \(
      if (.statuses | length) == 0 then "none" else (.statuses | to_entries | map("\(.key)×\(.value)") | join(" ")) end
    ), transport errors \(.transport_errors)\(if .first_error then " (\(.first_error))" else "" end); " +
    "delivered \(.delivered), missing after \(.drain_s * 100 | round / 100)s drain \(.missing), duplicates \(.duplicates), " +
    "unconfirmed \(.unconfirmed); sbload CPU \(.client_cpu_s * 100 | round / 100) s"' "$work/$run.json"
done
echo
echo "  reference: archived Redis-backed CloudEvents broker on a similar machine: 8,200 accepted/s, 4,500 delivered/s, p99 4.7 ms at 2,000/s"
echo "  (sbload, redis-server and the gateway share this machine's cores; the baseline ran before the gateway"
echo "  started; each delivered event costs two HTTP exchanges, its POST and its delivery, so about half the"
echo "  HTTP ceiling is the most end-to-end delivery can reach here)"
