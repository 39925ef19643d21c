# SPDX-License-Identifier: MIT
"""Consent helpers for the policy and consent tests, on top of harness.py: an agent's request
waits (GetToken from a Caller process), the owner answers with tokenctl (approve, deny, grants
revoke), and the test reads the daemon's view through the manager interface (ListPending,
ListGrants) from an owner process."""
import json
import time

from harness import EXIT_OK, TestFailure, check, log


def ask(d, caller, credential, scopes=None, resource=None, timeout=60):
    """The caller starts GetToken and its request waits for consent: returns the pending request
    (as ListPending shows it). caller.reply() collects the answer later."""
    caller.start_token(credential, scopes, resource, timeout=timeout)
    req = d.wait_pending(lambda r: r["caller"]["pid"] == caller.pid and r["credential"] == credential,
                         what=f"the request of caller {caller.name} ({credential} {scopes}) to be pending")
    log(f"pending: {json.dumps(req, sort_keys=True)}")
    return req


def approve(d, request_id, *opts, expect=EXIT_OK):
    """`tokenctl approve ID OPTS...`; returns (rc, stdout, stderr) after checking the exit status."""
    r = d.tokenctl("approve", request_id, *opts)
    check(r[0] == expect, f"tokenctl approve {request_id} {' '.join(opts)} exits {expect}", r)
    return r


def approve_grant(d, request_id, *opts):
    """`tokenctl --json approve ID OPTS...`, which must succeed; returns the grant the approval made
    (as Approve answered it: it may have ended since, e.g. a single-use grant, spent at once)."""
    r = d.tokenctl("--json", "approve", request_id, *opts)
    check(r[0] == EXIT_OK, f"tokenctl approve {request_id} {' '.join(opts)} exits 0", r)
    try:
        g = json.loads(r[1])["grant"]
    except (ValueError, KeyError, TypeError):
        raise TestFailure(f"tokenctl --json approve printed no grant: {r[1]!r}") from None
    check(g.get("id"), f"approve {request_id}: the approval made a grant", g)
    return g


def approve_plain(d, request_id, *opts):
    """`tokenctl approve ID OPTS...`, which must succeed and print the new grant's id alone on
    stdout; returns that id."""
    rc, out, err = approve(d, request_id, *opts)
    gid = out.strip()
    check(len(out.splitlines()) == 1 and gid.startswith("g-"), "tokenctl approve prints the grant id on stdout",
          (out, err))
    return gid


def deny(d, request_id, expect=EXIT_OK):
    r = d.tokenctl("deny", request_id)
    check(r[0] == expect, f"tokenctl deny {request_id} exits {expect}", r)
    return r


def revoke_grant(d, grant_id, expect=EXIT_OK):
    r = d.tokenctl("grants", "revoke", grant_id)
    check(r[0] == expect, f"tokenctl grants revoke {grant_id} exits {expect}", r)
    return r


def find_grant(d, grant_id):
    return next((g for g in d.grants() if g["id"] == grant_id), None)


def expect_error(m, error, what):
    check(m.get("error") == error, f"{what}: {error.rsplit('.', 1)[1]}", m)
    check("token" not in (m.get("parameters") or {}), f"{what}: no token in the error")
    return m.get("parameters") or {}


def expect_token(m, what, scopes=None):
    check("error" not in m and (m.get("parameters") or {}).get("token"), f"{what}: a token", m)
    p = m["parameters"]
    if scopes is not None:
        check(sorted(p.get("scopes", [])) == sorted(scopes), f"{what}: scopes {sorted(scopes)}", p)
    return p


def expect_waits(caller, what, seconds=1.0):
    """The caller's call in progress has no answer after `seconds`: its request waits."""
    check(not caller.has_result(seconds), f"{what}: no answer within {seconds}s (the request waits)")


def timed_reply(caller, timeout):
    """(reply, seconds it took from now)."""
    t0 = time.monotonic()
    m = caller.reply(timeout)
    return m, time.monotonic() - t0


def introspected_scopes(srv, token):
    info = srv.introspect(token)
    if info.get("active") is not True:
        raise TestFailure(f"token not active at the server: {info}")
    return sorted(info.get("scope", "").split())
