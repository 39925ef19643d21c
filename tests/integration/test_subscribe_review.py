#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""io.tokend.agent.Subscribe under adversarial conditions (a review of the token streams).

Tokens live 10 s; tokend runs with --keep-fresh 0. Some credentials reach the OAuth server through
a loopback TCP proxy started here, whose delay (each chunk the server answers is held for DELAY
seconds) and "hang" mode (nothing is passed on at all) the test sets: a slow or dead provider.
Every case is checked; failures are collected and reported together at the end.

A. Ask mode: a Subscribe waits for consent, is approved, and its first token waits on a slow
   refresh (2.5 s); the grant is revoked while that refresh is in flight. The stream must end with
   ConsentEnded (revoked) within a second, and no token may be handed out under the revoked grant.
B. A grant revoked while its streams' renewal refresh is in flight: every stream ends at once; the
   refresh that lands afterwards finds no subscriber (sanitizers check the memory).
C. An unknown caller (no agent) subscribing under a process-bound, exact-match grant: the grant is
   revoked: ConsentEnded without an agent member, naming the grant.
D. Allow mode: a policy reload that denies the agent while the stream's first token waits on a slow
   refresh: PolicyDenied, and no token after the reload.
E. Concurrent, one daemon: (1) three keys of one credential behind a 1.5 s provider, min_ttl 3, 2
   and 1 (renewals queue behind one another: single flight per credential); (2) min_ttl 0, 7 (the
   boundary, lifetime - 3) and omitted (a tenth of the lifetime); (3) four subscribers of one key
   with different min_ttl values on their own OAuth server: one refresh per renewal; (4) a
   pipelined WhoAmI after a Subscribe on the same connection is not answered while the stream runs;
   oneway Subscribe is refused and does not leave a stream; (5) a provider that hangs: the stream
   ends with ProviderUnavailable before the held token falls under min_ttl, then a new stream
   works once the provider is back; (6) Subscribe calls whose connections close while their first
   refresh is in flight, and streams that close during a renewal refresh; (7) a credential removed
   while its renewal refresh is in flight: NoSuchCredential; re-added under the same name: a new
   stream works.
   Each token is active at the server when delivered and arrives before its predecessor fell
   under min_ttl (expires_at is whole seconds: 1 s slack).
F. MaxLifetime= shortened by a reload while a stream is open: the next reply is told the new,
   shorter expiry.
E8 (in E) A provider answering in 2.5 s: the expiry a stream is told must not be later than the
   server's exp for that token (1 s slack for the server's rounding); and in E5, the token handed
   out after a hung provider came back must be active at the server.
G. 1024 streams: the 1025th is TooManySubscriptions; two Subscribe calls waiting on a refresh when
   one slot is left: one gets the slot, the other TooManySubscriptions; slots are freed when
   streams end; a policy reload with 1000 streams open leaves them running; SIGTERM with about 1000
   streams open: tokend exits 0 within a few seconds.
"""
import hashlib
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import revoke_grant  # noqa: E402
from harness import (CLIENTS, VarlinkConnection, TestFailure, check, log, mint, run_test,  # noqa: E402
                     test_agent_policy, wait_until)

TTL = 10
SUBSCRIBE = "io.tokend.agent.Subscribe"
ERR = "io.tokend.agent."

FAILURES = []
_flock = threading.Lock()


def expect(cond, what, detail=None):
    """A check that is recorded and does not stop the test: every case runs."""
    if cond:
        log(f"ok: {what}")
        return True
    msg = f"FAIL: {what}" + (f" -- {detail!r}" if detail is not None else "")
    log(msg)
    with _flock:
        FAILURES.append(msg)
    return False


class Proxy:
    """A loopback TCP proxy in front of the OAuth server: holds what the server answers for `delay`
    seconds; while `hang` is set, passes no answer on. (The answer, not the request, is held: a
    request held past the server's keep-alive timeout would meet a closed connection.)"""

    def __init__(self, upstream_port, delay=0.0):
        self.upstream = upstream_port
        self.delay = delay
        self.hang = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, src, dst, delayed):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed:
                    while self.hang and not self.closed:
                        time.sleep(0.05)
                    if self.delay:
                        time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.lsock.close()


def add_via(d, name, srv, proxy, replace=False):
    """tokenctl add NAME with the token endpoint behind the proxy."""
    secret = CLIENTS["tokend-test"][0]
    path = os.path.join(d.ctx.tmp, "review-client.secret")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
    rt = mint(srv.issuer, "tokend-test")
    args = ["add", name, "--token-endpoint", f"http://127.0.0.1:{proxy.port}/token", "--client-id", "tokend-test",
            "--client-secret-file", path, "--insecure-loopback"]
    if replace:
        args.append("--replace")
    r = d.tokenctl(*args, stdin=rt + "\n")
    if r[0] != 0:
        raise TestFailure(f"tokenctl add {name} (via proxy) failed ({r[0]}): {r[2]}")


class Stream:
    """One Subscribe call on its own connection."""

    def __init__(self, d, params, more=True, timeout=60, **flags):
        self.conn = VarlinkConnection(d.socket, timeout=timeout)
        self.params = params
        self.min_ttl = params.get("min_ttl")
        if more:
            flags["more"] = True
        self.conn.send(SUBSCRIBE, params, **flags)
        self.tokens = []  # (arrival wall time, parameters)
        self.error = None

    def next(self, timeout=30):
        """("token", params), ("error", message) or ("timeout", None) / ("closed", None)."""
        try:
            m = self.conn.read_reply(timeout)
        except (TimeoutError, socket.timeout):
            return "timeout", None
        except Exception as e:  # ConnectionClosed and the like
            if "imeout" in type(e).__name__ or "timed out" in str(e):
                return "timeout", None
            return "closed", str(e)
        now = time.time()
        if "error" in m:
            self.error = m
            return "error", m
        p = m.get("parameters") or {}
        self.tokens.append((now, p))
        if m.get("continues") is not True:
            return "nocontinue", m
        return "token", p

    def close(self):
        self.conn.close()


def successor_ok(s, what, slack=1.0):
    """The last token arrived before its predecessor fell under min_ttl."""
    if len(s.tokens) < 2:
        return True
    (t0, p0), (t1, p1) = s.tokens[-2], s.tokens[-1]
    need = s.min_ttl if s.min_ttl is not None else TTL / 10
    left = p0["expires_at"] - t1
    return expect(left >= need - slack, f"{what}: token #{len(s.tokens)} came with {left:.2f}s left on its "
                  f"predecessor (min_ttl {need})", (t0, p0["expires_at"], t1))


def run_stream(srv, s, seconds, what, introspect=True):
    """Reads s for `seconds`: every reply must be a valid, active token arriving in time."""
    t_end = time.time() + seconds
    ok = True
    while time.time() < t_end:
        kind, p = s.next(timeout=max(0.5, t_end - time.time() + 0.5))
        if kind == "timeout":
            break
        if kind != "token":
            return expect(False, f"{what}: the stream goes on", (kind, p))
        now = time.time()
        ok &= expect(p["expires_at"] > now, f"{what}: token #{len(s.tokens)} not expired when delivered "
                     f"({p['expires_at'] - now:.1f}s left)")
        if introspect:
            info = srv.introspect(p["token"])
            ok &= expect(info.get("active") is True, f"{what}: token #{len(s.tokens)} active at the server", info)
        ok &= successor_ok(s, what)
    return ok


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def audit_issues(d, credential):
    """The issue records of the audit trail (the fallback file: no journal here) for credential."""
    path = os.path.join(d.state_dir, "audit.log")
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("event") == "issue" and r.get("credential") == credential:
                out.append(r)
    return out


def check_audit(d, credential, streams, what, grant=None):
    """One issue record per delivery: for each token, as many records (with this process as the
    agent) as deliveries of it. (A delivery is recorded right after it is sent: the last one
    may reach this process before its record is written, so this waits up to 10 s for them.)"""
    want = {}
    for s in streams:
        for _, p in s.tokens:
            fp = fingerprint(p["token"])
            want[fp] = want.get(fp, 0) + 1

    def compare():
        recs = audit_issues(d, credential)
        bad = {}
        for fp, n in want.items():
            mine = [r for r in recs if r.get("token_fp") == fp]
            if len(mine) != n or any(r.get("agent_pid") != os.getpid() or "count" in r for r in mine) or \
                    (grant and any(r.get("grant") != grant for r in mine)):
                bad[fp] = (n, [(r.get("agent_pid"), r.get("grant"), r.get("count")) for r in mine])
        return bad

    deadline = time.monotonic() + 10
    while (bad := compare()) and time.monotonic() < deadline:
        time.sleep(0.1)
    expect(not bad, f"{what}: one issue record per delivery ({sum(want.values())} deliveries of {len(want)} "
           f"tokens{', under grant ' + grant if grant else ''})", bad)


def set_policy(d, mode="allow", **kw):
    d.write_policy(test_agent_policy(mode=mode, **kw))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("mode") == mode, 10, f"the reload to {mode} mode")


def approve(d, rid, *opts):
    rc, out, err = d.tokenctl("approve", rid, *opts)
    check(rc == 0, f"tokenctl approve {rid} {' '.join(opts)} exits 0", (rc, out, err))
    return out.strip()


# ---------------------------------------------------------------------------

def case_a(srv, d, proxy):
    log("=== A. grant revoked while the stream's first token waits on a slow refresh")
    set_policy(d, "ask")
    proxy.delay = 2.5
    s = Stream(d, {"credential": "slow", "scopes": ["read"], "min_ttl": 3})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == os.getpid() and r["credential"] == "slow",
                         what="the Subscribe to wait for consent")
    g = approve(d, req["id"], "--for", "10m")
    t0 = time.monotonic()
    revoke_grant(d, g)
    t_rev = time.monotonic()
    log(f"revoked {g} {t_rev - t0:.2f}s after the approval (the refresh takes 2.5 s)")
    kind, m = s.next(timeout=8)
    took = time.monotonic() - t_rev
    if kind == "token":
        expect(False, "A: no token is handed out under a grant revoked before the first token arrived",
               f"a token arrived {took:.2f}s after the revoke, expires_at {m['expires_at']}, grant {g}")
        time.sleep(0.2)
        recs = [r for r in audit_issues(d, "slow") if r.get("token_fp") == fingerprint(m["token"])]
        log(f"A: the audit trail records that issuance as: {[(r.get('event'), r.get('grant')) for r in recs]}")
        kind, m = s.next(timeout=3)
        expect(kind == "error" and m["error"] == ERR + "ConsentEnded",
               "A: the stream of the revoked grant ends (ConsentEnded) rather than running on",
               (kind, m, f"{time.monotonic() - t_rev:.2f}s after the revoke"))
        if kind == "timeout":
            # It runs on to its first renewal: what does it say then?
            kind, m = s.next(timeout=8)
            expect(kind == "error" and (m.get("parameters") or {}).get("reason") == "revoked",
                   "A: when that stream does end, ConsentEnded says the grant was revoked",
                   (kind, m, f"{time.monotonic() - t_rev:.2f}s after the revoke"))
    else:
        expect(kind == "error" and m["error"] == ERR + "ConsentEnded" and
               (m.get("parameters") or {}).get("reason") == "revoked",
               "A: the waiting stream ends with ConsentEnded (revoked)", (kind, m))
        expect(took <= 1.0, f"A: it ended {took:.2f}s after the revoke (<= 1 s)")
    s.close()
    proxy.delay = 0


def case_b(srv, d, proxy):
    log("=== B. grant revoked while its streams' renewal refresh is in flight")
    proxy.delay = 0
    streams = [Stream(d, {"credential": "slow", "scopes": ["write"], "min_ttl": 3})]
    req = d.wait_pending(lambda r: r["caller"]["pid"] == os.getpid() and r["scopes"] == ["write"],
                         what="the Subscribe for 'write' to wait")
    g = approve(d, req["id"], "--for", "10m")
    kind, p = streams[0].next(timeout=10)
    check(kind == "token", "B: the approved stream gets its first token", p)
    streams += [Stream(d, {"credential": "slow", "scopes": ["write"], "min_ttl": m}) for m in (3, 3, 4, 1)]
    for s in streams[1:]:
        kind, p = s.next(timeout=10)
        expect(kind == "token", "B: a further stream is covered by the grant", (kind, p))
    check_audit(d, "slow", streams, "B", grant=g)
    proxy.delay = 3.0
    # Renewal asked at about expiry - 3 - 2 - latency: wait until the refresh is in flight.
    exp = streams[0].tokens[0][1]["expires_at"]
    before = srv.refresh_count()
    wait_until(lambda: time.time() >= exp - 6.5, 15, "the renewal point")
    time.sleep(0.7)
    t0 = time.monotonic()
    revoke_grant(d, g)
    for s in streams:
        kind, m = s.next(timeout=5)
        took = time.monotonic() - t0
        expect(kind == "error" and m["error"] == ERR + "ConsentEnded" and
               (m.get("parameters") or {}).get("grant") == g, "B: ConsentEnded naming the grant", (kind, m))
        expect(took <= 1.5, f"B: ended {took:.2f}s after the revoke began")
        s.close()
    time.sleep(3.5)  # let the refresh land on an entry with no subscriber
    log(f"B: refreshes at the server meanwhile: {srv.refresh_count() - before}")
    proxy.delay = 0


def case_c(ctx, srv, d):
    log("=== C. an unknown caller under a process-bound exact-match grant; the grant is revoked")
    caller = ctx.caller(d.socket, python=ctx.python_copy("review-unknown"), name="unknown")
    caller.start(SUBSCRIBE, {"credential": "main", "scopes": ["openid"], "min_ttl": 3}, timeout=30, more=True)
    req = d.wait_pending(lambda r: r["caller"]["pid"] == caller.pid, what="the unknown caller's Subscribe to wait")
    expect("agent" not in req, "C: the request is an unknown caller's", req)
    g = approve(d, req["id"], "--process")
    time.sleep(1.0)
    revoke_grant(d, g)
    r = caller.result(15)
    replies = r.get("replies") or []
    expect(len(replies) >= 2 and "error" not in replies[0] and replies[0].get("continues") is True,
           "C: the unknown caller's stream got its first token", r)
    last = replies[-1] if replies else {}
    p = last.get("parameters") or {}
    expect(last.get("error") == ERR + "ConsentEnded" and p.get("grant") == g and p.get("reason") == "revoked"
           and "agent" not in p, "C: ConsentEnded names the grant, reason revoked, no agent", last)
    caller.exit()


def case_d(srv, d, proxy):
    log("=== D. allow mode: a reload denies the agent while the first token waits on a slow refresh")
    set_policy(d, "allow")
    proxy.delay = 2.5
    s = Stream(d, {"credential": "slow", "scopes": ["openid"], "min_ttl": 3})
    time.sleep(0.5)
    d.write_policy(test_agent_policy(mode="deny"))
    d.sighup()
    t0 = time.monotonic()
    kind, m = s.next(timeout=8)
    took = time.monotonic() - t0
    if kind == "token":
        expect(False, "D: no token is handed out to a stream after a reload denied its agent",
               f"a token arrived {took:.2f}s after the SIGHUP")
        kind, m = s.next(timeout=3)
        expect(kind == "error" and m["error"] == ERR + "PolicyDenied",
               "D: the stream then ends with PolicyDenied at once", (kind, m))
    else:
        expect(kind == "error" and m["error"] == ERR + "PolicyDenied", "D: PolicyDenied", (kind, m))
    s.close()
    proxy.delay = 0
    set_policy(d, "allow")


# ---------------------------------------------------------------------------
# E: concurrent scenarios (allow mode, no policy change)

def e1_queued_keys(srv, d, proxy):
    what = "E1 (3 keys, 1.5 s provider)"
    # Each key renews about every 8 - min_ttl s and each refresh holds the credential's single
    # flight 1.5 s: 1.5/5 + 1.5/6 + 1.5/7 = 0.76 of its time, feasible, but renewals collide and
    # queue. (min_ttl 5, 4, 3 would need 1.5/3 + 1.5/4 + 1.5/5 = 1.2: more than one refresh at a
    # time can give, which no scheduling meets.)
    specs = [(["openid"], 3), (["read"], 2), (["write"], 1)]
    streams = [Stream(d, {"credential": "slowq", "scopes": sc, "min_ttl": mt}) for sc, mt in specs]
    threads = [threading.Thread(target=run_stream, args=(srv, s, 28, f"{what} min_ttl {s.min_ttl}"))
               for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in streams:
        expect(len(s.tokens) >= 4, f"{what}: min_ttl {s.min_ttl}: at least 4 tokens in 28 s", len(s.tokens))
        log(f"{what}: min_ttl {s.min_ttl}: (arrival, expires_at) "
            f"{[(round(t % 1000, 2), p['expires_at'] % 1000) for t, p in s.tokens]}; end: {s.error}")
        s.close()


def e2_boundaries(srv, d):
    res = {}

    def one(cred, min_ttl):
        params = {"credential": cred}
        if min_ttl is not None:
            params["min_ttl"] = min_ttl
        s = Stream(d, params)
        run_stream(srv, s, 26, f"E2 min_ttl {min_ttl}")
        res[min_ttl] = s
        s.close()

    threads = [threading.Thread(target=one, args=(c, m)) for c, m in (("b0", 0), ("b7", 7), ("bd", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m, s in res.items():
        expect(len(s.tokens) >= 3, f"E2 min_ttl {m}: at least 3 tokens in 26 s", len(s.tokens))


def e3_mixed_min_ttl(ctx, d):
    srv2 = ctx.oauth_server(access_ttl=TTL, name="oauth-mix")
    d.add("mix", srv2)
    time.sleep(0.5)
    before = srv2.refresh_count()
    specs = [1, 3, 5, None, 3]
    streams = []
    for m in specs:
        p = {"credential": "mix", "scopes": ["read"]}
        if m is not None:
            p["min_ttl"] = m
        streams.append(Stream(d, p))
    threads = [threading.Thread(target=run_stream, args=(srv2, s, 24, f"E3 min_ttl {s.min_ttl}", False))
               for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)
    seqs = [[p["token"] for _, p in s.tokens] for s in streams]
    distinct = set(x for q in seqs for x in q)
    refreshes = srv2.refresh_count() - before
    log(f"E3: tokens per subscriber {[len(q) for q in seqs]}, distinct {len(distinct)}, refreshes {refreshes}")
    expect(refreshes <= len(distinct) + 1, f"E3: one refresh per renewal with mixed min_ttl "
           f"({refreshes} refreshes, {len(distinct)} tokens)")
    expect(len(distinct) >= 3, "E3: at least 3 renewals", len(distinct))
    check_audit(d, "mix", streams, "E3")
    for s in streams:
        s.close()


def e4_pipelined_oneway(srv, d):
    s = Stream(d, {"credential": "main", "scopes": ["openid", "read"], "min_ttl": 3})
    s.conn.send("io.tokend.agent.WhoAmI", {})
    t_end = time.time() + 14
    while time.time() < t_end:
        kind, p = s.next(timeout=t_end - time.time() + 0.2)
        if kind == "timeout":
            break
        expect(kind == "token" and "token" in p,
               "E4: only stream replies on a connection with a pipelined WhoAmI after the Subscribe", (kind, p))
        if kind != "token":
            break
    expect(len(s.tokens) >= 2, "E4: the stream delivered its renewal", len(s.tokens))
    s.close()
    # oneway: refused; the next call on the connection is answered
    c = VarlinkConnection(d.socket, timeout=10)
    c.send(SUBSCRIBE, {"credential": "main", "min_ttl": 3}, oneway=True)
    c.send("io.tokend.agent.WhoAmI", {})
    m = c.read_reply(10)
    expect("error" not in m and "uid" in (m.get("parameters") or {}),
           "E4: after a oneway Subscribe the connection answers the next call (no stream kept)", m)
    c.close()


def e5_provider_hangs(srv, d, proxy):
    what = "E5 (provider hangs)"
    s = Stream(d, {"credential": "hang", "min_ttl": 3})
    kind, p = s.next(timeout=15)
    expect(kind == "token", f"{what}: the stream starts", (kind, p))
    proxy.hang = True
    t_end = time.time() + 2 * TTL
    while time.time() < t_end:
        kind, m = s.next(timeout=t_end - time.time() + 0.5)
        now = time.time()
        if kind == "token":
            log(f"{what}: a renewal arrived before the provider hung")
            continue
        break
    last = s.tokens[-1][1] if s.tokens else {"expires_at": 0}
    expect(kind == "error" and m["error"] == ERR + "ProviderUnavailable", f"{what}: ProviderUnavailable", (kind, m))
    # It ends when the held token falls under min_ttl: expires_at is whole seconds (1 s) and the
    # daemon's timers may be late by their 50 ms accuracy plus a busy machine (0.25 s).
    expect(last["expires_at"] - now >= 3 - 1.25,
           f"{what}: ended while the held token still had {last['expires_at'] - now:.2f}s (>= min_ttl - 1.25)")
    s.close()
    time.sleep(TTL)  # down for longer than the token lifetime
    proxy.hang = False
    s = Stream(d, {"credential": "hang", "min_ttl": 3})
    kind, p = s.next(timeout=40)
    expect(kind == "token", f"{what}: after the provider is back, a new stream gets a token", (kind, p))
    if kind == "token":
        info = srv.introspect(p["token"])
        # The provider answered the renewal asked while it hung only when it came back: that
        # answer is older than it looks (its token was issued when the request was served).
        expect(info.get("active") is True and p["expires_at"] - time.time() >= 3 - 1,
               f"{what}: the token given after the provider came back is active at the server and not "
               f"under min_ttl", (info, f"told {p['expires_at'] - time.time():.1f}s left"))
    s.close()


def e6_hangups(srv, d, proxy):
    what = "E6 (hang-ups during refreshes)"
    # First refresh of a new key in flight (1.5 s): half the callers hang up meanwhile.
    streams = [Stream(d, {"credential": "slowh", "scopes": ["read"], "min_ttl": 3}) for _ in range(20)]
    time.sleep(0.3)
    for s in streams[:10]:
        s.close()
    for s in streams[10:]:
        kind, p = s.next(timeout=15)
        expect(kind == "token", f"{what}: a caller that stayed gets the first token", (kind, p))
    # Renewal of the same key in flight: all hang up, one by one, while it is.
    exp = streams[10].tokens[0][1]["expires_at"]
    wait_until(lambda: time.time() >= exp - 6.0, 15, "the renewal point of E6")
    for s in streams[10:]:
        s.close()
        time.sleep(0.1)
    time.sleep(3)
    # And a new subscriber of the key afterwards works.
    s = Stream(d, {"credential": "slowh", "scopes": ["read"], "min_ttl": 3})
    kind, p = s.next(timeout=15)
    expect(kind == "token", f"{what}: a new stream on the key works afterwards", (kind, p))
    s.close()


def e7_remove_readd(srv, d, proxy):
    what = "E7 (credential removed during a renewal refresh)"
    s = Stream(d, {"credential": "gone", "min_ttl": 3})
    kind, p = s.next(timeout=15)
    expect(kind == "token", f"{what}: the stream starts", (kind, p))
    exp = p["expires_at"]
    wait_until(lambda: time.time() >= exp - 6.2, 15, "the renewal point of E7")
    time.sleep(0.5)  # the renewal refresh (1.5 s) is in flight
    t0 = time.monotonic()
    rc, out, err = d.tokenctl("remove", "gone")
    expect(rc == 0, f"{what}: tokenctl remove exits 0", err)
    kind, m = s.next(timeout=5)
    expect(kind == "error" and m["error"] == ERR + "NoSuchCredential" and time.monotonic() - t0 <= 2,
           f"{what}: NoSuchCredential at once", (kind, m))
    s.close()
    add_via(d, "gone", srv, proxy)
    s = Stream(d, {"credential": "gone", "min_ttl": 3})
    run_stream(srv, s, 12, f"{what}: re-added")
    expect(len(s.tokens) >= 2, f"{what}: a stream on the re-added credential gets tokens and renewals",
           len(s.tokens))
    s.close()


def e8_expiry_base(srv, d, proxy):
    """The expiry a stream is told is counted from when the provider answered, not from when the
    answer arrived: with a 2.5 s provider the told expires_at must not pass the server's exp
    (whole seconds: 1 s slack for the server's rounding of iat)."""
    what = "E8 (2.5 s provider: told expiry vs the server's)"
    proxy.delay = 2.5
    s = Stream(d, {"credential": "slow", "scopes": ["openid", "write"], "min_ttl": 3})
    kind, p = s.next(timeout=15)
    proxy.delay = 0
    if not expect(kind == "token", f"{what}: the stream starts", (kind, p)):
        return
    info = srv.introspect(p["token"])
    expect(info.get("active") is True and isinstance(info.get("exp"), int), f"{what}: active, with exp", info)
    if isinstance(info.get("exp"), int):
        expect(p["expires_at"] <= info["exp"] + 1,
               f"{what}: told expires_at {p['expires_at']} is not later than the server's exp {info['exp']} (+1 s)",
               p["expires_at"] - info["exp"])
    s.close()


def case_e(ctx, srv, d, pq, ph, pg, ps):
    log("=== E. concurrent scenarios")
    pq.delay = 1.5
    jobs = [
        (e1_queued_keys, (srv, d, pq)),
        (e2_boundaries, (srv, d)),
        (e3_mixed_min_ttl, (ctx, d)),
        (e4_pipelined_oneway, (srv, d)),
        (e5_provider_hangs, (srv, d, ph)),
        (e6_hangups, (srv, d, pq)),
        (e7_remove_readd, (srv, d, pg)),
        (e8_expiry_base, (srv, d, ps)),
    ]
    errors = []

    def wrap(fn, args):
        try:
            fn(*args)
        except Exception as e:  # a harness check() that raised: recorded, the others go on
            errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=wrap, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for e in errors:
        expect(False, "E: a scenario raised", e)
    pq.delay = 0


def case_f(srv, d):
    log("=== F. MaxLifetime= shortened by a reload while a stream is open")
    s = Stream(d, {"credential": "main", "scopes": ["write"], "min_ttl": 2})
    kind, p = s.next(timeout=15)
    check(kind == "token", "F: the stream starts", p)
    d.write_policy(test_agent_policy(max_lifetime="7s"))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("max_lifetime") == 7, 10, "the reload with MaxLifetime=7s")
    kind, p = s.next(timeout=TTL + 3)
    now = time.time()
    if kind == "token":
        expect(p["expires_at"] <= now + 7 + 1,
               "F: after the reload the stream is told an expiry within the new MaxLifetime (7 s)",
               f"told {p['expires_at'] - now:.1f}s")
    else:
        expect(kind == "error", "F: the stream ends with an error or goes on within MaxLifetime", (kind, p))
    s.close()
    time.sleep(0.2)
    check_audit(d, "main", [s], "F")
    d.write_policy(test_agent_policy())
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("max_lifetime") in (None, 0), 10, "the reload without MaxLifetime")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


def case_g(srv, d, proxy):
    log("=== G. 1024 streams: TooManySubscriptions, freed slots, reload and SIGTERM with streams open")
    raise_nofile(4096)
    # Warm the key so that the streams start from the cache.
    warm = Stream(d, {"credential": "main", "scopes": ["read"], "min_ttl": 2})
    kind, p = warm.next(timeout=15)
    check(kind == "token", "G: the first stream starts", p)
    streams = [warm]
    t0 = time.monotonic()
    for i in range(1022):
        streams.append(Stream(d, {"credential": "main", "scopes": ["read"], "min_ttl": 2}))
    n_ok = 0
    for s in streams[1:]:
        kind, p = s.next(timeout=30)
        n_ok += kind == "token"
    log(f"G: 1023 streams open after {time.monotonic() - t0:.1f}s ({n_ok + 1} got a token)")
    expect(n_ok == 1022, "G: 1023 streams got their first token", n_ok)
    # One slot left; two Subscribe calls wait on a refresh of a new key.
    proxy.delay = 1.5
    w = [Stream(d, {"credential": "slowc", "scopes": ["openid"], "min_ttl": 2}) for _ in range(2)]
    res = [x.next(timeout=15) for x in w]
    kinds = sorted((k, (m.get("error") if k == "error" else None)) for k, m in res)
    expect(kinds == [("error", ERR + "TooManySubscriptions"), ("token", None)],
           "G: with one slot left, of two waiting Subscribe calls one streams, one gets TooManySubscriptions",
           res)
    proxy.delay = 0
    streams += [x for (k, _), x in zip(res, w) if k == "token"]
    extra = Stream(d, {"credential": "main", "scopes": ["read"], "min_ttl": 2})
    kind, m = extra.next(timeout=10)
    expect(kind == "error" and m["error"] == ERR + "TooManySubscriptions" and
           (m.get("parameters") or {}).get("max") == 1024, "G: the 1025th stream: TooManySubscriptions{max 1024}",
           (kind, m))
    extra.close()
    for x in w:
        if x not in streams:
            x.close()
    # Free 10 slots: 10 new streams fit, the 11th does not.
    for s in streams[-10:]:
        s.close()
    streams = streams[:-10]
    time.sleep(0.5)
    fresh = [Stream(d, {"credential": "main", "scopes": ["read"], "min_ttl": 2}) for _ in range(10)]
    got = [f.next(timeout=10)[0] for f in fresh]
    expect(got == ["token"] * 10, "G: slots freed by hang-ups are usable again", got)
    streams += fresh
    extra = Stream(d, {"credential": "main", "scopes": ["read"], "min_ttl": 2})
    kind, m = extra.next(timeout=10)
    expect(kind == "error" and m["error"] == ERR + "TooManySubscriptions", "G: and the cap holds again", (kind, m))
    extra.close()
    # A reload (same policy) with 1024 streams open: none ends.
    d.sighup()
    time.sleep(1.5)
    sel = selectors.DefaultSelector()
    for s in streams:
        s.conn.sock.setblocking(False)
        sel.register(s.conn.sock, selectors.EVENT_READ, s)
    errors = 0
    t_end = time.monotonic() + 2
    while time.monotonic() < t_end:
        for key, _ in sel.select(0.2):
            try:
                data = key.data.conn.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                errors += 1
                sel.unregister(key.fileobj)
                continue
            for m in key.data.conn.feed(data):
                errors += "error" in m
    expect(errors == 0, "G: a policy reload with 1024 streams open ends none of them", errors)
    # SIGTERM with the streams open.
    t0 = time.monotonic()
    rc = d.stop()
    took = time.monotonic() - t0
    expect(rc == 0, "G: tokend exits 0 on SIGTERM with 1024 streams open", rc)
    expect(took <= 5.0, f"G: and promptly ({took:.2f}s)")
    sel.close()
    for s in streams:
        s.close()


def main(ctx):
    srv = ctx.oauth_server(access_ttl=TTL)
    d = ctx.tokend(keep_fresh=0, consent_timeout=30)
    proxies = {name: Proxy(srv.port) for name in ("slow", "slowq", "hang", "gone", "slowc")}
    try:
        d.add("main", srv)
        add_via(d, "slow", srv, proxies["slow"])
        add_via(d, "slowq", srv, proxies["slowq"])
        add_via(d, "slowh", srv, proxies["slowq"])
        add_via(d, "hang", srv, proxies["hang"])
        add_via(d, "gone", srv, proxies["gone"])
        add_via(d, "slowc", srv, proxies["slowc"])
        proxies["gone"].delay = 1.5
        for name in ("b0", "b7", "bd"):
            d.add(name, srv)

        case_a(srv, d, proxies["slow"])
        case_b(srv, d, proxies["slow"])
        case_c(ctx, srv, d)
        case_d(srv, d, proxies["slow"])
        case_e(ctx, srv, d, proxies["slowq"], proxies["hang"], proxies["gone"], proxies["slow"])
        case_f(srv, d)
        case_g(srv, d, proxies["slowc"])

        with open(d.log_path, errors="replace") as f:
            text = f.read()
        expect("eyJ" not in text, "no JWT-looking token in the daemon's log")
        # (The harness checks this too, but only when every check passed.)
        bad = [ln for ln in text.splitlines()
               if "AddressSanitizer" in ln or "LeakSanitizer" in ln or "runtime error:" in ln]
        expect(not bad, "no sanitizer report in the daemon's log", bad[:5])
    finally:
        for p in proxies.values():
            p.close()
    if FAILURES:
        raise TestFailure(f"{len(FAILURES)} check(s) failed:\n" + "\n".join(FAILURES))


if __name__ == "__main__":
    run_test(main, __doc__)
