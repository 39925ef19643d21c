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
"""

import atexit
import base64
import ctypes
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

SKIP = 77


class Skip(Exception):
    """Raised by a test to be reported as skipped (exit 77)."""


class TestFailure(AssertionError):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}] {msg}", flush=True)


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


class Tokend:
    def __init__(self, ctx, name="tokend", keep_fresh=None, request_timeout=None, log_level="debug",
                 extra_args=()):
        self.ctx = ctx
        self.name = name
        self.dir = os.path.join(ctx.tmp, name)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.state_home = os.path.join(self.dir, "state")
        self.state_dir = os.path.join(self.state_home, "tokend")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(ctx.tmp, f"{name}.log")
        self.args = [TOKEND, "--socket", self.socket, "--log-level", log_level]
        if keep_fresh is not None:
            self.args += ["--keep-fresh", str(keep_fresh)]
        if request_timeout is not None:
            self.args += ["--request-timeout", str(request_timeout)]
        if not any(str(a).startswith("--store") for a in extra_args):
            # Deterministic: --store auto would pick a Secret Service on a desktop session bus.
            self.args += ["--store", "keyring"]
        self.args += list(extra_args)
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

    def get_token(self, credential, scopes=None, min_ttl=None, resource=None, timeout=30.0):
        p = {"credential": credential}
        if scopes is not None:
            p["scopes"] = scopes
        if min_ttl is not None:
            p["min_ttl"] = min_ttl
        if resource is not None:
            p["resource"] = resource
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
