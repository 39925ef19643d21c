#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 2: scope narrowing and refusal of wider scopes.

- GetToken with scopes ["read"] returns a token the server introspects with exactly scope "read";
- ["read","write"] likewise gives exactly "read write"; ["write","read"] hits the same cache entry;
- the full-scope token is unaffected (still introspected with every scope of the credential);
- a wider request (["admin"], ["read","admin"]) gets io.tokend.agent.ScopeNotAllowed naming exactly
  the missing scope "admin", without any request to the provider;
- `tokenctl token NAME --scope admin` exits 7; `tokenctl token NAME --scope read` prints a read token.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DEFAULT_SCOPE, EXIT_REFUSED, check, log, run_test  # noqa: E402

NAME = "scoped"


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend()
    d.add(NAME, srv)
    base = srv.refresh_count()

    full = d.token(NAME)
    info = srv.introspect(full["token"])
    check(sorted(info.get("scope", "").split()) == sorted(DEFAULT_SCOPE.split()),
          "full-scope token carries every scope of the credential", info)

    seen = {full["token"]}
    for scopes in (["read"], ["read", "write"], ["write"]):
        log(f"=== scopes {scopes}")
        before = srv.refresh_count()
        p = d.token(NAME, scopes)
        check(srv.refresh_count() == before + 1, f"{scopes}: one refresh at the provider (cache miss)")
        check(p["token"] not in seen, f"{scopes}: a token distinct from the others")
        seen.add(p["token"])
        check(sorted(p["scopes"]) == sorted(scopes), f"{scopes}: reply lists exactly {sorted(scopes)}", p)
        info = srv.introspect(p["token"])
        check(info.get("active") is True, f"{scopes}: introspection active", info)
        check(sorted(info.get("scope", "").split()) == sorted(scopes),
              f"{scopes}: introspected scope is exactly '{' '.join(sorted(scopes))}'", info.get("scope"))
        check(info.get("client_id") == "tokend-test", f"{scopes}: client_id tokend-test", info)

    # Same set, other order: served from the cache.
    before = srv.refresh_count()
    again = d.token(NAME, ["write", "read"])
    rw = d.token(NAME, ["read", "write"])
    check(again["token"] == rw["token"], "['write','read'] and ['read','write'] share one cached token")
    check(srv.refresh_count() == before, "no refresh for a cached scope set")

    # The narrower refreshes did not narrow the grant: the full-scope token is still served, and a
    # forced new full-scope refresh still gets every scope.
    full2 = d.token(NAME)
    check(full2["token"] == full["token"], "full-scope token still cached")
    p = d.token(NAME, ["openid", "offline_access", "read", "write"])
    check(p["token"] == full["token"], "explicit full scope list maps to the full-scope cache entry")

    # Wider scopes: refused by the daemon without asking the provider.
    for scopes, missing in ((["admin"], ["admin"]), (["read", "admin"], ["admin"])):
        before = srv.stats()
        m = d.get_token(NAME, scopes)
        check(m.get("error") == "io.tokend.agent.ScopeNotAllowed", f"{scopes}: error ScopeNotAllowed", m)
        params = m.get("parameters", {})
        check(params.get("credential") == NAME, f"{scopes}: error names the credential", params)
        check(sorted(params.get("scopes", [])) == missing, f"{scopes}: error names exactly {missing}", params)
        check("token" not in params, f"{scopes}: no token in the error")
        after = srv.stats()
        check(after["grants"]["refresh_token"] == before["grants"]["refresh_token"]
              and after["refresh_errors"] == before["refresh_errors"],
              f"{scopes}: no request reached the provider")

    rc, out, err = d.tokenctl("token", NAME, "--scope", "admin")
    check(rc == EXIT_REFUSED, f"tokenctl token --scope admin exits {EXIT_REFUSED}", (rc, err))
    check(out.strip() == "", "tokenctl token --scope admin prints no token", out)
    check("admin" in err, "tokenctl names the refused scope", err)

    rc, out, err = d.tokenctl("token", NAME, "--scope", "read")
    check(rc == 0, "tokenctl token --scope read exits 0", err)
    info = srv.introspect(out.strip())
    check(info.get("active") is True and info.get("scope") == "read",
          "tokenctl token --scope read prints an active token with scope 'read'", info)

    st = srv.stats()
    check(st["reuse_detected"] == 0 and st["refresh_errors"].get("invalid_grant", 0) == 0,
          "no refresh token reuse and no invalid_grant at the server", st)
    check(srv.refresh_count() == base + 3, "exactly 3 refreshes after the add (read, read write, write)",
          srv.refresh_count() - base)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
