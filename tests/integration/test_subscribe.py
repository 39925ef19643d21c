#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""io.tokend.agent.Subscribe: a token stream for agents that run for hours.

Server access tokens live 10 s (refresh tokens rotate); tokend runs with --keep-fresh 0, so only
subscribers keep a token fresh.
1. One subscriber, min_ttl 3 s, for 40 s: at least 5 successive, distinct tokens, each with
   continues: true, introspected active at the server the moment it arrives, told to live at
   least min_ttl, and each arriving before the previous one fell under min_ttl.
2. 100 subscribers of one (credential, scopes) key for about 22 s: every subscriber receives the
   same tokens, and the server saw exactly one refresh per token delivered (one per renewal, not
   one per subscriber). After all 100 hang up, no further refresh happens (closing cancels).
3. Without "more": ExpectedMore. A min_ttl that leaves no room to renew (8 s of 10): named
   LifetimeTooShort. Unknown credential: NoSuchCredential, and the stream is over.
4. Ask mode (the test interpreter's agent in Mode=ask): a Subscribe waits for consent like a
   GetToken; the owner approves it (a time grant G); five more subscribers are covered by G at
   once; a sixth runs under another grant H (other scopes). `tokenctl grants revoke G` ends all
   six streams of G with ConsentEnded{grant G, reason "revoked"} within a second of the revoke;
   the stream under H goes on and still gets its renewal.
5. A single-use approval: the first token, then ConsentEnded{reason "used"} at the renewal.
6. A policy reload that denies the agent ends its stream at once with PolicyDenied.
7. ReauthenticationRequired at the renewal after the refresh token was revoked at the server;
   NoSuchCredential at once when the credential is removed (tokenctl remove).
9. (run before 8) MaxLifetime=6s: every reply is told to expire within 6 s, successors arrive in
   time (the same token told again when it still has life); min_ttl 4 is LifetimeTooShort.
8. The provider goes away (server stopped): the stream ends with ProviderUnavailable no later
   than when the token it holds falls under min_ttl, never with a dead token left unannounced.
Every daemon exits 0 on SIGTERM at the end; no token is in its log.
"""
import os
import resource
import selectors
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import revoke_grant  # noqa: E402
from harness import VarlinkConnection, check, log, run_test, test_agent_policy, wait_until  # noqa: E402

CRED = "sub"
TTL = 10
MIN_TTL = 3
SUBSCRIBE = "io.tokend.agent.Subscribe"
ERR = "io.tokend.agent."


class Stream:
    """One Subscribe call on its own connection."""

    def __init__(self, d, params, more=True, timeout=60):
        self.conn = VarlinkConnection(d.socket, timeout=timeout)
        self.params = params
        self.conn.send(SUBSCRIBE, params, **({"more": True} if more else {}))
        self.tokens = []  # (arrival wall time, parameters)

    def next(self, timeout=30):
        """The next reply: ("token", params) with the arrival checks done, or ("error", message)."""
        m = self.conn.read_reply(timeout)
        now = time.time()
        if "error" in m:
            check(not m.get("continues"), "an error reply ends the stream (no continues)", m)
            check("token" not in (m.get("parameters") or {}), "no token in an error reply", m)
            return "error", m
        check(m.get("continues") is True, "every token reply of a stream has continues: true", m)
        p = m["parameters"]
        check(p.get("token") and p.get("token_type") and isinstance(p.get("expires_at"), int),
              "a token reply carries token, token_type and expires_at", sorted(p))
        self.tokens.append((now, p))
        return "token", p

    def expect_error(self, error, timeout=30):
        kind, m = self.next(timeout)
        check(kind == "error" and m["error"] == ERR + error, f"the stream ends with {error}", m)
        return m.get("parameters") or {}

    def close(self):
        self.conn.close()


def check_successor(prev, cur, min_ttl, what):
    """cur arrived while prev still had at least min_ttl left (expires_at is whole seconds: 1 s slack)."""
    t_prev, p_prev = prev
    t_cur, p_cur = cur
    left = p_prev["expires_at"] - t_cur
    check(left >= min_ttl - 1, f"{what}: arrived with {left:.2f}s left on its predecessor (min_ttl {min_ttl})",
          (t_prev, p_prev["expires_at"], t_cur))


def part1(srv, d):
    log("=== 1. one subscriber, min_ttl 3, for 40 s")
    s = Stream(d, {"credential": CRED, "min_ttl": MIN_TTL})
    t_end = time.time() + 40
    while time.time() < t_end:
        kind, p = s.next(timeout=t_end - time.time() + 15)
        check(kind == "token", "the stream goes on (no error)", p)
        now = time.time()
        info = srv.introspect(p["token"])
        check(info.get("active") is True, f"token #{len(s.tokens)} is active at the server when delivered", info)
        check(p["expires_at"] - now >= MIN_TTL - 1,
              f"token #{len(s.tokens)} is told to live {p['expires_at'] - now:.1f}s >= min_ttl", p["expires_at"])
        if len(s.tokens) > 1:
            check_successor(s.tokens[-2], s.tokens[-1], MIN_TTL, f"token #{len(s.tokens)}")
            check(s.tokens[-1][1]["token"] != s.tokens[-2][1]["token"], f"token #{len(s.tokens)} is a new token")
    n = len(s.tokens)
    gaps = [round(b[0] - a[0], 2) for a, b in zip(s.tokens, s.tokens[1:])]
    log(f"{n} tokens in 40 s; gaps between deliveries: {gaps}")
    check(n >= 5, f"at least 5 successive tokens in 40 s ({n})")
    s.close()


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


def part2(srv, d):
    log("=== 2. 100 subscribers of one key share one refresh per renewal")
    raise_nofile(512)
    scopes = ["openid", "read"]  # a key of its own: nothing cached for it yet
    before = srv.refresh_count()
    streams = [Stream(d, {"credential": CRED, "scopes": scopes, "min_ttl": MIN_TTL}) for _ in range(100)]
    sel = selectors.DefaultSelector()
    for s in streams:
        sel.register(s.conn.sock, selectors.EVENT_READ, s)
        s.conn.sock.setblocking(False)
    t_end = time.monotonic() + 22
    while time.monotonic() < t_end:
        for key, _ in sel.select(0.5):
            s = key.data
            try:
                data = s.conn.sock.recv(65536)
            except BlockingIOError:
                continue
            check(data, "no subscriber's stream is closed by the daemon")
            for m in s.conn.feed(data):
                check("error" not in m and m.get("continues") is True, "every reply is a token that continues", m)
                s.tokens.append((time.time(), m["parameters"]))
    # Let a renewal in flight land, so that the server's count and the deliveries match.
    time.sleep(1.0)
    for key, _ in sel.select(0.5):
        s = key.data
        try:
            data = s.conn.sock.recv(65536)
        except BlockingIOError:
            continue
        for m in s.conn.feed(data):
            s.tokens.append((time.time(), m["parameters"]))
    refreshes = srv.refresh_count() - before
    seqs = [[p["token"] for _, p in s.tokens] for s in streams]
    distinct = list(dict.fromkeys(seqs[0]))
    check(distinct == seqs[0], "no subscriber got the same token twice", len(seqs[0]) - len(distinct))
    log(f"tokens delivered per subscriber: {len(seqs[0])}; distinct tokens: {len(distinct)}; "
        f"refreshes at the server: {refreshes}")
    check(len(distinct) >= 4, f"at least 4 renewals in 22 s ({len(distinct)} tokens)")
    check(all(seq == seqs[0] for seq in seqs), "all 100 subscribers received the same tokens in the same order",
          [len(x) for x in seqs])
    check(refreshes == len(distinct),
          f"one refresh per token delivered: {refreshes} refreshes for {len(distinct)} tokens to 100 subscribers")
    for s in streams:
        sel.unregister(s.conn.sock)
        s.close()
    count = srv.refresh_count()
    time.sleep(12)
    check(srv.refresh_count() == count,
          "after all 100 hung up, no refresh happened for 12 s (their renewals were cancelled)",
          srv.refresh_count() - count)


def part3(srv, d):
    log("=== 3. ExpectedMore, LifetimeTooShort, NoSuchCredential")
    s = Stream(d, {"credential": CRED}, more=False)
    kind, m = s.next()
    check(kind == "error" and m["error"] == "org.varlink.service.ExpectedMore", "without more: ExpectedMore", m)
    s.close()
    s = Stream(d, {"credential": CRED, "min_ttl": 8})
    p = s.expect_error("LifetimeTooShort")
    check(p.get("credential") == CRED and p.get("lifetime") == TTL, "LifetimeTooShort names credential and lifetime",
          p)
    s.close()
    s = Stream(d, {"credential": "nope"})
    p = s.expect_error("NoSuchCredential")
    check(p.get("credential") == "nope", "NoSuchCredential names the credential", p)
    s.close()


def approve(d, rid, *opts):
    rc, out, err = d.tokenctl("approve", rid, *opts)
    check(rc == 0, f"tokenctl approve {rid} {' '.join(opts)} exits 0", (rc, out, err))
    return out.strip()


def part4(srv, d):
    log("=== 4. revoking a grant ends every stream under it within a second")
    d.write_policy(test_agent_policy(mode="ask"))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("mode") == "ask", 10, "the reload to put the agent in ask mode")
    first = Stream(d, {"credential": CRED, "scopes": ["read"], "min_ttl": MIN_TTL})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == os.getpid() and r["scopes"] == ["read"],
                         what="the Subscribe request to wait for consent")
    g = approve(d, req["id"], "--for", "10m")
    kind, p = first.next()
    check(kind == "token", "the approved Subscribe gets its first token", p)
    others = [Stream(d, {"credential": CRED, "scopes": ["read"], "min_ttl": MIN_TTL}) for _ in range(5)]
    for s in others:
        kind, p = s.next(timeout=15)
        check(kind == "token", "a further subscriber is covered by the grant at once", p)
    other = Stream(d, {"credential": CRED, "scopes": ["write"], "min_ttl": MIN_TTL})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == os.getpid() and r["scopes"] == ["write"],
                         what="the Subscribe request for 'write' to wait")
    h = approve(d, req["id"], "--for", "10m")
    kind, p = other.next()
    check(kind == "token", "the stream under the second grant gets its token", p)

    t0 = time.monotonic()
    revoke_grant(d, g)
    for s in [first] + others:
        p = s.expect_error("ConsentEnded", timeout=5)
        took = time.monotonic() - t0
        check(p.get("grant") == g and p.get("reason") == "revoked" and p.get("credential") == CRED,
              "ConsentEnded names the grant, the credential and reason 'revoked'", p)
        check(took <= 1.0, f"the stream ended {took:.3f}s after the revoke began (<= 1 s)")
        s.close()
    log(f"all 6 streams of {g} ended within {time.monotonic() - t0:.3f}s of the revoke")
    kind, p = other.next(timeout=TTL + 5)
    check(kind == "token", f"the stream under {h} goes on: its renewal arrives", p)
    other.close()
    revoke_grant(d, h)

    log("=== 5. a single-use approval: one token, then ConsentEnded 'used'")
    s = Stream(d, {"credential": CRED, "scopes": ["read"], "min_ttl": MIN_TTL})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == os.getpid(), what="the request to wait")
    gid = approve(d, req["id"], "--once")
    kind, p = s.next()
    check(kind == "token", "the single-use approval gives the first token", p)
    p = s.expect_error("ConsentEnded", timeout=TTL + 5)
    check(p.get("grant") == gid and p.get("reason") == "used", "at the renewal: ConsentEnded, reason 'used'", p)
    s.close()

    log("=== 6. a reload that denies the agent ends its stream at once")
    d.write_policy(test_agent_policy(mode="allow"))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("mode") == "allow", 10, "the reload to allow mode")
    s = Stream(d, {"credential": CRED, "min_ttl": MIN_TTL})
    kind, p = s.next()
    check(kind == "token", "allow mode: the stream starts", p)
    d.write_policy(test_agent_policy(mode="deny"))
    t0 = time.monotonic()
    d.sighup()
    p = s.expect_error("PolicyDenied", timeout=5)
    check(time.monotonic() - t0 <= 2.0, f"PolicyDenied {time.monotonic() - t0:.2f}s after the SIGHUP", p)
    s.close()
    d.write_policy(test_agent_policy(mode="allow"))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("mode") == "allow", 10, "the reload back to allow mode")


def part7(srv, d):
    log("=== 7. ReauthenticationRequired at the renewal; NoSuchCredential when removed")
    d.add("gone", srv)
    d.add("revoked", srv)
    s = Stream(d, {"credential": "revoked", "min_ttl": MIN_TTL})
    kind, p = s.next()
    check(kind == "token", "the stream starts", p)
    # The refresh token tokend holds is not visible to the test: revoke the whole grant at the
    # server through the access token's grant (oidc-provider revokes the grant with its tokens).
    srv.revoke(p["token"])
    info = srv.introspect(p["token"])
    check(info.get("active") is not True, "the access token is revoked at the server", info)
    p = s.expect_error("ReauthenticationRequired", timeout=TTL + 5)
    check(p.get("credential") == "revoked", "ReauthenticationRequired names the credential", p)
    s.close()

    s = Stream(d, {"credential": "gone", "min_ttl": MIN_TTL})
    kind, p = s.next()
    check(kind == "token", "the stream starts", p)
    t0 = time.monotonic()
    rc, out, err = d.tokenctl("remove", "gone")
    check(rc == 0, "tokenctl remove gone exits 0", err)
    p = s.expect_error("NoSuchCredential", timeout=5)
    check(time.monotonic() - t0 <= 2.0, "NoSuchCredential at once after the removal", p)
    s.close()


def part8(srv, d):
    log("=== 8. the provider goes away: ProviderUnavailable before the token falls under min_ttl")
    s = Stream(d, {"credential": CRED, "scopes": ["openid"], "min_ttl": MIN_TTL})
    kind, p = s.next()
    check(kind == "token", "the stream starts", p)
    srv.stop()
    while True:
        kind, m = s.next(timeout=TTL + 5)
        if kind == "error":
            break
        log("a renewal arrived before the server stopped")
    now = time.time()
    check(m["error"] == ERR + "ProviderUnavailable", "the stream ends with ProviderUnavailable", m)
    last = s.tokens[-1][1]
    check(last["expires_at"] - now >= MIN_TTL - 1,
          f"it ended while the last token still had {last['expires_at'] - now:.1f}s (>= min_ttl - 1)")
    check((m.get("parameters") or {}).get("reason"), "ProviderUnavailable says why", m)
    s.close()


def part9(srv, d):
    log("=== 9. MaxLifetime=6s: each reply is told to expire within 6 s, and the next comes in time")
    d.write_policy(test_agent_policy(max_lifetime="6s"))
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("max_lifetime") == 6, 10, "the reload with MaxLifetime=6s")
    s = Stream(d, {"credential": CRED, "min_ttl": 1})
    t_end = time.time() + 15
    while time.time() < t_end:
        kind, p = s.next(timeout=10)
        check(kind == "token", "the stream goes on", p)
        check(p["expires_at"] <= time.time() + 6 + 1, "told to expire within MaxLifetime", p["expires_at"])
        if len(s.tokens) > 1:
            check_successor(s.tokens[-2], s.tokens[-1], 1, f"reply #{len(s.tokens)}")
    log(f"{len(s.tokens)} replies in 15 s under MaxLifetime=6s")
    check(len(s.tokens) >= 4, "at least 4 replies in 15 s", len(s.tokens))
    s.close()
    s = Stream(d, {"credential": CRED, "min_ttl": 4})
    p = s.expect_error("LifetimeTooShort")
    check(p.get("lifetime") == 6, "min_ttl 4 under MaxLifetime=6s: LifetimeTooShort, lifetime 6", p)
    s.close()
    d.write_policy(test_agent_policy())
    d.sighup()
    wait_until(lambda: d.whoami()["policy"].get("max_lifetime") in (None, 0), 10, "the reload without MaxLifetime")


def main(ctx):
    srv = ctx.oauth_server(access_ttl=TTL)
    d = ctx.tokend(keep_fresh=0, consent_timeout=30)
    d.add(CRED, srv)
    part1(srv, d)
    part2(srv, d)
    part3(srv, d)
    part4(srv, d)
    part7(srv, d)
    part9(srv, d)
    part8(srv, d)
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    with open(d.log_path, errors="replace") as f:
        text = f.read()
    check("eyJ" not in text, "no JWT-looking token in the daemon's log")


if __name__ == "__main__":
    run_test(main, __doc__)
