#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A credential in the Secret Service store survives daemon and gnome-keyring restarts.

1. tokend --store secret-service; add a credential. Its refresh token and client secret are
   Secret Service items (one each: older generations are deleted), nothing is pending, and
   the state file records the store.
2. Restart the daemon: a refresh with the stored (rotated) refresh token works.
3. Restart gnome-keyring, then the daemon: a refresh works.
4. As after a reboot: stop the daemon, drop the kernel keyring (the write-ahead copies) and
   restart gnome-keyring; the daemon loads from the Secret Service alone and a refresh works.
Throughout the server sees no reuse and no invalid_grant.
"""
from storelib import (SS, check, check_stats, forget_keyring_copies, items, keyring, refresh_with,
                      require_keyring, run_test, state_file_store, store_info, wait_store)

NAME = "durable"


def main(ctx):
    require_keyring()
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend(extra_args=SS)
    d.add(NAME, srv)
    expected = 1
    check_stats(srv, expected, "after add")
    info = wait_store(d, "ok", pending=0)
    check(info["store"] == "secret-service", "ListCredentials: store secret-service", info)
    check(items(d, NAME) == 1, "one Secret Service item holds the refresh token")
    check(items(d, NAME, "client_secret") == 1, "one Secret Service item holds the client secret")
    check(not d.has_secret(NAME), "nothing under the plain keyring backend's key")
    check(state_file_store(d, NAME) == "secret-service", "credentials.json records the store")

    d.restart()
    expected += 1
    refresh_with(srv, d, NAME, ["read"], expected, "after a daemon restart")
    wait_store(d, "ok", pending=0)
    check(items(d, NAME) == 1, "still one item after the rotation")

    keyring("stop")
    keyring("start")
    d.restart()
    expected += 1
    refresh_with(srv, d, NAME, ["write"], expected, "after a gnome-keyring and daemon restart")
    wait_store(d, "ok", pending=0)

    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    forget_keyring_copies(d)
    keyring("stop")
    keyring("start")
    d.start()
    info = store_info(d)
    check(info["store_state"] == "ok", "state ok after the 'reboot'", info)
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "read"], expected, "after a 'reboot'")
    c = d.list_json()[NAME]
    check(c["state"] == "ok" and c.get("store") == "secret-service", "credential ok, in the secret-service store", c)


run_test(main, __doc__)
