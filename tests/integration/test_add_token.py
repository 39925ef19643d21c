#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 1: tokenctl add, then tokenctl token, for each client authentication method.

For tokend-test (client_secret_basic), tokend-post (client_secret_post) and tokend-public (none):
- `tokenctl add` (refresh token on stdin) succeeds; the secrets are in the instance keyring;
- `tokenctl token` prints a token the server introspects as active, issued to that client,
  with exactly the credential's scopes;
- `tokenctl list` and `tokenctl --json list` show the credential in state ok with a cached token;
- `tokenctl remove`, then `tokenctl token` exits 4 and the keyring keys are gone.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DEFAULT_SCOPE, EXIT_NO_SUCH, check, log, run_test  # noqa: E402

CASES = [
    ("basic-cred", "tokend-test", "client_secret_basic"),
    ("post-cred", "tokend-post", "client_secret_post"),
    ("public-cred", "tokend-public", "none"),
]


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend()
    want_scopes = sorted(DEFAULT_SCOPE.split())

    for name, client, method in CASES:
        log(f"=== {name}: client {client}, auth method {method}")
        before = srv.refresh_count()
        d.add(name, srv, client_id=client)
        check(srv.refresh_count() == before + 1, f"{name}: AddCredential performed exactly one refresh")
        check(d.has_secret(name, "refresh_token"), f"{name}: refresh token stored in the instance keyring")
        if method != "none":
            check(d.has_secret(name, "client_secret"), f"{name}: client secret stored in the instance keyring")

        rc, out, err = d.tokenctl("token", name)
        check(rc == 0, f"{name}: tokenctl token exits 0", err)
        token = out.strip()
        check(len(token) > 10 and "\n" not in token, f"{name}: tokenctl token prints one token")
        check(srv.refresh_count() == before + 1, f"{name}: the token came from the cache (no new refresh)")

        info = srv.introspect(token)
        check(info.get("active") is True, f"{name}: introspection says active", info)
        check(info.get("client_id") == client, f"{name}: introspection client_id is {client}", info)
        got_scopes = sorted((info.get("scope") or "").split())
        check(got_scopes == want_scopes, f"{name}: token carries exactly the credential's scopes {want_scopes}",
              info.get("scope"))
        check(info.get("exp", 0) > time.time(), f"{name}: token exp is in the future", info)

        rc, out, err = d.tokenctl("--json", "token", name)
        check(rc == 0, f"{name}: tokenctl --json token exits 0", err)
        tj = json.loads(out)
        check(tj.get("token") == token, f"{name}: --json token returns the same cached token")
        check(sorted(tj.get("scopes", [])) == want_scopes, f"{name}: --json token lists the scopes", tj)
        check(tj.get("token_type", "").lower() == "bearer", f"{name}: token_type Bearer", tj)

        rc, out, err = d.tokenctl("list")
        check(rc == 0, f"{name}: tokenctl list exits 0", err)
        row = [line for line in out.splitlines() if line.split()[:1] == [name]]
        check(len(row) == 1 and row[0].split()[1] == "ok", f"{name}: tokenctl list shows state ok", out)
        check("token: expires" in out, f"{name}: tokenctl list shows a cached token", out)

        rc, out, err = d.tokenctl("status")
        check(rc == 0 and "Credentials:" in out and "(0 not ok)" in out and "Store: keyring (ok)" in out,
              f"{name}: tokenctl status is healthy", (rc, out, err))
        rc, out, err = d.tokenctl("--json", "status")
        st = json.loads(out) if rc == 0 else {}
        check(st.get("version") and st.get("store") == "keyring" and st.get("cached_tokens", 0) >= 1,
              f"{name}: tokenctl --json status", (rc, out))

        creds = d.list_json()
        c = creds.get(name)
        check(c is not None, f"{name}: --json list has the credential", creds)
        check(c["state"] == "ok", f"{name}: --json list state ok", c)
        check(c["client_id"] == client and c["auth_method"] == method,
              f"{name}: --json list client_id {client}, auth_method {method}", c)
        check(sorted(c["scopes"]) == want_scopes, f"{name}: --json list scopes", c)
        cached = c.get("cached") or []
        check(len(cached) >= 1 and all(e["expires_at"] > time.time() for e in cached),
              f"{name}: --json list shows a cached, unexpired token", cached)
        check("refresh_token" not in json.dumps(c) and token not in json.dumps(c),
              f"{name}: list reveals no secret")

    for name, client, method in CASES:
        rc, out, err = d.tokenctl("remove", name)
        check(rc == 0, f"{name}: tokenctl remove exits 0", err)
        rc, out, err = d.tokenctl("token", name)
        check(rc == EXIT_NO_SUCH, f"{name}: tokenctl token after remove exits {EXIT_NO_SUCH}", (rc, err))
        check(out.strip() == "", f"{name}: no token printed after remove", out)
        check(not d.has_secret(name, "refresh_token"), f"{name}: refresh token key gone from the keyring")
        check(not d.has_secret(name, "client_secret"), f"{name}: client secret key gone from the keyring")
        check(name not in d.list_json(), f"{name}: no longer listed")
        m = d.get_token(name)
        check(m.get("error") == "io.tokend.agent.NoSuchCredential"
              and m.get("parameters", {}).get("credential") == name,
              f"{name}: GetToken says NoSuchCredential naming it", m)

    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
