#!/usr/bin/env bash
# Token polling over HTTP, measured from outside the process: wrk -t1 -c64 against the
# quickstart gateway (one worker thread, long polling off so that every poll is answered at once:
# `authorization_pending`, then `slow_down`), with the metrics off (no admin listener: the
# `metrics` facade has no recorder) and on (admin.listen: the Prometheus recorder counts and
# times every poll), beside a bare one-thread hyper server (examples/hello_upstream.rs) — the
# floor of any hyper-based server on this machine. Prints requests/s, wrk's p50/p99 and the
# server's CPU time per request (from /proc), REPS times each, interleaved. The gateway logs at
# `info`, the binary's default, so each poll's span (crate::trace) is enabled as users run it.
# BASE=<an older ciba-gateway binary> adds "poll, before" (metrics off) to each round: the
# difference of one change, measured side by side.
#
# Then the log under a failing store: the gateway on a real Redis that is then shut down,
# wrk on /approve/<43 characters> (unauthenticated) for 3 s; prints the failures answered and the
# bytes and lines the gateway wrote.
#
#   benches/poll_http.sh              # REPS=3 DURATION=10s
#
# wrk, the gateway and redis share this machine's cores: read the figures as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} DURATION=${DURATION:-10s}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --bin ciba-gateway --example hello_upstream

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

GW=19080 ADMIN=19464 HYPER=19000 REDIS=19379
sed -e "s/127.0.0.1:8080/127.0.0.1:$GW/g" -e 's/long_poll_secs: 25 /long_poll_secs: 0  /' \
  config/quickstart.yaml > "$tmp/off.yaml"
printf '\nserver: { threads: 1 }\n' >> "$tmp/off.yaml"
cp "$tmp/off.yaml" "$tmp/on.yaml"
printf 'admin: { listen: "127.0.0.1:%s" }\n' $ADMIN >> "$tmp/on.yaml"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# $1 label, $2 pid, $3… wrk arguments: one line of figures.
measure() {
  local label=$1 pid=$2; shift 2
  local t0 t1 out reqs ticks
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c64 -d"$DURATION" --latency "$@")
  t1=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  ticks=$(getconf CLK_TCK)
  printf '%-18s %9s req/s  p50 %8s  p99 %8s  CPU %6s µs/request\n' "$label" \
    "$(awk '/Requests\/sec/{print $2}' <<<"$out")" \
    "$(awk '$1=="50%"{print $2}' <<<"$out")" "$(awk '$1=="99%"{print $2}' <<<"$out")" \
    "$(awk -v d="$((t1 - t0))" -v r="$reqs" -v hz="$ticks" 'BEGIN{printf "%.2f", d*1e6/hz/r}')"
}
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; exit 1; }

poll() { # $1 off|on, $2 the binary (default: this tree's)
  RUST_LOG=info "${2:-target/release/ciba-gateway}" serve --config "$tmp/$1.yaml" >/dev/null 2>&1 &
  local pid=$!
  wait_port $GW
  local id
  id=$(curl -s -d client_id=my-client -d client_secret=supersecret -d scope=openid \
    -d login_hint=alice -d user_code=abc123 "http://127.0.0.1:$GW/bc-authorize" |
    sed -E 's/.*"auth_req_id":"([^"]+)".*/\1/')
  cat > "$tmp/poll.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&client_id=my-client&client_secret=supersecret&auth_req_id=$id"
LUA
  measure "poll, ${3:-metrics $1}" $pid -s "$tmp/poll.lua" "http://127.0.0.1:$GW/token"
  kill $pid; wait $pid 2>/dev/null || true
}

hyper() {
  target/release/examples/hello_upstream 127.0.0.1:$HYPER >/dev/null 2>&1 &
  local pid=$!
  wait_port $HYPER
  measure "bare hyper" $pid "http://127.0.0.1:$HYPER/"
  kill $pid; wait $pid 2>/dev/null || true
}

echo "== polling over HTTP (wrk -t1 -c64 -d$DURATION, one server thread)"
for _ in $(seq "$REPS"); do
  if [ -n "${BASE:-}" ]; then poll off "$BASE" before; fi
  poll off; poll on; hyper
done

echo "== the log while the store is down"
redis-server --port $REDIS --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
wait_port $REDIS
cp "$tmp/off.yaml" "$tmp/redis.yaml"
printf 'store: { type: redis, url: "redis://127.0.0.1:%s", timeout_ms: 200 }\n' $REDIS >> "$tmp/redis.yaml"
RUST_LOG=info target/release/ciba-gateway serve --config "$tmp/redis.yaml" >"$tmp/flood.log" 2>&1 &
gw=$!; pids+=($gw)
wait_port $GW
redis-cli -p $REDIS shutdown nosave >/dev/null 2>&1 || true
before=$(wc -c <"$tmp/flood.log"); lines_before=$(wc -l <"$tmp/flood.log")
out=$(wrk -t1 -c64 -d3s "http://127.0.0.1:$GW/approve/$(printf 'A%.0s' $(seq 43))")
after=$(wc -c <"$tmp/flood.log"); lines_after=$(wc -l <"$tmp/flood.log")
printf '%s failed requests in 3 s; the log grew by %s lines, %s bytes\n' \
  "$(awk '/requests in/{print $1}' <<<"$out")" "$((lines_after - lines_before))" "$((after - before))"
