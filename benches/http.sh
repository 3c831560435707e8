#!/usr/bin/env bash
# CIBA over HTTP against the provider users would otherwise pick, same run, same machine:
# ciba-gateway (tower and pingora engines, the quickstart file with one worker thread, long
# polling off, no rate limits, room for a million pending requests; the pingora runtime needs an
# upstream, so it gets the hyper server, whose discovery it would merge: no discovery row for it),
# node-oidc-provider with its CIBA feature on
# (tests/upstream/ciba_provider.mjs, from npm as users run it; one Node.js thread), and a bare
# one-thread hyper server (examples/hello_upstream.rs: the floor of a hyper-based server) and a
# bare one-thread pingora proxy answering from its request_filter (examples/bare_pingora.rs
# `answer`: the floor of a pingora-based server, what the pingora rows are measured against).
# wrk -t1 -c64 on loopback drives, per server: discovery (GET), a poll of a pending request
# (POST /token: the gateway answers `slow_down` to a client this fast, oidc-provider
# `authorization_pending`), and backchannel authentication requests (POST, client_secret_post,
# login_hint). All of it REPS times, in rounds (each round starts every server afresh); prints,
# per row, the round with the median CPU time per request (the server's own, from /proc): its
# requests/s, wrk's p50/p99, that CPU time, and the median over the rounds of the row's CPU time
# divided by the bare hyper server's in the same round (the issue's goals are such ratios; the
# machine's speed drifts by a fifth between runs, a ratio within a round much less).
#
#   benches/http.sh                  # REPS=3 DURATION=10s
#
# Installs what it needs (wrk, cmake, Node.js, the pinned oidc-provider). All servers and wrk
# share this machine's cores: read the figures as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} DURATION=${DURATION:-10s}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -d tests/upstream/node_modules/oidc-provider ] ||
  npm ci --prefix tests/upstream --no-audit --no-fund --loglevel=error
cargo build --release --quiet --bin ciba-gateway --example hello_upstream --example bare_pingora

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }
# $1 server, $2 scenario, $3 pid, $4… wrk arguments: one measurement, appended to $tmp/rows as
# round|server|scenario|requests/s|p50|p99|CPU µs per request|non-2xx.
measure() {
  local server=$1 scenario=$2 pid=$3; shift 3
  local t0 t1 out
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c64 -d"$DURATION" --latency "$@")
  t1=$(cpu_ticks "$pid")
  awk -v round="$round" -v server="$server" -v scenario="$scenario" -v d="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" '
    /requests in/ { reqs = $1 }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 }
    $1 == "99%" { p99 = $2 }
    /Non-2xx/ { non2xx = $NF }
    END { printf "%s|%s|%s|%.0f|%s|%s|%.2f|%s\n", round, server, scenario, rps, p50, p99, d * 1e6 / hz / reqs, non2xx + 0 }' <<<"$out" >>"$tmp/rows"
}
form_lua() { # $1 file, $2 body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\nwrk.body = "%s"\n' "$2" >"$1"
}
AUTH="client_id=my-client&client_secret=supersecret"

# $1 server, $2 pid, $3 base URL, $4 backchannel path, $5 "discovery" to measure it too.
ciba_rows() {
  local server=$1 pid=$2 base=$3 bc=$4 id
  [ "${5:-}" != discovery ] || measure "$server" discovery "$pid" "$base/.well-known/openid-configuration"
  id=$(curl -s -d "$AUTH&scope=openid&login_hint=alice" "$base$bc" |
    sed -E 's/.*"auth_req_id":"([^"]+)".*/\1/')
  form_lua "$tmp/poll.lua" "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&$AUTH&auth_req_id=$id"
  measure "$server" "poll (pending)" "$pid" -s "$tmp/poll.lua" "$base/token"
  form_lua "$tmp/bc.lua" "$AUTH&scope=openid&login_hint=alice"
  measure "$server" bc-authorize "$pid" -s "$tmp/bc.lua" "$base$bc"
}

for round in $(seq "$REPS"); do
  echo "round $round of $REPS" >&2
  HYPER=19100
  target/release/examples/hello_upstream 127.0.0.1:$HYPER >/dev/null 2>&1 &
  hyper=$!; pids+=($hyper)
  wait_port $HYPER
  measure "bare hyper" "GET /" $hyper "http://127.0.0.1:$HYPER/"
  BARE=19099
  target/release/examples/bare_pingora 127.0.0.1:$BARE 127.0.0.1:$HYPER 1 answer >/dev/null 2>&1 &
  bare=$!; pids+=($bare)
  wait_port $BARE
  form_lua "$tmp/bare.lua" "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&$AUTH&auth_req_id=x"
  measure "bare pingora" "POST, answered in request_filter" $bare -s "$tmp/bare.lua" "http://127.0.0.1:$BARE/token"
  # SIGKILL: pingora's graceful shutdown would wait out its grace period.
  kill -9 $bare; wait $bare 2>/dev/null || true

  port=$HYPER
  for engine in tower pingora; do
    port=$((port + 1))
    sed -e "s/127.0.0.1:8080/127.0.0.1:$port/g" -e 's/long_poll_secs: 25 /long_poll_secs: 0  /' \
      config/quickstart.yaml >"$tmp/$engine.yaml"
    cat >>"$tmp/$engine.yaml" <<YAML
engine: $engine
server: { threads: 1 }
limits: { bc_per_client: null, bc_per_user: null }
store: { type: memory, capacity: 1000000 }
YAML
    discovery=discovery
    if [ $engine = pingora ]; then
      echo "upstream: { url: \"http://127.0.0.1:$HYPER\" }" >>"$tmp/$engine.yaml"
      discovery=
    fi
    # The approval links of the log channel are info lines: warn keeps the log out of the figures.
    RUST_LOG=warn target/release/ciba-gateway serve --config "$tmp/$engine.yaml" >/dev/null 2>&1 &
    pid=$!; pids+=($pid)
    wait_port $port
    ciba_rows "ciba-gateway ($engine)" $pid "http://127.0.0.1:$port" /bc-authorize $discovery
    kill $pid; wait $pid 2>/dev/null || true
  done

  port=$((port + 1))
  (cd tests/upstream && PORT=$port exec node ciba_provider.mjs >/dev/null 2>&1) &
  pid=$!; pids+=($pid)
  wait_port $port
  ciba_rows "node-oidc-provider" $pid "http://127.0.0.1:$port" /backchannel discovery
  kill $pid $hyper; wait $pid $hyper 2>/dev/null || true
done

# Per row (in the order measured): the round with the median CPU per request, and the median of
# the row's per-round ratio to bare hyper.
echo "| server | request | requests/s | p50 | p99 | server CPU µs/request | × bare hyper | non-2xx |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'|' '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { key = $2 "|" $3; if (!(key in n)) order[++rows] = key
    n[key]++; line[key, n[key]] = $0; cpu[key, n[key]] = $7
    if ($2 == "bare hyper") hyper[$1] = $7; round[key, n[key]] = $1 }
  END {
    for (r = 1; r <= rows; r++) {
      key = order[r]; m = n[key]
      for (i = 1; i <= m; i++) { c[i] = cpu[key, i]; x[i] = cpu[key, i] / hyper[round[key, i]] }
      mc = median(c, m); mx = median(x, m)
      # The round closest to the median (with an even count, the median is between two).
      best = 1; for (i = 2; i <= m; i++) if ((cpu[key, i] - mc) ^ 2 < (cpu[key, best] - mc) ^ 2) best = i
      split(line[key, best], f, "|")
      printf "| %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n", f[2], f[3], f[4], f[5], f[6], mc, mx, f[8]
    }
  }' "$tmp/rows"
