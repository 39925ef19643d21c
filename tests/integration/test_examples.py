#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""examples/: the Python, shell and C agents against a real tokend and a real OAuth server.

Two OAuth servers: "slow" tokens live an hour (so the token an example got is still the cached one
when the test asks for it), "fast" ones 10 s (so a subscription sees renewals). The test runs its
own API on loopback: it records each bearer token it is sent, introspects it at the server the
moment it arrives, and meanwhile looks through /proc for the token on any command line (and in
curl's environment). The policy lets in each example by its executable: this interpreter
(python-agent.py, and the test itself), a copy of tokenctl (shell-agent.sh), the C agent; copies
of the interpreter, of the C agent and of tokenctl are denied, and another copy of the interpreter
is an unknown caller.

1. python-agent.py: GetToken with --api (the API got a token active at the server, with the
   fingerprint printed, which is also the token the test then gets from the cache); --whoami names
   its agent; --subscribe 3 with --api: 3 token lines, >= 2 distinct, each token active when used.
2. c-agent: GetToken (the printed fingerprint is the cached token, active); --subscribe 3, run
   beside a Subscribe stream of the test on the same key: >= 2 distinct tokens, every one of them
   a token the test's stream received and found active.
3. shell-agent.sh through the agent copy of tokenctl: the API got an active token, on no command
   line, not in curl's environment; the owner's tokenctl, twice (-n 2); -x (tokenctl exec), when
   tokenctl has exec.
4. Errors, each example: unknown credential (4), a scope the credential does not hold (7), a
   denied executable (8), no daemon (3), a usage error (2), an unknown caller whose consent times
   out (7, Python).
5. Across a restart of tokend: python-agent.py --subscribe 4 --resubscribe subscribes again and gets
   its 4 tokens (each active when used); so does c-agent --subscribe 4 (libtokend resubscribes).
6. A subscription ends with an error reply when its credential is removed: exit 4 (Python, C).
No output of any example holds any token the test saw.
"""
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402
    EXIT_DENIED, EXIT_NO_DAEMON, EXIT_NO_SUCH, EXIT_REFUSED, EXIT_USAGE, PYTHON_EXE, REPO, TOKENCTL,
    TestFailure, VarlinkConnection, _die_with_parent, agent_policy, check, log, python_env, run_test, stop_pid)

EXAMPLES = os.path.join(REPO, "examples")
PYTHON_AGENT = os.path.join(EXAMPLES, "python-agent.py")
SHELL_AGENT = os.path.join(EXAMPLES, "shell-agent.sh")
C_AGENT = os.environ.get("EXAMPLE_C_AGENT") or os.path.join(REPO, "build-it", "examples", "c-agent")

TOKEN_LINE = re.compile(r"^token (?:#(\d+) )?fp=([0-9a-f]{12}) expires_at=(\d+) \(\d\d:\d\d:\d\dZ\) ttl=(-?\d+)s "
                        r"type=(\S+) scopes=(\S*)$")
SHELL_FP = re.compile(r"^token fp=([0-9a-f]{12})$")


def fp(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Api:
    """A resource server on loopback: GET /NAME/... records the bearer token, introspects it at the
    OAuth server NAME, scans /proc for it, and answers 200 {"active": ...} (never the token)."""

    def __init__(self, ctx, servers):
        self.servers = servers
        self.seen = []  # {"token", "server", "active", "client_id", "argv_pids", "env_pids"}
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.strip("/").split("/")[0]
                auth = self.headers.get("Authorization", "")
                if name not in api.servers or not auth.startswith("Bearer "):
                    self.send_error(400)
                    return
                token = auth[len("Bearer "):]
                argv_pids, env_pids = scan_proc(token)
                info = api.servers[name].introspect(token)
                with api.lock:
                    api.seen.append({"token": token, "server": name, "active": info.get("active") is True,
                                     "client_id": info.get("client_id"), "argv_pids": argv_pids,
                                     "env_pids": env_pids})
                body = json.dumps({"active": info.get("active") is True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        ctx._register(self.stop, "test API")
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        log(f"test API at {self.base}")

    def url(self, server):
        return f"{self.base}/{server}/me"

    def mark(self):
        """A position in the record: by_fp(f, since=mark) sees only what came after it."""
        with self.lock:
            return len(self.seen)

    def by_fp(self, f, since=0):
        with self.lock:
            return [s for s in self.seen[since:] if fp(s["token"]) == f]

    def tokens(self):
        with self.lock:
            return [s["token"] for s in self.seen]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def scan_proc(token):
    """PIDs whose command line holds the token, and PIDs of curl whose environment does."""
    needle = token.encode()
    argv_pids, env_pids = [], []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    argv_pids.append(int(pid))
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read().strip() == b"curl":
                    with open(f"/proc/{pid}/environ", "rb") as f2:
                        if needle in f2.read():
                            env_pids.append(int(pid))
        except OSError:
            continue
    return argv_pids, env_pids


class Runs:
    """Runs the examples; keeps every output, to check at the end that no token is in any."""

    def __init__(self, ctx, d):
        self.ctx = ctx
        self.d = d
        self.outputs = []  # (label, text)

    def env(self, python=None, extra=None):
        env = python_env(python or sys.executable)
        env["TOKEND_SOCKET"] = self.d.socket
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.update(extra or {})
        return env

    def run(self, label, args, env, timeout=60):
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.ctx.tmp,
                           stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.outputs.append((label, r.stdout + r.stderr))
        log(f"{label}: exit {r.returncode}\n  stdout: {r.stdout.strip()!r}\n  stderr: {r.stderr.strip()!r}")
        return r.returncode, r.stdout, r.stderr

    def python(self, label, *args, python=None, extra_env=None, timeout=60):
        return self.run(label, [python or sys.executable, PYTHON_AGENT, *args], self.env(python, extra_env),
                        timeout)

    def shell(self, label, *args, tokenctl=TOKENCTL, extra_env=None, timeout=60):
        return self.run(label, ["sh", SHELL_AGENT, *args], self.env(extra={"TOKENCTL": tokenctl, **(extra_env or {})}),
                        timeout)

    def c(self, label, *args, exe=C_AGENT, extra_env=None, timeout=60):
        return self.run(label, [exe, *args], self.env(extra=extra_env), timeout)

    def start(self, label, args, env):
        """A background run; finish() collects it."""
        out = open(os.path.join(self.ctx.tmp, f"{label}.out"), "w+")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.ctx.tmp,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.ctx._register(lambda: stop_pid(proc, timeout=5), label)
        log(f"{label}: started pid {proc.pid}")
        return proc, out

    def finish(self, label, started, timeout):
        proc, out = started
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(proc, timeout=5)
            rc = None
        out.seek(0)
        text = out.read()
        out.close()
        self.outputs.append((label, text))
        log(f"{label}: exit {rc}\n  output: {text.strip()!r}")
        return rc, text


def token_lines(text):
    return [m.groups() for m in (TOKEN_LINE.match(line) for line in text.splitlines()) if m]


def wait_lines(ctx, labels, n, timeout=40):
    """Waits until each background run in labels has printed n token lines."""
    for label in labels:
        path = os.path.join(ctx.tmp, f"{label}.out")
        deadline = time.monotonic() + timeout
        while True:
            with open(path) as f:
                got = len(token_lines(f.read()))
            if got >= n:
                break
            if time.monotonic() > deadline:
                raise TestFailure(f"{label}: {got} token lines after {timeout} s, not {n}")
            time.sleep(0.1)


def copy_exe(ctx, src, name):
    path = os.path.join(ctx.tmp, f"exe-{name}", os.path.basename(src))
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    shutil.copy2(src, path)
    return path


class Stream:
    """A Subscribe stream of the test process, in a thread: every token it gets, introspected at
    once (fingerprint -> active)."""

    def __init__(self, d, srv, credential):
        self.srv = srv
        self.got = {}
        self.tokens = []
        self.error = None
        self.done = threading.Event()
        self.conn = VarlinkConnection(d.socket, timeout=60)
        self.conn.send("io.tokend.agent.Subscribe", {"credential": credential}, more=True)
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while not self.done.is_set():
                m = self.conn.read_reply(30)
                if "error" in m:
                    self.error = m
                    break
                tok = m["parameters"]["token"]
                self.tokens.append(tok)
                self.got[fp(tok)] = self.srv.introspect(tok).get("active") is True
                self.first.set()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            if not self.done.is_set():
                self.error = repr(e)
        finally:
            self.first.set()

    def close(self):
        self.done.set()
        self.conn.close()
        self.thread.join(10)


def main(ctx):
    check(os.access(C_AGENT, os.X_OK), f"the C example is built ({C_AGENT}; set $EXAMPLE_C_AGENT)")
    uid = os.getuid()
    fast = ctx.oauth_server(access_ttl=10, name="oauth-fast")
    slow = ctx.oauth_server(access_ttl=3600, name="oauth-slow")
    api = Api(ctx, {"fast": fast, "slow": slow})

    c_agent = os.path.realpath(C_AGENT)
    c_libdir = os.path.realpath(os.path.join(os.path.dirname(C_AGENT), "..", "lib"))
    tokenctl_agent = copy_exe(ctx, TOKENCTL, "shell")     # tokenctl run by an agent
    python_denied = ctx.python_copy("denied")
    python_unknown = ctx.python_copy("unknown")
    c_denied = copy_exe(ctx, C_AGENT, "c-denied")
    tokenctl_denied = copy_exe(ctx, TOKENCTL, "shell-denied")
    everything = {"*": "*"}
    policy = {
        "50-examples.conf": "".join([
            agent_policy("example-python", exe=PYTHON_EXE, uid=uid, credentials=everything,
                         comment="python-agent.py, run by this interpreter (and the test process itself)"),
            "\n",
            agent_policy("example-c", exe=c_agent, credentials=everything, comment="examples/c-agent"),
            "\n",
            agent_policy("example-shell", exe=tokenctl_agent, credentials=everything,
                         comment="shell-agent.sh: tokenctl, run by an agent (a copy at another path)"),
            "\n",
            agent_policy("denied-python", mode="deny", exe=python_denied, credentials=everything),
            "\n",
            agent_policy("denied-c", mode="deny", exe=c_denied, credentials=everything),
            "\n",
            agent_policy("denied-shell", mode="deny", exe=tokenctl_denied, credentials=everything),
        ]),
    }
    d = ctx.tokend(policy=policy, consent_timeout=2)
    d.add("fast", fast)
    d.add("slow", slow)
    d.add("gone", fast)
    runs = Runs(ctx, d)
    known_tokens = []

    # ---- 1. Python ----
    log("=== 1. python-agent.py")
    mark = api.mark()
    rc, out, err = runs.python("python get", "--whoami", "--api", api.url("slow"), "slow")
    check(rc == 0, "python-agent.py GetToken exits 0", err)
    check(re.search(r"^whoami .* agent=example-python mode=allow$", out, re.M) is not None,
          "python-agent.py --whoami: tokend classifies it as agent example-python", out)
    lines = token_lines(out)
    check(len(lines) == 1 and lines[0][0] is None and lines[0][4] == "Bearer"
          and lines[0][5] == "offline_access,openid,read,write",
          "python-agent.py prints one token line (type Bearer, the credential's scopes)", out)
    py_fp = lines[0][1]
    seen = api.by_fp(py_fp, since=mark)
    check(len(seen) == 1 and seen[0]["active"] and seen[0]["client_id"] == "tokend-test",
          "the API received the printed token, active at the server", seen and {k: v for k, v in seen[0].items()
                                                                              if k != "token"})
    check(re.search(r"^api GET \S+: HTTP 200 ", out, re.M) is not None, "python-agent.py reports HTTP 200", out)
    check(not seen[0]["argv_pids"], "the token is on no command line while python-agent.py uses it",
          seen[0]["argv_pids"])
    own = d.token("slow")["token"]
    known_tokens.append(own)
    check(fp(own) == py_fp, "the test's own GetToken gets the same (cached) token")

    log("=== 1b and 2b. python-agent.py --subscribe 3 and c-agent --subscribe 3 at the same time, "
        "beside the test's own stream")
    stream = Stream(d, fast, "fast")
    check(stream.first.wait(30) and stream.tokens, "the test's Subscribe stream got its first token",
          stream.error)
    py_sub = runs.start("python subscribe", [sys.executable, PYTHON_AGENT, "--subscribe", "3", "--api",
                                             api.url("fast"), "fast"], runs.env())
    c_sub = runs.start("c subscribe", [C_AGENT, "--subscribe", "3", "fast"], runs.env())
    rc_py, out_py = runs.finish("python subscribe", py_sub, timeout=60)
    rc_c, out_c = runs.finish("c subscribe", c_sub, timeout=60)
    stream.close()
    known_tokens += stream.tokens
    check(stream.error is None, "the test's stream ran without an error", stream.error)

    for label, rc, text in (("python-agent.py", rc_py, out_py), ("c-agent", rc_c, out_c)):
        lines = token_lines(text)
        check(rc == 0, f"{label} --subscribe 3 exits 0", text)
        check([ln[0] for ln in lines] == ["1", "2", "3"], f"{label} --subscribe 3 prints tokens #1, #2, #3", text)
        fps = [ln[1] for ln in lines]
        check(len(set(fps)) >= 2, f"{label} --subscribe: at least 2 distinct tokens", fps)
        exps = [int(ln[2]) for ln in lines]
        check(exps == sorted(exps) and len(set(exps)) >= 2, f"{label} --subscribe: expires_at moves forward", exps)
        check(all(int(ln[3]) >= 0 for ln in lines), f"{label} --subscribe: no token expired on arrival",
              [ln[3] for ln in lines])
        check("received 3 token(s); unsubscribed" in text, f"{label} --subscribe says it unsubscribed", text)
        if label == "c-agent":
            check(all(f in stream.got for f in fps), "every token c-agent got is one the test's stream got",
                  (fps, sorted(stream.got)))
            check(all(stream.got[f] for f in fps), "each was active at the server when it arrived",
                  {f: stream.got[f] for f in fps})
        else:
            check(text.count(": HTTP 200 ") == 3, "python-agent.py used each token: HTTP 200 three times", text)
            used = [api.by_fp(f) for f in fps]
            check(all(u and all(s["active"] for s in u) for u in used),
                  "the API received each subscribed token, active at the server", fps)

    # ---- 2. C ----
    log("=== 2. c-agent")
    rc, out, err = runs.c("c get", "slow")
    check(rc == 0, "c-agent GetToken exits 0", err)
    lines = token_lines(out)
    check(len(lines) == 1 and lines[0][0] is None and lines[0][4] == "Bearer",
          "c-agent prints one token line", out)
    check(lines[0][1] == fp(own), "c-agent got the cached token (the test's, as fingerprints show)",
          (lines[0][1], fp(own)))
    check(slow.introspect(own).get("active") is True, "that token is active at the server")
    rc, out, err = runs.c("c get scope", "--scope", "read", "--min-ttl", "60", "slow")
    lines = token_lines(out)
    check(rc == 0 and len(lines) == 1 and lines[0][5] == "read" and int(lines[0][3]) >= 60,
          "c-agent --scope read --min-ttl 60: a token with just read, valid for 60 s or more", (rc, out, err))
    own_read = d.token("slow", ["read"], min_ttl=60)["token"]
    known_tokens.append(own_read)
    check(fp(own_read) == lines[0][1] and slow.introspect(own_read).get("scope") == "read",
          "it is the cached read token, which the server introspects with scope read")

    # ---- 3. shell ----
    log("=== 3. shell-agent.sh")
    mark = api.mark()
    rc, out, err = runs.shell("shell agent", "slow", api.url("slow"), tokenctl=tokenctl_agent)
    check(rc == 0, "shell-agent.sh (tokenctl run as agent example-shell) exits 0", err)
    m = [SHELL_FP.match(line) for line in out.splitlines()]
    fps = [x.group(1) for x in m if x]
    check(len(fps) == 1, "shell-agent.sh prints the token's fingerprint", out)
    seen = api.by_fp(fps[0], since=mark)
    check(len(seen) == 1 and seen[0]["active"], "the API received the printed token, active at the server",
          fps[0])
    check(not seen[0]["argv_pids"], "the token was on no command line while curl sent it", seen[0]["argv_pids"])
    check(not seen[0]["env_pids"], "nor in curl's environment", seen[0]["env_pids"])
    check(re.search(r'^api GET \S+: \{"active": true\}$', out, re.M) is not None,
          "shell-agent.sh prints the API's answer", out)

    # The scan finds what it looks for: a dummy string (not a token) on curl's command line.
    dummy = "dummy-" + os.urandom(8).hex()
    mark = api.mark()
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: Bearer {dummy}", api.url("slow")],
                   env=runs.env(), timeout=30, check=False)
    seen = api.by_fp(fp(dummy), since=mark)
    check(len(seen) == 1 and seen[0]["argv_pids"] and not seen[0]["active"],
          "control: the /proc scan does see a dummy bearer string on curl's command line", seen)

    rc, out, err = runs.shell("shell owner", "-n", "2", "-i", "1", "fast")
    check(rc == 0 and len([ln for ln in out.splitlines() if SHELL_FP.match(ln)]) == 2,
          "shell-agent.sh -n 2 with the owner's tokenctl: two rounds", (rc, out, err))

    rc_help = subprocess.run([TOKENCTL, "help"], capture_output=True, text=True)
    if re.search(r"^\s+exec\s", rc_help.stdout + rc_help.stderr, re.M):
        mark = api.mark()
        rc, out, err = runs.shell("shell exec", "-x", "-t", "60", "slow", api.url("slow"), tokenctl=tokenctl_agent)
        check(rc == 0, "shell-agent.sh -x (tokenctl exec) exits 0", err)
        fps = [x.group(1) for x in (SHELL_FP.match(line) for line in out.splitlines()) if x]
        check(len(fps) == 1 and re.search(r"^token from \$SHELL_AGENT_TOKEN, expires_at=\d+$", out, re.M),
              "shell-agent.sh -x: the token came through tokenctl exec's environment", out)
        seen = api.by_fp(fps[0], since=mark)
        check(len(seen) == 1 and seen[0]["active"] and not seen[0]["argv_pids"] and not seen[0]["env_pids"],
              "the API received it, active; on no command line and not in curl's environment",
              seen and {k: v for k, v in seen[0].items() if k != "token"})
        rc, out, err = runs.shell("shell exec nope", "-x", "-t", "5", "nope", tokenctl=tokenctl_agent)
        check(rc == EXIT_NO_SUCH and "no credential named 'nope'" in err,
              f"shell-agent.sh -x, unknown credential: exit {EXIT_NO_SUCH}", (rc, err))
    else:
        log("tokenctl has no exec verb: shell-agent.sh -x not checked")

    # ---- 4. errors ----
    log("=== 4. errors")
    expect = [
        # (label, runner, args, kwargs, status, text in stderr)
        ("python nope", runs.python, ["nope"], {}, EXIT_NO_SUCH, "tokend holds no credential named 'nope'"),
        ("c nope", runs.c, ["nope"], {}, EXIT_NO_SUCH, "tokend holds no credential named 'nope'"),
        ("shell nope", runs.shell, ["nope"], {"tokenctl": tokenctl_agent}, EXIT_NO_SUCH,
         "could not get a token for 'nope' (tokenctl exit 4): tokend holds no credential 'nope'"),
        ("python admin", runs.python, ["--scope", "admin", "slow"], {}, EXIT_REFUSED,
         "scope(s) [admin] not allowed with credential 'slow'"),
        ("c admin", runs.c, ["--scope", "admin", "slow"], {}, EXIT_REFUSED,
         "scope(s) not allowed with credential 'slow': scope admin"),
        ("shell admin", runs.shell, ["-s", "admin", "slow"], {"tokenctl": tokenctl_agent}, EXIT_REFUSED,
         "(tokenctl exit 7): the request was refused"),
        ("python denied", runs.python, ["slow"], {"python": python_denied}, EXIT_DENIED,
         "tokend's policy refuses this process the credential 'slow'"),
        ("c denied", runs.c, ["slow"], {"exe": c_denied, "extra_env": {"LD_LIBRARY_PATH": c_libdir}}, EXIT_DENIED,
         "tokend's policy refuses this process the credential 'slow'"),
        ("shell denied", runs.shell, ["slow"], {"tokenctl": tokenctl_denied}, EXIT_DENIED,
         "(tokenctl exit 8): permission denied"),
        ("python no daemon", runs.python, ["slow"], {"extra_env": {"TOKEND_SOCKET": ctx.tmp + "/none"}},
         EXIT_NO_DAEMON, "cannot connect to tokend at"),
        ("c no daemon", runs.c, ["slow"], {"extra_env": {"TOKEND_SOCKET": ctx.tmp + "/none"}}, EXIT_NO_DAEMON,
         "cannot reach tokend"),
        ("shell no daemon", runs.shell, ["slow"], {"extra_env": {"TOKEND_SOCKET": ctx.tmp + "/none"}},
         EXIT_NO_DAEMON, "(tokenctl exit 3): tokend is not reachable"),
        ("python usage", runs.python, ["--subscribe", "0", "slow"], {}, EXIT_USAGE, "--subscribe takes"),
        ("c usage", runs.c, [], {}, EXIT_USAGE, "usage: c-agent"),
        ("shell usage", runs.shell, [], {}, EXIT_USAGE, "usage: shell-agent"),
        ("python unknown caller", runs.python, ["slow"], {"python": python_unknown}, EXIT_REFUSED,
         "credential 'slow' needs the owner's consent, and none came"),
    ]
    for label, runner, args, kw, status, text in expect:
        rc, out, err = runner(label, *args, **kw)
        check(rc == status and text in err and not token_lines(out),
              f"{label}: exit {status}, no token, and says: {text}", (rc, out, err))

    log("=== 5. subscriptions across a restart of tokend: python-agent.py --resubscribe, and c-agent "
        "(libtokend resubscribes by itself)")
    mark = api.mark()
    py_sub = runs.start("python resubscribe", [sys.executable, PYTHON_AGENT, "--subscribe", "4", "--resubscribe",
                                               "--api", api.url("fast"), "fast"], runs.env())
    c_sub = runs.start("c resubscribe", [C_AGENT, "--subscribe", "4", "fast"], runs.env())
    wait_lines(ctx, ("python resubscribe", "c resubscribe"), 2)
    d.restart()
    rc_py, out_py = runs.finish("python resubscribe", py_sub, timeout=60)
    rc_c, out_c = runs.finish("c resubscribe", c_sub, timeout=60)
    check(rc_py == 0 and [ln[0] for ln in token_lines(out_py)] == ["1", "2", "3", "4"]
          and "Subscribing again in" in out_py,
          "python-agent.py --resubscribe: subscribed again after the restart, and got its 4 tokens", out_py)
    fps = [ln[1] for ln in token_lines(out_py)]
    check(all(api.by_fp(f, since=mark) and all(x["active"] for x in api.by_fp(f, since=mark)) for f in fps),
          "each of them active at the server when used", fps)
    check(rc_c == 0 and [ln[0] for ln in token_lines(out_c)] == ["1", "2", "3", "4"]
          and "lost the connection to tokend; resubscribing" in out_c,
          "c-agent: libtokend subscribed again after the restart, and it got its 4 tokens", out_c)

    log("=== 6. a subscription whose credential is removed ends with NoSuchCredential")
    py_sub = runs.start("python subscribe gone", [sys.executable, PYTHON_AGENT, "--subscribe", "100", "gone"],
                        runs.env())
    c_sub = runs.start("c subscribe gone", [C_AGENT, "--subscribe", "100", "gone"], runs.env())
    wait_lines(ctx, ("python subscribe gone", "c subscribe gone"), 1)
    rc, _, err = d.tokenctl("remove", "gone")
    check(rc == 0, "tokenctl remove gone", err)
    for label, started in (("python subscribe gone", py_sub), ("c subscribe gone", c_sub)):
        rc, text = runs.finish(label, started, timeout=15)
        check(rc == EXIT_NO_SUCH and re.search(r"the subscription ended after [1-9]\d* token\(s\)", text)
              and "tokend holds no credential named 'gone'" in text,
              f"{label}: exit {EXIT_NO_SUCH} after its first token, saying the credential is gone", (rc, text))

    # ---- no token in any output ----
    known_tokens += api.tokens()
    known_tokens = sorted(set(known_tokens))
    leaks = [label for label, text in runs.outputs for t in known_tokens if t in text]
    check(len(known_tokens) >= 5, f"the test knows {len(known_tokens)} tokens handed to or seen from the examples")
    check(not leaks, f"none of them in any of the {len(runs.outputs)} outputs of the examples", leaks)
    check(d.alive(), "tokend still running")


if __name__ == "__main__":
    run_test(main, __doc__)
