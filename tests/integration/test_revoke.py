#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3, item 6: revocation at the provider (RFC 7009).

1. `tokenctl revoke NAME` revokes the refresh token at the provider: the grant's tokens
   introspect inactive, and the credential is gone (list, keyring).
2. A credential whose provider has no revocation endpoint (added with --token-endpoint only) is
   kept, and tokenctl says so honestly (exit 7); `tokenctl remove` still removes it locally.
3. Revoking an unknown credential exits 4.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CLIENTS, EXIT_NO_SUCH, EXIT_REFUSED, check, mint, run_test  # noqa: E402
from logins import secret_file  # noqa: E402


def main(ctx):
    srv = ctx.oauth_server(access_ttl=60)
    d = ctx.tokend()
    d.add("gone", srv)
    tok = d.token("gone")["token"]
    check(srv.introspect(tok).get("active") is True, "token active before revoke")
    rc, out, err = d.tokenctl("revoke", "gone")
    check(rc == 0 and "Revoked" in err, "tokenctl revoke succeeds", (rc, err))
    check(srv.introspect(tok).get("active") is False, "the grant is inactive at the server after revoke")
    check("gone" not in d.list_json(), "the credential is gone")
    check(not d.has_secret("gone"), "its refresh token left the keyring")

    # No revocation endpoint known: kept, and said so.
    rt = mint(srv.issuer)
    rc, out, err = d.tokenctl("add", "local", "--token-endpoint", srv.issuer + "/token", "--client-id", "tokend-test",
                              "--client-secret-file", secret_file(ctx, CLIENTS["tokend-test"][0]),
                              "--insecure-loopback", stdin=rt + "\n")
    check(rc == 0, "added with a token endpoint only", err)
    rc, out, err = d.tokenctl("revoke", "local")
    check(rc == EXIT_REFUSED and "no revocation endpoint" in err, "revoke without an endpoint is refused honestly",
          (rc, err))
    check("local" in d.list_json(), "the credential is kept")
    rc, out, err = d.tokenctl("remove", "local")
    check(rc == 0 and "local" not in d.list_json(), "tokenctl remove removes it locally")

    rc, out, err = d.tokenctl("revoke", "nothing")
    check(rc == EXIT_NO_SUCH, "revoking an unknown credential exits 4", (rc, err))


run_test(main, __doc__)
