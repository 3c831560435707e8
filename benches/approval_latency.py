#!/usr/bin/env python3
"""Approval → tokens, as an external client sees it: from the moment the user's approval is
sent (the POST of the built-in approval page) to the moment the client holds its tokens —
  * long poll: the client's poll is held (seen on the admin listener's `ciba_held_polls`)
    before the approval; the time ends when the poll's answer arrives;
  * ping: the time ends when the client, pinged at its notification endpoint (a plain HTTP
    server here), has redeemed the tokens at the token endpoint.

    benches/approval_latency.py target/release/ciba-gateway [SAMPLES] [tower|pingora]

The quickstart file (its demo clients, the log channel: the approval link is read from the
gateway's log), rate limits off. Standard library only; prints p50 and p99 per mode.
"""
import http.client
import http.server
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BIN = os.path.abspath(sys.argv[1])
SAMPLES = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ENGINE = sys.argv[3] if len(sys.argv) > 3 else "tower"
PORT, ADMIN, PING = 19400, 19401, 19402
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GRANT = "urn:openid:params:grant-type:ciba"


def request(method, path, form=None, headers=None, port=PORT):
    c = http.client.HTTPConnection("127.0.0.1", port)
    body = urllib.parse.urlencode(form) if form is not None else None
    h = dict(headers or {})
    if body is not None:
        h["Content-Type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def start(client, secret, lines, **extra):
    r, data = request("POST", "/bc-authorize", dict(
        client_id=client, client_secret=secret, scope="openid", login_hint="alice", **extra))
    assert r.status == 200, data
    auth_req_id = json.loads(data)["auth_req_id"]
    while True:
        line = lines.get(timeout=10)
        if os.environ.get("DEBUG"):
            print(line, end="")
        m = re.search(r"http://\S+/approve/[A-Za-z0-9_-]+", line)
        if m:
            return auth_req_id, urllib.parse.urlparse(m.group(0)).path


def approval_form(path):
    """Opens the approval page: the cookie and the form to send."""
    r, html = request("GET", path)
    assert r.status == 200, html
    cookie = r.getheader("set-cookie").split(";")[0]
    csrf = re.search(rb'name="csrf" value="([^"]+)"', html).group(1).decode()
    return cookie, {"csrf": csrf, "decision": "approve"}


def held_polls():
    _, page = request("GET", "/metrics", port=ADMIN)
    m = re.search(rb"^ciba_held_polls (\S+)$", page, re.M)
    return float(m.group(1)) if m else 0.0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def long_poll(lines):
    out = []
    for _ in range(SAMPLES):
        auth_req_id, path = start("my-client", "supersecret", lines)
        cookie, form = approval_form(path)
        done = {}

        def poll():
            r, data = request("POST", "/token", dict(
                grant_type=GRANT, client_id="my-client", client_secret="supersecret",
                auth_req_id=auth_req_id))
            done["at"], done["status"] = time.perf_counter(), r.status

        t = threading.Thread(target=poll)
        t.start()
        while held_polls() < 1:
            time.sleep(0.001)
        sent = time.perf_counter()
        request("POST", path, form, {"Cookie": cookie})
        t.join()
        assert done["status"] == 200
        out.append(done["at"] - sent)
    return out


def ping(lines):
    pinged = queue.Queue()

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()
            auth_req_id = json.loads(body)["auth_req_id"]
            r, _ = request("POST", "/token", dict(
                grant_type=GRANT, client_id="ping-client", client_secret="supersecret",
                auth_req_id=auth_req_id))
            pinged.put((time.perf_counter(), r.status))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", PING), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = []
    for _ in range(SAMPLES):
        _, path = start("ping-client", "supersecret", lines, client_notification_token="bench")
        cookie, form = approval_form(path)
        sent = time.perf_counter()
        request("POST", path, form, {"Cookie": cookie})
        at, status = pinged.get(timeout=10)
        assert status == 200
        out.append(at - sent)
    server.shutdown()
    return out


def run():
    with open(os.path.join(ROOT, "config/quickstart.yaml")) as f:
        cfg = f.read()
    cfg = (cfg.replace("127.0.0.1:8080", f"127.0.0.1:{PORT}")
              .replace("127.0.0.1:9090", f"127.0.0.1:{PING}"))
    cfg += (f"\nengine: {ENGINE}\nlimits: {{ bc_per_client: null, bc_per_user: null }}\n"
            f'admin: {{ listen: "127.0.0.1:{ADMIN}" }}\n')
    if ENGINE == "pingora":
        cfg += 'upstream: { url: "http://127.0.0.1:9" }\n'
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gateway.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        gw = subprocess.Popen([BIN, "serve", "--config", path], cwd=d, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in gw.stdout], daemon=True).start()
        try:
            for _ in range(100):
                try:
                    request("GET", "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            for name, mode in (("long poll", long_poll), ("ping (+ token request)", ping)):
                xs = mode(lines)
                print(f"{ENGINE} {name}: p50 {percentile(xs, 50) * 1e3:.2f} ms, "
                      f"p99 {percentile(xs, 99) * 1e3:.2f} ms ({len(xs)} samples)")
        finally:
            gw.terminate()
            gw.wait()


run()
