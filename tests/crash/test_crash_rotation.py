#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Crash safety of a rotating refresh: SIGKILL at each step, hundreds of times.

Needs a build with -Dcrash_points=true: $TOKEND_CRASH_POINT=NAME makes the daemon kill itself
(SIGKILL) the first time it passes step NAME (common/crash-point.h). The OAuth server rotates
refresh tokens and treats a reuse of a rotated one as theft (invalid_grant).

Each round starts tokend with one crash point set, asks for a token (a new daemon has no cache:
the request needs a refresh), sees the daemon die by SIGKILL, starts it again without a crash
point and checks what is left:
- refresh-send (killed before the request left): the stored refresh token is the one before;
  the credential works.
- refresh-response (the server rotated; the new refresh token existed only in the response):
  the stored token is the one before; the next refresh reuses it, the server refuses, and the
  credential says reauth-required (never a torn record, never a silent loss). The round then
  adds a new login (tokenctl add --replace).
- store-save (killed inside the save, after the kernel keyring took the value): the stored
  token is the new one; the credential works.
- refresh-saved (saved, no access token handed out yet): the same.
- state-write (killed between writing credentials.json's temporary file and renaming it, while
  a second credential is added): after the restart no temporary file is left, credentials.json
  is whole JSON with every earlier credential, and the half-added one is absent or whole.
After every round: the stored refresh token is one line of printable text (never torn), and
never one the daemon had already replaced (never an older token replacing a newer one). At the
end: the number of kills per step, which must total at least $CRASH_KILLS (default 300).
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import (ConnectionClosed, TestFailure, _keyctl_session, check, log, run_test,  # noqa: E402
                     test_agent_policy)

CRED = "rot"
ROTATION_POINTS = ["refresh-send", "refresh-response", "store-save", "refresh-saved"]
STATE_POINT = "state-write"
KILLS = int(os.environ.get("CRASH_KILLS", "300"))
STATE_ROUNDS = max(10, KILLS // 30)


def read_key(d, credential):
    r = _keyctl_session('P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" user "$1") && keyctl pipe "$K"',
                        d.key_description(credential, "refresh_token"))
    return r.stdout if r.returncode == 0 else None


def start_with(d, point):
    """Starts the daemon with $TOKEND_CRASH_POINT=point (None: without)."""
    base = type(d).env

    def env():
        e = base(d)
        if point:
            e["TOKEND_CRASH_POINT"] = point
        else:
            e.pop("TOKEND_CRASH_POINT", None)
        return e
    d.env = env
    d.start()


def wait_killed(d, what, timeout=20):
    try:
        rc = d.proc.wait(timeout)
    except Exception:
        raise TestFailure(f"{what}: the daemon did not die at its crash point") from None
    check(rc == -signal.SIGKILL, f"{what}: the daemon died by SIGKILL", rc)


def state_check(d, what, names_before):
    files = os.listdir(d.state_dir)
    stale = [f for f in files if ".tmp-" in f]
    check(not stale, f"{what}: no temporary file left in the state directory", stale)
    with open(os.path.join(d.state_dir, "credentials.json")) as f:
        state = json.load(f)  # raises on a torn file
    names = {c["name"] for c in state["credentials"]}
    check(names_before <= names, f"{what}: credentials.json is whole and holds every earlier credential",
          (sorted(names_before), sorted(names)))
    return names


def credential_state(d, name):
    rc, out, err = d.tokenctl("--json", "list")
    check(rc == 0, "tokenctl --json list exits 0", err)
    return {c["name"]: c for c in json.loads(out)}[name]["state"]


def main(ctx):
    if not os.environ.get("TOKEND_CRASH_POINTS"):
        raise TestFailure("this test needs a build with -Dcrash_points=true (meson passes TOKEND_CRASH_POINTS=1)")
    srv = ctx.oauth_server(access_ttl=600)
    d = ctx.tokend(policy=test_agent_policy())
    d.add(CRED, srv)
    d.stop()
    history = []  # every refresh token the store ever held, in order
    superseded = set()
    kills = {p: 0 for p in ROTATION_POINTS + [STATE_POINT]}
    reauths = 0
    rounds = 0
    t0 = time.monotonic()

    def note(rt, what):
        check(rt and "\n" not in rt and rt.isprintable(), f"{what}: the stored refresh token is whole", len(rt or ""))
        check(rt not in superseded, f"{what}: the stored refresh token is not one already replaced")
        if not history or history[-1] != rt:
            if history:
                superseded.add(history[-1])
            history.append(rt)

    note(read_key(d, CRED), "after add")
    i = 0
    while sum(kills.values()) < KILLS + STATE_ROUNDS:
        point = ROTATION_POINTS[i % len(ROTATION_POINTS)] if kills[STATE_POINT] >= STATE_ROUNDS or i % 30 else STATE_POINT
        i += 1
        rounds += 1
        what = f"round {rounds} ({point})"
        before = read_key(d, CRED)
        names_before = state_check(d, what + " before", set()) if point == STATE_POINT else None
        start_with(d, point)
        try:
            if point == STATE_POINT:
                d.add(f"half{rounds}", srv)  # its credentials.json write is where the daemon dies
            else:
                d.get_token(CRED, timeout=20)  # needs a refresh: a new daemon has no cache
        except (TestFailure, ConnectionClosed, OSError):
            pass  # the call ends with the daemon
        wait_killed(d, what)
        kills[point] += 1
        start_with(d, None)
        after = read_key(d, CRED)
        if point == STATE_POINT:
            names = state_check(d, what, names_before)
            for n in names - names_before:
                check(credential_state(d, n) == "ok", f"{what}: the credential added as the daemon died is whole")
                d.tokenctl("remove", n)
            note(after, what)
        elif point in ("refresh-send", "refresh-response"):
            check(after == before, f"{what}: the stored refresh token is the one before the refresh")
            note(after, what)
            m = d.get_token(CRED, timeout=30)
            if point == "refresh-send":
                check("error" not in m, f"{what}: the credential works after the restart", m)
            else:
                check(m.get("error") == "io.tokend.agent.ReauthenticationRequired",
                      f"{what}: the server had rotated: the next refresh says re-authentication is needed", m)
                check(credential_state(d, CRED) == "reauth-required", f"{what}: tokenctl list says reauth-required")
                reauths += 1
                d.add(CRED, srv, extra=["--replace"])
            note(read_key(d, CRED), what + " after the next refresh")
        else:
            check(after != before, f"{what}: the stored refresh token is the rotated one")
            note(after, what)
            m = d.get_token(CRED, timeout=30)
            check("error" not in m, f"{what}: the credential works with the saved token", m)
            note(read_key(d, CRED), what + " after the next refresh")
        rc = d.stop()
        check(rc == 0, f"{what}: tokend exits 0 on SIGTERM", rc)
        if rounds % 25 == 0:
            log(f"{rounds} rounds, kills so far {kills}, {time.monotonic() - t0:.0f}s")

    total = sum(kills.values())
    log(f"kills per step: {kills}; {total} in all over {rounds} rounds in {time.monotonic() - t0:.0f}s; "
        f"{reauths} re-logins after refresh-response; {len(history)} refresh tokens held in turn")
    check(total >= KILLS, f"at least {KILLS} kills ({total})")
    check(all(kills[p] > 0 for p in kills), "every step was killed at least once", kills)


if __name__ == "__main__":
    run_test(main, __doc__)
