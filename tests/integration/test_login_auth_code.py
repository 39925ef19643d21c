#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3, item 2: authorization code + PKCE with a loopback redirect (RFC 7636, RFC 8252).

The harness acts as the browser (tests/oauth/browse.mjs) for the authorization URL the daemon
streams to `tokenctl login --flow auth-code`:
1. The URL asks for S256 PKCE, carries a state, and redirects to 127.0.0.1 on a random port.
2. A redirect with a wrong state is rejected (400) and the login keeps waiting.
3. A redirect with the right state but no code is rejected (400).
4. The right redirect is accepted (200); the login ends with a working credential.
5. A second redirect afterwards finds the listener closed.
6. A user who denies consent ends the login with access_denied; nothing is kept.
7. With a display, tokenctl opens the URL with xdg-open (a stand-in on $PATH records it).
"""
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, run_test  # noqa: E402
from logins import Login, browse, secret_file  # noqa: E402

SCOPES = "openid offline_access read write"


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start(d, srv, name, ctx):
    return Login(d, name, "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file",
                 secret_file(ctx, "test-secret"), "--scope", SCOPES, "--flow", "auth-code", "--insecure-loopback",
                 "--no-browser")


def main(ctx):
    srv = ctx.oauth_server(access_ttl=60)
    d = ctx.tokend()

    lg = start(d, srv, "web", ctx)
    ev = lg.next_event()
    check(ev and ev["event"] == "authorize" and ev.get("authorization_url"), "first event is authorize", ev)
    url = urllib.parse.urlsplit(ev["authorization_url"])
    q = dict(urllib.parse.parse_qsl(url.query))
    check(ev["authorization_url"].startswith(srv.issuer + "/auth?"), "URL is the server's authorization endpoint", ev)
    check(q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43,
          "PKCE S256 challenge present", q)
    check(len(q.get("state", "")) >= 32 and q.get("response_type") == "code", "state and response_type", q)
    ru = urllib.parse.urlsplit(q.get("redirect_uri", ""))
    check(ru.scheme == "http" and ru.hostname == "127.0.0.1" and ru.port and ru.path == "/callback",
          "redirect_uri is a loopback address with a port", q)
    check("code_verifier" not in ev["authorization_url"], "no verifier in the URL")

    # 2. wrong state
    rc, out = browse(ev["authorization_url"], "--tamper-state")
    check(rc == 0 and out.startswith("HTTP/1.1 400") and "state" in out, "wrong state rejected with 400", out)
    check(lg.proc.poll() is None, "login still waiting after a wrong state")

    # 3. right state, no code
    status, body = get(f"{q['redirect_uri']}?state={urllib.parse.quote(q['state'])}")
    check(status == 400 and "code" in body, "missing code rejected with 400", (status, body))
    status, body = get(f"{q['redirect_uri']}?code=forged")
    check(status == 400, "code without state rejected", (status, body))
    check(lg.proc.poll() is None, "login still waiting")

    # 4. the right one
    rc, redirect = browse(ev["authorization_url"], "--print-redirect")
    check(rc == 0 and redirect.strip().startswith(q["redirect_uri"] + "?"), "browser got the redirect", redirect)
    status, body = get(redirect.strip())
    check(status == 200 and "complete" in body.lower(), "the valid redirect is accepted", (status, body))
    rc, events = lg.wait()
    check(rc == 0 and events[-1].get("event") == "done", "login ends with done", (rc, lg.stderr, events))
    info = srv.introspect(d.token("web")["token"])
    check(info.get("active") is True and sorted(info.get("scope", "").split()) == sorted(SCOPES.split()),
          "token from the new credential is active with the asked scopes", info)

    # 5. a second redirect: the listener is gone
    try:
        status, body = get(redirect.strip())
        check(False, "a second redirect must find the listener closed", (status, body))
    except (urllib.error.URLError, ConnectionError):
        pass

    # 6. denial
    lg = start(d, srv, "nope", ctx)
    ev = lg.next_event()
    rc, out = browse(ev["authorization_url"], "--deny")
    rc2, _ = lg.wait()
    check(rc2 == 1 and "access_denied" in lg.stderr, "denied consent fails the login with access_denied",
          (rc2, lg.stderr, out))
    check("nope" not in d.list_json(), "nothing kept after a denial")

    # 7. xdg-open with a display
    bindir = os.path.join(ctx.tmp, "bin")
    os.makedirs(bindir)
    record = os.path.join(ctx.tmp, "xdg-open.args")
    with open(os.path.join(bindir, "xdg-open"), "w") as f:
        f.write(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    os.chmod(os.path.join(bindir, "xdg-open"), 0o755)
    lg = Login(d, "shown", "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file",
               secret_file(ctx, "test-secret"), "--scope", SCOPES, "--flow", "auth-code", "--insecure-loopback",
               env_extra={"DISPLAY": ":99", "PATH": bindir + os.pathsep + os.environ.get("PATH", "")})
    ev = lg.next_event()
    for _ in range(50):
        if os.path.exists(record) and os.path.getsize(record) > 0:
            break
        time.sleep(0.1)
    with open(record) as f:
        opened = f.read().strip()
    check(opened == ev["authorization_url"], "xdg-open got the authorization URL", (opened, ev))
    rc, _ = browse(ev["authorization_url"])
    rc2, _ = lg.wait()
    check(rc2 == 0, "login through the opened URL completes", lg.stderr)
    check(d.alive(), "daemon still running")


run_test(main, __doc__)
