# SPDX-License-Identifier: MIT
"""Drives `tokenctl --json login` in the background and plays the user's part
at the test OAuth server (tests/oauth/device-approve.mjs, browse.mjs)."""
import json
import os
import selectors
import subprocess
import time

from harness import NODE, OAUTH_DIR, TOKENCTL, TestFailure, log, stop_pid


class Login:
    """A running `tokenctl --json login NAME ...`; events() yields its JSON lines."""

    def __init__(self, d, name, *args, env_extra=None):
        self.d = d
        env = dict(os.environ)
        env["TOKEND_SOCKET"] = d.socket
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        env.update(env_extra or {})
        self.argv = [TOKENCTL, "--json", "login", name, *args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=env)
        self.buf = b""
        self.stderr = ""
        d.ctx._register(self.kill, f"tokenctl login {name}")
        log(f"started tokenctl login {name} {' '.join(args)} (pid {self.proc.pid})")

    def next_event(self, timeout=30):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(f"tokenctl login printed no event within {timeout}s")
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return None  # tokenctl exited
                self.buf += chunk
        finally:
            sel.close()
        line, self.buf = self.buf.split(b"\n", 1)
        ev = json.loads(line)
        log(f"login event: {ev.get('event')}")
        return ev

    def wait(self, timeout=60):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"tokenctl login did not finish within {timeout}s") from None
        self.buf += out or b""
        self.stderr = (err or b"").decode(errors="replace")
        events = [json.loads(line) for line in self.buf.decode().splitlines() if line.strip()]
        self.buf = b""
        log(f"tokenctl login exited {self.proc.returncode}: {self.stderr.strip()}")
        return self.proc.returncode, events

    def kill(self):
        if self.proc.poll() is None:
            stop_pid(self.proc, timeout=5)


def device_approve(issuer, user_code, deny=False, login="tester"):
    args = [NODE, os.path.join(OAUTH_DIR, "device-approve.mjs"), "--issuer", issuer, "--user-code", user_code,
            "--login", login]
    if deny:
        args.append("--deny")
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=OAUTH_DIR)
    log(f"device-approve {'--deny ' if deny else ''}-> {r.returncode} {r.stderr.strip()}")
    return r.returncode


def browse(url, *flags):
    """Plays the browser for an authorization URL; returns (rc, stdout) where stdout holds the
    loopback listener's answer (status line, then body), or the redirect with --print-redirect."""
    args = [NODE, os.path.join(OAUTH_DIR, "browse.mjs"), "--url", url, *flags]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=OAUTH_DIR)
    log(f"browse {' '.join(flags)} -> {r.returncode}: {r.stdout.strip()[:120]} {r.stderr.strip()[:200]}")
    return r.returncode, r.stdout


def secret_file(ctx, secret):
    path = os.path.join(ctx.tmp, "client-secret-" + str(abs(hash(secret))))
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    return path
