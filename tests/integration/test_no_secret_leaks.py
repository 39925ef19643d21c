#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3, item 7: no secret in any process's argv, in the daemon's log, or in error replies.

While credentials are added, logged in with the device flow and the auth code flow, refreshed
(narrower scopes, rotation), revoked and failed (revoked grant), a sampler reads
/proc/*/cmdline of every process every 20 ms. At the end the secrets are collected: every
refresh token the daemon ever held (each one read from the keyring as it rotated), the access
tokens handed out, the client secret, and the PKCE state. None may appear in any sampled argv,
in the daemon's debug log, or in any Varlink error reply or tokenctl message.
"""
import os
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import _keyctl_session, check, log, mint, run_test  # noqa: E402
from logins import Login, browse, device_approve, secret_file  # noqa: E402

CLIENT_SECRET = "test-secret"


class ArgvSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.stop = False

    def run(self):
        while not self.stop:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        self.seen.add(f.read())
                except OSError:
                    pass
            time.sleep(0.02)


def read_key(d, credential, kind="refresh_token"):
    r = _keyctl_session('P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" user "$1") && keyctl pipe "$K"',
                        d.key_description(credential, kind))
    return r.stdout if r.returncode == 0 else None


def main(ctx):
    sampler = ArgvSampler()
    sampler.start()
    srv = ctx.oauth_server(access_ttl=30)
    d = ctx.tokend()
    secrets = {CLIENT_SECRET}
    texts = []  # everything tokenctl and the daemon said back

    def note_rt(name):
        v = read_key(d, name)
        if v:
            secrets.add(v)

    # add (the refresh token travels on stdin only), then refreshes that rotate it
    rt0 = mint(srv.issuer)
    secrets.add(rt0)
    d.add("a", srv, refresh_token=rt0)
    note_rt("a")
    for scopes in (None, ["read"], ["write"], ["read", "write"]):
        p = d.token("a", scopes)
        secrets.add(p["token"])
        note_rt("a")

    # device flow
    secret = secret_file(ctx, CLIENT_SECRET)
    lg = Login(d, "dev", "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file", secret,
               "--scope", "openid offline_access read", "--flow", "device", "--insecure-loopback")
    ev = lg.next_event()
    device_approve(srv.issuer, ev["user_code"])
    rc, events = lg.wait()
    check(rc == 0, "device login ok", lg.stderr)
    texts += [str(events), lg.stderr]
    note_rt("dev")
    secrets.add(d.token("dev")["token"])

    # auth code flow
    lg = Login(d, "web", "--issuer", srv.issuer, "--client-id", "tokend-test", "--client-secret-file", secret,
               "--scope", "openid offline_access read", "--flow", "auth-code", "--insecure-loopback", "--no-browser")
    ev = lg.next_event()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ev["authorization_url"]).query))
    browse(ev["authorization_url"])
    rc, events = lg.wait()
    check(rc == 0, "auth-code login ok", lg.stderr)
    texts += [lg.stderr]  # the URL in the events carries the state by design: it goes to the browser
    note_rt("web")
    secrets.add(d.token("web")["token"])

    # failures: a revoked grant, bad input, a wrong client secret
    srv.revoke(d.token("a")["token"])
    m = d.get_token("a", ["openid"])
    texts.append(str(m))
    for bad in ({"credential": "a", "scopes": [7]}, {"credential": "a", "min_ttl": -1}, {"credential": "nope"}):
        texts.append(str(d.call("io.tokend.agent.GetToken", bad)))
    rt_bad = mint(srv.issuer)
    secrets.add(rt_bad)
    wrong = secret_file(ctx, "wrong-secret")
    rc, out, err = d.tokenctl("add", "b", "--issuer", srv.issuer, "--client-id", "tokend-test",
                              "--client-secret-file", wrong, "--insecure-loopback", stdin=rt_bad + "\n")
    check(rc != 0, "add with a wrong client secret fails")
    texts += [out, err]
    rc, out, err = d.tokenctl("revoke", "web")
    texts += [out, err]
    for args in (("list",), ("--json", "list"), ("token", "a"), ("token", "dev", "--scope", "admin")):
        rc, out, err = d.tokenctl(*args)
        texts += [out, err]
    time.sleep(0.2)
    sampler.stop = True
    sampler.join()

    secrets = {s for s in secrets if s and len(s) >= 8}
    log(f"{len(secrets)} secrets checked against {len(sampler.seen)} distinct command lines")
    check(len(secrets) >= 8, "collected the secrets", len(secrets))
    argv_blob = b"\n".join(sampler.seen)
    with open(d.log_path, "rb") as f:
        daemon_log = f.read()
    said = "\n".join(texts)
    for s in secrets:
        check(s.encode() not in argv_blob, "no secret in any process's argv")
        check(s.encode() not in daemon_log, "no secret in the daemon's log")
        check(s not in said, "no secret in replies or messages")
    # The PKCE state is a secret of the login too: only the browser may see it.
    check(q["state"].encode() not in daemon_log, "the state is not logged")
    process_hygiene(ctx, d, secrets)


# Root without any capability: a process like a user's, whose memory another process of the same
# uid may read only while it is dumpable (and has no capability the reader lacks).
NOCAPS = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def readable_by_same_uid(pid):
    """Whether a capability-less process of the same uid may open /proc/PID/mem."""
    r = subprocess.run([*NOCAPS, sys.executable, "-c", "import sys; open(f'/proc/{sys.argv[1]}/mem', 'rb').close()",
                        str(pid)], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def process_hygiene(ctx, d, secrets):
    """The daemon cannot dump core, is not dumpable, and its environment holds no secret."""
    with open(f"/proc/{d.pid}/limits") as f:
        core = [line.split()[4:6] for line in f if line.startswith("Max core file size")]
    check(core == [["0", "0"]], "the daemon's core size limit is 0 (soft and hard)", core)
    # Dumpable or not, as a same-uid process sees it: a tokend and a control process, both
    # started without capabilities (as a user's processes are), read by a third.
    control = subprocess.Popen([*NOCAPS, "sleep", "60"])
    nocaps = ctx.tokend(name="nocaps", wrapper=NOCAPS)
    try:
        control_ok = readable_by_same_uid(control.pid)
        daemon_readable = readable_by_same_uid(nocaps.pid)
    finally:
        control.kill()
        control.wait()
    check(control_ok, "control: a dumpable process is readable by another process of its uid")
    check(not daemon_readable, "tokend is not dumpable: another process of its uid cannot read its memory")
    check(nocaps.stop() == 0, "the capability-less tokend exits 0")
    with open(f"/proc/{d.pid}/environ", "rb") as f:
        environ = f.read()
    for s in secrets:
        check(s.encode() not in environ, "no secret in the daemon's environment")


run_test(main, __doc__)
