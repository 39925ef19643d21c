#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Caller identity (issue 4 groundwork): io.tokend.agent.WhoAmI against the real daemon.

(a) The test process itself: uid/gid/pid are os.getuid()/getgid()/getpid(), pidfd is true, exe is
    realpath(sys.executable), comm is /proc/self/comm, cgroup is the "0::" line of
    /proc/self/cgroup, and unit is what libsystemd says for this process (none outside a unit);
    policy names the harness's agent test-python (mode allow, its file) and manager is false.
(b) Units, from real cgroups in the unified hierarchy (root only): a Python client moved into
    X.slice/tokend-whoami-R.service gets unit "tokend-whoami-R.service", user_unit false; one in
    X.slice/user@UID.service/app.slice/tokend-whoami-R.service gets that user unit, user_unit
    true (the user unit wins over the system unit user@UID.service); one directly in X.slice
    gets no unit. Each answer is cross-checked with libsystemd's sd_pid_get_unit() /
    sd_pid_get_user_unit() for the same process. The cgroups are removed afterwards.
(c) Another executable: tests/integration/pidreuse (C, raw Varlink) is reported with its own
    exe, pid and comm; no agent matches it (policy without a name, mode ask) and, being of the
    owner's uid, manager is true.
(d) PID reuse (root only: clone3 with set_tid). Child A connects and hands the socket to the
    parent (SCM_RIGHTS), then exits and is reaped; B is created with A's PID (checked: the test
    fails if B did not get it) and execs /bin/sleep; then the parent calls WhoAmI on A's
    socket. Expected: an error reply or a closed connection, never a reply describing A or B.
    A zombie (exited, not yet reaped) gets an error too.
    Variants: A made a round trip first (the daemon holds a live pidfd for A); A connects and
    exits at once (10 times, racing the daemon's accept); the same with the daemon stopped
    (SIGSTOP) until after B has the PID, so the daemon accepts only then. Control: A alive ->
    the reply describes A (its pid, comm "pidreuse-A", pidreuse's exe), not the parent holding
    the socket. Informational: A that execs another program after connecting.
(e) The same deterministic reuse against a daemon that sees SO_PEERPIDFD as kernels 6.5-6.8
    answer it for an already reaped peer (EINVAL, via an LD_PRELOAD module): still an error.
(f) The daemon keeps serving throughout: a connection opened first and a new one both answer
    GetInfo at the end.
Without root, (b), (d) and (e) are skipped and the test exits 77 after the rest.
"""
import ctypes
import ctypes.util
import errno
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Skip, TestFailure, _die_with_parent, check, log, run_test  # noqa: E402

PIDREUSE = os.environ.get("PIDREUSE") or os.path.join(REPO, "build-it", "tests", "integration", "pidreuse")
PIDREUSE_PRELOAD = os.environ.get("PIDREUSE_PRELOAD") or os.path.join(
    REPO, "build-it", "tests", "integration", "libpidreuse-preload.so")
WHOAMI = "io.tokend.agent.WhoAmI"
GETINFO = "org.varlink.service.GetInfo"
SLEEP = os.path.realpath("/bin/sleep")
IDENTITY_KEYS = ("uid", "gid", "pid", "pidfd", "exe", "comm", "cgroup", "unit", "user_unit")

# Runs in a cgroup the test moves it into: prints its pid, waits for "go", calls WhoAmI, prints
# the reply and its own cgroup as one JSON line, then waits for a line (or EOF) before exiting.
CGROUP_CLIENT = r'''
import json, os, socket, sys
print(os.getpid(), flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(2)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b'{"method":"io.tokend.agent.WhoAmI"}\0')
buf = b""
while b"\0" not in buf:
    d = s.recv(65536)
    if not d:
        break
    buf += d
cg = [l[3:] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")]
print(json.dumps({"reply": json.loads(buf.split(b"\0")[0]) if b"\0" in buf else None,
                  "cgroup": cg[0] if cg else None}), flush=True)
sys.stdin.readline()
'''


def self_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            if line.startswith("0::"):
                return line[3:]
    return None


def whoami(d):
    with d.connect() as c:
        return c.call(WHOAMI)


# ---------------------------------------------------------------------------
# libsystemd, for the same lookups the daemon makes (daemon/peer.c)

class Libsystemd:
    def __init__(self):
        self.lib = ctypes.CDLL(ctypes.util.find_library("systemd") or "libsystemd.so.0")
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]
        for fn in ("sd_pid_get_unit", "sd_pid_get_user_unit"):
            getattr(self.lib, fn).argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
            getattr(self.lib, fn).restype = ctypes.c_int

    def _get(self, fn, pid):
        p = ctypes.c_void_p()
        r = getattr(self.lib, fn)(pid, ctypes.byref(p))
        if r < 0 or not p.value:
            return None
        try:
            return ctypes.string_at(p.value).decode()
        finally:
            self.libc.free(p.value)

    def units(self, pid):
        """(unit, user_unit) as the daemon derives them: the user unit first, then the system unit."""
        u = self._get("sd_pid_get_user_unit", pid)
        if u:
            return u, True
        u = self._get("sd_pid_get_unit", pid)
        return (u, False) if u else (None, None)


def load_libsystemd():
    try:
        return Libsystemd()
    except OSError as e:
        log(f"libsystemd not loadable ({e}): unit cross-checks skipped")
        return None


# ---------------------------------------------------------------------------
# Cgroups we create (and remove)

def unified_root():
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            return root
    return None


class TestCgroups:
    def __init__(self, ctx, root):
        self.root = root
        self.dirs = []    # created by us, parents first
        self.procs = []   # children we started
        ctx._register(self.cleanup, "test cgroups")

    def make(self, rel):
        path = self.root
        for part in rel.strip("/").split("/"):
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path)
                self.dirs.append(path)
        return path

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
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


def run_in_cgroup(ctx, d, cgs, cgdir, sd):
    """Starts the Python client, moves it into cgdir, lets it call WhoAmI; returns
    (reply, the client's own cgroup, libsystemd's (unit, user_unit) for it)."""
    script = os.path.join(ctx.tmp, "cgroup_client.py")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(CGROUP_CLIENT)
    p = subprocess.Popen([sys.executable, script, d.socket], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, preexec_fn=_die_with_parent)
    cgs.procs.append(p)
    try:
        pid = int(p.stdout.readline())
        check(pid == p.pid, f"client {pid} started")
        with open(os.path.join(cgdir, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            raise TestFailure(f"cgroup client exited (status {p.wait(timeout=10)}) without output")
        out = json.loads(line)
        units = sd.units(pid) if sd else None
        p.stdin.write("exit\n")
        p.stdin.flush()
        rc = p.wait(timeout=15)
        check(rc == 0, "cgroup client exited 0", rc)
        return out["reply"], out["cgroup"], units
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


# ---------------------------------------------------------------------------
# pidreuse helper

def parse_helper(text):
    facts = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "REPLY":
            try:
                facts["REPLY"] = json.loads(value)
            except ValueError:
                facts["REPLY_RAW"] = value
        elif key:
            facts[key] = value
    return facts


def run_helper(args, stop_pid=None, timeout=60):
    """Runs pidreuse with args; returns (exit status, facts, stdout, stderr). With stop_pid, that
    process (our daemon) is stopped (SIGSTOP) before the helper starts and continued once the
    helper has sent its call."""
    if stop_pid is None:
        r = subprocess.run([PIDREUSE, *args], capture_output=True, text=True, timeout=timeout,
                           preexec_fn=_die_with_parent)
        return r.returncode, parse_helper(r.stdout), r.stdout, r.stderr
    os.kill(stop_pid, signal.SIGSTOP)
    stopped = True
    p = None
    try:
        p = subprocess.Popen([PIDREUSE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=_die_with_parent)
        out = b""
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while b"\nSENT\n" not in b"\n" + out:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(f"pidreuse {' '.join(args)} did not send its call within {timeout}s")
                if not sel.select(left):
                    continue
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break  # exited early (e.g. clone3 refused)
                out += chunk
        finally:
            sel.close()
        # The daemon was stopped from before A connected until now: it accepts A's
        # connection only after B has taken A's PID.
        os.kill(stop_pid, signal.SIGCONT)
        stopped = False
        rest, err = p.communicate(timeout=timeout)
        text = (out + rest).decode(errors="replace")
        return p.returncode, parse_helper(text), text, err.decode(errors="replace")
    finally:
        if stopped:
            os.kill(stop_pid, signal.SIGCONT)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=10)


class ReuseRefused(Exception):
    """clone3(set_tid) is not permitted here."""


def check_reuse(label, rc, facts, text, err, seen):
    """One PID-reuse run: B must really hold A's PID, and the reply must not describe anyone."""
    if rc == 77:
        raise ReuseRefused(err.strip())
    if rc == 3:
        # Another process took the PID between A's reaping and clone3: nothing was tested.
        log(f"{label}: PID {facts.get('A_PID')} taken by someone else before clone3; run not counted")
        return False
    check(rc == 0, f"{label}: pidreuse ran", f"status {rc}: {err.strip()}\n{text}")
    a, b = facts.get("A_PID"), facts.get("B_PID")
    check(a is not None and a == b, f"{label}: B got A's PID (A {a}, B {b}), so the PID really was reused", text)
    check(facts.get("B_EXE") == SLEEP and facts.get("B_EXE_AFTER") == SLEEP,
          f"{label}: PID {b} ran {SLEEP} (B, not A) before and after the call", text)
    reply = facts.get("REPLY")
    if reply is None:
        check("CLOSED" in facts, f"{label}: no reply means the daemon closed the connection (not a timeout)",
              text)
        seen.setdefault("connection closed", 0)
        seen["connection closed"] += 1
        return True
    params = reply.get("parameters") or {}
    described = {k: params[k] for k in IDENTITY_KEYS if k in params}
    if "error" not in reply or described:
        who = "B (the process now holding the PID)" if params.get("exe") == SLEEP else "A or someone"
        raise TestFailure(f"FAILED: {label}: WhoAmI on a connection whose peer is gone answered with an "
                          f"identity ({who})\n  detail: {reply}")
    log(f"ok: {label}: answered with error {reply['error']} {json.dumps(params)}, not an identity")
    key = f"{reply['error']} {json.dumps(params, sort_keys=True)}"
    seen[key] = seen.get(key, 0) + 1
    return True


def check_control(label, d, facts, text):
    reply = facts.get("REPLY")
    check(reply is not None and "error" not in reply, f"{label}: WhoAmI succeeds while A is alive", text)
    p = reply["parameters"]
    a, parent = int(facts["A_PID"]), int(facts["PARENT_PID"])
    check(p["pid"] == a and a != parent, f"{label}: the reply describes A (pid {a}), the connecting process, "
          f"not the parent (pid {parent}) that sent the call", p)
    check(p["comm"] == "pidreuse-A", f"{label}: comm is A's ('pidreuse-A')", p)
    check(p["exe"] == os.path.realpath(PIDREUSE), f"{label}: exe is pidreuse", p)
    check(p["uid"] == os.getuid() and p["gid"] == os.getgid() and p["pidfd"] is True,
          f"{label}: uid/gid are ours, pidfd true", p)


# ---------------------------------------------------------------------------

def part_self(d, sd):
    m = whoami(d)
    check("error" not in m, "(a) WhoAmI succeeds for the test process", m)
    p = m["parameters"]
    check(p["uid"] == os.getuid() and p["gid"] == os.getgid(), f"(a) uid/gid are {os.getuid()}/{os.getgid()}", p)
    check(p["pid"] == os.getpid(), f"(a) pid is ours ({os.getpid()})", p)
    check(p["pidfd"] is True, "(a) the daemon holds a pidfd for us", p)
    exe = os.path.realpath(sys.executable)
    check(p.get("exe") == exe, f"(a) exe is {exe}", p)
    with open("/proc/self/comm") as f:
        comm = f.read().rstrip("\n")
    check(p["comm"] == comm, f"(a) comm is {comm!r}", p)
    cg = self_cgroup()
    check(p.get("cgroup") == cg, f"(a) cgroup is our 0:: line {cg!r}", p)
    if sd:
        unit, user = sd.units(os.getpid())
        check(p.get("unit") == unit and p.get("user_unit") == user,
              f"(a) unit is what libsystemd says for us ({unit!r}, user_unit {user})", p)
    check(not str(p.get("unit", "")).startswith("tokend-whoami-"), "(a) we are in no test unit", p)
    pol = p.get("policy") or {}
    check(pol.get("name") == "test-python" and pol.get("mode") == "allow" and pol.get("file") == d.policy_path(),
          "(a) policy: the harness's agent test-python (mode allow) from its file", pol)
    check(p.get("manager") is False, "(a) manager false: an agent may not use the manager interface", p)
    return p


def part_units(ctx, d, sd):
    root = unified_root()
    if root is None:
        raise Skip("no cgroup v2 (unified) hierarchy mounted")
    if os.geteuid() != 0 or not os.access(root, os.W_OK):
        raise Skip(f"cannot create cgroups under {root} (not root)")
    cgs = TestCgroups(ctx, root)
    tag = secrets.token_hex(4)
    uid = os.getuid()
    slice_ = f"tokend-test-{tag}.slice"
    system_unit = f"tokend-whoami-{tag}.service"
    user_unit = f"tokend-whoami-user-{tag}.service"
    cases = [
        ("system unit", f"{slice_}/{system_unit}", system_unit, False),
        ("user unit", f"{slice_}/user@{uid}.service/app.slice/{user_unit}", user_unit, True),
        ("slice only", slice_, None, None),
    ]
    try:
        for label, rel, want_unit, want_user in cases:
            cgdir = cgs.make(rel)
            reply, own_cg, units = run_in_cgroup(ctx, d, cgs, cgdir, sd)
            check(reply is not None and "error" not in reply, f"(b) {label}: WhoAmI succeeds", reply)
            p = reply["parameters"]
            check(own_cg == "/" + rel and p.get("cgroup") == own_cg,
                  f"(b) {label}: the client is in /{rel} and the daemon says so", (own_cg, p))
            check(p.get("unit") == want_unit and p.get("user_unit") == want_user,
                  f"(b) {label}: unit {want_unit!r}, user_unit {want_user}", p)
            if sd:
                check(units == (want_unit, want_user),
                      f"(b) {label}: libsystemd agrees for that process", units)
            check(p.get("exe") == os.path.realpath(sys.executable) and p["pidfd"] is True,
                  f"(b) {label}: exe and pidfd as expected", p)
        # Someone outside those cgroups (us) is not in any of the test units.
        p = whoami(d)["parameters"]
        check(p.get("unit") not in (system_unit, user_unit) and p.get("cgroup") == self_cgroup(),
              "(b) a process outside has none of the test units", p)
    finally:
        created = list(cgs.dirs)
        cgs.cleanup()
    check(created and not any(os.path.exists(x) for x in created), f"(b) the {len(created)} test cgroups are removed",
          created)


def part_other_exe(d):
    rc, facts, text, err = run_helper(["whoami", d.socket])
    check(rc == 0 and "REPLY" in facts, "(c) pidreuse whoami ran", f"{rc}: {err}\n{text}")
    m = facts["REPLY"]
    check("error" not in m, "(c) WhoAmI succeeds for pidreuse", m)
    p = m["parameters"]
    exe = os.path.realpath(PIDREUSE)
    check(p.get("exe") == exe, f"(c) exe is {exe}, not the Python interpreter", p)
    check(p["pid"] == int(facts["PARENT_PID"]) and p["comm"] == "pidreuse",
          "(c) pid and comm are the helper's", p)
    check(p["uid"] == os.getuid() and p["pidfd"] is True, "(c) uid ours, pidfd true", p)
    check("name" not in (p.get("policy") or {"name": "?"}) and p["policy"].get("mode") == "ask",
          "(c) pidreuse matches no agent: an unknown caller (mode ask)", p.get("policy"))
    check(p.get("manager") is True, "(c) ... and, being the owner's uid, may use the manager interface", p)


def part_reuse(d, seen, label_prefix="(d)", early_racing=10, accepted=5, early_stopped=3):
    """Returns the number of counted reuse runs."""
    n = 0
    for i in range(accepted):
        n += check_reuse(f"{label_prefix} reuse after accept #{i + 1}", *run_helper(["reuse", d.socket, "accepted"]),
                         seen)
    for i in range(early_racing):
        n += check_reuse(f"{label_prefix} reuse, A exits at once #{i + 1}", *run_helper(["reuse", d.socket, "early"]),
                         seen)
    for i in range(early_stopped):
        n += check_reuse(f"{label_prefix} reuse before accept (daemon stopped) #{i + 1}",
                         *run_helper(["reuse", d.socket, "early"], stop_pid=d.pid), seen)
    return n


def main(ctx):
    for path in (PIDREUSE, PIDREUSE_PRELOAD):
        if not os.path.exists(path):
            raise TestFailure(f"{path} missing: build it (PIDREUSE / PIDREUSE_PRELOAD)")
    skipped = []
    sd = load_libsystemd()
    d = ctx.tokend()
    first = d.connect()  # (f): opened before everything, used again at the end
    check("error" not in first.call(GETINFO), "(f) a first connection answers GetInfo")

    part_self(d, sd)

    try:
        part_units(ctx, d, sd)
    except Skip as e:
        log(f"SKIPPED (b): {e}")
        skipped.append("(b)")

    part_other_exe(d)

    # (d) control: A alive when the parent calls on A's socket.
    rc, facts, text, err = run_helper(["control", d.socket])
    check(rc == 0, "(d) control: pidreuse ran", f"{rc}: {err}\n{text}")
    check_control("(d) control", d, facts, text)

    # (d) A exited but is not reaped yet (a zombie: its PID cannot be reused yet).
    rc, facts, text, err = run_helper(["zombie", d.socket])
    check(rc == 0 and facts.get("A_STATE") == "Z", "(d) zombie: A is a zombie when the parent calls",
          f"{rc}: {err}\n{text}")
    m = facts.get("REPLY")
    check(m is not None and "error" in m and not any(k in (m.get("parameters") or {}) for k in IDENTITY_KEYS),
          "(d) zombie: WhoAmI answers an error, not A's identity", text)
    log(f"(d) zombie answered: {m}")

    seen = {}
    if os.geteuid() != 0:
        log("SKIPPED (d) PID reuse and (e): clone3(set_tid) needs root")
        skipped += ["(d) PID reuse", "(e)"]
    else:
        try:
            n = part_reuse(d, seen)
            check(n >= 15, f"(d) {n} PID-reuse runs counted (B really had A's PID each time)")

            # Informational: the same process, another program after connect.
            rc, facts, text, err = run_helper(["exec", d.socket])
            check(rc == 0 and "REPLY" in facts, "(d) exec after connect: pidreuse ran", f"{rc}: {err}\n{text}")
            m = facts["REPLY"]
            if "error" in m:
                log(f"NOTE: connect, then exec {SLEEP}: WhoAmI answers {m}")
            else:
                p = m["parameters"]
                check(p["pid"] == int(facts["A_PID"]), "(d) exec after connect: the reply is about A's PID", p)
                log(f"NOTE: connect, then exec {SLEEP} (same PID): WhoAmI reports exe {p.get('exe')!r}, "
                    f"comm {p.get('comm')!r}: exe/comm are read at call time, not at connect time")

            # (e) kernels 6.5-6.8: SO_PEERPIDFD fails with EINVAL for an already reaped peer.
            env_before = {k: os.environ.get(k) for k in ("LD_PRELOAD", "ASAN_OPTIONS")}
            os.environ["LD_PRELOAD"] = PIDREUSE_PRELOAD
            # A sanitizer build refuses a preloaded library ahead of its runtime unless told not to.
            asan = os.environ.get("ASAN_OPTIONS")
            os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
            try:
                old = ctx.tokend(name="tokend-6.5")
            finally:
                for k, v in env_before.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            with open(f"/proc/{old.pid}/maps") as f:
                check(os.path.realpath(PIDREUSE_PRELOAD) in f.read(), "(e) the LD_PRELOAD module is loaded")
            rc, facts, text, err = run_helper(["control", old.socket])
            check(rc == 0, "(e) control: pidreuse ran", f"{rc}: {err}\n{text}")
            check_control("(e) control", old, facts, text)
            seen_old = {}
            n = part_reuse(old, seen_old, "(e)", early_racing=0, accepted=1, early_stopped=3)
            check(n >= 3, f"(e) {n} PID-reuse runs counted")
            with open(old.log_path, errors="replace") as f:
                emulated = f.read().count("pidreuse-preload: SO_PEERPIDFD of a reaped peer -> EINVAL")
            check(emulated >= 3, f"(e) the daemon really got EINVAL for the reaped peer ({emulated} times), "
                  "so the runs tested the kernel 6.5-6.8 path")
            for k, v in seen_old.items():
                seen[f"(e) {k}"] = v
            check("error" not in old.call(GETINFO), "(e) that daemon still serves GetInfo")
        except ReuseRefused as e:
            log(f"SKIPPED (d)/(e) PID reuse: clone3(set_tid) refused: {e}")
            skipped += ["(d) reuse", "(e)"]

    for k, v in sorted(seen.items()):
        log(f"PID reuse answered {v}x: {k}")
    if any("io.tokend.InternalError" in k and '"errno": 3' in k for k in seen):
        log("NOTE: PID reuse is answered with io.tokend.InternalError errno 3 (ESRCH); a named error "
            "would say what happened")

    # (f) still serving.
    check(d.alive(), "(f) the daemon process is still running")
    check("error" not in first.call(GETINFO), "(f) the first connection still answers GetInfo")
    first.close()
    m = d.call(GETINFO)
    check("error" not in m and m["parameters"].get("product"), "(f) a new connection gets GetInfo", m)
    p = whoami(d)["parameters"]
    check(p["pid"] == os.getpid(), "(f) WhoAmI still describes us", p)

    if skipped:
        raise Skip(f"not root: skipped {', '.join(skipped)} (the rest passed)")


run_test(main, __doc__)
