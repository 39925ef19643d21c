#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 3: tokens in use are refreshed ahead of expiry, with nobody waiting.

Server access tokens live 10 s; the daemon runs with its default --keep-fresh (900 s).
1. Add a credential and get its token T1 (expires_at E1).
2. Make NO request to tokend until about E1-1.5 s while watching the server's stats only:
   exactly one refresh_token grant happens in that silence, and the new token was issued
   before T1 expired (server clock: iat of T2 < exp of T1; the daemon refreshes at 75-80% of
   the lifetime, i.e. at least 2 s before the real expiry).
3. GetToken then returns T2 != T1 with expires_at > E1, served from the cache (no new refresh).
4. For ~25 s, GetToken every 0.5 s, for every scope and for ["read"] (two cache entries whose
   refreshes share the rotating refresh token): every reply is valid for at least the default min_ttl (a
   tenth of the lifetime: 1 s; expires_at has 1 s resolution, so the check is
   expires_at + 1 - t_send >= 1), every distinct token is introspected active right away,
   at least 2 further distinct tokens appear, and the server sees no more refreshes than
   distinct tokens (+1 in flight), no reuse and no invalid_grant.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, log, run_test, sleep_until  # noqa: E402

NAME = "fresh"
TTL = 10
LOOP_SECONDS = 25
INTERVAL = 0.5


def main(ctx):
    srv = ctx.oauth_server(access_ttl=TTL)
    d = ctx.tokend()  # default --keep-fresh
    d.add(NAME, srv)

    base = srv.refresh_count()  # the add's refresh; T1 below comes from the cache
    p1 = d.token(NAME)
    t1, e1 = p1["token"], p1["expires_at"]
    now = time.time()
    log(f"T1 expires_at E1={e1} (in {e1 - now:.2f}s); refresh grants so far: {base}")
    check(3 <= e1 - now <= TTL + 1, f"T1 (from AddCredential's refresh) has most of its {TTL}s left", e1 - now)

    info1 = srv.introspect(t1)
    check(info1.get("active") is True, "T1 introspected active", info1)
    exp1 = info1["exp"]

    # Silence: watch the server only, no request to tokend. The proactive refresh starts at
    # 75-80% of the lifetime, at least 2 s before the real expiry (< E1 + 1). Its timeliness is
    # judged below from the server's own clock (iat of T2 vs exp of T1), not from our polling,
    # so a slow machine cannot fail this; the silence just lasts until the refresh was seen
    # (and at least until E1-1.5), or until E1+2 at the latest.
    silence_end = e1 - 1.5
    seen_at = None
    while True:
        n = srv.refresh_count()
        t = time.time()
        if n != base and seen_at is None:
            seen_at = t
            log(f"server saw refresh #{n - base} at E1{t - e1:+.2f}s with no request to tokend")
        if seen_at is not None and t >= silence_end:
            break
        if seen_at is None and t >= e1 + 2:
            break
        time.sleep(0.1)
    count = srv.refresh_count() - base
    check(seen_at is not None, "a refresh happened during the silence (no request waiting)",
          f"no refresh by E1{time.time() - e1:+.2f}s")
    check(count == 1, "exactly one refresh_token grant during the silence", count)

    sleep_until(silence_end)
    p2 = d.token(NAME)
    check(p2["token"] != t1, "GetToken after the silence returns a new token T2 != T1")
    check(p2["expires_at"] > e1, "T2 expires after T1", (p2["expires_at"], e1))
    check(srv.refresh_count() - base == 1, "T2 came from the cache (no refresh on demand)")
    info = srv.introspect(p2["token"])
    check(info.get("active") is True, "T2 introspected active", info)
    check(info["iat"] < exp1, "T2 was issued (server clock) before T1 expired at the server",
          f"T2 iat {info['iat']}, T1 exp {exp1}")

    # Steady use of two cache entries of the credential (every scope, and ["read"]): their
    # proactive refreshes queue behind each other on the one rotating refresh token.
    pr = d.token(NAME, ["read"])
    entries = {"full": None, "read": ["read"]}
    distinct = {"full": [p2["token"]], "read": [pr["token"]]}
    loop_base = srv.refresh_count()
    min_margin = None
    n_calls = 0
    start = time.monotonic()
    while time.monotonic() - start < LOOP_SECONDS:
        for label, scopes in entries.items():
            t_send = time.time()
            p = d.token(NAME, scopes)
            n_calls += 1
            margin = p["expires_at"] + 1 - t_send  # upper bound of the remaining lifetime at send time
            min_margin = margin if min_margin is None else min(min_margin, margin)
            if margin < 1.0:
                raise AssertionError(f"FAILED: reply #{n_calls} ({label}) served a token that expires too soon: "
                                     f"expires_at {p['expires_at']}, sent at {t_send:.3f} "
                                     f"(at most {margin:.2f}s left, default min_ttl 1s)")
            if p["token"] not in distinct[label]:
                distinct[label].append(p["token"])
                info = srv.introspect(p["token"])
                log(f"{label}: new token #{len(distinct[label])}: expires_at {p['expires_at']} "
                    f"(in {p['expires_at'] - time.time():.2f}s), introspection active={info.get('active')}, "
                    f"scope '{info.get('scope')}'")
                check(info.get("active") is True, f"{label}: token #{len(distinct[label])} introspected active", info)
                if scopes:
                    check(info.get("scope") == " ".join(scopes), f"{label}: token carries exactly {scopes}", info)
            sleep_until(t_send + INTERVAL / 2)
    loop_refreshes = srv.refresh_count() - loop_base
    new_tokens = sum(len(v) - 1 for v in distinct.values())
    log(f"{n_calls} calls, new tokens {({k: len(v) - 1 for k, v in distinct.items()})}, {loop_refreshes} refreshes, "
        f"smallest margin {min_margin:.2f}s")
    check(True, f"all {n_calls} replies valid for at least the default min_ttl (smallest upper bound "
                f"{min_margin:.2f}s)")
    for label, toks in distinct.items():
        check(len(toks) >= 3, f"{label}: at least 2 further distinct tokens during the loop", len(toks) - 1)
    check(new_tokens <= loop_refreshes <= new_tokens + len(entries),
          "refreshes during the loop match the new tokens (+1 per entry in flight at most)",
          (loop_refreshes, new_tokens))
    st = srv.stats()
    check(st["reuse_detected"] == 0 and st["refresh_errors"].get("invalid_grant", 0) == 0,
          "no reuse detected, no invalid_grant", st)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
