#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tokend under a real `systemd --user` (issue 5, acceptance 1, 2, 3 and 4).

As root: builds and installs tokend into a private prefix (meson install --destdir,
then the prefix tree is put in place, so the installed unit file is used unchanged),
creates a test user (only if absent), its runtime directory and a cgroup it owns,
starts `systemd --user` for it, installs the units into ~/.config/systemd/user and:
  1. `tokenctl list` starts tokend.service through tokend.socket; the service is
     active with a StatusText about credentials; NoNewPrivileges, seccomp, no
     effective capabilities;
  2. a credential added against a loopback OAuth server gives a token (the kernel
     keyring works under the hardened unit: the key is in the user's persistent
     keyring); `systemctl --user restart tokend.service` keeps it: the next token
     comes from the kept refresh token;
  2b. (run last) the policy under the unit: a file in ~/.config/tokend/policy.d naming a Python client
     of the user as an agent (Exe=, Uid=, Mode=allow, Scopes=read) is read on
     `systemctl --user reload tokend.service` (ExecReload: SIGHUP); the hardened daemon then
     tells that agent from tokenctl (WhoAmI, reading /proc of the caller), gives it a "read"
     token, refuses it ["write"] and the manager interface, and still serves tokenctl.
     Reloaded twice more: each reload succeeds (no 226/NAMESPACE);
  2c. stop while a refresh is in flight keeps the rotated token: the OAuth server is
     frozen (SIGSTOP) while tokend's refresh request sits in its socket; `systemctl --user
     stop tokend.service` then waits (deactivating) until the server is let go (SIGCONT)
     and the refresh completes; the service stops cleanly; started again, the credential
     refreshes with the rotated refresh token: no invalid_grant, no reuse detected;
  3. with a drop-in (TOKEND_TEST_FAULTS=1, WatchdogSec=3s), SIGUSR2 hangs the event
     loop: the watchdog kills the daemon and systemd restarts it; the credential works.
  4. the started unit file is the one configured from units/tokend.service.in; its
     exposure score is printed (the gate itself is the 'unit-security' test).
Everything it created is removed at the end (processes by PID). Exit 77 when not root
or when the machine lacks what is needed.

Machine facts (of a container that was not booted with systemd, not of the unit), arranged
here and undone afterwards: /run/systemd/system must exist (sd_booted()) and the user needs
a cgroup of its own (RECIPES.md, "A real systemd user manager").
"""

import atexit
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

SKIP = 77
USER = os.environ.get("TOKEND_SYSTEST_USER", "tokendtest")
SYSTEMD = "/lib/systemd/systemd"
CRED = "systest"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def skip(msg):
    print(f"SKIP: {msg}", flush=True)
    sys.exit(SKIP)


class Failure(AssertionError):
    pass


def check(cond, what, detail=None):
    if not cond:
        raise Failure(what + (f": {detail}" if detail is not None else ""))
    log(f"ok: {what}")


def wait_until(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Teardown stack: run in reverse order, always (also on SIGTERM from meson).

_cleanups = []


def on_cleanup(label, fn):
    _cleanups.append((label, fn))


def teardown():
    while _cleanups:
        label, fn = _cleanups.pop()
        try:
            fn()
        except BaseException as e:  # keep going
            print(f"teardown: {label} failed: {e}", file=sys.stderr, flush=True)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------
# Running things as the test user


class TestUser:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.runtime = f"/run/user/{self.uid}"

    def env(self, **extra):
        e = {
            "HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/sh",
            "PATH": "/usr/local/bin:/usr/bin:/bin", "XDG_RUNTIME_DIR": self.runtime, "LANG": "C.UTF-8",
        }
        e.update(extra)
        return e

    def demote(self):
        uid, gid, name = self.uid, self.gid, self.name

        def fn():
            os.setgroups([])
            os.initgroups(name, gid)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.chdir("/")
        return fn

    def run(self, args, stdin=None, timeout=60, check_rc=False, quiet=False):
        r = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout,
                           env=self.env(), preexec_fn=self.demote())
        if not quiet:
            log(f"[{self.name}] {' '.join(args)} -> {r.returncode}"
                + (f" ({r.stderr.strip()[:300]})" if r.stderr.strip() else ""))
        if check_rc and r.returncode != 0:
            raise Failure(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def systemctl(self, *args, **kw):
        return self.run(["systemctl", "--user", *args], **kw)

    def show(self, unit, *props):
        r = self.systemctl("show", unit, *[f"-p{p}" for p in props], quiet=True, check_rc=True)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def makedirs(self, path, mode=0o700):
        """Creates path (and parents below $HOME) owned by the user."""
        parts = []
        p = path
        while not os.path.exists(p):
            parts.append(p)
            p = os.path.dirname(p)
        for p in reversed(parts):
            os.mkdir(p, mode)
            os.chown(p, self.uid, self.gid)
        return parts[-1] if parts else None  # topmost created

    def write(self, path, text, mode=0o644):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        os.chown(path, self.uid, self.gid)


# ---------------------------------------------------------------------------
# Set-up steps (each registers its own teardown)


def build_and_install(work):
    """Configures a build with a private prefix and installs it; returns (prefix, unit dir)."""
    prefix = tempfile.mkdtemp(prefix="tokend-systest-", dir="/opt")
    on_cleanup("remove the install prefix", lambda: shutil.rmtree(prefix, ignore_errors=True))
    os.chmod(prefix, 0o755)
    build = os.path.join(work, "build")
    stage = os.path.join(work, "stage")
    log(f"building into {build} with --prefix={prefix}")
    for args in (["meson", "setup", "--prefix", prefix, build, REPO],
                 # What `meson install` installs: the programs and libtokend.
                 ["ninja", "-C", build, "daemon/tokend", "client/tokenctl", "lib/libtokend.so.0.1.0"],
                 ["meson", "install", "-C", build, "--destdir", stage, "--no-rebuild"]):
        r = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise Failure(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    # Put the prefix tree where it was configured to live (nothing outside it is touched).
    shutil.copytree(stage + prefix, prefix, dirs_exist_ok=True, symlinks=True)
    for root, dirs, files in os.walk(prefix):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    units = [os.path.join(root, f) for root, _, files in os.walk(stage) for f in files
             if f in ("tokend.service", "tokend.socket")]
    unitdirs = {os.path.dirname(u) for u in units}
    check(len(units) == 2 and len(unitdirs) == 1, "meson install puts tokend.service and tokend.socket in one unit directory",
          units)
    unitdir = unitdirs.pop()
    log(f"installed: {prefix} (units in {os.path.relpath(unitdir, stage)} of the staging tree)")
    return prefix, unitdir, build


def ensure_user():
    created = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True, capture_output=True)
        created = True
        log(f"created user {USER}")

        def drop():
            r = subprocess.run(["userdel", "-r", USER], capture_output=True, text=True)
            if r.returncode not in (0, 12):  # 12: could not remove home (mail spool etc.)
                raise RuntimeError(f"userdel -r {USER}: {r.returncode} {r.stderr.strip()}")
        on_cleanup(f"delete user {USER}", drop)
    else:
        log(f"user {USER} exists already: it stays")
    return TestUser(USER), created


def ensure_dir_recorded(path, label, mode=0o755, owner=None, empty=False):
    """mkdir path if absent; registers its removal only if we made it (with empty: rmdir only,
    never a recursive removal, for directories something may mount on)."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode)
    if owner:
        os.chown(path, *owner)
    os.chmod(path, mode)
    on_cleanup(f"remove {label} {path}",
               (lambda: os.rmdir(path)) if empty else (lambda: shutil.rmtree(path, ignore_errors=True)))
    log(f"created {path}")
    return True


def cgroup_root():
    for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(p, "cgroup.procs")) and os.path.exists(os.path.join(p, "cgroup.controllers")):
            return p
    return None


def remove_cgroup(top):
    """Kills what is left in our cgroup tree (processes of the manager we started), then removes it."""
    if not os.path.isdir(top):
        return
    for _ in range(50):
        pids = []
        for root, dirs, files in os.walk(top):
            try:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for root, dirs, files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(root)
        except OSError as e:
            print(f"teardown: cannot remove cgroup {root}: {e}", file=sys.stderr)


def start_user_manager(u, cg):
    log_path = os.path.join(u.runtime, "..", f"systest-manager-{os.getpid()}.log")
    log_path = os.path.join(tempfile.gettempdir(), f"tokend-systest-manager-{os.getpid()}.log")
    logf = open(log_path, "w")
    demote = u.demote()

    def pre():
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        demote()

    # keyctl session -: a fresh session keyring (not root's), then exec the manager (same PID).
    proc = subprocess.Popen(["keyctl", "session", "-", SYSTEMD, "--user"], env=u.env(), preexec_fn=pre,
                            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    log(f"systemd --user for {u.name} started, PID {proc.pid} (log {log_path})")

    def stop():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        logf.close()
        if os.environ.get("TOKEND_SYSTEST_KEEP_LOG"):
            return
        os.unlink(log_path)
    on_cleanup(f"stop systemd --user (PID {proc.pid})", stop)

    def running():
        if proc.poll() is not None:
            raise Failure(f"systemd --user exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
        r = u.systemctl("is-system-running", quiet=True)
        return r.stdout.strip() in ("running", "degraded")
    wait_until(running, 30, "systemd --user is running")
    check(True, f"systemd --user {proc.pid} is running")
    return proc, log_path


def tokend_state(u):
    return u.show("tokend.service", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts", "Result",
                  "WatchdogUSec")


def dump_diagnostics(u, manager_log):
    try:
        print("\n----- systemctl --user status tokend.socket tokend.service -----", flush=True)
        r = u.systemctl("status", "--no-pager", "-l", "tokend.socket", "tokend.service", quiet=True)
        print(r.stdout + r.stderr, flush=True)
        print(f"----- tail of the user manager's output ({manager_log}) -----", flush=True)
        with open(manager_log, errors="replace") as f:
            print("".join(f.readlines()[-80:]), flush=True)
    except Exception as e:
        print(f"(no diagnostics: {e})")


# ---------------------------------------------------------------------------


def main():
    if os.geteuid() != 0:
        skip("needs root (creates a user and runs systemd --user for it)")
    for prog in ("systemctl", "systemd-analyze", "meson", "ninja", "keyctl", "useradd", "node"):
        if not shutil.which(prog):
            skip(f"{prog} is not installed")
    if not os.access(SYSTEMD, os.X_OK):
        skip(f"{SYSTEMD} is missing")
    if not os.path.isdir(os.path.join(REPO, "tests", "oauth", "node_modules", "oidc-provider")):
        skip("tests/oauth/node_modules is missing (npm ci --prefix tests/oauth)")
    croot = cgroup_root()
    if not croot:
        skip("no writable cgroup v2 hierarchy (/sys/fs/cgroup/unified or /sys/fs/cgroup)")

    import harness  # OAuthServer, mint

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(teardown)

    work = tempfile.mkdtemp(prefix="tokend-systest-")
    on_cleanup("remove the work directory", lambda: shutil.rmtree(work, ignore_errors=True))
    prefix, staged_unitdir, build = build_and_install(work)
    tokend_bin = os.path.join(prefix, "libexec", "tokend")
    tokenctl_bin = os.path.join(prefix, "bin", "tokenctl")

    # 4. The unit file that will be started is the one configured from the template.
    with open(os.path.join(staged_unitdir, "tokend.service")) as f:
        installed_service = f.read()
    with open(os.path.join(REPO, "units", "tokend.service.in")) as f:
        template = f.read()
    check(installed_service == template.replace("@libexecdir@", os.path.join(prefix, "libexec")),
          "the installed tokend.service is units/tokend.service.in with only @libexecdir@ filled in")
    check(f"ExecStart={tokend_bin}\n" in installed_service and os.access(tokend_bin, os.X_OK),
          f"its ExecStart= is the installed daemon {tokend_bin}")

    # The machine, as RECIPES.md describes: looks booted with systemd; a user; its runtime dir; a cgroup.
    u, _ = ensure_user()
    ensure_dir_recorded("/run/systemd/system", "marker directory")
    ensure_dir_recorded(u.runtime, "runtime directory", mode=0o700, owner=(u.uid, u.gid))
    check(os.stat(u.runtime).st_uid == u.uid, f"{u.runtime} belongs to {u.name}")
    cg = os.path.join(croot, f"tokend-systest.{os.getpid()}")
    os.mkdir(cg)
    on_cleanup(f"remove cgroup {cg}", lambda: remove_cgroup(cg))
    for root, dirs, files in os.walk(cg):
        for n in [root] + [os.path.join(root, f) for f in files]:
            os.chown(n, u.uid, u.gid)

    # Files we put in the user's home (removed at the end; the home itself only with the user).
    unitdir = os.path.join(u.home, ".config", "systemd", "user")
    top = u.makedirs(unitdir)
    state_dir = os.path.join(u.home, ".local", "state", "tokend")
    state_existed = os.path.exists(state_dir)
    on_cleanup("remove the units we installed in ~/.config/systemd/user", lambda: (
        [os.unlink(os.path.join(unitdir, f)) for f in ("tokend.service", "tokend.socket")
         if os.path.exists(os.path.join(unitdir, f))],
        shutil.rmtree(os.path.join(unitdir, "tokend.service.d"), ignore_errors=True),
        top and shutil.rmtree(top, ignore_errors=True)))
    if not state_existed:
        on_cleanup("remove the state directory", lambda: shutil.rmtree(state_dir, ignore_errors=True))
    for f in ("tokend.service", "tokend.socket"):
        shutil.copyfile(os.path.join(staged_unitdir, f), os.path.join(unitdir, f))
        os.chown(os.path.join(unitdir, f), u.uid, u.gid)

    manager, manager_log = start_user_manager(u, cg)
    # Stop our units gracefully before the manager goes (registered after it: runs first).
    on_cleanup("stop tokend units", lambda: u.systemctl("stop", "tokend.socket", "tokend.service", timeout=40))
    instance = {}

    def drop_keys():
        # The kernel keeps the persistent keyring after the user is gone: invalidate what tokend made.
        if instance.get("id"):
            u.run(["keyctl", "session", "-", "sh", "-c",
                   'P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" keyring "tokend:$1") && keyctl invalidate "$K"',
                   "sh", instance["id"]], quiet=True)
    on_cleanup("invalidate tokend's keyring", drop_keys)

    try:
        run_checks(u, harness, manager.pid, tokenctl_bin, unitdir, state_dir, instance)
    except BaseException:
        dump_diagnostics(u, manager_log)
        raise


def run_checks(u, harness, manager_pid, tokenctl_bin, unitdir, state_dir, instance):
    class Ctx:  # what harness.OAuthServer needs of a test context
        def __init__(self):
            self.tmp = tempfile.mkdtemp(prefix="tokend-systest-oauth-")
            on_cleanup("remove the OAuth server's directory", lambda: shutil.rmtree(self.tmp, ignore_errors=True))

        def _register(self, fn, label, log_path=None):
            on_cleanup(label, fn)

    def tokenctl(*args, stdin=None):
        return u.run([tokenctl_bin, *args], stdin=stdin)

    u.systemctl("daemon-reload", check_rc=True)
    u.systemctl("start", "tokend.socket", check_rc=True)
    sock = os.path.join(u.runtime, "tokend", "socket")
    st = os.stat(sock)
    check(oct(st.st_mode & 0o777) == "0o600" and st.st_uid == u.uid, f"{sock} exists, mode 0600, the user's",
          oct(st.st_mode))
    check(oct(os.stat(os.path.dirname(sock)).st_mode & 0o777) == "0o700", "its directory has mode 0700")
    s = tokend_state(u)
    check(s["ActiveState"] == "inactive", "tokend.service is not running before the first call", s)

    # 1. Socket activation on first use.
    r = tokenctl("list")
    check(r.returncode == 0, "the first 'tokenctl list' succeeds", r.stderr)
    s = tokend_state(u)
    check(s["ActiveState"] == "active" and s["SubState"] == "running", "tokend.service is active (running)", s)
    check(int(s["MainPID"]) > 0, f"it has a main PID ({s['MainPID']})")
    check("credential" in s["StatusText"], f"StatusText is current: {s['StatusText']!r}")
    check(s["WatchdogUSec"] not in ("0", "infinity", ""), f"the watchdog is armed (WatchdogUSec={s['WatchdogUSec']})")
    pid0 = int(s["MainPID"])
    with open(f"/proc/{pid0}/status") as f:
        status = f.read()
    check(re.search(r"^NoNewPrivs:\s+1$", status, re.M) is not None, "the daemon runs with NoNewPrivileges")
    check(re.search(r"^Seccomp:\s+2$", status, re.M) is not None, "the daemon runs under a seccomp filter")
    check(re.search(r"^CapEff:\s+0+$", status, re.M) is not None, "the daemon has no effective capabilities")
    sandboxed = os.readlink(f"/proc/{pid0}/ns/mnt") != os.readlink(f"/proc/{manager_pid}/ns/mnt")
    log(f"note: mount-namespace sandboxing (ProtectSystem=, ProtectHome=, PrivateTmp=, ...) is "
        f"{'APPLIED' if sandboxed else 'NOT applied by this user manager (no PrivateUsers=)'}")

    # 2. A credential; a token (the keyring works under the unit); restart keeps it.
    srv = harness.OAuthServer(Ctx(), access_ttl=3600, name="oauth")
    rt = harness.mint(srv.issuer, "tokend-test")
    secret_file = os.path.join(u.home, ".tokend-systest-client-secret")
    u.write(secret_file, harness.CLIENTS["tokend-test"][0] + "\n", mode=0o600)
    on_cleanup("remove the client secret file", lambda: os.path.exists(secret_file) and os.unlink(secret_file))
    r = tokenctl("add", CRED, "--issuer", srv.issuer, "--client-id", "tokend-test", "--insecure-loopback",
                 "--client-secret-file", secret_file, stdin=rt + "\n")
    check(r.returncode == 0, f"tokenctl add {CRED} succeeds", r.stderr)
    with open(os.path.join(state_dir, "instance-id")) as f:
        instance["id"] = f.read().strip()
    check(os.stat(state_dir).st_uid == u.uid and os.stat(state_dir).st_mode & 0o777 == 0o700,
          f"the state directory {state_dir} is the user's, mode 0700")

    def token():
        r = tokenctl("token", CRED)
        check(r.returncode == 0 and r.stdout.strip(), f"tokenctl token {CRED} gives a token", r.stderr)
        tok = r.stdout.strip().splitlines()[0]
        check(srv.introspect(tok).get("active") is True, "the OAuth server says the token is active")
        return tok

    tok1 = token()
    r = u.run(["keyctl", "session", "-", "sh", "-c", 'keyctl show "$(keyctl get_persistent @s)"'], quiet=True)
    check(f"tokend:{instance['id']}" in r.stdout,
          "the refresh token's keyring is in the user's persistent keyring (outside the service)", r.stdout)
    s = tokend_state(u)
    check(s["StatusText"].startswith("1 credential"), f"StatusText counts it: {s['StatusText']!r}")

    refreshes = srv.refresh_count()
    r = u.systemctl("restart", "tokend.service", timeout=60)
    check(r.returncode == 0, "systemctl --user restart tokend.service succeeds", r.stderr)
    s = tokend_state(u)
    check(s["ActiveState"] == "active" and int(s["MainPID"]) not in (0, pid0),
          f"after restart: active, new main PID {s['MainPID']}", s)
    lst = json.loads(tokenctl("--json", "list").stdout or "[]")
    check(any(c.get("name") == CRED for c in lst), f"after restart {CRED} is still listed", lst)
    tok2 = token()
    check(srv.refresh_count() > refreshes or tok2 == tok1,
          "after restart the token came from the refresh token kept in the keyring (no new login)")

    # 2c. Stop while a refresh is in flight keeps the rotated token.
    stop_during_refresh(u, srv, tokenctl_bin, token)

    # 3. Watchdog: a hung event loop is killed and the service restarted.
    dropin = os.path.join(unitdir, "tokend.service.d")
    u.makedirs(dropin, mode=0o755)
    u.write(os.path.join(dropin, "faults.conf"),
            "# tests/system/test_user_manager.py: test-only fault switch, short watchdog\n"
            "[Service]\nEnvironment=TOKEND_TEST_FAULTS=1\nWatchdogSec=3s\n")
    u.systemctl("daemon-reload", check_rc=True)
    u.systemctl("restart", "tokend.service", check_rc=True, timeout=60)
    s = tokend_state(u)
    check(s["ActiveState"] == "active" and s["WatchdogUSec"] == "3s", "with the drop-in: active, WatchdogSec=3s", s)
    pid1, restarts1 = int(s["MainPID"]), int(s["NRestarts"])
    time.sleep(7)
    s = tokend_state(u)
    check(int(s["MainPID"]) == pid1 and int(s["NRestarts"]) == restarts1 and s["ActiveState"] == "active",
          "a healthy daemon answers the 3 s watchdog: same PID after 7 s", s)

    log(f"SIGUSR2 to main PID {pid1}: the event loop hangs")
    os.kill(pid1, signal.SIGUSR2)
    seen = set()
    t0 = time.monotonic()

    def restarted():
        st = tokend_state(u)
        seen.add(st["Result"])
        return st if (int(st["NRestarts"]) > restarts1 and st["ActiveState"] == "active"
                      and int(st["MainPID"]) not in (0, pid1)) else None
    s = wait_until(restarted, 30, "systemd restarts tokend after the watchdog timeout", interval=0.05)
    took = time.monotonic() - t0
    check("watchdog" in seen, f"the service result was 'watchdog' before the restart (seen: {sorted(seen)})")
    check(2.5 <= took <= 20, f"killed and restarted after {took:.1f}s (WatchdogSec=3s, RestartSec=1s)")
    check(not os.path.exists(f"/proc/{pid1}"), f"the hung daemon {pid1} is gone")
    log(f"restarted: main PID {s['MainPID']}, NRestarts {s['NRestarts']}")
    token()

    # Back to the shipped unit.
    shutil.rmtree(dropin)
    u.systemctl("daemon-reload", check_rc=True)
    u.systemctl("restart", "tokend.service", check_rc=True, timeout=60)

    # 2b, last: the policy, read by the daemon under the unit, reloaded through ExecReload.
    policy_checks(u, tokenctl_bin, sock)


def policy_checks(u, tokenctl_bin, sock):
    vclient = os.path.join(REPO, "tests", "integration", "vclient.py")
    # An interpreter the test user may run (this one may live under /root).
    python = None
    for cand in (sys.executable, "/usr/bin/python3"):
        try:
            if u.run([cand, "-c", "pass"], quiet=True).returncode == 0:
                python = os.path.realpath(cand)
                break
        except OSError as e:
            log(f"{u.name} cannot run {cand}: {e}")
    check(python is not None, f"{u.name} can run a Python interpreter ({sys.executable} or /usr/bin/python3)")

    def call(method, params=None):
        args = [python, vclient, sock, "call", method] + ([json.dumps(params)] if params is not None else [])
        r = u.run(args, quiet=True)
        check(r.returncode == 0 and r.stdout.strip(), f"the user's Python client called {method}", r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        check("reply" in res, f"{method}: a reply", res)
        return res["reply"]

    w = call("io.tokend.agent.WhoAmI")["parameters"]
    # Exe= needs /proc/PID/exe of the caller, which the kernel shows only to a reader in the
    # caller's user namespace: this is why the unit has no PrivateUsers=yes.
    check(w.get("exe") == python, f"the daemon reads the caller's executable ({python}) from /proc/PID/exe", w)
    check(w["uid"] == u.uid and w.get("exe") == python and "name" not in w.get("policy", {"name": "?"}),
          "before the policy: the user's Python client is an unknown caller, as the daemon reads it", w)
    policy_dir = os.path.join(u.home, ".config", "tokend", "policy.d")
    top = u.makedirs(policy_dir, mode=0o700)
    on_cleanup("remove the policy directory", lambda: shutil.rmtree(top or policy_dir, ignore_errors=True))
    policy_file = os.path.join(policy_dir, "50-systest.conf")
    u.write(policy_file, "# tests/system/test_user_manager.py\n[Agent]\nName=systest-python\n"
            f"Exe={python}\nUid={u.uid}\nMode=allow\n\n[Credential {CRED}]\nScopes=read\n", mode=0o600)
    u.systemctl("reload", "tokend.service", check_rc=True, timeout=60)
    wait_until(lambda: call("io.tokend.agent.WhoAmI")["parameters"].get("policy", {}).get("name") == "systest-python",
               15, "the reloaded policy to name the Python client as agent systest-python")
    w = call("io.tokend.agent.WhoAmI")["parameters"]
    check(w["policy"].get("file") == policy_file and w["policy"].get("mode") == "allow" and w.get("manager") is False,
          f"WhoAmI: agent systest-python from {policy_file}, mode allow, manager false", w)
    m = call("io.tokend.agent.GetToken", {"credential": CRED})
    check("error" not in m and m["parameters"].get("scopes") == ["read"] and m["parameters"].get("token"),
          "the agent gets a token carrying exactly its policy's scopes ['read']", m.get("error"))
    m = call("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["write"]})
    check(m.get("error") == "io.tokend.agent.ScopeNotAllowed", "the agent is refused ['write']: ScopeNotAllowed", m)
    m = call("io.tokend.manager.ListCredentials", {})
    check(m.get("error") == "org.varlink.service.PermissionDenied", "the agent may not use the manager interface", m)
    r = u.run([tokenctl_bin, "--json", "whoami"])
    check(r.returncode == 0 and json.loads(r.stdout).get("manager") is True,
          "tokenctl (no agent) still may use the manager interface", r.stdout)
    check(u.run([tokenctl_bin, "list"]).returncode == 0, "tokenctl list still works")
    # Reloads keep working.
    pid = u.show("tokend.service", "MainPID")["MainPID"]
    for i in (2, 3):
        r = u.systemctl("reload", "tokend.service", timeout=60)
        s = u.show("tokend.service", "ActiveState", "MainPID")
        check(r.returncode == 0 and s["ActiveState"] == "active" and s["MainPID"] == pid,
              f"reload #{i} succeeds, same daemon", (r.stderr, s))
    check(call("io.tokend.agent.WhoAmI")["parameters"].get("policy", {}).get("name") == "systest-python",
          "the policy is still in force after the reloads")


def tcp_server_side_backlog(port):
    """Bytes received and not yet read on 127.0.0.1:port's connections (ESTABLISHED only)."""
    total = 0
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.split(":")[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


def stop_during_refresh(u, srv, tokenctl_bin, token):
    """2c: `systemctl --user stop` while tokend waits for a refresh answer; the rotated refresh
    token is saved before the daemon exits, so the next start refreshes without invalid_grant.
    The server holds the refresh: it is stopped (SIGSTOP) while tokend's request is in its socket."""
    def stats():
        st = srv.stats()
        return st["grants"]["refresh_token"], st["refresh_errors"].get("invalid_grant", 0), st["reuse_detected"]

    refreshes, invalid0, reuse0 = stats()
    log(f"freezing the OAuth server (PID {srv.proc.pid}) so that the next refresh is held")
    os.kill(srv.proc.pid, signal.SIGSTOP)
    frozen = [True]

    def thaw():
        if frozen[0]:
            os.kill(srv.proc.pid, signal.SIGCONT)
            frozen[0] = False
    on_cleanup("let the OAuth server go on", thaw)

    # A scope set the daemon has no token for: it must refresh (the rotating grant).
    getter = subprocess.Popen([tokenctl_bin, "token", CRED, "--scope", "write"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=u.env(), preexec_fn=u.demote())
    wait_until(lambda: tcp_server_side_backlog(srv.port) > 0, 15,
               "tokend's refresh request to sit unread in the frozen server's socket")
    check(True, "a refresh is in flight (its request waits in the server's socket)")

    t0 = time.monotonic()
    stopper = subprocess.Popen(["systemctl", "--user", "stop", "tokend.service"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=u.env(), preexec_fn=u.demote())
    wait_until(lambda: u.show("tokend.service", "ActiveState")["ActiveState"] == "deactivating", 10,
               "tokend.service to be deactivating")
    time.sleep(3)
    s = u.show("tokend.service", "ActiveState", "StatusText")
    check(stopper.poll() is None and s["ActiveState"] == "deactivating",
          "3 s later the stop still waits for the refresh in flight", s)
    thaw()
    log("OAuth server let go")
    out, err = stopper.communicate(timeout=45)
    took = time.monotonic() - t0
    check(stopper.returncode == 0, f"systemctl --user stop returns 0 after {took:.1f}s", err)
    s = u.show("tokend.service", "ActiveState", "Result", "ExecMainStatus")
    check(s["ActiveState"] == "inactive" and s["Result"] == "success" and s["ExecMainStatus"] == "0",
          "the daemon exited cleanly after finishing the refresh", s)
    gout, gerr = getter.communicate(timeout=30)
    log(f"the GetToken in flight got: {'a token' if getter.returncode == 0 else gerr.strip()[:200]}")
    if getter.returncode == 0:
        check(srv.introspect(gout.strip().splitlines()[0]).get("active") is True,
              "the token handed out during the stop is active")
    n, invalid, reuse = stats()
    check(n == refreshes + 1, f"exactly one refresh for the call in flight ({n - refreshes})")

    r = u.systemctl("start", "tokend.service", timeout=60)
    check(r.returncode == 0, "systemctl --user start tokend.service succeeds", r.stderr)
    lst = {c.get("name"): c for c in json.loads(u.run([tokenctl_bin, "--json", "list"]).stdout or "[]")}
    check(lst.get(CRED, {}).get("state") == "ok", f"after the start {CRED} is in state ok", lst.get(CRED))
    token()  # nothing cached after the start: a refresh with the refresh token saved during the stop
    n2, invalid, reuse = stats()
    check(n2 == n + 1 and invalid == invalid0 and reuse == reuse0,
          "after the start the credential refreshed with the rotated refresh token: no invalid_grant, no reuse",
          (n2 - n, invalid - invalid0, reuse - reuse0))
    lst = {c.get("name"): c for c in json.loads(u.run([tokenctl_bin, "--json", "list"]).stdout or "[]")}
    check(lst.get(CRED, {}).get("state") == "ok" and not lst[CRED].get("last_error"),
          f"{CRED} is still ok, no last error", lst.get(CRED))


if __name__ == "__main__":
    rc = 1
    start = time.monotonic()
    try:
        main()
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
        if rc not in (0, SKIP):
            print(f"INTERRUPTED (exit {rc}): tearing down", flush=True)
    except BaseException:
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        teardown()
    if rc != SKIP:
        print(f"\n{'PASS' if rc == 0 else 'FAIL'}: test_user_manager.py ({time.monotonic() - start:.1f}s)", flush=True)
    sys.exit(rc)
