#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""`tokenctl store migrate` both ways keeps the credential working.

1. tokend --store keyring; add a credential: its secrets are in the kernel keyring.
2. With the collection locked, migrating to secret-service fails with a clear error and the
   credential stays in the keyring, working.
3. Unlocked: `tokenctl store migrate --to secret-service` moves it (written, read back, state
   file updated, old keys removed); new credentials go there too; a refresh works.
4. The daemon restarts with --store keyring: the credential is still found in the Secret
   Service (tokenctl list names its store) and refreshes.
5. `tokenctl store migrate --to keyring` moves it back: the items are gone, the keys are back,
   a refresh works, and again after a restart.
Throughout: reuse_detected == 0 and no invalid_grant.
"""
from storelib import (check, check_stats, items, keyring, refresh_with, require_keyring, run_test,
                      state_file_store, store_info, wait_store)

NAME = "mover"


def main(ctx):
    require_keyring()
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend(extra_args=["--store", "keyring"])
    d.add(NAME, srv)
    expected = 1
    check(d.has_secret(NAME) and d.has_secret(NAME, "client_secret"), "secrets in the kernel keyring")
    check(state_file_store(d, NAME) == "keyring", "credentials.json: store keyring")

    # 2. Locked: refused, nothing moves.
    keyring("lock")
    rc, out, err = d.tokenctl("store", "migrate", "--to", "secret-service")
    check(rc == 1 and "locked" in err, "migrating to a locked Secret Service fails, saying why", err)
    check(d.has_secret(NAME) and state_file_store(d, NAME) == "keyring", "the credential stayed in the keyring")
    check(items(d, NAME) == 0, "and left no item behind")
    expected += 1
    refresh_with(srv, d, NAME, ["read"], expected, "after the failed migration")
    keyring("stop")
    keyring("start")

    # 3. Keyring -> Secret Service.
    wait_store(d, "ok")
    rc, out, err = d.tokenctl("store", "migrate", "--to", "secret-service")
    check(rc == 0 and "Moved 1 credential to the secret-service store" in err, "migrate --to secret-service", err)
    check(items(d, NAME) == 1 and items(d, NAME, "client_secret") == 1, "the secrets are Secret Service items")
    check(not d.has_secret(NAME) and not d.has_secret(NAME, "client_secret"), "the keyring keys are gone")
    check(state_file_store(d, NAME) == "secret-service", "credentials.json: store secret-service")
    info = store_info(d)
    check(info["store"] == "secret-service", "new credentials go to the Secret Service now", info)
    expected += 1
    refresh_with(srv, d, NAME, ["write"], expected, "after migrating to secret-service")

    # 4. Restart with another --store: still found where it is.
    d.restart()
    info = store_info(d)
    check(info["store"] == "keyring", "--store keyring after the restart", info)
    rc, out, _ = d.tokenctl("list")
    check(rc == 0 and "store: secret-service" in out, "tokenctl list names the credential's store", out)
    expected += 1
    refresh_with(srv, d, NAME, ["openid"], expected, "restarted with --store keyring")
    wait_store(d, "ok", pending=0)

    # 5. Secret Service -> keyring.
    rc, out, err = d.tokenctl("store", "migrate", "--to", "keyring")
    check(rc == 0 and "Moved 1 credential to the keyring store" in err, "migrate --to keyring", err)
    check(d.has_secret(NAME) and d.has_secret(NAME, "client_secret"), "the keyring keys are back")
    wait_store(d, "ok", pending=0)
    check(items(d, NAME) == 0 and items(d, NAME, "client_secret") == 0, "the Secret Service items are gone")
    check(state_file_store(d, NAME) == "keyring", "credentials.json: store keyring")
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "read"], expected, "after migrating back")
    d.restart()
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "write"], expected, "after migrating back and a restart")
    rc, out, err = d.tokenctl("store", "migrate", "--to", "keyring")
    check(rc == 0 and "Moved 0 credentials" in err, "nothing left to move", err)
    check_stats(srv, expected, "at the end")


run_test(main, __doc__)
