#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 4: one refresh for many concurrent callers (single flight).

Server access tokens live 10 s; the daemon runs with --keep-fresh 0 (no proactive refresh), so
the cached token really runs out. 200 Unix socket connections are opened (and each checked with
GetInfo) beforehand. At the token's expires_at + 0.2 s (when it has less than the default
min_ttl of 1 s left, or is gone) all 200 send GetToken in a tight loop, then all replies are read.
Expected: exactly ONE new refresh_token grant at the server, all 200 replies carry the same new
token, which the server introspects as active; no reuse detected, no invalid_grant.
Phase 2: 200 callers spread over 4 uncached scope sets at once: exactly 4 refreshes, run one
after the other (no reuse detected at the rotating server), one token per scope set.
"""
import os
import resource
import selectors
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import VarlinkConnection, check, encode_call, log, run_test, sleep_until  # noqa: E402

NAME = "crowd"
N = 200
TTL = 10


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        log(f"RLIMIT_NOFILE raised from {soft} to {new}")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(soft >= need, f"RLIMIT_NOFILE allows {need} descriptors", soft)


def main(ctx):
    raise_nofile(N + 128)
    srv = ctx.oauth_server(access_ttl=TTL)
    d = ctx.tokend(keep_fresh=0)
    d.add(NAME, srv)

    p1 = d.token(NAME)
    t1, e1 = p1["token"], p1["expires_at"]
    log(f"T1 expires_at {e1} (in {e1 - time.time():.2f}s)")

    conns = []
    try:
        for _ in range(N):
            conns.append(VarlinkConnection(d.socket, timeout=30))
        for c in conns:  # every connection accepted and served before the burst
            r = c.call("org.varlink.service.GetInfo")
            assert "error" not in r, r
        check(len(conns) == N, f"{N} connections open and answering GetInfo")

        msg = encode_call("io.tokend.agent.GetToken", {"credential": NAME})
        sleep_until(e1 + 0.2)
        before = srv.stats()
        t0 = time.monotonic()
        for c in conns:
            c.sock.sendall(msg)
        t_sent = time.monotonic() - t0
        log(f"{N} GetToken calls sent in {t_sent * 1000:.1f} ms at expires_at{time.time() - e1:+.2f}s")

        sel = selectors.DefaultSelector()
        for c in conns:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
        replies = {}
        deadline = time.monotonic() + 60
        while len(replies) < N:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 1.0)):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    replies[c] = {"error": "(connection closed without reply)"}
                    sel.unregister(c.sock)
                    continue
                msgs = c.feed(data)
                if msgs:
                    replies[c] = msgs[0]
                    sel.unregister(c.sock)
        sel.close()
        log(f"{len(replies)} replies read {time.monotonic() - t0:.2f}s after the burst")
    finally:
        for c in conns:
            c.close()

    check(len(replies) == N, f"all {N} calls answered", f"{len(replies)} answered")
    errors = [m for m in replies.values() if "error" in m]
    check(not errors, "no call failed", errors[:3])
    tokens = {m["parameters"]["token"] for m in replies.values()}
    check(len(tokens) == 1, f"all {N} replies carry the same token", f"{len(tokens)} distinct tokens")
    t2 = tokens.pop()
    check(t2 != t1, "it is a new token, not the expiring one")
    exps = {m["parameters"]["expires_at"] for m in replies.values()}
    check(len(exps) == 1 and exps.pop() > e1, "one expires_at for all, later than the old one")

    after = srv.stats()
    new_refreshes = after["grants"]["refresh_token"] - before["grants"]["refresh_token"]
    check(new_refreshes == 1, "exactly ONE refresh_token grant at the server for the burst", new_refreshes)
    check(after["reuse_detected"] == 0 and after["refresh_errors"].get("invalid_grant", 0) == 0,
          "no reuse detected, no invalid_grant", after)
    info = srv.introspect(t2)
    check(info.get("active") is True, "the shared token is introspected active", info)

    # The daemon is fine afterwards: the same token from the cache.
    p3 = d.token(NAME)
    check(p3["token"] == t2, "a later GetToken gets the same cached token")
    check(srv.refresh_count() - before["grants"]["refresh_token"] == 1, "still one refresh")

    # Phase 2: bursts for several uncached scope sets of the same credential at once. A rotating
    # provider sees two concurrent refreshes with one refresh token as reuse and kills the
    # grant, so the daemon must run them one after the other: one refresh per scope set, each
    # group gets one token, and the server detects no reuse.
    groups = [["read"], ["write"], ["openid", "read"], ["read", "write"]]
    per_group = N // len(groups)
    log(f"=== phase 2: {len(groups)} uncached scope sets x {per_group} callers at once")
    before = srv.stats()
    conns = []
    try:
        for i in range(per_group * len(groups)):
            conns.append((groups[i % len(groups)], VarlinkConnection(d.socket, timeout=30)))
        for _, c in conns:
            assert "error" not in c.call("org.varlink.service.GetInfo")
        frames = [encode_call("io.tokend.agent.GetToken", {"credential": NAME, "scopes": g}) for g, _ in conns]
        for (g, c), f in zip(conns, frames):
            c.sock.sendall(f)
        results = {}
        for g, c in conns:
            m = c.read_reply(timeout=60)
            results.setdefault(tuple(g), []).append(m)
    finally:
        for _, c in conns:
            c.close()
    after = srv.stats()
    errors = [m for ms in results.values() for m in ms if "error" in m]
    check(not errors, "phase 2: no call failed", errors[:3])
    tokens_by_group = {g: {m["parameters"]["token"] for m in ms} for g, ms in results.items()}
    check(all(len(t) == 1 for t in tokens_by_group.values()), "phase 2: one token per scope set",
          {g: len(t) for g, t in tokens_by_group.items()})
    all_tokens = [next(iter(t)) for t in tokens_by_group.values()]
    check(len(set(all_tokens)) == len(groups), "phase 2: a distinct token per scope set")
    new_refreshes = after["grants"]["refresh_token"] - before["grants"]["refresh_token"]
    check(new_refreshes == len(groups), f"phase 2: exactly {len(groups)} refreshes (one per scope set)",
          new_refreshes)
    check(after["reuse_detected"] == 0 and after["refresh_errors"].get("invalid_grant", 0) == 0,
          "phase 2: no reuse detected, no invalid_grant (refreshes were serialized)", after)
    for g, t in zip(tokens_by_group, all_tokens):
        info = srv.introspect(t)
        check(info.get("active") is True and sorted(info.get("scope", "").split()) == sorted(g),
              f"phase 2: {list(g)} token active with exactly those scopes", info)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
