# SPDX-License-Identifier: MIT
"""Helpers for the store integration tests, on top of tests/integration/harness.py.

The tests run under tests/store/run-with-keyring.sh: a private D-Bus session bus and a
headless gnome-keyring whose login collection is unlocked; keyring() drives it (start, stop,
kill, pause, resume, lock). Nothing here prints a secret.
"""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import harness  # noqa: E402
from harness import Skip, TestFailure, check, log, run_test, wait_until  # noqa: E402,F401

KEYRING_SH = os.path.join(REPO, "tests", "store", "keyring.sh")
SS = ["--store", "secret-service"]


def require_keyring():
    if not os.environ.get("TOKEND_TEST_KEYRING_DIR") or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        raise Skip("run under tests/store/run-with-keyring.sh (a session bus with gnome-keyring)")
    if not shutil.which("secret-tool"):
        raise Skip("secret-tool is missing (apt-get install libsecret-tools)")


def keyring(verb):
    r = subprocess.run([KEYRING_SH, verb], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise TestFailure(f"keyring.sh {verb} failed ({r.returncode}): {r.stderr.strip()}")
    log(f"gnome-keyring: {verb}")


def store_info(d):
    """store, store_state, store_reason, store_pending of ListCredentials."""
    # From an owner process no agent matches: the test process itself is an agent (harness.py).
    m = d.manager("io.tokend.manager.ListCredentials", {})
    if "error" in m:
        raise TestFailure(f"ListCredentials failed: {m}")
    p = m["parameters"]
    return {k: p.get(k) for k in ("store", "store_state", "store_reason", "store_pending")}


def wait_store(d, state, pending=None, timeout=20):
    def ok():
        i = store_info(d)
        return i if i["store_state"] == state and (pending is None or i["store_pending"] == pending) else None
    return wait_until(ok, timeout, f"store state {state}" + (f" with {pending} pending" if pending is not None else ""),
                      interval=0.1)


def items(d, credential, kind="refresh_token"):
    """How many Secret Service items this daemon instance has for the credential."""
    r = subprocess.run(["secret-tool", "search", "--all", "xdg:schema", "io.tokend.Secret", "instance", d.instance,
                        "credential", credential, "kind", kind], capture_output=True, text=True, timeout=30)
    return sum(1 for line in r.stdout.splitlines() if line.startswith("[/"))


def state_file_store(d, credential):
    with open(os.path.join(d.state_dir, "credentials.json")) as f:
        for c in json.load(f)["credentials"]:
            if c["name"] == credential:
                return c.get("store")
    return None


def check_stats(srv, expected, when):
    st = srv.stats()
    check(st["reuse_detected"] == 0, f"{when}: reuse_detected == 0", st)
    check(st["refresh_errors"].get("invalid_grant", 0) == 0, f"{when}: no invalid_grant", st)
    check(st["grants"]["refresh_token"] == expected, f"{when}: {expected} refresh_token grants in total",
          st["grants"])


def refresh_with(srv, d, name, scopes, expected, when):
    """GetToken with a scope set not cached yet: one rotating refresh at the server."""
    p = d.token(name, scopes)
    check(sorted(p["scopes"]) == sorted(scopes), f"{when}: GetToken {scopes} succeeds", p)
    info = srv.introspect(p["token"])
    check(info.get("active") is True, f"{when}: its token is active", info)
    check_stats(srv, expected, when)
    return p


def forget_keyring_copies(d):
    """What a reboot does: the kernel keyring (plain keys and write-ahead copies) is gone."""
    found = harness.keyring_remove_instance(d.instance)
    log(f"kernel keyring of instance {d.instance} " + ("dropped (as after a reboot)" if found else "was empty"))


def sleep(s):
    time.sleep(s)
