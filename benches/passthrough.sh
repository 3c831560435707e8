#!/usr/bin/env bash
# Pass-through throughput and p99 latency, in one run: straight to a hyper upstream, through
# ciba-gateway (pingora engine, and tower engine), through a bare pingora proxy with no gateway
# code (examples/bare_pingora.rs: the floor of any pingora proxy), and through nginx as a
# reverse proxy. Same worker count for every proxy; wrk on loopback. Prints the median of REPS
# runs.
#
#   benches/passthrough.sh                   # WORKERS=1 CONNS=64 DURATION=10s REPS=3
#   WORKERS=2 benches/passthrough.sh
#
# All servers and wrk share this machine's cores: read the figures as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-1} CONNS=${CONNS:-64} DURATION=${DURATION:-10s} REPS=${REPS:-3}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet --bin ciba-gateway --example hello_upstream --example bare_pingora

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

UP=19000 PINGORA=19001 NGINX_PORT=19002 TOWER=19003 BARE=19004
target/release/examples/hello_upstream 127.0.0.1:$UP >/dev/null & pids+=($!)

for engine in pingora tower; do
  port=$([ $engine = pingora ] && echo $PINGORA || echo $TOWER)
  cat > "$tmp/$engine.yaml" <<YAML
listen: 127.0.0.1:$port
public_url: http://127.0.0.1:$port
engine: $engine
server: { threads: $WORKERS }
upstream: { url: "http://127.0.0.1:$UP" }
YAML
  RUST_LOG=warn target/release/ciba-gateway serve --config "$tmp/$engine.yaml" >/dev/null 2>&1 & pids+=($!)
done

cat > "$tmp/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
"$NGINX" -c "$tmp/nginx.conf" -p "$tmp" & pids+=($!)

target/release/examples/bare_pingora 127.0.0.1:$BARE 127.0.0.1:$UP "$WORKERS" >/dev/null 2>&1 &
pids+=($!)

for port in $UP $PINGORA $TOWER $NGINX_PORT $BARE; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# CPU time (user + system) of a process and its children, in clock ticks: throughput on a
# shared 2-core box is noisy, CPU per request much less so.
declare -A pid_of
pid_of[direct]=${pids[0]} pid_of[pingora]=${pids[1]} pid_of[tower]=${pids[2]} pid_of[nginx]=${pids[3]}
pid_of[bare]=${pids[4]}
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
TICK=$(getconf CLK_TCK)

declare -A rps p99 cpu
for rep in $(seq "$REPS"); do
  for t in direct:$UP pingora:$PINGORA bare:$BARE tower:$TOWER nginx:$NGINX_PORT; do
    name=${t%%:*} port=${t##*:}
    before=$(cpu_ticks "${pid_of[$name]}")
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
    after=$(cpu_ticks "${pid_of[$name]}")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu[$name]+="$(awk -v t=$((after - before)) -v n="$total" -v hz="$TICK" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') "
    rps[$name]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    # wrk prints 850.12us / 1.58ms / 1.02s: normalise to ms.
    p99[$name]+="$(awk '$1=="99%" {v=$2; u=v; gsub(/[0-9.]/,"",u); gsub(/[a-z]/,"",v);
      printf "%.2f", (u=="us" ? v/1000 : (u=="s" ? v*1000 : v))}' <<<"$out") "
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\nworkers=%s connections=%s duration=%s reps=%s (median)\n' "$WORKERS" "$CONNS" "$DURATION" "$REPS"
printf '%-10s %12s %10s %12s\n' target req/s p99_ms cpu_us/req
for name in direct pingora bare tower nginx; do
  printf '%-10s %12s %10s %12s   (req/s: %s| p99 ms: %s| cpu us: %s)\n' "$name" "$(median "${rps[$name]}")" \
    "$(median "${p99[$name]}")" "$(median "${cpu[$name]}")" "${rps[$name]}" "${p99[$name]}" "${cpu[$name]}"
done
echo "cpu_us/req: CPU time (user + system) of the server process (nginx: master and workers) per request."
echo "bare: a pingora ProxyHttp with only upstream_peer, no gateway code (examples/bare_pingora.rs)."
