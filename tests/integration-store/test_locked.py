#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A locked collection is a state, not an outage.

1. tokend --store secret-service; add a credential (its first token is cached).
2. Lock the login collection: ListCredentials and `tokenctl list` say the store is locked
   (with the reason); GetToken for the cached token still works, without a refresh.
3. A refresh while locked (uncached scope set) works: the rotated refresh token goes to the
   kernel keyring at once and waits; `tokenctl list` shows one write pending.
4. The daemon restarts while locked: it loads the newest refresh token from the keyring copy
   and refreshes with it.
5. gnome-keyring restarts (unlocked): the pending write is flushed, and after a "reboot"
   (kernel keyring dropped) the daemon still has the newest refresh token.
6. A "reboot" with the collection locked at start-up: the credential waits for its store
   ("waiting-for-store", not lost, still "ok" in the state file); once gnome-keyring is back
   unlocked, its secrets load by themselves and a refresh works. A credential added while
   locked works at once and reaches the Secret Service once it is unlocked.
Throughout the server sees no reuse and no invalid_grant.
"""
import json
import os

from storelib import (SS, check, check_stats, forget_keyring_copies, items, keyring, refresh_with,
                      require_keyring, run_test, wait_store, wait_until)

NAME = "lockme"


def main(ctx):
    require_keyring()
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend(extra_args=SS)
    d.add(NAME, srv)
    expected = 1
    wait_store(d, "ok", pending=0)
    first = d.token(NAME)
    check_stats(srv, expected, "after add and a cached GetToken")

    keyring("lock")
    info = wait_store(d, "locked")
    check("login" in (info["store_reason"] or ""), "the reason names the login collection", info)
    rc, out, _ = d.tokenctl("list")
    check(rc == 0 and "Store: secret-service (locked: the login collection is locked" in out,
          "tokenctl list says the store is locked", out)
    again = d.token(NAME)
    check(again["token"] == first["token"], "GetToken for the cached token works while locked")
    check_stats(srv, expected, "no refresh for the cached token")

    expected += 1
    refresh_with(srv, d, NAME, ["read"], expected, "a refresh while locked")
    info = wait_store(d, "locked", pending=1)
    rc, out, _ = d.tokenctl("list")
    check(rc == 0 and "1 write pending" in out, "tokenctl list shows the pending write", out)

    d.restart()
    expected += 1
    refresh_with(srv, d, NAME, ["write"], expected, "after a restart while locked")
    wait_store(d, "locked", pending=1)

    keyring("stop")
    keyring("start")
    wait_store(d, "ok", pending=0)
    check(items(d, NAME) == 1, "the newest refresh token reached the Secret Service (one item)")

    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    forget_keyring_copies(d)
    d.start()
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "write"], expected, "after a 'reboot'")

    # 6.
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    forget_keyring_copies(d)
    keyring("lock")
    d.start()
    c = d.list_json()[NAME]
    check(c["state"] == "waiting-for-store" and "locked" in (c.get("last_error") or ""),
          "locked at start-up, no keyring copy: the credential waits for its store", c)
    m = d.get_token(NAME, ["read", "write"])
    check("error" in m, "no token meanwhile", m)
    # Adding a credential meanwhile writes the state file; the waiting one stays "ok" there.
    d.add("other", srv)
    expected += 1
    with open(os.path.join(d.state_dir, "credentials.json")) as f:
        saved = {e["name"]: e for e in json.load(f)["credentials"]}[NAME]
    check(saved["state"] == "ok", "the state file still says ok", saved)
    check(d.token("other")["token"], "the credential added while locked works")
    keyring("stop")
    keyring("start")
    wait_until(lambda: d.list_json()[NAME]["state"] == "ok", 20, "the credential to load its secrets")
    expected += 1
    refresh_with(srv, d, NAME, ["read", "write"], expected, "once the store answered")
    wait_store(d, "ok", pending=0)
    check(items(d, "other") == 1, "the credential added while locked reached the Secret Service")


run_test(main, __doc__)
