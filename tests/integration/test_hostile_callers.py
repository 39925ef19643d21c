#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 7: hostile or broken callers get refused, and nobody else is disturbed.

(a) A caller with another uid (65534, via setpriv, the socket opened up to 0666 and its
    directories to 0755) gets org.varlink.service.PermissionDenied or a closed connection, never
    a token, for the agent and the manager interfaces, also when pipelining. Needs root: without
    it, (a) is skipped and the test exits 77 after running (b)-(h).
(b) Unknown method -> MethodNotFound, unknown interface -> InterfaceNotFound; bad GetToken
    parameters (wrong type, unknown field, missing credential, negative min_ttl, non-string
    scope, ...) -> InvalidParameter naming the parameter; the connection stays usable.
(c) An oversized frame (200 KiB without NUL; 200 KiB with a NUL) closes that connection; a
    connection opened before keeps being served and new connections work.
(d) JSON nested 1000 deep closes only that connection.
(e) Garbage bytes, invalid JSON, non-object JSON (and a few more protocol violations) close only
    that connection.
(f) Pipelined calls (3 GetInfo + 1 GetToken in one send; a slow GetToken followed by GetInfo)
    are answered in order.
(g) org.varlink.service.GetInfo with parameters missing, null or {} works.
(i) 50 callers that hang up while their refresh is in flight do not disturb the daemon.
(j) A caller that pipelines 20000 calls and never reads its replies does not stop others being
    served (the daemon stops reading it once 1 MiB of its replies waits: backpressure).
(h) At the end the daemon process is still running and serving GetToken.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ERR_INTERFACE_NOT_FOUND, ERR_INVALID_PARAMETER, ERR_METHOD_NOT_FOUND,  # noqa: E402
                     ERR_PERMISSION_DENIED, Skip, check, encode_call, log, run_test)

NAME = "target"
NOBODY = 65534

# Runs as uid 65534: tries to get something out of tokend; prints one JSON line of results.
OTHER_UID_CLIENT = r'''
import json, os, socket, sys, time
path, name = sys.argv[1], sys.argv[2]
def call(frames):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    res = {"uid": os.getuid(), "replies": [], "closed": False, "raw": ""}
    try:
        s.connect(path)
    except OSError as e:
        res["connect_error"] = str(e)
        return res
    try:
        s.sendall(b"".join(json.dumps(f).encode() + b"\0" for f in frames))
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                res["closed"] = True
                break
            if not d:
                res["closed"] = True
                break
            buf += d
        res["raw"] = buf.decode(errors="replace")
        res["replies"] = [json.loads(m) for m in buf.split(b"\0") if m]
    except (BrokenPipeError, ConnectionResetError) as e:
        res["closed"] = True
        res["send_error"] = str(e)
    finally:
        s.close()
    return res
out = [
    call([{"method": "io.tokend.agent.GetToken", "parameters": {"credential": name}}]),
    call([{"method": "io.tokend.manager.ListCredentials", "parameters": {}}]),
    call([{"method": "org.varlink.service.GetInfo"},
          {"method": "io.tokend.agent.GetToken", "parameters": {"credential": name, "scopes": ["read"]}}]),
]
print(json.dumps(out))
'''


def other_uid(ctx, d, srv, token):
    log("=== (a) another uid")
    if os.geteuid() != 0:
        return "not running as root: cannot run a client as another uid"
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed"
    modes = [(ctx.tmp, os.stat(ctx.tmp).st_mode), (d.dir, os.stat(d.dir).st_mode),
             (d.socket, os.stat(d.socket).st_mode)]
    try:
        os.chmod(ctx.tmp, 0o755)
        os.chmod(d.dir, 0o755)
        os.chmod(d.socket, 0o666)
        # Every parent must be traversable by uid 65534.
        p = os.path.dirname(ctx.tmp)
        while p != "/":
            check(os.stat(p).st_mode & 0o001, f"(a) {p} is traversable by others")
            p = os.path.dirname(p)
        before = srv.refresh_count()
        r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            sys.executable, "-c", OTHER_UID_CLIENT, d.socket, NAME],
                           capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        for path, mode in reversed(modes):
            os.chmod(path, mode & 0o7777)
    check(r.returncode == 0, "(a) the uid 65534 client ran", r.stderr)
    results = json.loads(r.stdout.strip().splitlines()[-1])
    labels = ["GetToken", "ListCredentials", "GetInfo + GetToken pipelined"]
    for label, res in zip(labels, results):
        check(res["uid"] == NOBODY, f"(a) {label}: client ran as uid {NOBODY}", res)
        check("connect_error" not in res, f"(a) {label}: the socket was reachable for uid {NOBODY}", res)
        check(token not in res["raw"] and '"token"' not in res["raw"],
              f"(a) {label}: no token reached uid {NOBODY}", res["raw"][:300])
        replies = res["replies"]
        check(all(m.get("error") == ERR_PERMISSION_DENIED for m in replies),
              f"(a) {label}: every reply is PermissionDenied", replies)
        check(len(replies) <= 1, f"(a) {label}: at most one reply, then nothing is served", replies)
        check(res["closed"], f"(a) {label}: the daemon closed the connection", res)
        check(replies or res["closed"], f"(a) {label}: PermissionDenied or closed without a token")
    check("credentials" not in json.dumps(results), "(a) no credential list reached the other uid")
    check(srv.refresh_count() == before, "(a) the refused calls caused no refresh")
    return None


def bad_calls(d):
    log("=== (b) unknown methods and interfaces, invalid parameters")
    cases = [
        ("io.tokend.agent.NoSuchMethod", {"credential": NAME}, ERR_METHOD_NOT_FOUND,
         ("method", "io.tokend.agent.NoSuchMethod")),
        ("org.varlink.service.NoSuchMethod", {}, ERR_METHOD_NOT_FOUND, ("method", "org.varlink.service.NoSuchMethod")),
        ("io.tokend.nosuch.GetToken", {"credential": NAME}, ERR_INTERFACE_NOT_FOUND, ("interface", "io.tokend.nosuch")),
        ("com.example.Other.Method", {}, ERR_INTERFACE_NOT_FOUND, ("interface", "com.example.Other")),
        ("io.tokend.agent.GetToken", {"credential": 5}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": ["x"]}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "bogus": 1}, ERR_INVALID_PARAMETER, ("parameter", "bogus")),
        ("io.tokend.agent.GetToken", {}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"scopes": ["read"]}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": None}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "min_ttl": -1}, ERR_INVALID_PARAMETER,
         ("parameter", "min_ttl")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "min_ttl": "60"}, ERR_INVALID_PARAMETER,
         ("parameter", "min_ttl")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "min_ttl": 1.5}, ERR_INVALID_PARAMETER,
         ("parameter", "min_ttl")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "scopes": ["read", 5]}, ERR_INVALID_PARAMETER,
         ("parameter", "scopes")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "scopes": "read"}, ERR_INVALID_PARAMETER,
         ("parameter", "scopes")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "scopes": [None]}, ERR_INVALID_PARAMETER,
         ("parameter", "scopes")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "resource": 7}, ERR_INVALID_PARAMETER,
         ("parameter", "resource")),
        ("io.tokend.agent.GetToken", {"credential": ""}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": "x" * 5000}, ERR_INVALID_PARAMETER, ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": NAME + "\u0000x"}, ERR_INVALID_PARAMETER,
         ("parameter", "credential")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "min_ttl": 10 ** 12}, ERR_INVALID_PARAMETER,
         ("parameter", "min_ttl")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "min_ttl": 2 ** 64}, ERR_INVALID_PARAMETER,
         ("parameter", "min_ttl")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "scopes": [""]}, ERR_INVALID_PARAMETER,
         ("parameter", "scopes")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "scopes": [["read"]]}, ERR_INVALID_PARAMETER,
         ("parameter", "scopes")),
        ("io.tokend.agent.GetToken", {"credential": NAME, "resource": "not a url"}, ERR_INVALID_PARAMETER,
         ("parameter", "resource")),
        ("io.tokend.agent.GetToken", "not an object", ERR_INVALID_PARAMETER, ("parameter", "parameters")),
        ("io.tokend.agent.GetToken", [NAME], ERR_INVALID_PARAMETER, ("parameter", "parameters")),
        ("org.varlink.service.GetInterfaceDescription", {"interface": "com.example.nosuch"},
         ERR_INTERFACE_NOT_FOUND, ("interface", "com.example.nosuch")),
    ]
    with d.connect() as c:
        for method, params, err, (key, value) in cases:
            m = c.call(method, params)
            desc = f"(b) {method} {json.dumps(params)}"
            if len(desc) > 110:
                desc = desc[:100] + "...(long)"
            check(m.get("error") == err and m.get("parameters", {}).get(key) == value,
                  f"{desc} -> {err.rsplit('.', 1)[1]} ({key}: {value})", m)
            check("token" not in m.get("parameters", {}), f"{desc}: no token")
        # After all those errors the same connection still works.
        m = c.call("io.tokend.agent.GetToken", {"credential": NAME})
        check("error" not in m and m["parameters"].get("token"), "(b) the same connection still serves GetToken", m)
        m = c.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.tokend.agent"})
        check("method GetToken" in m.get("parameters", {}).get("description", ""),
              "(b) GetInterfaceDescription io.tokend.agent returns its IDL", m)


def expect_closed(c, what, data, after_send=None):
    """Sends data on c (which may be refused half-way); the daemon must close c without a reply."""
    try:
        c.sock.sendall(data)
        if after_send:
            after_send(c)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except socket.timeout:
        raise AssertionError(f"FAILED: {what}: the daemon stopped reading but kept the connection open") from None
    r = c.wait_closed(timeout=10)
    check(r is True, f"{what}: that connection is closed (no reply)", r)


def still_serving(d, keep, what):
    m = keep.call("io.tokend.agent.GetToken", {"credential": NAME})
    check("error" not in m and m["parameters"].get("token"), f"{what}: the connection opened before is still served", m)
    with d.connect() as n:
        m = n.call("org.varlink.service.GetInfo")
        check("error" not in m, f"{what}: a new connection is served", m)


def protocol_abuse(d):
    keep = d.connect()
    try:
        check("error" not in keep.call("org.varlink.service.GetInfo"), "(c) a connection opened before works")
        log("=== (c) oversized frames")
        with d.connect() as c:
            expect_closed(c, "(c) 200 KiB without NUL", b"a" * (200 * 1024))
        still_serving(d, keep, "(c) after 200 KiB without NUL")
        with d.connect() as c:
            big = encode_call("org.varlink.service.GetInfo", {"pad": "x" * (200 * 1024)})
            check(len(big) > 200 * 1024 and big.endswith(b"\0"), "(c) the 200 KiB frame ends with a NUL")
            expect_closed(c, "(c) 200 KiB JSON frame with a NUL", big)
        still_serving(d, keep, "(c) after 200 KiB with NUL")
        with d.connect() as c:  # NUL first, then the flood: the valid call is answered, then closed
            c.sock.sendall(encode_call("org.varlink.service.GetInfo"))
            m = c.read_reply()
            check("error" not in m, "(c) a valid call before a flood is answered", m)
            expect_closed(c, "(c) 200 KiB without NUL after a valid call", b"{" * (200 * 1024))
        still_serving(d, keep, "(c) after the flood following a valid call")

        log("=== (d) deep nesting")
        for label, frame in (
                ("arrays 1000 deep", b'{"method":"org.varlink.service.GetInfo","parameters":{"a":'
                 + b"[" * 1000 + b"]" * 1000 + b"}}\0"),
                ("objects 1000 deep", b'{"method":"io.tokend.agent.GetToken","parameters":{"credential":"'
                 + NAME.encode() + b'","x":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}}\0")):
            with d.connect() as c:
                expect_closed(c, f"(d) JSON {label}", frame)
            still_serving(d, keep, f"(d) after JSON {label}")

        log("=== (e) garbage, invalid JSON, non-object JSON")
        for label, frame in (
                ("garbage bytes", b"\xff\xfe\x00"),
                ("binary garbage", bytes(range(1, 256)) + b"\0"),
                ("invalid JSON (truncated)", b'{"method": \0'),
                ("invalid JSON (trailing comma)", b'{"method":"org.varlink.service.GetInfo",}\0'),
                ("invalid JSON (text)", b"hello tokend\0"),
                ("non-object JSON (array)", b'["io.tokend.agent.GetToken", {}]\0'),
                ("non-object JSON (string)", b'"io.tokend.agent.GetToken"\0'),
                ("non-object JSON (number)", b"42\0"),
                ("non-object JSON (null)", b"null\0"),
                ("object without method", b'{"parameters":{"credential":"target"}}\0'),
                ("method not a string", b'{"method":5}\0'),
                ("empty frame", b"\0"),
        ):
            with d.connect() as c:
                expect_closed(c, f"(e) {label}", frame)
            still_serving(d, keep, f"(e) after {label}")
        with d.connect() as c:  # a partial frame, then EOF from the caller's side
            expect_closed(c, "(e) partial frame then half-close", b'{"method":"org.varlink.ser',
                          after_send=lambda c: c.sock.shutdown(socket.SHUT_WR))
        still_serving(d, keep, "(e) after a half-closed partial frame")
        with d.connect() as c:  # a valid call followed by garbage in the same send: answered, then closed
            c.sock.sendall(encode_call("org.varlink.service.GetInfo") + b"garbage\0")
            m = c.read_reply()
            check("error" not in m and "interfaces" in m.get("parameters", {}),
                  "(e) the valid call before garbage is answered", m)
            check(c.wait_closed(timeout=10) is True, "(e) ... then the connection is closed")
        still_serving(d, keep, "(e) after valid call + garbage")
    finally:
        keep.close()


def pipelining(d, srv):
    log("=== (f) pipelining")
    with d.connect() as c:
        c.send_raw(b"".join([encode_call("org.varlink.service.GetInfo")] * 3
                            + [encode_call("io.tokend.agent.GetToken", {"credential": NAME})]))
        replies = [c.read_reply() for _ in range(4)]
        check(all("interfaces" in m.get("parameters", {}) for m in replies[:3]),
              "(f) 3 pipelined GetInfo answered first, in order", replies[:3])
        check("token" in replies[3].get("parameters", {}), "(f) the pipelined GetToken answered fourth", replies[3])

        # A GetToken that needs a refresh (slow), then GetInfo, then a cached GetToken.
        before = srv.refresh_count()
        c.send_raw(encode_call("io.tokend.agent.GetToken", {"credential": NAME, "scopes": ["write"]})
                   + encode_call("org.varlink.service.GetInfo")
                   + encode_call("io.tokend.agent.GetToken", {"credential": NAME, "scopes": ["write"]}))
        r1, r2, r3 = (c.read_reply() for _ in range(3))
        check(r1.get("parameters", {}).get("scopes") == ["write"], "(f) the slow GetToken is answered first", r1)
        check("interfaces" in r2.get("parameters", {}), "(f) GetInfo answered second, after the slow call", r2)
        check(r3.get("parameters", {}).get("token") == r1["parameters"]["token"],
              "(f) the second GetToken answered third, from the cache", r3)
        check(srv.refresh_count() == before + 1, "(f) one refresh for the two pipelined GetToken")

        # oneway: no reply for the first call.
        c.send_raw(encode_call("org.varlink.service.GetInfo", oneway=True)
                   + encode_call("org.varlink.service.GetInterfaceDescription", {"interface": "io.tokend.manager"}))
        m = c.read_reply()
        check("description" in m.get("parameters", {}), "(f) a oneway call gets no reply; the next call is answered",
              m)


def get_info_variants(d):
    log("=== (g) GetInfo parameters")
    with d.connect() as c:
        for label, frame in (("missing", encode_call("org.varlink.service.GetInfo")),
                             ("null", encode_call("org.varlink.service.GetInfo", None)),
                             ("{}", encode_call("org.varlink.service.GetInfo", {}))):
            c.send_raw(frame)
            m = c.read_reply()
            p = m.get("parameters", {})
            check("error" not in m and {"io.tokend.agent", "io.tokend.manager", "org.varlink.service"}
                  <= set(p.get("interfaces", [])) and p.get("product") and p.get("version"),
                  f"(g) GetInfo with parameters {label} works", m)
        m = c.call("org.varlink.service.GetInfo", {"unexpected": 1})
        check(m.get("error") == ERR_INVALID_PARAMETER, "(g) GetInfo with an unknown parameter -> InvalidParameter", m)


def vanishing_callers(d, srv):
    log("=== (i) callers that hang up while their refresh is in flight")
    before = srv.refresh_count()
    conns = [d.connect() for _ in range(50)]
    for c in conns:
        c.send("io.tokend.agent.GetToken", {"credential": NAME, "scopes": ["openid", "write"]})
    for c in conns:  # gone before the refresh can have completed
        c.sock.close()
    # The refresh (if it started) completes and is cached; the daemon survives.
    time.sleep(0.5)
    check(d.alive(), "(i) daemon survived callers vanishing mid-refresh")
    p = d.token(NAME, ["openid", "write"])
    n = srv.refresh_count() - before
    check(n in (1, 2), "(i) at most one refresh for the vanished callers, one more at most for the new call", n)
    check(srv.introspect(p["token"]).get("active") is True, "(i) a new caller gets an active token")
    st = srv.stats()
    check(st["reuse_detected"] == 0 and st["refresh_errors"].get("invalid_grant", 0) == 0,
          "(i) no reuse detected, no invalid_grant", st)


def greedy_reader(d):
    log("=== (j) a caller that pipelines many calls and never reads the replies")
    n_calls = 20000
    frame = encode_call("org.varlink.service.GetInterfaceDescription", {"interface": "io.tokend.agent"})
    keep = d.connect()
    # The daemon stops taking this caller's calls once 1 MiB of replies waits
    # unread (backpressure): sendall() then blocks, and gives up after 5 s.
    c = d.connect(timeout=5)
    try:
        closed = False
        t0 = time.monotonic()
        try:
            c.sock.sendall(frame * n_calls)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        except socket.timeout:
            pass
        log(f"(j) {n_calls} calls ({len(frame) * n_calls} bytes) sent or refused in {time.monotonic() - t0:.2f}s"
            f"{' (connection closed by the daemon)' if closed else ''}")
        # Meanwhile and afterwards, other callers are served promptly.
        still_serving(d, keep, "(j) while a caller does not read")
        check(d.alive(), "(j) daemon still running")
    finally:
        c.close()
        keep.close()
    still_serving_new(d, "(j) after the greedy caller left")


def still_serving_new(d, what):
    with d.connect() as n:
        m = n.call("io.tokend.agent.GetToken", {"credential": NAME})
        check("error" not in m and m["parameters"].get("token"), f"{what}: a new connection gets a token", m)


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend()
    d.add(NAME, srv)
    token = d.token(NAME)["token"]

    skipped = other_uid(ctx, d, srv, token)
    if skipped:
        print(f"(a) SKIPPED: {skipped}")
    bad_calls(d)
    protocol_abuse(d)
    pipelining(d, srv)
    get_info_variants(d)
    vanishing_callers(d, srv)
    greedy_reader(d)

    log("=== (h) the daemon survived")
    time.sleep(0.2)
    check(d.alive(), f"(h) daemon pid {d.pid} still running")
    p = d.token(NAME, ["read"])
    check(srv.introspect(p["token"]).get("active") is True, "(h) GetToken still works and the token is active")
    rc, out, err = d.tokenctl("token", NAME)
    check(rc == 0 and out.strip(), "(h) tokenctl token still works", err)
    if skipped:
        raise Skip(f"(a) not run ({skipped}); (b)-(h) passed")


if __name__ == "__main__":
    run_test(main, __doc__)
