# SPDX-License-Identifier: MIT
"""End-to-end test harness for tokend (Python standard library only).

Each test script does:

    from harness import run_test, check
    def main(ctx):
        srv = ctx.oauth_server(access_ttl=10)
        d = ctx.tokend()
        d.add("cred", srv)
        ...
    run_test(main, __doc__)

run_test() creates a private temporary directory, runs main(ctx), and always
tears everything down (processes it started, stopped by PID; keyrings of the
tokend instances it started; the temporary directory), also on failure, on
SIGTERM (meson's timeout) and at interpreter exit. On failure it prints the
logs of the daemons and OAuth servers. Exit status: 0 pass, 1 fail, 77 skip.

Binaries come from $TOKEND and $TOKENCTL (default: build-it/ in the repo).

Policy: every tokend started here gets a policy directory of its own (--policy-dir, mode 0700,
files 0600). By default it holds one agent, "test-python", matching exactly this interpreter
(Exe=realpath of sys.executable) and this uid, Mode=allow, with `[Credential *]` Scopes=* and
Resources=*: the test process (and any vclient.py it runs with the same interpreter) gets
tokens as before, but is an agent, so the manager interface refuses it. Manager calls go through
tokenctl or Tokend.manager(), which runs a copy of the interpreter at another path (an owner
process no agent matches). Tests pass their own policy (text, or {file name: text}), or
policy=None for an empty directory (every caller unknown: each request waits for consent).
"""

import atexit
import base64
import ctypes
import errno
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OAUTH_DIR = os.path.join(REPO, "tests", "oauth")
TOKEND = os.environ.get("TOKEND") or os.path.join(REPO, "build-it", "daemon", "tokend")
TOKENCTL = os.environ.get("TOKENCTL") or os.path.join(REPO, "build-it", "client", "tokenctl")
NODE = shutil.which("node") or "node"
HERE = os.path.dirname(os.path.abspath(__file__))
VCLIENT = os.path.join(HERE, "vclient.py")
# What the kernel shows as this interpreter's executable (/proc/PID/exe): what Exe= must name.
PYTHON_EXE = os.path.realpath(sys.executable)

DEFAULT_SCOPE = "openid offline_access read write"
# client_id -> (client secret, mint.mjs --auth, tokend auth_method)
CLIENTS = {
    "tokend-test": ("test-secret", "basic", "client_secret_basic"),
    "tokend-post": ("post-secret", "post", "client_secret_post"),
    "tokend-public": (None, "none", "none"),
}
# The confidential client used for introspection and revocation (may see any token).
ADMIN_CLIENT = ("tokend-test", "test-secret")

# Exit status of tokenctl (see 'tokenctl help').
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_NO_SUCH = 0, 1, 2, 3, 4
EXIT_REAUTH, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_DENIED = 5, 6, 7, 8

ERR_INVALID_PARAMETER = "org.varlink.service.InvalidParameter"
ERR_METHOD_NOT_FOUND = "org.varlink.service.MethodNotFound"
ERR_INTERFACE_NOT_FOUND = "org.varlink.service.InterfaceNotFound"
ERR_PERMISSION_DENIED = "org.varlink.service.PermissionDenied"
ERR_POLICY_DENIED = "io.tokend.agent.PolicyDenied"
ERR_SCOPE_NOT_ALLOWED = "io.tokend.agent.ScopeNotAllowed"
ERR_CONSENT_REQUIRED = "io.tokend.agent.ConsentRequired"
ERR_CONSENT_DENIED = "io.tokend.agent.ConsentDenied"

SKIP = 77


class Skip(Exception):
    """Raised by a test to be reported as skipped (exit 77)."""


class TestFailure(AssertionError):
    pass


def log(msg):
    t = time.time()
    print(f"[{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t * 1000) % 1000:03d}] {msg}", flush=True)


def check(cond, what, detail=None):
    """Prints and asserts one checked property."""
    if not cond:
        raise TestFailure(f"FAILED: {what}" + (f"\n  detail: {detail}" if detail is not None else ""))
    log(f"ok: {what}")


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a true value; fails with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sleep_until(t_wall):
    """Sleeps until the wall clock reaches t_wall (seconds since the epoch)."""
    while True:
        d = t_wall - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


def stop_pid(proc, timeout=15.0, sig=signal.SIGTERM):
    """Stops one process we started, by its PID: signal, wait, SIGKILL as a last resort.
    Returns its exit status."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise TestFailure(f"pid {proc.pid} ({proc.args[0]}) did not exit within {timeout}s of signal {sig}; killed")


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM if the test process dies (even by SIGKILL)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def tail(path, lines=150):
    try:
        with open(path, "r", errors="replace") as f:
            content = f.readlines()
    except OSError as e:
        return f"(cannot read {path}: {e})\n"
    cut = content[-lines:]
    head = f"... ({len(content) - lines} earlier lines omitted)\n" if len(content) > lines else ""
    return head + "".join(cut)


# ---------------------------------------------------------------------------
# Kernel keyring (run in a fresh session keyring so the persistent keyring is possessed)

def _keyctl_session(script, *args, timeout=15):
    return subprocess.run(["keyctl", "session", "-", "sh", "-c", script, "sh", *args],
                          capture_output=True, text=True, timeout=timeout)


def keyring_has(key_type, description):
    """True when the persistent keyring (searched recursively) holds that key."""
    r = _keyctl_session('P=$(keyctl get_persistent @s) && keyctl search "$P" "$1" "$2"', key_type, description)
    return r.returncode == 0 and r.stdout.strip() != ""


def keyring_remove_instance(instance):
    """Invalidates the tokend:<instance> keyring (and so every key in it). True if one was found."""
    r = _keyctl_session('P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" keyring "tokend:$1") '
                        '&& keyctl invalidate "$K"', instance)
    return r.returncode == 0


# ---------------------------------------------------------------------------
# Varlink

class ConnectionClosed(Exception):
    pass


_MISSING = object()


def encode_call(method, parameters=_MISSING, **flags):
    m = {"method": method}
    if parameters is not _MISSING:
        m["parameters"] = parameters
    m.update(flags)
    return json.dumps(m).encode() + b"\0"


class VarlinkConnection:
    """A raw Varlink connection: NUL-terminated JSON messages over a Unix socket."""

    def __init__(self, path, timeout=20.0):
        self.path = path
        self.timeout = timeout
        self.buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, parameters=_MISSING, **flags):
        self.send_raw(encode_call(method, parameters, **flags))

    def _pop_message(self):
        i = self.buf.find(b"\0")
        if i < 0:
            return None
        raw, self.buf = self.buf[:i], self.buf[i + 1:]
        return json.loads(raw)

    def feed(self, data):
        """For callers doing their own reads (selectors): adds data, returns complete messages."""
        self.buf += data
        out = []
        while True:
            m = self._pop_message()
            if m is None:
                return out
            out.append(m)

    def read_reply(self, timeout=None):
        """Reads one reply message. Raises ConnectionClosed at EOF, TimeoutError on timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            m = self._pop_message()
            if m is not None:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply on {self.path} within {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no reply on {self.path} within {timeout}s") from None
            except ConnectionResetError:
                raise ConnectionClosed("connection reset") from None
            if not data:
                raise ConnectionClosed(f"EOF (unparsed: {self.buf[:80]!r})")
            self.buf += data

    def call(self, method, parameters=_MISSING, timeout=None, **flags):
        self.send(method, parameters, **flags)
        return self.read_reply(timeout)

    def read_replies(self, n, timeout=None):
        """Reads n replies (e.g. to n pipelined calls), in the order they arrive."""
        return [self.read_reply(timeout) for _ in range(n)]

    def wait_closed(self, timeout=10.0):
        """True when the peer closes the connection (EOF or reset) within timeout, having sent no
        message; returns the message instead if one arrives; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            m = self._pop_message()
            if m is not None:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.buf += data


def reply_error(m):
    return m.get("error")


def reply_params(m):
    return m.get("parameters") or {}


# ---------------------------------------------------------------------------
# The OAuth server

class OAuthServer:
    def __init__(self, ctx, access_ttl=3600, refresh_ttl=None, name="oauth"):
        self.ctx = ctx
        self.log_path = os.path.join(ctx.tmp, f"{name}.log")
        args = [NODE, os.path.join(OAUTH_DIR, "server.mjs"), "--port", "0", "--access-ttl", str(access_ttl)]
        if refresh_ttl is not None:
            args += ["--refresh-ttl", str(refresh_ttl)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     cwd=OAUTH_DIR, preexec_fn=_die_with_parent)
        ctx._register(self.stop, f"{name} server", self.log_path)
        line = self._read_ready_line(timeout=30)
        try:
            ready = json.loads(line)
        except ValueError:
            raise TestFailure(f"OAuth server printed a bad ready line: {line!r}") from None
        if not ready.get("ready") or not ready.get("issuer"):
            raise TestFailure(f"OAuth server ready line lacks issuer: {line!r}")
        self.issuer = ready["issuer"]
        self.port = ready["port"]
        self.access_ttl = access_ttl
        log(f"OAuth server pid {self.proc.pid} at {self.issuer} (access ttl {access_ttl}s)")

    def _read_ready_line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(f"OAuth server printed no ready line within {timeout}s")
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise TestFailure(f"OAuth server exited (status {self.proc.returncode}) before it was ready")
                buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def stop(self):
        if self.proc.poll() is None:
            stop_pid(self.proc, timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    # -- HTTP helpers --
    def _request(self, path, form=None, auth=None, method=None, timeout=15):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.issuer + path, data=data, method=method or ("POST" if data else "GET"))
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        req.add_header("Accept", "application/json")
        if auth:
            cid, sec = auth
            enc = lambda s: urllib.parse.quote_plus(s)
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{enc(cid)}:{enc(sec)}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            body = e.read()
            status = e.code
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        return status, parsed

    def stats(self):
        status, body = self._request("/_test/stats")
        if status != 200:
            raise TestFailure(f"GET /_test/stats: HTTP {status}: {body}")
        return body

    def refresh_count(self):
        return self.stats()["grants"]["refresh_token"]

    def reset_stats(self):
        status, body = self._request("/_test/reset-stats", method="POST", form={})
        if status != 200:
            raise TestFailure(f"POST /_test/reset-stats: HTTP {status}: {body}")

    def introspect(self, token, auth=ADMIN_CLIENT):
        status, body = self._request("/token/introspection", form={"token": token}, auth=auth)
        if status != 200:
            raise TestFailure(f"introspection: HTTP {status}: {body}")
        return body

    def revoke(self, token, auth=ADMIN_CLIENT, hint="access_token"):
        status, body = self._request("/token/revocation", form={"token": token, "token_type_hint": hint}, auth=auth)
        if status != 200:
            raise TestFailure(f"revocation: HTTP {status}: {body}")

    def mint(self, client_id="tokend-test", scope=DEFAULT_SCOPE):
        return mint(self.issuer, client_id, scope=scope)


def mint(issuer, client_id="tokend-test", client_secret=_MISSING, auth=None, scope=DEFAULT_SCOPE, timeout=60):
    """Runs a real authorization code + PKCE flow (tests/oauth/mint.mjs); returns a refresh token."""
    secret, auth_default, _ = CLIENTS.get(client_id, (None, "none", "none"))
    if client_secret is not _MISSING:
        secret = client_secret
    auth = auth or auth_default
    args = [NODE, os.path.join(OAUTH_DIR, "mint.mjs"), "--issuer", issuer, "--client-id", client_id,
            "--auth", auth, "--scope", scope]
    env = dict(os.environ)
    if secret is not None and auth != "none":
        env["MINT_CLIENT_SECRET"] = secret  # not on the command line: test_no_secret_leaks checks argv
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=OAUTH_DIR, env=env)
    if r.returncode != 0 or not r.stdout.strip():
        raise TestFailure(f"mint.mjs failed (status {r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip().splitlines()[0]


# ---------------------------------------------------------------------------
# tokend

def tokenctl(*args, stdin=None, socket_path=None, timeout=60):
    """Runs $TOKENCTL with args (stdin: text fed on its standard input); returns (rc, stdout, stderr).
    socket_path sets $TOKEND_SOCKET (default: inherited from the environment)."""
    env = dict(os.environ)
    if socket_path:
        env["TOKEND_SOCKET"] = socket_path
    r = subprocess.run([TOKENCTL, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
    log(f"tokenctl {' '.join(args)} -> {r.returncode}" + (f" ({r.stderr.strip()})" if r.stderr.strip() else ""))
    return r.returncode, r.stdout, r.stderr


def agent_policy(name, mode="allow", exe=None, uid=None, unit=None, cgroup=None, credentials=None,
                 consent_duration=None, max_lifetime=None, comment=None):
    """One [Agent] section and its [Credential] sections, as policy file text.
    credentials: {credential name or "*": scopes} or {name: (scopes, resources)}; scopes and
    resources are strings ("read write", "*") or lists. Default: {"*": ("*", "*")}."""
    lines = [f"# {comment}"] if comment else []
    lines += ["[Agent]", f"Name={name}"]
    for key, value in (("Exe", exe), ("Uid", uid), ("Unit", unit), ("Cgroup", cgroup), ("Mode", mode),
                       ("ConsentDuration", consent_duration), ("MaxLifetime", max_lifetime)):
        if value is not None:
            lines.append(f"{key}={value}")
    if credentials is None:
        credentials = {"*": ("*", "*")}
    for cred, spec in credentials.items():
        scopes, resources = spec if isinstance(spec, tuple) else (spec, None)
        lines += ["", f"[Credential {cred}]", "Scopes=" + (scopes if isinstance(scopes, str) else " ".join(scopes))]
        if resources:
            lines.append("Resources=" + (resources if isinstance(resources, str) else " ".join(resources)))
    return "\n".join(lines) + "\n"


def test_agent_policy(name="test-python", mode="allow", **kw):
    """The default policy: this interpreter, this uid, is an agent that may get any token."""
    kw.setdefault("exe", PYTHON_EXE)
    kw.setdefault("uid", os.getuid())
    kw.setdefault("comment", "tests/integration/harness.py: the test process (this interpreter, this uid)")
    return agent_policy(name, mode, **kw)


DEFAULT_POLICY = object()  # Tokend(policy=...) default: test_agent_policy()
POLICY_FILE = "50-test.conf"


class Tokend:
    def __init__(self, ctx, name="tokend", keep_fresh=None, request_timeout=None, log_level="debug",
                 extra_args=(), policy=DEFAULT_POLICY, consent_timeout=None, wrapper=()):
        self.ctx = ctx
        self.name = name
        self.dir = os.path.join(ctx.tmp, name)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.state_home = os.path.join(self.dir, "state")
        self.state_dir = os.path.join(self.state_home, "tokend")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(ctx.tmp, f"{name}.log")
        self.policy_dir = os.path.join(self.dir, "policy.d")
        self.write_policy(test_agent_policy() if policy is DEFAULT_POLICY else policy)
        self.args = [TOKEND, "--socket", self.socket, "--log-level", log_level, "--policy-dir", self.policy_dir]
        if keep_fresh is not None:
            self.args += ["--keep-fresh", str(keep_fresh)]
        if request_timeout is not None:
            self.args += ["--request-timeout", str(request_timeout)]
        if consent_timeout is not None:
            self.args += ["--consent-timeout", str(consent_timeout)]
        if not any(str(a).startswith("--store") for a in extra_args):
            # Deterministic: --store auto would pick a Secret Service on a desktop session bus.
            self.args += ["--store", "keyring"]
        self.args += list(extra_args)
        # A command that execs the daemon in its place (the same PID), e.g. setpriv.
        self.args = [*wrapper, *self.args]
        if os.environ.get("TOKEND_VALGRIND"):
            # The daemon under memcheck (the 'valgrind' suite): any error, or a
            # definite or indirect leak at exit, makes it exit 99 instead of 0,
            # which fails the test when it is stopped.
            self.args = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                         "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
                         "--num-callers=30", *self.args]
        self.proc = None
        self.instance = None
        self.starts = 0
        ctx._register(self.cleanup, f"tokend '{name}'", self.log_path)
        self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def env(self):
        env = dict(os.environ)
        env["XDG_STATE_HOME"] = self.state_home
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("NOTIFY_SOCKET", None)
        return env

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15):
        assert not self.alive(), "tokend already running"
        self.starts += 1
        with open(self.log_path, "ab") as lf:
            lf.write(f"===== start #{self.starts}: {' '.join(self.args)}\n".encode())
            lf.flush()
            self.proc = subprocess.Popen(self.args, env=self.env(), stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                         preexec_fn=_die_with_parent)

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure(f"tokend '{self.name}' exited with status {self.proc.returncode} during start-up")
            try:
                with VarlinkConnection(self.socket, timeout=5) as c:
                    r = c.call("org.varlink.service.GetInfo")
                return "error" not in r
            except (OSError, ConnectionClosed, TimeoutError):
                return False

        wait_until(ready, timeout, f"tokend '{self.name}' to accept connections on {self.socket}")
        with open(os.path.join(self.state_dir, "instance-id")) as f:
            inst = f.read().strip()
        if self.instance and inst != self.instance:
            raise TestFailure(f"instance id changed across restart: {self.instance} -> {inst}")
        self.instance = inst
        log(f"tokend '{self.name}' pid {self.proc.pid} ready on {self.socket} (instance {inst})")

    def stop(self, timeout=20):
        """SIGTERM; returns the exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        rc = stop_pid(self.proc, timeout=timeout)
        log(f"tokend '{self.name}' pid {self.proc.pid} exited with status {rc}")
        return rc

    def restart(self):
        rc = self.stop()
        check(rc == 0, f"tokend '{self.name}' exits 0 on SIGTERM", f"status {rc}")
        self.start()

    def cleanup(self):
        try:
            if self.alive():
                self.stop()
        finally:
            if self.instance:
                removed = keyring_remove_instance(self.instance)
                log(f"keyring tokend:{self.instance} " + ("invalidated" if removed else "not found"))

    # -- policy --
    def policy_path(self, filename=POLICY_FILE):
        return os.path.join(self.policy_dir, filename)

    def write_policy(self, policy):
        """Replaces the policy files: policy is None (none), a text (one file, POLICY_FILE) or
        {file name: text}. The directory is 0700, the files 0600, all owned by the test's uid;
        each file is written to a temporary name and renamed, so the daemon never reads half."""
        os.makedirs(self.policy_dir, mode=0o700, exist_ok=True)
        os.chmod(self.policy_dir, 0o700)
        files = {} if policy is None else {POLICY_FILE: policy} if isinstance(policy, str) else dict(policy)
        for f in os.listdir(self.policy_dir):
            if f not in files:
                os.unlink(os.path.join(self.policy_dir, f))
        for f, text in files.items():
            tmp = os.path.join(self.policy_dir, f".{f}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, 0o600)
            os.rename(tmp, os.path.join(self.policy_dir, f))
        log(f"tokend '{self.name}' policy: {sorted(files) or 'empty'} in {self.policy_dir}")

    def sighup(self):
        """Asks the daemon to reload its policy (SIGHUP). Returns at once: poll for the effect."""
        os.kill(self.proc.pid, signal.SIGHUP)
        log(f"SIGHUP to tokend '{self.name}' pid {self.proc.pid}")

    def whoami(self):
        """WhoAmI from this process: the reply parameters (fails on an error)."""
        m = self.call("io.tokend.agent.WhoAmI")
        if "error" in m:
            raise TestFailure(f"WhoAmI failed: {m}")
        return m["parameters"]

    def manager(self, method, parameters=None, timeout=30.0):
        """A call to the manager interface from an owner process that no agent matches (a copy of
        the interpreter at another path); returns the reply message. `method` may omit
        "io.tokend.manager."."""
        if "." not in method:
            method = "io.tokend.manager." + method
        res = self.ctx.vclient_call(self.socket, method, parameters, timeout=timeout)
        if "reply" not in res:
            raise TestFailure(f"{method}: no reply ({res})")
        return res["reply"]

    def manager_ok(self, method, parameters=None, timeout=30.0):
        """manager() that must succeed; returns the reply parameters."""
        m = self.manager(method, parameters if parameters is not None else {}, timeout)
        if "error" in m:
            raise TestFailure(f"{method} failed: {m}")
        return m.get("parameters") or {}

    def pending(self):
        """The requests waiting for consent (ListPending, as the owner)."""
        return self.manager_ok("ListPending")["requests"]

    def grants(self):
        """The grants in force (ListGrants, as the owner)."""
        return self.manager_ok("ListGrants")["grants"]

    def wait_pending(self, pred=lambda r: True, timeout=15, what="a request to wait for consent"):
        """Waits until a pending request satisfies pred; returns it."""
        def find():
            return next((r for r in self.pending() if pred(r)), None)
        return wait_until(find, timeout, what, interval=0.1)

    # -- keyring --
    def key_description(self, credential, kind):
        return f"tokend:{self.instance}:{credential}:{kind}"

    def has_secret(self, credential, kind="refresh_token"):
        return keyring_has("user", self.key_description(credential, kind))

    # -- clients --
    def connect(self, timeout=20.0):
        return VarlinkConnection(self.socket, timeout=timeout)

    def call(self, method, parameters=_MISSING, timeout=30.0):
        with self.connect(timeout) as c:
            return c.call(method, parameters, timeout=timeout)

    def get_token(self, credential, scopes=None, min_ttl=None, resource=None, timeout=30.0, as_owner=None):
        p = {"credential": credential}
        if scopes is not None:
            p["scopes"] = scopes
        if min_ttl is not None:
            p["min_ttl"] = min_ttl
        if resource is not None:
            p["resource"] = resource
        if as_owner is not None:
            p["as_owner"] = as_owner
        return self.call("io.tokend.agent.GetToken", p, timeout=timeout)

    def token(self, credential, scopes=None, **kw):
        """GetToken that must succeed; returns the reply parameters."""
        m = self.get_token(credential, scopes, **kw)
        if "error" in m:
            raise TestFailure(f"GetToken({credential}, {scopes}) failed: {m}")
        return m["parameters"]

    def tokenctl(self, *args, stdin=None, timeout=60):
        """Runs tokenctl against this daemon; returns (rc, stdout, stderr)."""
        return tokenctl(*args, stdin=stdin, socket_path=self.socket, timeout=timeout)

    def list_json(self):
        rc, out, err = self.tokenctl("--json", "list")
        if rc != 0:
            raise TestFailure(f"tokenctl --json list failed ({rc}): {err}")
        return {c["name"]: c for c in json.loads(out)}

    def add(self, name, server, client_id="tokend-test", scope=DEFAULT_SCOPE, refresh_token=None, extra=()):
        """Mints a refresh token (unless given) and adds it with tokenctl add; returns (rc, stdout, stderr)."""
        secret, _, method = CLIENTS[client_id]
        rt = refresh_token or mint(server.issuer, client_id, scope=scope)
        args = ["add", name, "--issuer", server.issuer, "--client-id", client_id, "--insecure-loopback"]
        if secret is not None:
            path = os.path.join(self.ctx.tmp, f"{client_id}.secret")
            if not os.path.exists(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secret + "\n")
            args += ["--client-secret-file", path]
        if method != "client_secret_basic":
            args += ["--auth-method", method]
        args += list(extra)
        r = self.tokenctl(*args, stdin=rt + "\n")
        if r[0] != 0:
            raise TestFailure(f"tokenctl add {name} failed ({r[0]}): {r[2]}")
        return r


# ---------------------------------------------------------------------------
# Processes calling tokend other than the test process

def python_env(python, extra=None):
    """The environment for running `python` (this interpreter or a copy of it)."""
    env = dict(os.environ)
    if os.path.realpath(python) != PYTHON_EXE:
        env["PYTHONHOME"] = sys.base_prefix  # a copy finds its standard library there
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def move_to_cgroup(cgdir):
    """preexec_fn helper: moves the calling (child) process into the cgroup dir cgdir."""
    with open(os.path.join(cgdir, "cgroup.procs"), "w") as f:
        f.write("0")


class Caller:
    """A separate process that calls tokend (tests/integration/vclient.py serve): another PID,
    optionally another executable (python: a copy, see Context.python_copy), another cgroup (cgroup:
    a directory it is moved into before it runs), or another uid (wrapper: e.g. setpriv ...).
    Each method sends one command and, unless it says otherwise, waits for its result."""

    def __init__(self, ctx, socket_path, python=None, cgroup=None, wrapper=(), env=None, name="caller"):
        self.ctx = ctx
        self.socket = socket_path
        self.python = python or sys.executable
        self.name = name
        self.cgroup = cgroup
        self.buf = b""
        self.eof = False

        def pre():
            _die_with_parent()
            if cgroup:
                move_to_cgroup(cgroup)

        self.proc = subprocess.Popen([*wrapper, self.python, VCLIENT, socket_path, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None, env=python_env(self.python, env),
                                     preexec_fn=pre, cwd="/")
        ctx._register(self.kill, f"caller {name}")
        first = self._line(30)
        if first is None or "pid" not in first:
            raise TestFailure(f"caller {name} did not start: {first} (status {self.proc.poll()})")
        self.pid = first["pid"]
        if self.pid != self.proc.pid:
            raise TestFailure(f"caller {name}: pid {self.pid} is not the started process {self.proc.pid}")
        log(f"caller {name} pid {self.pid} ({self.python}{', cgroup ' + cgroup if cgroup else ''})")

    def _fill(self, timeout):
        """Reads until a whole line is buffered: True; False at EOF or after timeout seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sel = selectors.DefaultSelector()
            sel.register(fd, selectors.EVENT_READ)
            try:
                ready = sel.select(left)
            finally:
                sel.close()
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.eof = True
                return False
            self.buf += chunk
        return True

    def _line(self, timeout):
        """The next JSON line, or None at EOF; TimeoutError after timeout seconds."""
        if not self._fill(timeout):
            if self.eof:
                return None
            raise TimeoutError(f"caller {self.name}: no answer within {timeout}s")
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _cmd(self, **cmd):
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def result(self, timeout=60):
        """The result of the last command sent without waiting."""
        try:
            r = self._line(timeout)
        except TimeoutError:
            raise TestFailure(f"caller {self.name}: no result within {timeout}s") from None
        if r is None:
            raise TestFailure(f"caller {self.name} exited (status {self.proc.wait(timeout=10)}) without a result")
        return r

    def has_result(self, wait=0.0):
        """True when the result of the call in progress has arrived (within `wait` seconds)."""
        return self._fill(wait)

    def start(self, method, parameters=None, timeout=60, more=False):
        """Starts a call on a new connection; result()/reply() collects it."""
        self._cmd(op="call", method=method, parameters=parameters, timeout=timeout, more=more)

    def reply(self, timeout=60):
        """The reply message of the call started; fails when there is none (closed, timeout)."""
        r = self.result(timeout + 10)
        if "reply" not in r:
            raise TestFailure(f"caller {self.name}: no reply: {r}")
        return r["reply"]

    def call_result(self, method, parameters=None, timeout=60, more=False):
        """The raw result of one call: {"reply": m}, {"replies": [...]} (more), {"closed": true}, ..."""
        self.start(method, parameters, timeout, more)
        return self.result(timeout + 10)

    def call(self, method, parameters=None, timeout=60):
        self.start(method, parameters, timeout)
        return self.reply(timeout)

    @staticmethod
    def token_params(credential, scopes=None, resource=None, min_ttl=None):
        p = {"credential": credential}
        if scopes is not None:
            p["scopes"] = scopes
        if resource is not None:
            p["resource"] = resource
        if min_ttl is not None:
            p["min_ttl"] = min_ttl
        return p

    def start_token(self, credential, scopes=None, resource=None, timeout=60):
        """Starts GetToken; reply() collects the answer (it may wait for consent)."""
        self.start("io.tokend.agent.GetToken", self.token_params(credential, scopes, resource), timeout)

    def get_token(self, credential, scopes=None, resource=None, timeout=60):
        """GetToken; the reply message (error or not)."""
        self.start_token(credential, scopes, resource, timeout)
        return self.reply(timeout)

    def token(self, credential, scopes=None, resource=None, timeout=60):
        """GetToken that must succeed; the reply parameters."""
        m = self.get_token(credential, scopes, resource, timeout)
        if "error" in m:
            raise TestFailure(f"caller {self.name}: GetToken({credential}, {scopes}) failed: {m}")
        return m["parameters"]

    def whoami(self):
        m = self.call("io.tokend.agent.WhoAmI")
        if "error" in m:
            raise TestFailure(f"caller {self.name}: WhoAmI failed: {m}")
        return m["parameters"]

    def send(self, method, parameters=None):
        """Sends a call on a connection that stays open (hangup() closes it)."""
        self._cmd(op="send", method=method, parameters=parameters)
        r = self.result(30)
        if not r.get("sent"):
            raise TestFailure(f"caller {self.name}: send failed: {r}")

    def recv(self, timeout=60):
        self._cmd(op="recv", timeout=timeout)
        return self.result(timeout + 10)

    def hangup(self):
        self._cmd(op="close")
        r = self.result(30)
        if not r.get("closed"):
            raise TestFailure(f"caller {self.name}: close failed: {r}")

    def exit(self, timeout=15):
        """Ends the process; returns its exit status."""
        if self.proc.poll() is None:
            try:
                self._cmd(op="exit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        log(f"caller {self.name} pid {self.pid} exited: status {self.proc.returncode}")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def unified_root():
    """The cgroup v2 (unified) hierarchy's mount point, or None."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            return root
    return None


def own_cgroup(pid="self"):
    """The 0:: line of /proc/PID/cgroup (the process's cgroup v2 path)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            if line.startswith("0::"):
                return line[3:]
    return None


class Cgroups:
    """cgroup v2 directories a test creates (under the unified hierarchy) and removes at the end.
    The systemd unit of a process is read from its cgroup path: a process in
    /X.slice/agent-1.scope is in unit agent-1.scope. Needs root; raises Skip otherwise."""

    def __init__(self, ctx):
        self.root = unified_root()
        if self.root is None:
            raise Skip("no cgroup v2 (unified) hierarchy mounted")
        if os.geteuid() != 0 or not os.access(self.root, os.W_OK):
            raise Skip(f"cannot create cgroups under {self.root} (not root)")
        self.dirs = []
        ctx._register(self.cleanup, "test cgroups")

    def make(self, rel):
        """Creates /rel (and its parents); returns the directory."""
        path = self.root
        for part in rel.strip("/").split("/"):
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                self.dirs.append(path)
        return path

    def cleanup(self):
        for d in reversed(self.dirs):
            deadline = time.monotonic() + 5
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise TestFailure(f"cannot remove cgroup {d}: {e}") from None
                    time.sleep(0.05)
        if self.dirs:
            log(f"removed {len(self.dirs)} test cgroups under {self.root}")
        self.dirs = []


class LineReader:
    """A background process whose standard output is read line by line (e.g. `tokenctl watch`)."""

    def __init__(self, ctx, args, name, env=None, preexec=None):
        self.name = name
        self.buf = b""
        self.lines = []
        self.err_path = os.path.join(ctx.tmp, f"{name}.stderr")
        self._err = open(self.err_path, "ab")

        def pre():
            _die_with_parent()
            if preexec:
                preexec()

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
                                     env=env, preexec_fn=pre)
        ctx._register(self.stop, name, self.err_path)
        log(f"started {name} (pid {self.proc.pid}): {' '.join(args)}")

    def read_line(self, timeout):
        """The next line (str, without the newline); None at EOF or after timeout seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sel = selectors.DefaultSelector()
            sel.register(fd, selectors.EVENT_READ)
            try:
                ready = sel.select(left)
            finally:
                sel.close()
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode(errors="replace")
        self.lines.append(text)
        return text

    def wait_line(self, pred, timeout, what):
        """Reads lines until pred(line) is true; returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise TestFailure(f"{self.name}: no line for {what} within {timeout}s "
                                  f"(status {self.proc.poll()}; lines so far: {self.lines[-10:]})")
            if pred(line):
                return line

    def stop(self):
        if self.proc.poll() is None:
            stop_pid(self.proc, timeout=10)
        self.proc.stdout.close()
        self._err.close()


# ---------------------------------------------------------------------------
# Context and runner

class Context:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="tokend-it-")
        self._cleanups = []  # (fn, label, log path or None)
        self.daemons = []
        self.closed = False

    def _register(self, fn, label, log_path=None):
        self._cleanups.append((fn, label, log_path))

    def oauth_server(self, **kw):
        return OAuthServer(self, **kw)

    def tokend(self, **kw):
        d = Tokend(self, **kw)
        self.daemons.append(d)
        return d

    def python_copy(self, name):
        """A copy of this interpreter at ctx.tmp/exe-NAME/python3: the same program at another path,
        so another executable for the kernel (/proc/PID/exe) and for Exe= selectors. Run it with
        python_env() (it finds its standard library through PYTHONHOME)."""
        path = os.path.join(self.tmp, f"exe-{name}", "python3")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            shutil.copy2(PYTHON_EXE, path + ".tmp")
            os.chmod(path + ".tmp", 0o755)
            os.rename(path + ".tmp", path)
        return path

    @property
    def owner_python(self):
        """The interpreter copy used for manager calls: an owner process no default agent matches."""
        return self.python_copy("owner")

    def vclient_call(self, socket_path, method, parameters=None, python=None, timeout=30.0):
        """One call from a separate vclient.py process (default: the owner copy); its result."""
        python = python or self.owner_python
        args = [python, VCLIENT, socket_path, "call", method]
        if parameters is not None:
            args.append(json.dumps(parameters))
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 15, env=python_env(python),
                           preexec_fn=_die_with_parent)
        if r.returncode != 0 or not r.stdout.strip():
            raise TestFailure(f"vclient {method} failed (status {r.returncode}): {r.stderr.strip()}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def caller(self, socket_path, **kw):
        """A Caller process (vclient.py serve) for socket_path."""
        return Caller(self, socket_path, **kw)

    def verify_daemons(self):
        """Stops every tokend still running: each must exit 0 on SIGTERM (a sanitizer build exits
        non-zero on a leak), and no daemon log may hold a sanitizer report."""
        for d in self.daemons:
            if d.alive():
                rc = d.stop()
                check(rc == 0, f"tokend '{d.name}' exits 0 on SIGTERM at the end", f"status {rc}")
            try:
                with open(d.log_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                check(marker not in text, f"no sanitizer report in the log of tokend '{d.name}'", marker)

    def dump_logs(self):
        for _, label, path in self._cleanups:
            if path:
                print(f"\n----- log of {label}: {path} -----", flush=True)
                sys.stdout.write(tail(path))
                print(f"----- end of log of {label} -----", flush=True)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for fn, label, _ in reversed(self._cleanups):
            try:
                fn()
            except BaseException as e:  # keep tearing down the rest
                print(f"teardown of {label} failed: {e}", file=sys.stderr, flush=True)
        if os.environ.get("TOKEND_IT_KEEP"):
            print(f"(kept {self.tmp})")
        else:
            # tokend makes its audit fallback file append-only where it can (root): undo that first.
            for root, _, files in os.walk(self.tmp):
                if "audit.log" in files:
                    subprocess.run(["chattr", "-a", os.path.join(root, "audit.log")], capture_output=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


def _preflight():
    problems = []
    if not os.path.isdir(os.path.join(OAUTH_DIR, "node_modules", "oidc-provider")):
        problems.append(f"{OAUTH_DIR}/node_modules is missing: run npm ci --prefix tests/oauth")
    for var, path in (("TOKEND", TOKEND), ("TOKENCTL", TOKENCTL)):
        if not os.access(path, os.X_OK):
            problems.append(f"{var}={path} is not an executable: build first and set ${var}")
    if not shutil.which("node"):
        problems.append("node is not installed")
    if not shutil.which("keyctl"):
        problems.append("keyctl is not installed (apt-get install keyutils)")
    if problems:
        for p in problems:
            print(f"ERROR: {p}", file=sys.stderr)
        sys.exit(2)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def run_test(main, description=None):
    """Runs main(ctx) and exits: 0 pass, 1 fail, 77 skip."""
    name = os.path.basename(sys.argv[0])
    if description:
        print(description.strip() + "\n", flush=True)
    _preflight()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    ctx = Context(name)
    atexit.register(ctx.close)
    start = time.monotonic()
    rc = 1
    try:
        main(ctx)
        ctx.verify_daemons()
        rc = 0
    except Skip as e:
        print(f"SKIP: {e}", flush=True)
        rc = SKIP
    except BaseException as e:
        if isinstance(e, SystemExit):
            print(f"\nINTERRUPTED (exit {e.code}): tearing down", flush=True)
        else:
            print("\n" + "".join(traceback.format_exception(e)), flush=True)
        ctx.dump_logs()
        rc = 1
    finally:
        try:
            ctx.close()
        except BaseException as e:
            print(f"teardown failed: {e}", file=sys.stderr)
            rc = rc or 1
    verdict = {0: "PASS", SKIP: "SKIP"}.get(rc, "FAIL")
    print(f"\n{verdict}: {name} ({time.monotonic() - start:.1f}s)", flush=True)
    sys.exit(rc)
