#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The daemon's life: readiness, socket, activation, no core dumps.

1. With $NOTIFY_SOCKET set, tokend sends READY=1 and a STATUS= line once it serves, and
   STOPPING=1 on SIGTERM, after which it exits 0.
2. Without --socket it binds $XDG_RUNTIME_DIR/tokend/socket: the directory is 0700, the socket
   0600, both owned by the daemon's uid; a stale socket file is replaced.
3. Socket activation: started by systemd-socket-activate, it serves on the passed socket.
4. No core files: RLIMIT_CORE is 0 (/proc/PID/limits).
5. Without --policy-dir the policy comes from $XDG_CONFIG_HOME/tokend/policy.d (WhoAmI names the
   agent and its file there).
"""
import os
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TOKEND, TOKENCTL, VarlinkConnection, check, log, run_test, stop_pid,  # noqa: E402
                     test_agent_policy, wait_until)


def recv_notify(sock, want, timeout=10):
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg:
            return got
    check(False, f"notification {want} received", got)


def main(ctx):
    tmp = ctx.tmp
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = os.path.join(tmp, "state")
    env["XDG_RUNTIME_DIR"] = os.path.join(tmp, "run")
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    env["XDG_CONFIG_HOME"] = os.path.join(tmp, "config")
    policy_dir = os.path.join(env["XDG_CONFIG_HOME"], "tokend", "policy.d")
    os.makedirs(policy_dir, mode=0o700)
    policy_file = os.path.join(policy_dir, "50-test.conf")
    with open(os.open(policy_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(test_agent_policy("default-dir-agent"))
    notify_path = os.path.join(tmp, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    env["NOTIFY_SOCKET"] = notify_path

    # A stale socket left behind by a crashed daemon.
    sockdir = os.path.join(env["XDG_RUNTIME_DIR"], "tokend")
    os.makedirs(sockdir, mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.path.join(sockdir, "socket"))
    stale.close()

    log_path = os.path.join(tmp, "tokend.log")
    with open(log_path, "wb") as logf:
        p = subprocess.Popen([TOKEND, "--log-level", "debug"], env=env, stdout=logf, stderr=logf)
    ctx._register(lambda: p.poll() is None and stop_pid(p), "tokend", log_path)
    got = recv_notify(ns, "READY=1")
    log(f"notifications: {got}")
    got += recv_notify(ns, "STATUS=")
    check(any("STATUS=" in g and "credentials" in g for g in got), "STATUS= describes the state", got)

    path = os.path.join(sockdir, "socket")
    st_dir, st_sock = os.stat(sockdir), os.stat(path)
    check(stat.S_IMODE(st_dir.st_mode) == 0o700 and st_dir.st_uid == os.geteuid(), "socket directory is 0700, ours")
    check(stat.S_ISSOCK(st_sock.st_mode) and stat.S_IMODE(st_sock.st_mode) == 0o600, "socket is 0600",
          oct(st_sock.st_mode))
    r = subprocess.run([TOKENCTL, "list"], env=env, capture_output=True, text=True, timeout=10)
    check(r.returncode == 0, "tokenctl finds the default socket through $XDG_RUNTIME_DIR", r.stderr)

    with VarlinkConnection(path) as c:
        m = c.call("io.tokend.agent.WhoAmI")
    pol = (m.get("parameters") or {}).get("policy") or {}
    check(pol.get("name") == "default-dir-agent" and pol.get("file") == policy_file,
          "without --policy-dir, the policy is read from $XDG_CONFIG_HOME/tokend/policy.d", m)

    with open(f"/proc/{p.pid}/limits") as f:
        core = [line for line in f if line.startswith("Max core file size")]
    check(core and core[0].split()[4:6] == ["0", "0"], "RLIMIT_CORE is 0", core)

    p.send_signal(15)
    got = recv_notify(ns, "STOPPING=1")
    check(p.wait(timeout=20) == 0, "exits 0 after STOPPING=1")
    check(not os.path.exists(path), "the socket it bound is removed on exit")

    # Socket activation
    act_sock = os.path.join(tmp, "activated.sock")
    env2 = dict(env)
    env2.pop("NOTIFY_SOCKET")
    with open(log_path, "ab") as logf:
        a = subprocess.Popen(["systemd-socket-activate", "-l", act_sock, TOKEND], env=env2, stdout=logf, stderr=logf)
    ctx._register(lambda: a.poll() is None and stop_pid(a), "systemd-socket-activate", log_path)
    wait_until(lambda: os.path.exists(act_sock), 10, "activation socket exists")
    r = subprocess.run([TOKENCTL, "--socket", act_sock, "list"], env=env2, capture_output=True, text=True, timeout=20)
    check(r.returncode == 0, "the activated daemon serves on the passed socket", r.stderr)
    with open(log_path, errors="replace") as f:
        check("passed by the service manager" in f.read(), "it used the passed socket")
    stop_pid(a)


run_test(main, __doc__)
