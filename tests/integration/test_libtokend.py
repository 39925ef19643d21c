#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""libtokend end to end: the C library against the real daemon and a real OAuth server.

The C side is tests/lib/libtokend-driver (public API only, $LIBTOKEND_DRIVER), run under
`valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect`
(in a sanitizer build, which the driver reports, natively instead: ASan and valgrind do not
mix). A missing valgrind fails the test. Every run must exit 0: no memory error, no leak.
The policy names the driver by the executable the kernel shows for it (valgrind's tool, or
the driver itself), as agent "libagent"; its mode changes with `tokenctl reload`.

1. Success (allow): GetToken with the policy's scopes and with ["read"] (token active at the
   server, exact scopes, Bearer, expires_at); three calls on one kept connection share the
   cached token; the socket from $TOKEND_SOCKET, --socket and $XDG_RUNTIME_DIR/tokend/socket;
   TOKEND_FLAG_MANAGER from the owner (no agent matches) gets the owner's token.
2. Each error code, for real: NoSuchCredential, ScopeNotAllowed, PolicyDenied (credential, and
   resource), LifetimeTooShort (min_ttl beyond the lifetime), InvalidParameter (a resource
   that is no URL), PermissionDenied (TOKEND_FLAG_MANAGER from an agent),
   ReauthenticationRequired (the grant revoked at the server), ProviderUnavailable with
   retry_after (the provider failing, uncached scopes), StoreUnavailable (the instance keyring
   made read-only, so the rotated refresh token cannot be saved), invalid arguments checked
   locally (caps on credential, scopes, resource, min_ttl: nothing is sent), not reachable.
3. A kept connection broken by a daemon restart: the next call reconnects and succeeds.
4. Subscribe (allow): a first token, then a renewal before min_ttl; the three ways to consume
   (next(), fd + process() with a callback, run() with stop()); PolicyDenied ends a stream.
5. Daemon restart under a subscription (documented in tokend.h and libtokend(3)): the library
   reports TOKEND_EVENT_DISCONNECTED, reconnects, subscribes again and delivers a token
   (reconnects = 1); with a 1.5 s reconnect budget and the daemon gone, the stream ends with
   TOKEND_ERR_DISCONNECTED.
6. TooManySubscriptions: with 1024 streams open (the daemon's cap), a new one ends with it.
7. Ask mode (consent timeout 3 s): ConsentRequired (nobody answers, names the request),
   ConsentDenied (`tokenctl deny`, names the request), CallerGone (a process calls on the
   connection its exited parent opened), and ConsentEnded (`tokenctl grants revoke` of the grant
   a running subscription was approved under: the stream ends at once, naming the grant).
"""
import json
import os
import resource
import selectors
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import approve_plain, deny, revoke_grant  # noqa: E402
from harness import (DEFAULT_SCOPE, REPO, TestFailure, VarlinkConnection, _die_with_parent,  # noqa: E402
                     agent_policy, check, keyring_has, log, run_test, test_agent_policy)

DRIVER = os.environ.get("LIBTOKEND_DRIVER") or os.path.join(REPO, "build-it", "lib", "libtokend-driver")
VALGRIND_ARGS = ["--quiet", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                 "--show-leak-kinds=definite,indirect", "--child-silent-after-fork=no"]
ACCESS_TTL = 3600
SHORT_TTL = 12  # srv2: tokens renewed within the test
CONSENT_TIMEOUT = 3
SUBSCRIPTIONS_MAX = 1024

# The codes of tokend.h: part of the ABI, so spelled out here.
OK, INVALID_ARGUMENT, NOT_REACHABLE, DISCONNECTED = 0, -1, -3, -4
PERMISSION_DENIED, INVALID_PARAMETER = -10, -11
CALLER_GONE, NO_SUCH_CREDENTIAL, REAUTHENTICATION_REQUIRED, PROVIDER_UNAVAILABLE = -20, -21, -22, -23
SCOPE_NOT_ALLOWED, POLICY_DENIED, CONSENT_REQUIRED, CONSENT_DENIED = -24, -25, -26, -27
STORE_UNAVAILABLE, LIFETIME_TOO_SHORT, CONSENT_ENDED, TOO_MANY_SUBSCRIPTIONS = -28, -29, -30, -31

CRED, NARROW, OTHER, DOOMED, FLAKY, STORE, SHORT = "cred", "narrow", "other", "doomed", "flaky", "store", "short"
WANT_SCOPES = sorted(DEFAULT_SCOPE.split())


def redacted(res):
    """A driver result without its token, for messages."""
    if isinstance(res, list):
        return [redacted(r) for r in res]
    return {k: ("<token>" if k == "token" else v) for k, v in res.items()}


class Driver:
    """Runs the driver (under valgrind unless this is a sanitizer build)."""

    def __init__(self, ctx):
        self.ctx = ctx
        if not os.access(DRIVER, os.X_OK):
            raise TestFailure(f"LIBTOKEND_DRIVER={DRIVER} is not an executable: build first")
        sanitized = subprocess.run([DRIVER, "sanitized"]).returncode == 0
        if sanitized:
            self.wrapper = []
            log("the driver is built with a sanitizer: running it without valgrind")
        else:
            vg = shutil.which("valgrind")
            if not vg:
                raise TestFailure("valgrind is not installed (tools/setup-deps installs it)")
            self.wrapper = [vg, *VALGRIND_ARGS]
        self.runs = 0

    def env(self, socket_path=None, xdg=None):
        env = dict(os.environ)
        env.pop("TOKEND_SOCKET", None)
        env.pop("XDG_RUNTIME_DIR", None)
        if socket_path:
            env["TOKEND_SOCKET"] = socket_path
        if xdg:
            env["XDG_RUNTIME_DIR"] = xdg
        return env

    def _stderr_path(self):
        self.runs += 1
        return os.path.join(self.ctx.tmp, f"driver-{self.runs}.stderr")

    @staticmethod
    def _check_exit(rc, stderr_path, what):
        with open(stderr_path, errors="replace") as f:
            err = f.read()
        check(rc == 0, f"{what}: the driver exits 0 (no valgrind/sanitizer error, no leak)", f"status {rc}\n{err}")
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            check(marker not in err, f"{what}: no sanitizer report", err)

    def script(self, lines, socket_path=None, xdg=None, timeout=120, what="script"):
        """Runs the commands (one a line) in one driver process; returns one result a line."""
        errp = self._stderr_path()
        with open(errp, "wb") as ef:
            r = subprocess.run([*self.wrapper, DRIVER, "script"], input="\n".join(lines) + "\n", stdout=subprocess.PIPE,
                               stderr=ef, text=True, timeout=timeout, env=self.env(socket_path, xdg),
                               preexec_fn=_die_with_parent)
        self._check_exit(r.returncode, errp, what)
        out = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return out

    def start(self, args, socket_path=None, name="driver"):
        return Background(self, args, socket_path, name)

    def run(self, args, socket_path=None, timeout=120, what=None):
        errp = self._stderr_path()
        with open(errp, "wb") as ef:
            r = subprocess.run([*self.wrapper, DRIVER, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=ef, text=True, timeout=timeout, env=self.env(socket_path),
                               preexec_fn=_die_with_parent)
        self._check_exit(r.returncode, errp, what or " ".join(args[:2]))
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


class Background:
    """A driver process whose JSON lines are read as they come; closing its stdin ends it."""

    def __init__(self, driver, args, socket_path, name):
        self.driver = driver
        self.name = name
        self.buf = b""
        self.errp = driver._stderr_path()
        self._err = open(self.errp, "wb")
        self.proc = subprocess.Popen([*driver.wrapper, DRIVER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=driver.env(socket_path), preexec_fn=_die_with_parent)
        driver.ctx._register(self.kill, name, self.errp)
        log(f"started {name} (pid {self.proc.pid}): driver {' '.join(args)}")

    @property
    def pid(self):
        return self.proc.pid

    def read(self, timeout=30, what="a line"):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure(f"{self.name}: no line ({what}) within {timeout}s")
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(left):
                    continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise TestFailure(f"{self.name}: exited (status {self.proc.wait(10)}) before {what}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def expect(self, event, timeout=30):
        m = self.read(timeout, f"event {event}")
        check(m.get("event") == event, f"{self.name}: event {event}", redacted(m))
        return m

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def finish(self, what=None, timeout=60):
        """Closes stdin, collects the remaining lines and checks a clean exit; returns the lines."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rest = []
        while True:
            try:
                rest.append(self.read(timeout, "the end"))
            except TestFailure:
                break
            if rest[-1].get("event") == "exit":
                break
        rc = self.proc.wait(timeout)
        self._err.close()
        self.proc.stdout.close()
        Driver._check_exit(rc, self.errp, what or self.name)
        return rest

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            try:
                f.close()
            except OSError:
                pass


def expect_code(res, code, what, name=None):
    check(res.get("code") == code, f"{what}: code {code} ({res.get('strerror', 'token')})", redacted(res))
    if code < 0:
        check("token" not in res, f"{what}: no token with the error")
        check(res.get("error_code") in (code, INVALID_ARGUMENT) and res.get("strerror") not in (None, "Unknown error"),
              f"{what}: tokend_error_code() agrees, tokend_strerror() describes it", res)
    if name is not None:
        check(res.get("name") == name, f"{what}: daemon error name {name}", res)
    return res


def expect_token(srv, res, what, scopes=None, introspect=True, ttl=ACCESS_TTL):
    check(res.get("code") == OK and len(res.get("token") or "") > 10, f"{what}: a token", redacted(res))
    check((res.get("token_type") or "").lower() == "bearer", f"{what}: token_type Bearer", redacted(res))
    check(time.time() < res.get("expires_at", 0) <= time.time() + ttl + 5,
          f"{what}: expires_at within the token lifetime", redacted(res))
    if scopes is not None:
        check(res.get("scopes") == sorted(scopes), f"{what}: scopes {sorted(scopes)}", redacted(res))
    if introspect:
        info = srv.introspect(res["token"])
        check(info.get("active") is True, f"{what}: active at the server", info)
        if scopes is not None:
            check(sorted((info.get("scope") or "").split()) == sorted(scopes), f"{what}: the server agrees on scopes",
                  info)
    return res


def lib_policy(exe, mode, credentials):
    return (agent_policy("libagent", mode, exe=exe, uid=os.getuid(), credentials=credentials,
                         comment="the libtokend driver, as the kernel shows its executable")
            + "\n" + test_agent_policy())


def reload_policy(d, text):
    d.write_policy(text)
    rc, out, err = d.tokenctl("reload")
    check(rc == 0, "tokenctl reload applies the policy", (rc, out, err))


def driver_exe(drv):
    """The executable the kernel shows for the driver (valgrind's tool under valgrind)."""
    p = subprocess.Popen([*drv.wrapper, DRIVER, "pause"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         preexec_fn=_die_with_parent)
    try:
        line = p.stdout.readline()
        check(json.loads(line).get("pid") == p.pid, "the driver runs as the process started (valgrind does not fork)")
        exe = os.readlink(f"/proc/{p.pid}/exe")
    finally:
        p.stdin.close()
        rc = p.wait(60)
        p.stdout.close()
    check(rc == 0, "driver pause exits 0", rc)
    log(f"the driver's executable, as tokend sees it: {exe}")
    return exe


def keyctl(script, *args):
    return subprocess.run(["keyctl", "session", "-", "sh", "-c", script, "sh", *args], capture_output=True, text=True,
                          timeout=15)


def instance_keyring_perm(instance, perm=None):
    """Reads (and with perm, first sets) the permission mask of the instance keyring tokend:INSTANCE."""
    find = 'P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" keyring "tokend:$1")'
    if perm is not None:
        r = keyctl(find + ' && keyctl setperm "$K" "$2"', instance, perm)
        check(r.returncode == 0, f"keyctl setperm {perm} on the instance keyring", r.stderr)
    r = keyctl(find + ' && keyctl rdescribe "$K"', instance)
    check(r.returncode == 0, "keyctl rdescribe the instance keyring", r.stderr)
    return "0x" + r.stdout.strip().split(";")[3]


def main(ctx):
    # 1024 streams held by this process, and as many connections and pidfds in the daemon.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    drv = Driver(ctx)
    srv = ctx.oauth_server(access_ttl=ACCESS_TTL)
    srv2 = ctx.oauth_server(access_ttl=SHORT_TTL, name="oauth2")
    d = ctx.tokend(request_timeout=3, consent_timeout=CONSENT_TIMEOUT)
    for name in (CRED, NARROW, OTHER, DOOMED, STORE):
        d.add(name, srv)
    d.add(FLAKY, srv2)
    d.add(SHORT, srv2)
    exe = driver_exe(drv)
    allow = lib_policy(exe, "allow", {CRED: "*", NARROW: "read", DOOMED: "*", FLAKY: "*", STORE: "*", SHORT: "*",
                                      "nosuch": "*"})
    reload_policy(d, allow)

    log("=== 1./2. GetToken: success and each error, in one driver run")
    doomed = d.token(DOOMED)  # as test-python: the token whose revocation revokes the grant
    srv.revoke(doomed["token"])
    check(srv.introspect(doomed["token"]).get("active") is False, "doomed: grant revoked at the server")
    status, body = srv2._request("/_test/fail?count=100000&status=503&retry_after=2", method="POST", form={})
    check(status == 200, "srv2 fails every request from now on (503, Retry-After: 2)", body)
    long = "x" * 65
    cases = [
        ("get cred", "policy's scopes"),
        ("get cred --scope read --count 3", "['read'], three calls on one connection"),
        ("get nosuch", "NoSuchCredential"),
        ("get narrow --scope write", "ScopeNotAllowed"),
        ("get other", "PolicyDenied (credential)"),
        ("get narrow --scope read --resource https://api.example.test/", "PolicyDenied (resource)"),
        ("get cred --min-ttl 100000", "LifetimeTooShort"),
        ("get cred --resource not-a-url", "InvalidParameter"),
        ("get cred --manager", "PermissionDenied"),
        ("get doomed --scope read", "ReauthenticationRequired"),
        ("get flaky --scope openid", "ProviderUnavailable"),
        (f"get {long} --socket /nonexistent/sock", "credential of 65 bytes"),
        ("get %00 --socket /nonexistent/sock", "credential that is empty"),
        ("get cred --scope " + "s" * 257 + " --socket /nonexistent/sock", "scope of 257 bytes"),
        ("get cred " + " ".join(f"--scope s{i}" for i in range(65)) + " --socket /nonexistent/sock", "65 scopes"),
        ("get cred --resource https://a.test/" + "r" * 2040 + " --socket /nonexistent/sock", "resource of 2056 bytes"),
        ("get cred --scope %ff --socket /nonexistent/sock", "scope that is not UTF-8"),
        ("get cred --min-ttl -5 --socket /nonexistent/sock", "negative min_ttl"),
        ("get cred --socket /nonexistent/tokend.sock", "not reachable"),
    ]
    t0 = time.monotonic()
    out = drv.script([c for c, _ in cases], socket_path=d.socket, what="GetToken script")
    log(f"GetToken script: {len(out)} results in {time.monotonic() - t0:.1f}s")
    check(len(out) == len(cases) + 2, "one result per call", redacted(out))
    it = iter(out)
    expect_token(srv, next(it), "get cred", WANT_SCOPES)
    three = [next(it) for _ in range(3)]
    for r in three:
        expect_token(srv, r, "get cred ['read']", ["read"])
    check(len({r["token"] for r in three}) == 1, "the three calls on one kept connection got the cached token")
    r = expect_code(next(it), NO_SUCH_CREDENTIAL, "nosuch", "io.tokend.agent.NoSuchCredential")
    check(r["credential"] == "nosuch", "NoSuchCredential: tokend_error_parameter(credential)", r)
    r = expect_code(next(it), SCOPE_NOT_ALLOWED, "narrow ['write']", "io.tokend.agent.ScopeNotAllowed")
    check(r["parameters"].get("scopes") == ["write"], "ScopeNotAllowed: the parameters name the scope", r)
    r = expect_code(next(it), POLICY_DENIED, "other", "io.tokend.agent.PolicyDenied")
    check(r["reason"] and r["parameters"].get("agent") == "libagent",
          "PolicyDenied: tokend_error_reason() and the agent", r)
    expect_code(next(it), POLICY_DENIED, "narrow with a resource", "io.tokend.agent.PolicyDenied")
    r = expect_code(next(it), LIFETIME_TOO_SHORT, "min_ttl 100000", "io.tokend.agent.LifetimeTooShort")
    check(0 < r["parameters"].get("lifetime", 0) <= ACCESS_TTL, "LifetimeTooShort: the lifetime", r)
    r = expect_code(next(it), INVALID_PARAMETER, "resource not-a-url", "org.varlink.service.InvalidParameter")
    check(r["parameters"].get("parameter") == "resource", "InvalidParameter names resource", r)
    expect_code(next(it), PERMISSION_DENIED, "manager flag from an agent", "org.varlink.service.PermissionDenied")
    r = expect_code(next(it), REAUTHENTICATION_REQUIRED, "doomed ['read']",
                    "io.tokend.agent.ReauthenticationRequired")
    check(r["credential"] == DOOMED, "ReauthenticationRequired names the credential", r)
    r = expect_code(next(it), PROVIDER_UNAVAILABLE, "flaky ['openid']", "io.tokend.agent.ProviderUnavailable")
    check(r["reason"] and r["retry_after"] >= 1, "ProviderUnavailable: reason and tokend_error_retry_after()", r)
    for what in ("credential of 65 bytes", "empty credential", "scope of 257 bytes", "65 scopes",
                 "resource of 2056 bytes", "scope not UTF-8", "negative min_ttl"):
        r = expect_code(next(it), INVALID_ARGUMENT, what)
        check(r["name"] is None, f"{what}: refused locally (no daemon error name; the socket does not exist)", r)
    r = expect_code(next(it), NOT_REACHABLE, "a socket that does not exist")
    check("/nonexistent/tokend.sock" in (r["reason"] or ""), "not reachable: the reason names the path", r)
    status, body = srv2._request("/_test/fail?count=0&status=503", method="POST", form={})
    check(status == 200, "srv2 recovers", body)

    log("=== 1. socket path: --socket, $XDG_RUNTIME_DIR/tokend/socket, none")
    xdg = os.path.join(ctx.tmp, "xdg")
    os.makedirs(os.path.join(xdg, "tokend"), mode=0o700)
    os.symlink(d.socket, os.path.join(xdg, "tokend", "socket"))
    out = drv.script([f"get cred --socket {d.socket}"], what="--socket")
    expect_token(srv, out[0], "--socket PATH", WANT_SCOPES, introspect=False)
    out = drv.script(["get cred"], xdg=xdg, what="XDG_RUNTIME_DIR")
    expect_token(srv, out[0], "$XDG_RUNTIME_DIR/tokend/socket", WANT_SCOPES, introspect=False)
    out = drv.script(["get cred"], what="no socket")
    expect_code(out[0], NOT_REACHABLE, "neither $TOKEND_SOCKET nor $XDG_RUNTIME_DIR")

    log("=== 2. StoreUnavailable: the rotated refresh token cannot be saved")
    check(keyring_has("user", d.key_description(STORE, "refresh_token")), "store: refresh token in the keyring")
    perm = instance_keyring_perm(d.instance)
    try:
        instance_keyring_perm(d.instance, "0x3b3b0000")  # no write for anyone
        out = drv.script(["get store --scope read"], socket_path=d.socket, what="StoreUnavailable")
    finally:
        instance_keyring_perm(d.instance, perm)
    r = expect_code(out[0], STORE_UNAVAILABLE, "store ['read'] with a read-only keyring",
                    "io.tokend.agent.StoreUnavailable")
    check(r["reason"], "StoreUnavailable: a reason", r)

    log("=== 3. a kept connection broken by a restart")
    b = drv.start(["get-twice", CRED], socket_path=d.socket, name="get-twice")
    expect_token(srv, b.read(60), "before the restart", WANT_SCOPES, introspect=False)
    d.restart()
    b.send("go\n")
    expect_token(srv, b.read(60), "after the restart, on the same client (reconnected)", WANT_SCOPES)
    b.finish()

    log("=== 4. Subscribe: first token, a renewal; next()")
    s = drv.start(["subscribe", SHORT, "--min-ttl", "6", "--mode", "next"], socket_path=d.socket, name="sub-next")
    s.expect("subscribed")
    t1 = expect_token(srv2, s.expect("token", 60), "first token of the stream", WANT_SCOPES, ttl=SHORT_TTL)
    t2 = expect_token(srv2, s.expect("token", SHORT_TTL + 10), "renewed token", WANT_SCOPES, ttl=SHORT_TTL)
    check(t2["token"] != t1["token"] and t2["expires_at"] > t1["expires_at"], "the renewal is a new, later token")
    check(t1["expires_at"] - time.time() < 6 + 3, "... delivered once the previous one neared min_ttl",
          t1["expires_at"] - time.time())
    rest = s.finish()
    check([m["event"] for m in rest] == ["exit"], "closing the stream locally: no further event", redacted(rest))

    log("=== 4. run() with a callback and stop(); PolicyDenied ends a stream")
    out = drv.run(["subscribe", CRED, "--scope", "read", "--mode", "run", "--max-events", "1"], socket_path=d.socket)
    check([m["event"] for m in out] == ["subscribed", "token", "run-returned", "exit"],
          "run(): one token, then stop() from the callback returns", redacted(out))
    expect_token(srv, out[1], "run(): the token", ["read"])
    check(out[2]["code"] == OK, "run() returns TOKEND_OK after stop()", out[2])
    out = drv.run(["subscribe", OTHER, "--mode", "run"], socket_path=d.socket)
    check([m["event"] for m in out] == ["subscribed", "ended", "run-returned", "exit"],
          "a refused stream: the callback gets TOKEND_EVENT_ENDED once", redacted(out))
    expect_code(out[1], POLICY_DENIED, "Subscribe other", "io.tokend.agent.PolicyDenied")
    check(out[2]["code"] == POLICY_DENIED, "run() returns the end code", out[2])

    log("=== 5. daemon restart under a subscription: reconnect and resubscribe (fd + process())")
    s = drv.start(["subscribe", CRED, "--scope", "read", "--mode", "process"], socket_path=d.socket, name="sub-process")
    s.expect("subscribed")
    expect_token(srv, s.expect("token", 60), "stream before the restart", ["read"], introspect=False)
    d.restart()
    m = s.expect("disconnected", 30)
    expect_code(m, DISCONNECTED, "TOKEND_EVENT_DISCONNECTED")
    m = s.expect("token", 30)
    expect_token(srv, m, "a token after the restart, on the resubscribed stream", ["read"])
    check(m["reconnects"] == 1, "tokend_subscription_reconnects() is 1", redacted(m))
    s.finish()

    log("=== 5. daemon gone for longer than the reconnect budget (1.5 s)")
    s = drv.start(["subscribe", CRED, "--scope", "read", "--reconnect-ms", "1500"], socket_path=d.socket,
                  name="sub-budget")
    s.expect("subscribed")
    expect_token(srv, s.expect("token", 60), "stream before the stop", ["read"], introspect=False)
    t0 = time.monotonic()
    rc = d.stop()
    check(rc == 0, "tokend exits 0 with a subscriber", rc)
    expect_code(s.expect("disconnected", 30), DISCONNECTED, "TOKEND_EVENT_DISCONNECTED")
    m = s.expect("ended", 30)
    took = time.monotonic() - t0
    expect_code(m, DISCONNECTED, "the stream ends: TOKEND_ERR_DISCONNECTED")
    check(1.3 <= took <= 6, f"... after the reconnect budget ({took:.1f}s since the stop began)")
    check("reconnect" in (m["reason"] or ""), "the reason says reconnecting failed", m)
    s.finish()
    d.start()

    log(f"=== 6. TooManySubscriptions ({SUBSCRIPTIONS_MAX} streams open)")
    conns = []
    try:
        for i in range(SUBSCRIPTIONS_MAX):
            c = VarlinkConnection(d.socket, timeout=60)
            conns.append(c)
            c.send("io.tokend.agent.Subscribe", {"credential": CRED, "scopes": ["write"]}, more=True)
        for c in conns:
            m = c.read_reply(60)
            if "error" in m:
                raise TestFailure(f"stream {len(conns)}: {m.get('error')} {m.get('parameters')}")
        log(f"{len(conns)} streams have their first token")
        out = drv.run(["subscribe", CRED, "--scope", "write"], socket_path=d.socket)
        check([m["event"] for m in out] == ["subscribed", "ended", "exit"], "one more stream ends at once",
              redacted(out))
        r = expect_code(out[1], TOO_MANY_SUBSCRIPTIONS, "stream 1025", "io.tokend.agent.TooManySubscriptions")
        check(r["parameters"].get("max") == SUBSCRIPTIONS_MAX, f"TooManySubscriptions: max {SUBSCRIPTIONS_MAX}", r)
    finally:
        for c in conns:
            c.close()

    log("=== 7. ask mode")
    reload_policy(d, lib_policy(exe, "ask", {"*": "*"}))
    t0 = time.monotonic()
    out = drv.script(["get cred --scope read"], socket_path=d.socket, what="ConsentRequired")
    r = expect_code(out[0], CONSENT_REQUIRED, "nobody answers", "io.tokend.agent.ConsentRequired")
    check(r["parameters"].get("request") and r["reason"], "ConsentRequired names the request, with a reason", r)
    check(time.monotonic() - t0 >= CONSENT_TIMEOUT - 0.5, "... after the consent timeout")

    b = drv.start(["get", CRED, "--scope", "write"], socket_path=d.socket, name="get-denied")
    req = d.wait_pending(lambda q: q["caller"]["pid"] == b.pid, what="the driver's request to wait")
    deny(d, req["id"])
    r = expect_code(b.read(30), CONSENT_DENIED, "denied", "io.tokend.agent.ConsentDenied")
    check(r["parameters"].get("request") == req["id"] and r["parameters"].get("agent") == "libagent",
          "ConsentDenied names the request and the agent", r)
    b.finish()

    out = drv.run(["caller-gone", CRED], socket_path=d.socket)
    check(len(out) == 2, "caller-gone: the warm-up call and the call of the orphan", redacted(out))
    expect_code(out[0], NO_SUCH_CREDENTIAL, "warm-up call of the process that opened the connection")
    expect_code(out[1], CALLER_GONE, "a call on the connection of an exited process", "io.tokend.agent.CallerGone")
    check(d.pending() == [], "nothing pending")

    log("=== 7. ConsentEnded: the grant of a running subscription is revoked")
    s = drv.start(["subscribe", CRED, "--scope", "openid", "--mode", "process"], socket_path=d.socket,
                  name="sub-consent")
    s.expect("subscribed")
    req = d.wait_pending(lambda q: q["caller"]["pid"] == s.pid, what="the stream's request to wait")
    gid = approve_plain(d, req["id"])
    expect_token(srv, s.expect("token", 30), "the approved stream's first token", ["openid"])
    t0 = time.monotonic()
    revoke_grant(d, gid)
    r = s.expect("ended", 15)
    check(time.monotonic() - t0 < 5, "the stream ends at once, not at the next renewal")
    expect_code(r, CONSENT_ENDED, "grant revoked", "io.tokend.agent.ConsentEnded")
    check(r["parameters"].get("grant") == gid and r["reason"] == "revoked",
          "ConsentEnded names the grant; reason revoked", r)
    s.finish()

    log("=== 1. TOKEND_FLAG_MANAGER from the owner")
    reload_policy(d, test_agent_policy())  # the driver is no agent now: the owner
    out = drv.script(["get cred --manager", "get cred --manager --scope write"], socket_path=d.socket,
                     what="manager GetToken")
    expect_token(srv, out[0], "io.tokend.manager.GetToken", WANT_SCOPES)
    expect_token(srv, out[1], "io.tokend.manager.GetToken ['write']", ["write"])

    check(d.alive(), "the daemon is still running")


if __name__ == "__main__":
    run_test(main, __doc__)
