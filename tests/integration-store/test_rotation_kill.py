#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""SIGKILL right after a rotation loses nothing with the Secret Service store.

The server rotates the refresh token on every refresh and kills the grant when an old one is
reused, so a daemon that restarted with an older refresh token would fail here.

1. tokend --store secret-service; add a credential.
2. Force a rotation (GetToken with an uncached scope set; the server counts the refresh) and
   SIGKILL the daemon as soon as the answer is in. Restart: a further refresh works.
3. The same with gnome-keyring frozen (SIGSTOP) during the rotation, so that the Secret Service
   write cannot have happened: only the kernel keyring copy has the new token. SIGKILL,
   unfreeze, restart: the keyring copy is newer, wins, and is written again; a refresh works.
4. As after a reboot (kernel keyring dropped): the Secret Service alone has the newest token.
Throughout: reuse_detected == 0 and no invalid_grant.
"""
import signal

from storelib import (SS, check, check_stats, forget_keyring_copies, items, keyring, log, refresh_with,
                      require_keyring, run_test, wait_store)

NAME = "rotkill"


def kill9(d):
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    log(f"tokend pid {d.proc.pid} killed with SIGKILL")


def main(ctx):
    require_keyring()
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend(extra_args=SS)
    d.add(NAME, srv)
    expected = 1
    wait_store(d, "ok", pending=0)

    # 2. No waiting for the Secret Service after the rotation.
    expected += 1
    refresh_with(srv, d, NAME, ["read"], expected, "rotation 1")
    kill9(d)
    d.start()
    expected += 1
    refresh_with(srv, d, NAME, ["write"], expected, "after SIGKILL right after rotation 1")
    wait_store(d, "ok", pending=0)

    # 3. The Secret Service cannot answer during the rotation.
    keyring("pause")
    expected += 1
    refresh_with(srv, d, NAME, ["openid"], expected, "rotation 2, gnome-keyring frozen")
    kill9(d)
    keyring("resume")
    d.start()
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "read"], expected, "after SIGKILL with the write not done")
    wait_store(d, "ok", pending=0)
    check(items(d, NAME) == 1, "one Secret Service item again")

    # 4. Reboot: the Secret Service alone.
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    forget_keyring_copies(d)
    d.start()
    expected += 1
    refresh_with(srv, d, NAME, ["openid", "write"], expected, "after a 'reboot'")
    check_stats(srv, expected, "at the end")
    c = d.list_json()[NAME]
    check(c["state"] == "ok", "credential state ok", c)


run_test(main, __doc__)
