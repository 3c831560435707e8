#!/usr/bin/env python3
"""What a live reload costs, measured from outside the process: a running `ciba-gateway serve`
with N configured clients (argon2 secrets, as the quickstart's) is reloaded R times by
`POST /reload` on its admin listener while a client polls it; prints the reload's wall time
as the operator's curl sees it (p50, max), the RSS (VmRSS) before and after, and the polls'
latency during the reloads beside without them. Every reload swaps in a file with one client
more or less, so each one rebuilds every client.

    benches/reload.py target/release/ciba-gateway [N] [R]

Uses only the Python standard library.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

BIN = os.path.abspath(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
R = int(sys.argv[3]) if len(sys.argv) > 3 else 20
PORT, ADMIN = 19310, 19311
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SECRET = "$argon2id$v=19$m=19456,t=2,p=1$iC3gOvlNGMU+N/1tiaagug$i4yO1+B2mKlzGXZ7nUouZ5l9cAYEn8mUlnLVHuuFDQo"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def config(n):
    base = open(os.path.join(ROOT, "config/quickstart.yaml")).read()
    base = base.replace("127.0.0.1:8080", f"127.0.0.1:{PORT}")
    base = base.replace("long_poll_secs: 25 ", "long_poll_secs: 0  ")
    extra = "".join(
        f"  - {{ client_id: bench-{i}, secret: \"{SECRET}\", "
        f"token_endpoint_auth_method: client_secret_post }}\n"
        for i in range(n)
    )
    base = base.replace("clients:\n", "clients:\n" + extra, 1)
    return base + f'\nadmin: {{ listen: "127.0.0.1:{ADMIN}" }}\nlimits: {{ bc_per_client: null, bc_per_user: null }}\n'


def poll_ms(auth_req_id):
    form = urllib.parse.urlencode({
        "grant_type": "urn:openid:params:grant-type:ciba", "client_id": "my-client",
        "client_secret": "supersecret", "auth_req_id": auth_req_id,
    }).encode()
    started = time.perf_counter()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/token", form).read()
    except urllib.error.HTTPError as e:
        e.read()
        assert e.code == 400, e.code
    return (time.perf_counter() - started) * 1000


def main():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "gateway.yaml")
    with open(path, "w") as f:
        f.write(config(N))
    gw = subprocess.Popen([BIN, "serve", "--config", path], cwd=d,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz").read()
                break
            except OSError:
                time.sleep(0.1)
        form = urllib.parse.urlencode({
            "client_id": "my-client", "client_secret": "supersecret", "scope": "openid",
            "login_hint": "alice", "user_code": "abc123"}).encode()
        auth_req_id = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/bc-authorize", form))["auth_req_id"]
        quiet = [poll_ms(auth_req_id) for _ in range(300)]
        rss_before = rss_kib(gw.pid)
        during, stop = [], threading.Event()

        def poller():
            while not stop.is_set():
                during.append(poll_ms(auth_req_id))

        t = threading.Thread(target=poller)
        t.start()
        took = []
        for r in range(R):
            with open(path, "w") as f:
                f.write(config(N + (r + 1) % 2))
            started = time.perf_counter()
            body = urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{ADMIN}/reload", method="POST")).read()
            took.append((time.perf_counter() - started) * 1000)
            assert b'"changed":["clients"]' in body, body
        stop.set()
        t.join()
        rss_after = rss_kib(gw.pid)
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]
        print(f"{N} clients, {R} reloads by POST /reload:")
        print(f"  reload wall time: p50 {statistics.median(took):.1f} ms, max {max(took):.1f} ms")
        print(f"  RSS: {rss_before} KiB before, {rss_after} KiB after")
        print(f"  polls without reloads: p50 {q(quiet, .5):.2f} ms, p99 {q(quiet, .99):.2f} ms ({len(quiet)})")
        print(f"  polls during reloads:  p50 {q(during, .5):.2f} ms, p99 {q(during, .99):.2f} ms, max {max(during):.2f} ms ({len(during)})")
    finally:
        gw.terminate()
        gw.wait()


if __name__ == "__main__":
    main()
