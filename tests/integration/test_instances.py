#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Two tokend instances of the same uid stay apart.

Two daemons with different XDG_STATE_HOME (so different instance ids and keyrings) and sockets
each add a credential with the SAME name from different grants (separate logins at the server).
- the instance ids and keyrings differ; each keyring holds its own secrets;
- each daemon serves its own tokens: the tokens differ, both are active, and each forces its own
  refresh with its own rotated refresh token (no reuse detected, no invalid_grant);
- removing the credential in one leaves the other working (a refresh still succeeds), with its
  keyring entries intact, also across a restart of the remaining daemon.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import EXIT_NO_SUCH, check, log, run_test  # noqa: E402

NAME = "shared"


def main(ctx):
    srv = ctx.oauth_server()
    a = ctx.tokend(name="alpha")
    b = ctx.tokend(name="beta")
    check(a.instance != b.instance, "the two daemons have different instance ids", (a.instance, b.instance))

    a.add(NAME, srv)
    b.add(NAME, srv)
    check(a.has_secret(NAME) and b.has_secret(NAME), "each instance keyring holds its own refresh token")

    ta, tb = a.token(NAME), b.token(NAME)
    check(ta["token"] != tb["token"], "the two daemons serve different tokens for the same name")
    for label, t in (("alpha", ta), ("beta", tb)):
        info = srv.introspect(t["token"])
        check(info.get("active") is True and info.get("client_id") == "tokend-test",
              f"{label}'s token is active", info)

    # Each refreshes with its own refresh token: interleave rotating refreshes.
    for scopes in (["read"], ["write"], ["read", "write"]):
        before = srv.refresh_count()
        pa, pb = a.token(NAME, scopes), b.token(NAME, scopes)
        check(pa["token"] != pb["token"], f"{scopes}: distinct tokens from the two daemons")
        check(srv.refresh_count() == before + 2, f"{scopes}: one refresh per daemon")
        check(srv.introspect(pa["token"]).get("active") and srv.introspect(pb["token"]).get("active"),
              f"{scopes}: both active")
    st = srv.stats()
    check(st["reuse_detected"] == 0 and st["refresh_errors"].get("invalid_grant", 0) == 0,
          "no reuse detected and no invalid_grant: the instances do not share refresh tokens", st)

    log("=== remove in alpha")
    rc, _, err = a.tokenctl("remove", NAME)
    check(rc == 0, "tokenctl remove in alpha exits 0", err)
    rc, _, err = a.tokenctl("token", NAME)
    check(rc == EXIT_NO_SUCH, f"alpha: tokenctl token exits {EXIT_NO_SUCH} after remove", (rc, err))
    check(not a.has_secret(NAME), "alpha's keyring entry is gone")
    check(b.has_secret(NAME) and b.has_secret(NAME, "client_secret"), "beta's keyring entries are intact")

    rc, out, err = b.tokenctl("token", NAME)
    check(rc == 0 and srv.introspect(out.strip()).get("active") is True, "beta: tokenctl token still works", err)
    before = srv.refresh_count()
    p = b.token(NAME, ["openid", "read"])
    check(srv.refresh_count() == before + 1 and srv.introspect(p["token"]).get("active") is True,
          "beta: a new refresh still works")
    c = b.list_json().get(NAME)
    check(c is not None and c["state"] == "ok", "beta still lists the credential in state ok", c)

    b.restart()
    p = b.token(NAME, ["openid", "write"])
    check(srv.introspect(p["token"]).get("active") is True, "beta after a restart: a refresh still works")
    st = srv.stats()
    check(st["reuse_detected"] == 0 and st["refresh_errors"].get("invalid_grant", 0) == 0,
          "still no reuse and no invalid_grant", st)
    check(a.alive() and b.alive(), "both daemons still running")


if __name__ == "__main__":
    run_test(main, __doc__)
