#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""--store auto, and credentials kept in a store that is not the default.

1. gnome-keyring running, unlocked: auto picks the Secret Service; add a credential.
2. Restart with the collection locked: auto picks the keyring for new credentials (the log says
   why), yet the credential stays in the Secret Service, loads from its keyring copy, refreshes,
   and `tokenctl list` names both its store and the locked one. A credential added now goes to
   the keyring.
3. Restart with gnome-keyring stopped: auto picks the keyring ("no Secret Service on the session
   bus"); both credentials still work.
Throughout: reuse_detected == 0 and no invalid_grant.
"""
from storelib import (check, check_stats, items, keyring, refresh_with, require_keyring, run_test,
                      state_file_store, store_info, wait_store)


def log_has(d, text):
    with open(d.log_path, errors="replace") as f:
        return text in f.read()


def main(ctx):
    require_keyring()
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend(extra_args=["--store", "auto"])
    info = wait_store(d, "ok", pending=0)
    check(info["store"] == "secret-service", "auto with an unlocked Secret Service: secret-service", info)
    d.add("first", srv)
    expected = 1
    wait_store(d, "ok", pending=0)
    check(items(d, "first") == 1, "the credential is a Secret Service item")

    keyring("lock")
    d.restart()
    info = store_info(d)
    check(info["store"] == "keyring", "auto with a locked collection: keyring for new credentials", info)
    check(info["store_state"] == "locked" and info["store_reason"].startswith("secret-service: "),
          "the state names the locked store", info)
    check(log_has(d, "keyring (--store auto: the login collection is locked)"), "the log says why")
    expected += 1
    refresh_with(srv, d, "first", ["read"], expected, "the Secret Service credential, while locked")
    rc, out, _ = d.tokenctl("list")
    check(rc == 0 and "Store: keyring (locked: secret-service: the login collection is locked" in out
          and "store: secret-service" in out, "tokenctl list names both stores", out)
    d.add("second", srv)
    expected += 1
    check(state_file_store(d, "second") == "keyring" and d.has_secret("second"), "a new credential goes to the keyring")
    check(state_file_store(d, "first") == "secret-service", "the first one stays in the Secret Service")

    keyring("stop")
    d.restart()
    info = store_info(d)
    check(info["store"] == "keyring", "auto without a Secret Service: keyring", info)
    check(log_has(d, "keyring (--store auto: no Secret Service on the session bus)"), "the log says why")
    expected += 1
    refresh_with(srv, d, "first", ["write"], expected, "the Secret Service credential, service gone")
    expected += 1
    refresh_with(srv, d, "second", ["read"], expected, "the keyring credential")
    keyring("start")
    wait_store(d, "ok", pending=0)
    check_stats(srv, expected, "at the end")


run_test(main, __doc__)
