#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A fault-injecting HTTP(S) proxy for one OAuth token endpoint (Python standard library only).

    python3 faultproxy.py --upstream http://127.0.0.1:PORT [--tls-dir DIR] [--port N]

It listens on 127.0.0.1 (plain HTTP, or TLS with DIR/server.pem and DIR/server.key) and forwards
each request to the upstream server (the real loopback OAuth server) unless a fault is set.
Once listening it prints one JSON line on stdout:
    {"ready": true, "port": P, "url": "https://127.0.0.1:P", "control_port": C}
and logs to stderr. Every response carries "Connection: close", so each request is a
connection of its own and the attempts of the client can be counted one by one.

Control channel: plain HTTP on 127.0.0.1:C.
    POST /fault   JSON {"mode": MODE, ...parameters}: sets the current fault. Answers once it is
                  in force (for "refused": once the port no longer listens). Stalled and slow
                  connections of the previous fault are released (closed).
    GET  /stats   JSON {"fault": {...}, "now": MONOTONIC, "counts": {MODE: N}, "attempts": [...]}
                  (counts: connections accepted per mode since the last reset); each attempt is
                  a connection: {"id", "mode", "t_accept", "t_request", "t_end", "outcome",
                  "status", "bytes_sent", "peer_closed", "t_peer_closed", "error"} (times are
                  CLOCK_MONOTONIC seconds, comparable with time.monotonic() of any local process;
                  bytes_sent counts completed writes only).
    POST /reset   forgets the attempts recorded so far.

Modes (parameters in brackets):
    pass            forward to the upstream server (the default)
    refused         the port stops listening: connections are refused (RST to the SYN). The
                    port stays bound by a socket that does not listen (only another SO_REUSEADDR
                    socket could bind it meanwhile); it listens again when the mode changes. No
                    attempt can be seen here in this mode: count the client's own failures.
    stall           accept, read the request, never answer (until the peer gives up, or the mode
                    changes: then the connection is closed)
    slow            [delay=S, dribble=S] wait S seconds, then forward the request upstream, then
                    send the real answer: the headers, then the body a few bytes at a time over
                    `dribble` seconds. The request is forwarded only if the peer is still there.
    status          [status=N, retry_after=S, body=TEXT, content_type=T] answer HTTP N (e.g.
                    500, 502, 503, 429) without forwarding; by default a JSON OAuth error body
                    (temporarily_unavailable) for 5xx and 429
    nonjson         200 with an HTML body (not JSON), not forwarded
    truncated       200, Content-Length larger than the bytes sent (the start of a JSON token
                    response), then the connection is closed (TLS: after close_notify)
    huge            [size=BYTES, chunked=BOOL] 200 with a body of `size` bytes (default 64 MiB),
                    streamed (chunked, or with Content-Length), that starts like a token response
    oauth_error     [status=N, error=CODE, description=TEXT] an OAuth error response, e.g.
                    400 invalid_grant, 401 invalid_client (with WWW-Authenticate), not forwarded
    tls_untrusted   TLS with a self-signed certificate (DIR/selfsigned.*) instead of the one
                    the client's CA signed; the request, if any, is forwarded as for pass
    tls_hostname    TLS with a certificate the CA signed for another host name (DIR/wronghost.*)
    tls_plain       a plain HTTP answer on the TLS port (no handshake)

Nothing is ever forwarded for a fault that would lose the answer: the upstream server rotates
refresh tokens, and a rotated token the client never saw would kill the grant.

make_test_pki(DIR) writes a test CA (ca.pem) and the certificates above with `openssl`.
"""

import argparse
import http.client
import http.server
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

HOST = "127.0.0.1"
MIB = 1024 * 1024


def log(msg):
    sys.stderr.write(f"faultproxy: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Test PKI

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")


def make_test_pki(d):
    """Writes into directory d: ca.pem/ca.key (a test CA), server.pem/key (CA-signed, SAN
    IP:127.0.0.1), wronghost.pem/key (CA-signed, SAN DNS:wrong-host.invalid) and
    selfsigned.pem/key (self-signed, SAN IP:127.0.0.1). Returns the path of ca.pem."""
    os.makedirs(d, mode=0o700, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=tokend fault suite test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, san in (("server", "127.0.0.1", "IP:127.0.0.1"),
                          ("wronghost", "wrong-host.invalid", "DNS:wrong-host.invalid")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "selfsigned.key", "-out", "selfsigned.pem", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    return os.path.join(d, "ca.pem")


# ---------------------------------------------------------------------------
# The proxy

class Released(Exception):
    """The mode changed while a connection was held: it is closed."""


class PeerClosed(Exception):
    pass


def _server_context(tls_dir, name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(tls_dir, f"{name}.pem"), os.path.join(tls_dir, f"{name}.key"))
    ctx.set_alpn_protocols(["http/1.1"])  # libcurl offers h2 too; this proxy speaks HTTP/1.1
    return ctx


class FaultProxy:
    def __init__(self, upstream, tls_dir=None, port=0):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream}")
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.tls = None
        if tls_dir:
            self.tls = {n: _server_context(tls_dir, n) for n in ("server", "selfsigned", "wronghost")}
        self.lock = threading.Lock()
        self.fault = {"mode": "pass"}
        self.fault_gen = 0
        self.release = threading.Event()  # set (and replaced) when the mode changes
        self.attempts = []
        self.next_id = 1
        self.running = True
        # The listening socket; in mode "refused" a bound socket that does not listen.
        self.listener = self._make_socket(port)
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.listening = True
        self.want_listening = True
        self.transition_done = threading.Condition(self.lock)
        self.accept_thread = threading.Thread(target=self._accept_loop, name="accept", daemon=True)

    @staticmethod
    def _make_socket(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        return s

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def start(self):
        self.accept_thread.start()

    # -- faults --
    def set_fault(self, fault, timeout=5.0):
        if not isinstance(fault, dict) or not isinstance(fault.get("mode"), str):
            raise ValueError("fault must be a JSON object with a string 'mode'")
        if fault["mode"] not in MODES:
            raise ValueError(f"unknown mode {fault['mode']!r} (known: {', '.join(sorted(MODES))})")
        if fault["mode"].startswith("tls_") and not self.tls:
            raise ValueError(f"mode {fault['mode']} needs --tls-dir")
        with self.lock:
            old = self.release
            self.release = threading.Event()
            self.fault = dict(fault)
            self.fault_gen += 1
            self.want_listening = fault["mode"] != "refused"
            old.set()
            deadline = time.monotonic() + timeout
            while self.listening != self.want_listening:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("the accept loop did not apply the listening state in time")
                self.transition_done.wait(left)
        log(f"fault set: {json.dumps(fault)}")
        return self.fault

    def stats(self):
        with self.lock:
            counts = {}
            for a in self.attempts:
                counts[a["mode"]] = counts.get(a["mode"], 0) + 1
            return {"fault": dict(self.fault), "now": time.monotonic(), "port": self.port, "counts": counts,
                    "attempts": [dict(a) for a in self.attempts]}

    def reset(self):
        with self.lock:
            self.attempts = []

    # -- accepting --
    def _apply_listening(self):
        """Runs on the accept thread only: makes the socket listen or stop listening."""
        with self.lock:
            want = self.want_listening
            if want == self.listening:
                return
            if want:
                try:
                    self.listener.listen(64)
                except OSError as e:  # set_fault() times out and says so
                    log(f"cannot listen again on port {self.port}: {e}")
                    return
            else:
                # Closing the listening socket drops its queue; a new socket bound to the same
                # port (not listening) keeps the port ours while connections are refused.
                self.listener.close()
                self.listener = self._make_socket(self.port)
            self.listening = want
            self.transition_done.notify_all()
        log("listening" if want else "not listening: connections are refused")

    def _accept_loop(self):
        while self.running:
            self._apply_listening()
            if not self.listening:
                time.sleep(0.02)
                continue
            try:
                r, _, _ = select.select([self.listener], [], [], 0.05)
            except (OSError, ValueError):
                continue
            if not r:
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                rec = {"id": self.next_id, "mode": self.fault["mode"], "t_accept": time.monotonic(),
                       "t_request": None, "t_end": None, "outcome": None, "status": None, "bytes_sent": 0,
                       "peer_closed": False, "t_peer_closed": None, "error": None}
                self.next_id += 1
                self.attempts.append(rec)
                fault, release = dict(self.fault), self.release
            threading.Thread(target=self._handle, args=(conn, rec, fault, release), daemon=True,
                             name=f"conn-{rec['id']}").start()

    # -- one connection --
    def _handle(self, raw, rec, fault, release):
        conn = raw
        mode = fault["mode"]
        try:
            raw.settimeout(30)
            if mode == "tls_plain":
                # Whatever the client sends (a ClientHello), it gets plain HTTP back.
                try:
                    raw.recv(4096)
                except OSError:
                    pass
                self._send(raw, rec, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                rec["outcome"] = "plain-http-on-tls"
                return
            if self.tls:
                name = {"tls_untrusted": "selfsigned", "tls_hostname": "wronghost"}.get(mode, "server")
                try:
                    conn = self.tls[name].wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    rec["outcome"] = "tls-handshake-failed"
                    rec["error"] = str(e)[:200]
                    rec["peer_closed"] = True
                    rec["t_peer_closed"] = time.monotonic()
                    return
            method, path, headers, body = self._read_request(conn)
            rec["t_request"] = time.monotonic()
            handler = MODES[mode]
            handler(self, conn, rec, fault, release, method, path, headers, body)
        except Released:
            rec["outcome"] = (rec["outcome"] or mode) + "+released"
        except PeerClosed:
            rec["peer_closed"] = True
            rec["t_peer_closed"] = rec["t_peer_closed"] or time.monotonic()
            rec["outcome"] = rec["outcome"] or "peer-closed"
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            rec["peer_closed"] = True
            rec["t_peer_closed"] = rec["t_peer_closed"] or time.monotonic()
            rec["error"] = f"{type(e).__name__}: {e}"[:200]
            rec["outcome"] = rec["outcome"] or "peer-error"
        except Exception as e:  # a bug here: record it, keep serving
            rec["error"] = f"proxy bug: {type(e).__name__}: {e}"[:300]
            rec["outcome"] = "proxy-error"
            log(f"connection {rec['id']}: {rec['error']}")
        finally:
            rec["t_end"] = time.monotonic()
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                raise PeerClosed()
            buf += chunk
            if len(buf) > 1024 * 1024:
                raise ValueError("request head too large")
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise PeerClosed()
            rest += chunk
        return method, path, headers, rest[:n]

    @staticmethod
    def _send(conn, rec, data):
        conn.sendall(data)
        rec["bytes_sent"] += len(data)

    @staticmethod
    def _wait(conn, release, seconds):
        """Holds the connection for `seconds` (None: forever). Raises PeerClosed when the peer
        closes it, Released when the mode changes."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if release.is_set():
                raise Released()
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return
            pending = isinstance(conn, ssl.SSLSocket) and conn.pending() > 0
            r = pending or select.select([conn], [], [], left)[0]
            if r:
                try:
                    data = conn.recv(4096)
                except ssl.SSLWantReadError:
                    continue
                if not data:
                    raise PeerClosed()

    @staticmethod
    def _response(status, reason, headers, body):
        lines = [f"HTTP/1.1 {status} {reason}"]
        for k, v in headers:
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _forward(self, method, path, headers, body):
        """Sends the request upstream; returns (status, reason, [(header, value)], body)."""
        c = http.client.HTTPConnection(self.up_host, self.up_port, timeout=20)
        try:
            h = {k: v for k, v in headers.items()
                 if k in ("content-type", "authorization", "accept", "user-agent", "dpop")}
            h["host"] = f"{self.up_host}:{self.up_port}"
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            keep = [(k, v) for k, v in r.getheaders()
                    if k.lower() in ("content-type", "cache-control", "pragma", "www-authenticate", "retry-after")]
            return r.status, r.reason, keep, data
        finally:
            c.close()

    # -- modes --
    def _m_pass(self, conn, rec, fault, release, method, path, headers, body):
        status, reason, h, data = self._forward(method, path, headers, body)
        rec["status"] = status
        rec["outcome"] = "forwarded"
        self._send(conn, rec, self._response(status, reason, h, data))

    def _m_stall(self, conn, rec, fault, release, *req):
        rec["outcome"] = "stalled"
        self._wait(conn, release, None)

    def _m_slow(self, conn, rec, fault, release, method, path, headers, body):
        rec["outcome"] = "slow-waiting"
        self._wait(conn, release, float(fault.get("delay", 5)))
        status, reason, h, data = self._forward(method, path, headers, body)
        rec["status"] = status
        rec["outcome"] = "slow-forwarded"
        full = self._response(status, reason, h, data)
        head_len = full.index(b"\r\n\r\n") + 4
        self._send(conn, rec, full[:head_len])
        payload = full[head_len:]
        dribble = float(fault.get("dribble", 2))
        steps = max(1, min(len(payload), 20))
        step = -(-len(payload) // steps)
        for i in range(0, len(payload), step):
            self._send(conn, rec, payload[i:i + step])
            if i + step < len(payload):
                time.sleep(dribble / steps)
        rec["outcome"] = "slow-answered"

    def _m_status(self, conn, rec, fault, release, *req):
        status = int(fault.get("status", 503))
        h = [("Cache-Control", "no-store")]
        if fault.get("retry_after") is not None:
            h.append(("Retry-After", str(fault["retry_after"])))
        if "body" in fault:
            body = str(fault["body"]).encode()
            h.append(("Content-Type", fault.get("content_type", "text/plain")))
        else:
            body = json.dumps({"error": "temporarily_unavailable",
                               "error_description": f"HTTP {status} injected by faultproxy"}).encode()
            h.append(("Content-Type", "application/json"))
        rec["status"] = status
        rec["outcome"] = f"http-{status}"
        self._send(conn, rec, self._response(status, http.client.responses.get(status, "Error"), h, body))

    def _m_nonjson(self, conn, rec, fault, release, *req):
        body = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body><h1>We'll be right back" \
               b"</h1><p>The login service is down for maintenance.</p></body></html>\n"
        rec["status"] = 200
        rec["outcome"] = "non-json"
        self._send(conn, rec, self._response(200, "OK", [("Content-Type", "text/html; charset=utf-8")], body))

    def _m_truncated(self, conn, rec, fault, release, *req):
        part = b'{"access_token":"truncated-token-abcdef0123456789","token_type":"Bearer","expires_in":3600,"refr'
        declared = len(part) + 400
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                f"Content-Length: {declared}\r\nConnection: close\r\n\r\n").encode()
        rec["status"] = 200
        rec["outcome"] = f"truncated-{len(part)}-of-{declared}"
        self._send(conn, rec, head + part)
        time.sleep(0.05)
        if isinstance(conn, ssl.SSLSocket):
            try:
                conn.unwrap()  # close_notify: an orderly TLS end, so only the HTTP body is short
            except (ssl.SSLError, OSError):
                pass

    def _m_huge(self, conn, rec, fault, release, *req):
        size = int(fault.get("size", 64 * MIB))
        chunked = bool(fault.get("chunked", True))
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
        head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
        head += "Connection: close\r\n\r\n"
        rec["status"] = 200
        rec["outcome"] = "huge-streaming"
        self._send(conn, rec, head.encode())
        start = b'{"token_type":"Bearer","expires_in":3600,"access_token":"'
        block = b"A" * (256 * 1024)
        sent = 0
        first = True
        conn.settimeout(20)
        while sent < size:
            piece = (start + block[len(start):]) if first else block
            piece = piece[:size - sent]
            first = False
            if release.is_set():
                raise Released()
            data = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
            self._send(conn, rec, data)
            sent += len(piece)
        if chunked:
            self._send(conn, rec, b"0\r\n\r\n")
        rec["outcome"] = "huge-complete"

    def _m_oauth_error(self, conn, rec, fault, release, *req):
        status = int(fault.get("status", 400))
        error = fault.get("error", "invalid_grant")
        body = json.dumps({"error": error, "error_description": fault.get("description", f"{error} injected by faultproxy")})
        h = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if status == 401:
            h.append(("WWW-Authenticate", f'Basic realm="faultproxy", error="{error}"'))
        rec["status"] = status
        rec["outcome"] = f"oauth-{error}"
        self._send(conn, rec, self._response(status, http.client.responses.get(status, "Error"), h, body.encode()))


MODES = {
    "pass": FaultProxy._m_pass,
    "refused": FaultProxy._m_pass,  # never reached: nothing is accepted
    "stall": FaultProxy._m_stall,
    "slow": FaultProxy._m_slow,
    "status": FaultProxy._m_status,
    "nonjson": FaultProxy._m_nonjson,
    "truncated": FaultProxy._m_truncated,
    "huge": FaultProxy._m_huge,
    "oauth_error": FaultProxy._m_oauth_error,
    "tls_untrusted": FaultProxy._m_pass,
    "tls_hostname": FaultProxy._m_pass,
    "tls_plain": FaultProxy._m_pass,  # handled before the handshake
}


# ---------------------------------------------------------------------------
# Control channel

def control_server(proxy, port=0):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def _reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stats":
                self._reply(200, proxy.stats())
            else:
                self._reply(404, {"error": "unknown path"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                if self.path == "/fault":
                    self._reply(200, proxy.set_fault(json.loads(raw or b"{}")))
                elif self.path == "/reset":
                    proxy.reset()
                    self._reply(200, {"reset": True})
                else:
                    self._reply(404, {"error": "unknown path"})
            except (ValueError, RuntimeError) as e:
                self._reply(400, {"error": str(e)})

    srv = http.server.ThreadingHTTPServer((HOST, port), Handler)
    srv.daemon_threads = True
    return srv


class Control:
    """The test side of the control channel."""

    def __init__(self, port):
        self.port = port

    def _call(self, method, path, obj=None, timeout=15):
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            data = json.loads(r.read() or b"null")
            if r.status != 200:
                raise RuntimeError(f"faultproxy {method} {path}: HTTP {r.status}: {data}")
            return data
        finally:
            c.close()

    def set(self, mode, **params):
        return self._call("POST", "/fault", {"mode": mode, **params})

    def stats(self):
        return self._call("GET", "/stats")

    def attempts(self):
        return self.stats()["attempts"]

    def reset(self):
        return self._call("POST", "/reset", {})


def main():
    ap = argparse.ArgumentParser(description="fault-injecting proxy for one OAuth token endpoint")
    ap.add_argument("--upstream", help="http://127.0.0.1:PORT of the real server")
    ap.add_argument("--tls-dir", help="directory made by make_test_pki(): listen with TLS")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--make-pki", metavar="DIR", help="only write the test PKI into DIR and exit")
    a = ap.parse_args()
    if a.make_pki:
        print(make_test_pki(a.make_pki))
        return
    if not a.upstream:
        ap.error("--upstream is required")
    proxy = FaultProxy(a.upstream, a.tls_dir, a.port)
    proxy.start()
    ctl = control_server(proxy, a.control_port)
    threading.Thread(target=ctl.serve_forever, name="control", daemon=True).start()
    sys.stdout.write(json.dumps({"ready": True, "port": proxy.port, "url": proxy.url,
                                 "control_port": ctl.server_address[1]}) + "\n")
    sys.stdout.flush()
    log(f"proxy {proxy.url} -> http://{proxy.up_host}:{proxy.up_port}, control port {ctl.server_address[1]}")
    import signal
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    proxy.running = False
    ctl.shutdown()


if __name__ == "__main__":
    main()
