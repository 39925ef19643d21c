#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3, item 1: the device authorization grant (RFC 8628), run by the daemon.

1. `tokenctl login NAME --issuer ISS --flow device` (endpoints discovered from the issuer alone)
   streams a device-code event; the harness approves the user code on the server's pages; the
   login ends with a working credential: its token introspects active with the asked scopes.
2. access_denied: the user denies; the login fails with a message saying so, exit 1, and no
   credential is kept.
3. slow_down: the server answers one poll with slow_down; the daemon then polls 5 s slower
   (RFC 8628 3.5): the login completes, but not before the old interval plus 5 s.
4. expired_token: the server answers a poll with expired_token; the login fails saying the code
   expired, and no credential is kept.
5. Cancel: killing tokenctl (Ctrl-C) stops the login in the daemon: it polls no more.
6. A login that ends without a refresh token (no offline_access asked) is an error that says why,
   and nothing is kept.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, log, run_test  # noqa: E402
from logins import Login, device_approve, secret_file  # noqa: E402

SCOPES = "openid offline_access read"


def start(d, srv, name, ctx):
    return Login(d, name, "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file",
                 secret_file(ctx, "test-secret"), "--scope", SCOPES, "--flow", "device", "--insecure-loopback")


def device_polls(srv):
    s = srv.stats()
    return s["grants"].get("urn:ietf:params:oauth:grant-type:device_code", 0), s


def main(ctx):
    srv = ctx.oauth_server(access_ttl=60)
    d = ctx.tokend()

    # 1. success
    lg = start(d, srv, "dev", ctx)
    ev = lg.next_event()
    check(ev and ev["event"] == "device-code" and ev.get("user_code") and ev.get("verification_uri"),
          "first event is device-code with user_code and verification_uri", ev)
    check(ev["verification_uri"].startswith(srv.issuer), "verification_uri is the server's", ev)
    check(device_approve(srv.issuer, ev["user_code"]) == 0, "the harness approved the code")
    rc, events = lg.wait()
    check(rc == 0, "tokenctl login exits 0", (rc, lg.stderr))
    done = events[-1] if events else {}
    check(done.get("event") == "done" and done.get("credential", {}).get("name") == "dev",
          "last event is done with the credential", events)
    p = d.token("dev")
    info = srv.introspect(p["token"])
    check(info.get("active") is True and info.get("client_id") == "tokend-test", "token introspects active", info)
    check(sorted(info.get("scope", "").split()) == sorted(SCOPES.split()), "token has the asked scopes", info)
    check(d.has_secret("dev"), "refresh token is in the keyring")
    check(d.list_json()["dev"]["state"] == "ok", "tokenctl list shows it")

    # 2. access_denied
    lg = start(d, srv, "denied", ctx)
    ev = lg.next_event()
    check(device_approve(srv.issuer, ev["user_code"], deny=True) == 0, "the harness denied the code")
    rc, events = lg.wait()
    check(rc == 1 and "denied" in lg.stderr, "login fails saying the user denied access", (rc, lg.stderr))
    check("denied" not in d.list_json(), "no credential kept after a denial")

    # 3. slow_down
    lg = start(d, srv, "slow", ctx)
    ev = lg.next_event()
    interval = 5  # oidc-provider's default device flow interval
    before = srv.stats()["injected_failures"]
    status, _ = srv._request("/_test/fail?count=1&status=400&error=slow_down", method="POST", form={})
    check(status == 200, "slow_down injected for the next poll")
    t0 = time.monotonic()
    deadline = t0 + 20
    while srv.stats()["injected_failures"] == before:
        check(time.monotonic() < deadline, "the daemon polled within 20 s")
        time.sleep(0.1)
    t_slow = time.monotonic()
    check(device_approve(srv.issuer, ev["user_code"]) == 0, "approved right after the slow_down")
    rc, events = lg.wait(timeout=60)
    elapsed = time.monotonic() - t_slow
    log(f"login completed {elapsed:.1f}s after the slow_down answer")
    check(rc == 0, "login completes after slow_down", (rc, lg.stderr))
    check(elapsed >= interval + 5 - 0.5, f"next poll came after >= {interval}+5 s (RFC 8628 3.5)", elapsed)

    # 4. expired_token
    lg = start(d, srv, "expired", ctx)
    lg.next_event()
    srv._request("/_test/fail?count=1&status=400&error=expired_token", method="POST", form={})
    rc, events = lg.wait(timeout=30)
    check(rc == 1 and "expired" in lg.stderr, "login fails saying the code expired", (rc, lg.stderr))
    check("expired" not in d.list_json(), "no credential kept after expiry")

    # 5. cancel with Ctrl-C
    lg = start(d, srv, "cancelled", ctx)
    lg.next_event()
    lg.proc.send_signal(signal.SIGINT)
    rc, _ = lg.wait(timeout=10)
    check(rc == 130 and "cancelled" in lg.stderr, "Ctrl-C cancels tokenctl login", (rc, lg.stderr))
    time.sleep(0.5)
    n0, s0 = device_polls(srv)
    errs0 = s0.get("grant_errors", {}).get("urn:ietf:params:oauth:grant-type:device_code", {})
    time.sleep(interval + 2)
    n1, s1 = device_polls(srv)
    errs1 = s1.get("grant_errors", {}).get("urn:ietf:params:oauth:grant-type:device_code", {})
    check(n1 == n0 and errs1 == errs0, "the daemon stopped polling after the cancel", (s0, s1))
    check("cancelled" not in d.list_json(), "no credential kept after a cancel")

    # 6. no refresh token issued
    lg = Login(d, "nort", "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file",
               secret_file(ctx, "test-secret"), "--scope", "openid read", "--flow", "device", "--insecure-loopback")
    ev = lg.next_event()
    check(device_approve(srv.issuer, ev["user_code"]) == 0, "approved")
    rc, events = lg.wait()
    check(rc == 1 and "no refresh token" in lg.stderr and "offline_access" in lg.stderr,
          "a login without a refresh token fails and says why", (rc, lg.stderr))
    check("nort" not in d.list_json(), "nothing kept without a refresh token")
    check(d.alive(), "daemon still running")


run_test(main, __doc__)
