#!/usr/bin/env python3
"""Memory per idle connection and per held poll, measured from outside the process: the RSS
(VmRSS in /proc) of a running `ciba-gateway serve` before and after N idle HTTP/1.1
connections, then before and after N long polls held on N pending requests (one connection
each, as HTTP/1.1 clients hold them), and after they are all answered.

    benches/held_polls_rss.py target/release/ciba-gateway [N] [tower|pingora]
    benches/held_polls_rss.py target/release/examples/hello_upstream [N] hyper
    benches/held_polls_rss.py target/release/examples/bare_pingora [N] pingora-floor
    HELD_ONLY=1 benches/held_polls_rss.py …   # the held polls alone, on a fresh process

Uses only the Python standard library; the gateway runs the quickstart file with long polling
at 120 s, the rate limits off and room for N held polls of one client. `hyper` is the floor
under the tower runtime: a bare one-thread hyper server (examples/hello_upstream.rs, `hold`)
that holds every request it reads, unanswered, measured the same way with the same requests;
`pingora-floor` is the one under the pingora runtime: a bare one-thread pingora proxy
(examples/bare_pingora.rs, `hold`) whose `request_filter` reads each request and never answers.
"""
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BIN = os.path.abspath(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
ENGINE = sys.argv[3] if len(sys.argv) > 3 else "tower"
PORT = 19300
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FORM = {"client_id": "my-client", "client_secret": "supersecret"}
# The servers with no gateway in them: each holds whatever request it reads.
FLOORS = ("hyper", "pingora-floor")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    """The RSS once it has stopped moving (sampled every 200 ms)."""
    last = rss_kib(pid)
    for _ in range(50):
        time.sleep(0.2)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def post(path, form):
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", data) as r:
        return json.load(r)


async def idle_connections(n):
    conns = [await asyncio.open_connection("127.0.0.1", PORT) for _ in range(n)]
    return conns


async def held_polls(ids):
    conns = []
    for auth_req_id in ids:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        body = urllib.parse.urlencode(
            dict(FORM, grant_type="urn:openid:params:grant-type:ciba", auth_req_id=auth_req_id)
        ).encode()
        writer.write(
            b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        conns.append((reader, writer))
    return conns


async def main(pid):
    print(f"{ENGINE}, N={N}")
    base = settle(pid)
    print(f"started:                     RSS {base} KiB")
    if not os.environ.get("HELD_ONLY"):
        conns = await idle_connections(N)
        idle = settle(pid)
        print(f"{N} idle connections:       RSS {idle} KiB  (+{(idle - base) * 1024 / N:.0f} bytes each)")
        for _, w in conns:
            w.close()
        await asyncio.sleep(1)
    ids = [
        "x" * 43 if ENGINE in FLOORS
        else post("/bc-authorize", dict(FORM, scope="openid", login_hint="alice"))["auth_req_id"]
        for _ in range(N)
    ]
    pending = settle(pid)
    print(f"{N} pending requests:       RSS {pending} KiB")
    polls = await held_polls(ids)
    held = settle(pid)
    print(f"{N} held polls:             RSS {held} KiB  (+{(held - pending) * 1024 / N:.0f} bytes each)")
    if os.environ.get("HELD_ONLY"):
        # The allocator may commit memory ahead while the pending requests are made, which the
        # held polls then use: the step above can hide part of their cost, this sum cannot.
        print(f"  with their pending requests, from the start: +{(held - base) * 1024 / N:.0f} bytes each")
    for _, w in polls:
        w.close()
    await asyncio.sleep(1)
    after = settle(pid)
    print(f"all closed:                  RSS {after} KiB")


def run():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * N + 100)), hard))
    with open(os.path.join(ROOT, "config/quickstart.yaml")) as f:
        cfg = f.read().replace("127.0.0.1:8080", f"127.0.0.1:{PORT}")
    cfg = cfg.replace("long_poll_secs: 25 ", "long_poll_secs: 120")
    cfg += (
        f"\nengine: {ENGINE}\nlimits: {{ bc_per_client: null, bc_per_user: null }}\n"
        f"server: {{ max_connections: {2 * N + 10}, header_read_timeout_secs: 60, idle_timeout_secs: 120 }}\n"
    )
    cfg = cfg.replace("  long_poll_secs: 120", f"  long_poll_secs: 120\n  max_held_polls_per_client: {N}")
    if ENGINE == "pingora":
        cfg += f'upstream: {{ url: "http://127.0.0.1:9" }}\n'
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gateway.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        env = dict(os.environ, RUST_LOG="warn")
        args = {
            "hyper": [BIN, f"127.0.0.1:{PORT}", "hold"],
            "pingora-floor": [BIN, f"127.0.0.1:{PORT}", "127.0.0.1:9", "1", "hold"],
        }.get(ENGINE, [BIN, "serve", "--config", path])
        gw = subprocess.Popen(args, cwd=d, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    if ENGINE in FLOORS:
                        socket.create_connection(("127.0.0.1", PORT)).close()
                    else:
                        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(main(gw.pid))
        finally:
            gw.terminate()
            gw.wait()


run()
