# SPDX-License-Identifier: MIT
"""Helpers of the hostile-client suite (standard library only), on top of
tests/integration/harness.py: raw sockets that misbehave, the well-behaved client process
(wellbehaved.py), the daemon's memory and descriptors from /proc, background attacks, and the
table of figures the tests print."""
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from harness import PYTHON_EXE, TestFailure, _die_with_parent, check, log  # noqa: E402

WELLBEHAVED = os.path.join(HERE, "wellbehaved.py")
MIB = 1024 * 1024
KIB = 1024

# The daemon's caps (protocol/PROTOCOL.md, "Limits"; protocol/varlink.h).
FRAME_MAX = 128 * KIB
READ_CHUNK = 16 * KIB  # what one read may add beyond a frame (protocol/varlink-stream.c)
DEPTH_MAX = 32
OUTPUT_MAX = 16 * MIB
CONNECTIONS_MAX = 4096
SUBSCRIPTIONS_MAX = 1024
CONSENT_PER_AGENT_MAX = 8  # waiting requests per agent, or per uid for unknown callers (daemon/consent.h)


# ---------------------------------------------------------------------------
# Frames

def frame(obj):
    return json.dumps(obj).encode() + b"\0"


def call_frame(method, parameters=None, **flags):
    m = {"method": method}
    if parameters is not None:
        m["parameters"] = parameters
    m.update(flags)
    return frame(m)


def padded_frame(total_len):
    """A GetInfo call with a "pad" parameter, exactly total_len bytes of JSON (NUL not counted)."""
    head = b'{"method":"org.varlink.service.GetInfo","parameters":{"pad":"'
    tail = b'"}}'
    n = total_len - len(head) - len(tail)
    assert n >= 0
    return head + b"x" * n + tail + b"\0"


def nested_arrays(levels, inner=b"1"):
    return b"[" * levels + inner + b"]" * levels


def nested_objects(levels, inner=b"1"):
    return b'{"a":' * levels + inner + b"}" * levels


def depth_frame(total_depth):
    """A GetInfo call whose deepest value is at total_depth (the message object is depth 1, its
    parameters depth 2, then arrays, then the innermost value), as PROTOCOL.md counts it."""
    k = total_depth - 3
    return b'{"method":"org.varlink.service.GetInfo","parameters":{"a":' + nested_arrays(k) + b"}}\0"


# ---------------------------------------------------------------------------
# Raw connections

def connect(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s


def send_all(s, data):
    """sendall that tells whether the daemon closed the connection while we were sending."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_outcome(s, timeout=10.0, buf=b""):
    """Reads what the daemon answers on s: ("reply", message, rest) when a whole frame arrives,
    ("closed", None, bytes) when it closes the connection first, ("timeout", None, bytes) when
    nothing of either happens within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        i = buf.find(b"\0")
        if i >= 0:
            try:
                m = json.loads(buf[:i])
            except ValueError:
                m = {"unparsable": buf[:i][:200].decode(errors="replace")}
            return "reply", m, buf[i + 1:]
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", None, buf
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return "timeout", None, buf
        except (ConnectionResetError, BrokenPipeError):
            return "closed", None, buf
        if not data:
            return "closed", None, buf
        buf += data


def outcome_closed(path, data, timeout=10.0):
    """Sends data on a new connection; returns None when the daemon closes it without a reply,
    else a description of what happened instead."""
    s = connect(path)
    try:
        send_all(s, data)
        kind, m, rest = read_outcome(s, timeout)
        if kind == "closed":
            return None
        return f"{kind}: {json.dumps(m)[:200] if m else rest[:100]!r}"
    finally:
        s.close()


def drain_until_closed(s, timeout=10.0):
    """Reads everything the daemon still sends until it closes s. Returns (closed, n_frames, n_bytes)."""
    deadline = time.monotonic() + timeout
    frames = nbytes = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, frames, nbytes
        s.settimeout(left)
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            return False, frames, nbytes
        except (ConnectionResetError, BrokenPipeError):
            return True, frames, nbytes
        if not data:
            return True, frames, nbytes
        frames += data.count(b"\0")
        nbytes += len(data)


def raise_nofile(want):
    """Raises this process's RLIMIT_NOFILE to at least want (the hard limit too when root may);
    the daemon, started afterwards, inherits it (it raises its own soft limit to the hard one).
    Returns (soft, hard) as they are then."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if hard != inf and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != inf and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == inf else min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ---------------------------------------------------------------------------
# The daemon seen from /proc

def proc_status(pid):
    """VmRSS, RssAnon, VmHWM in KiB and the number of open descriptors of pid."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "VmHWM"):
                out[k] = int(v.split()[0])
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        out["fds"] = -1
    return out


def is_sanitized(pid):
    """True when the daemon runs with AddressSanitizer (its memory figures then include ASan's
    shadow memory and its quarantine of freed blocks, 256 MiB by default)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


class Sampler:
    """Samples the daemon's /proc/PID/status every interval seconds in a thread; keeps maxima."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.max = {}
        self._stop = threading.Event()
        self._t = None

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        try:
            st = proc_status(self.pid)
        except OSError:
            return
        for k, v in st.items():
            self.max[k] = max(self.max.get(k, v), v)

    def __enter__(self):
        self.max = {}
        self.sample()
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.sample()


# ---------------------------------------------------------------------------
# The well-behaved client

class WellBehaved:
    """wellbehaved.py in a process of its own, with its connection open from the start."""

    def __init__(self, ctx, socket_path, credential, token):
        self.err_path = os.path.join(ctx.tmp, "wellbehaved.stderr")
        self._err = open(self.err_path, "ab")
        self.proc = subprocess.Popen([sys.executable, WELLBEHAVED, socket_path, credential, token],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     preexec_fn=_die_with_parent)
        ctx._register(self.stop, "well-behaved client", self.err_path)
        first = self._line(30)
        if not first or not first.get("ready"):
            raise TestFailure(f"the well-behaved client did not start: {first}")
        self.pid = first["pid"]
        log(f"well-behaved client pid {self.pid}: connected")

    def _line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TestFailure(f"the well-behaved client gave no answer within {timeout}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            raise TestFailure(f"the well-behaved client exited (status {self.proc.wait(timeout=10)})")
        return json.loads(line)

    def start_measure(self, n, new=0, deadline=5.0, budget=10.0):
        cmd = {"op": "measure", "n": n, "new": new, "deadline": deadline, "budget": budget}
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def result(self, timeout):
        return self._line(timeout)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._err.close()


# ---------------------------------------------------------------------------
# Processes that hold connections: they can be killed, or run as another uid.

HOLDER = r'''
import json, os, select, socket, sys
path, frame, n, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = (frame.encode() + b"\0") * repeat if frame else b""
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    if data:
        s.sendall(data)
    socks.append(s)
print(json.dumps({"sent": n, "uid": os.getuid()}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "extra":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        buf = b""
        try:
            while b"\0" not in buf:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            print(json.dumps({"reply": json.loads(buf.split(b"\0")[0]) if b"\0" in buf else None}), flush=True)
        except OSError as e:
            print(json.dumps({"error": str(e)}), flush=True)
        s.close()
    elif cmd == "poll":
        p = select.poll()
        for s in socks:
            p.register(s.fileno(), select.POLLIN)
        ready = {fd for fd, ev in p.poll(1000)}
        closed = []
        for i, s in enumerate(socks):
            if s.fileno() in ready:
                try:
                    d = s.recv(1, socket.MSG_PEEK)
                except OSError:
                    d = b""
                if not d:
                    closed.append(i)
        print(json.dumps({"closed": len(closed), "first": closed[:1], "last": closed[-1:]}), flush=True)
    elif cmd == "close":
        for s in socks:
            s.close()
        print(json.dumps({"closed": n}), flush=True)
'''


class Holder:
    """A process (python, a copy of it, or another interpreter run through wrapper, e.g. setpriv
    for another uid) that opens n connections, sends frame_obj (None: nothing) repeat times on
    each, and holds them, reading nothing, until killed or told to close them (cmd("close"))."""

    def __init__(self, ctx, path, frame_obj, n, repeat=1, python=None, wrapper=(), env=None, name="holder",
                 timeout=60):
        from harness import python_env
        python = python or sys.executable
        text = json.dumps(frame_obj) if frame_obj is not None else ""
        self.proc = subprocess.Popen([*wrapper, python, "-c", HOLDER, path, text, str(n), str(repeat)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env if env is not None else python_env(python),
                                     preexec_fn=_die_with_parent, cwd="/")
        ctx._register(self.kill, name)
        self.name = name
        first = self.line(timeout)
        if first.get("sent") != n:
            raise TestFailure(f"{name}: did not open its connections: {first}")
        self.uid = first["uid"]
        what = f"each waiting for {frame_obj['method']}" + (f" x{repeat}" if repeat > 1 else "") \
            if frame_obj else "idle"
        log(f"{name} pid {self.proc.pid} (uid {self.uid}): {n} connections, {what}")

    def line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TestFailure(f"{self.name}: no answer within {timeout}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            raise TestFailure(f"{self.name} exited (status {self.proc.poll()})")
        return json.loads(line)

    def cmd(self, c, timeout=30):
        self.proc.stdin.write((c + "\n").encode())
        self.proc.stdin.flush()
        return self.line(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def other_uid_python(uid):
    """(interpreter, environment) that uid can run, or (None, why): this interpreter when uid may
    read it, else the system's /usr/bin/python3."""
    import shutil
    if os.geteuid() != 0:
        return None, "not root: cannot run a client as another uid"
    if not shutil.which("setpriv"):
        return None, "setpriv (util-linux) is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for py in (PYTHON_EXE, "/usr/bin/python3"):
        r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", py, "-c", "pass"],
                           capture_output=True, env=env, cwd="/")
        if r.returncode == 0:
            return py, env
    return None, f"no python3 that uid {uid} may run"


def setpriv(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


# ---------------------------------------------------------------------------
# Attacks in the background

class Loop:
    """Runs fn(self) repeatedly in a thread until stopped; fn records what went wrong with
    self.fail(...) and counts with self.count(...)."""

    def __init__(self, name, fn, threads=1):
        self.name = name
        self.fn = fn
        self.failures = []
        self.counts = {}   # outcomes checked, by kind
        self.metrics = {}  # figures (bytes, seconds, ...), printed only
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"{name}-{i}") for i in range(threads)]
        self.crash = None

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(what)
            self.counts["failures"] = self.counts.get("failures", 0) + 1

    def count(self, key, n=1):
        """n outcomes of this kind were as expected."""
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def metric(self, key, value):
        """A figure to print: keeps the total, the count, the minimum and the maximum."""
        with self.lock:
            m = self.metrics.setdefault(key, {"n": 0, "sum": 0, "min": value, "max": value})
            m["n"] += 1
            m["sum"] += value
            m["min"] = min(m["min"], value)
            m["max"] = max(m["max"], value)

    def _run(self):
        try:
            while not self.stop_event.is_set():
                self.fn(self)
        except BaseException as e:  # reported by stop()
            import traceback
            self.crash = "".join(traceback.format_exception(e))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=60):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)
            if t.is_alive():
                raise TestFailure(f"attack {self.name}: a thread did not stop within {timeout}s")
        if self.crash:
            raise TestFailure(f"attack {self.name}: the attacker itself crashed:\n{self.crash}")
        log(f"attack {self.name}: outcomes {json.dumps(self.counts, sort_keys=True)}"
            + (f"; figures {json.dumps(self.metrics, sort_keys=True)}" if self.metrics else ""))
        n = sum(v for k, v in self.counts.items() if k != "failures")
        check(n > 0 and not self.failures, f"{self.name}: every hostile call got its exact outcome ({n} checked)",
              self.failures)


# ---------------------------------------------------------------------------
# Figures

def _ms(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


class Figures:
    def __init__(self):
        self.rows = []

    def add(self, phase, attack, res, before, during, after):
        self.rows.append((phase, attack, res, before, during, after))

    def table(self):
        hdr = ("phase", "calls ok", "median ms", "p99 ms", "max ms", "new-conn ok", "new median", "new p99",
               "RSS MiB before/peak/after", "RssAnon MiB before/peak/after", "fds peak")
        rows = [hdr]
        for phase, attack, res, b, d, a in self.rows:
            lat, nl = res.get("lat") or {}, res.get("new_lat") or {}
            rows.append((phase, f"{res['ok']}/{res['n']}", _ms(lat.get("median")), _ms(lat.get("p99")),
                         _ms(lat.get("max")), f"{res['new_ok']}/{res['new_n']}" if res["new_n"] else "-",
                         _ms(nl.get("median")), _ms(nl.get("p99")),
                         f"{_mib(b['VmRSS'])}/{_mib(d.get('VmRSS'))}/{_mib(a['VmRSS'])}",
                         f"{_mib(b['RssAnon'])}/{_mib(d.get('RssAnon'))}/{_mib(a['RssAnon'])}",
                         str(d.get("fds", "-"))))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(hdr))]
        lines = []
        for j, r in enumerate(rows):
            lines.append("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                   for i, c in enumerate(r)))
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
        lines.append("attacks:")
        for phase, attack, *_ in self.rows:
            lines.append(f"  {phase}: {attack}")
        return "\n".join(lines)
