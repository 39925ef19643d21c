#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 6: a grant revoked at the provider makes the credential reauth-required.

1. Add a credential and get a token; revoke that access token at the server (oidc-provider then
   revokes the whole grant, refresh token included); introspection confirms it is inactive.
2. A GetToken that needs a refresh (uncached scopes ["read"]) gets
   io.tokend.agent.ReauthenticationRequired naming the credential (the server saw invalid_grant).
3. `tokenctl list` shows state reauth-required, `tokenctl --json list` has
   "state": "reauth-required" (with a last_error); `tokenctl token NAME` exits 5, and GetToken
   for any scopes fails the same way without further requests to the server (no retry loop).
4. After a daemon restart (SIGTERM, start with the same state) all of the above still holds.
5. `tokenctl add NAME --replace` with a new grant makes it usable again.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import EXIT_REAUTH, check, log, run_test  # noqa: E402

NAME = "doomed"
ERR = "io.tokend.agent.ReauthenticationRequired"


def check_reauth_state(srv, d, when):
    rc, out, err = d.tokenctl("list")
    row = [line for line in out.splitlines() if line.split()[:1] == [NAME]]
    check(rc == 0 and len(row) == 1 and row[0].split()[1] == "reauth-required",
          f"{when}: tokenctl list shows state reauth-required", out)
    c = d.list_json().get(NAME)
    check(c is not None and c["state"] == "reauth-required",
          f'{when}: tokenctl --json list has "state":"reauth-required"', c)
    check(bool(c.get("last_error")), f"{when}: --json list has a last_error", c)

    rc, out, err = d.tokenctl("status")
    check(rc == 1 and NAME in out and "reauth-required" in out and "1 not ok" in out,
          f"{when}: tokenctl status exits 1 and names the credential needing a login", (rc, out))
    before = srv.stats()
    rc, out, err = d.tokenctl("token", NAME)
    check(rc == EXIT_REAUTH, f"{when}: tokenctl token {NAME} exits {EXIT_REAUTH}", (rc, err))
    check(out.strip() == "", f"{when}: no token printed", out)
    for scopes in (None, ["read"], ["write"], ["read", "write"]):
        m = d.get_token(NAME, scopes)
        check(m.get("error") == ERR and m.get("parameters", {}).get("credential") == NAME,
              f"{when}: GetToken {scopes} -> ReauthenticationRequired naming {NAME}", m)
    time.sleep(1.5)  # a daemon that kept retrying would show up at the server now
    after = srv.stats()
    check(after["grants"]["refresh_token"] == before["grants"]["refresh_token"]
          and after["refresh_errors"] == before["refresh_errors"],
          f"{when}: no further refresh attempts at the server", (before, after))


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend()
    d.add(NAME, srv)
    p = d.token(NAME)
    check(srv.introspect(p["token"]).get("active") is True, "token active before revocation")

    srv.revoke(p["token"])
    check(srv.introspect(p["token"]).get("active") is False, "token inactive after revocation")
    before = srv.stats()

    m = d.get_token(NAME, ["read"])
    check(m.get("error") == ERR, "GetToken ['read'] (needs a refresh) -> ReauthenticationRequired", m)
    check(m.get("parameters", {}).get("credential") == NAME, "the error names the credential", m)
    check("token" not in m.get("parameters", {}), "no token in the error")
    after = srv.stats()
    check(after["refresh_errors"].get("invalid_grant", 0) == before["refresh_errors"].get("invalid_grant", 0) + 1,
          "the server answered exactly one refresh with invalid_grant", after)
    check(after["grants"]["refresh_token"] == before["grants"]["refresh_token"], "no refresh succeeded")

    check_reauth_state(srv, d, "before restart")

    log("=== restart")
    d.restart()
    check_reauth_state(srv, d, "after restart")

    log("=== replace with a new grant")
    d.add(NAME, srv, extra=["--replace"])
    c = d.list_json()[NAME]
    check(c["state"] == "ok", "after add --replace: state ok", c)
    p = d.token(NAME, ["read"])
    check(srv.introspect(p["token"]).get("active") is True, "after add --replace: GetToken ['read'] works")
    rc, out, err = d.tokenctl("token", NAME)
    check(rc == 0 and srv.introspect(out.strip()).get("active") is True,
          "after add --replace: tokenctl token prints an active token", err)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
