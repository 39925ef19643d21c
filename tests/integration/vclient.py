# SPDX-License-Identifier: MIT
"""A Varlink caller for the integration tests, run as a process of its own (standard library only).

Tests run it to call tokend from another process than the test itself: another PID (a process
that can exit, for process-bound grants), another executable (a copy of the interpreter, see
harness.Context.python_copy), another cgroup or systemd unit (moved there before it starts), or
another uid (under setpriv).

  vclient.py SOCKET call METHOD [PARAMETERS-JSON]
      One call on a new connection; prints the result as one JSON line (see below) and exits 0.
  vclient.py SOCKET stream METHOD [PARAMETERS-JSON]
      One call with "more" on a new connection; prints each reply as one JSON result line as it
      arrives, until the daemon ends the stream (a reply without "continues") or closes it.
  vclient.py SOCKET serve
      Prints {"pid": N}, then runs commands read from stdin, one JSON object a line, and answers
      each with one JSON line:
        {"op": "call", "method": M, "parameters": P, "timeout": S, "more": B}
            a call on a new connection, closed afterwards (with "more": every reply up to the
            one without "continues")
        {"op": "send", "method": M, "parameters": P}
            the call is sent on a new connection that stays open; answers {"sent": true}
        {"op": "recv", "timeout": S}   the reply on the connection kept by "send"
        {"op": "close"}                hangs up that connection; answers {"closed": true}
        {"op": "exit", "status": N}    exits (no answer)
      EOF on stdin exits 0.

A result is {"reply": MESSAGE} (with "more": {"replies": [...]}), {"closed": true} when the daemon
closed the connection without a (further) reply, {"timeout": true}, or {"connect_error": "..."}.
"""
import json
import os
import socket
import sys
import time


class Conn:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, method, parameters, more=False):
        m = {"method": method}
        if parameters is not None:
            m["parameters"] = parameters
        if more:
            m["more"] = True
        self.sock.sendall(json.dumps(m).encode() + b"\0")

    def read(self, timeout):
        """One message, or "closed" / "timeout"."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return "timeout"
            except (ConnectionResetError, BrokenPipeError):
                return "closed"
            if not data:
                return "closed"
            self.buf += data
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def result(m):
    if m == "closed":
        return {"closed": True}
    if m == "timeout":
        return {"timeout": True}
    return {"reply": m}


def call(path, method, parameters, timeout=30.0, more=False):
    try:
        c = Conn(path, timeout)
    except OSError as e:
        return {"connect_error": str(e)}
    try:
        try:
            c.send(method, parameters, more)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at once: the read says so
        if not more:
            return result(c.read(timeout))
        replies = []
        deadline = time.monotonic() + timeout
        while True:
            m = c.read(max(0.0, deadline - time.monotonic()))
            if not isinstance(m, dict):
                out = result(m)
                out["replies"] = replies
                return out
            replies.append(m)
            if not m.get("continues"):
                return {"replies": replies}
    finally:
        c.close()


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(path):
    out({"pid": os.getpid()})
    kept = None
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        timeout = float(cmd.get("timeout", 30))
        if op == "call":
            out(call(path, cmd["method"], cmd.get("parameters"), timeout, bool(cmd.get("more"))))
        elif op == "send":
            if kept:
                kept.close()
            try:
                kept = Conn(path, timeout)
                kept.send(cmd["method"], cmd.get("parameters"))
                out({"sent": True})
            except OSError as e:
                out({"connect_error": str(e)})
        elif op == "recv":
            out(result(kept.read(timeout)) if kept else {"error": "nothing sent"})
        elif op == "close":
            if kept:
                kept.close()
                kept = None
            out({"closed": True})
        elif op == "exit":
            sys.exit(int(cmd.get("status", 0)))
        else:
            out({"error": f"unknown op {op!r}"})


def stream(path, method, parameters):
    try:
        c = Conn(path, 30.0)
    except OSError as e:
        out({"connect_error": str(e)})
        return
    c.send(method, parameters, more=True)
    while True:
        m = c.read(24 * 3600)
        out(result(m))
        if not isinstance(m, dict) or not m.get("continues"):
            return


def main():
    if len(sys.argv) >= 3 and sys.argv[2] == "serve":
        serve(sys.argv[1])
    elif len(sys.argv) in (4, 5) and sys.argv[2] == "stream":
        stream(sys.argv[1], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) == 5 else None)
    elif len(sys.argv) in (4, 5) and sys.argv[2] == "call":
        params = json.loads(sys.argv[4]) if len(sys.argv) == 5 else None
        out(call(sys.argv[1], sys.argv[3], params))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
