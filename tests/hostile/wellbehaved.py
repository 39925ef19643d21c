#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The well-behaved client of the hostile-client suite, run as a process of its own (standard
library only), so that what the attackers do in the test process (and its interpreter lock) does
not show in its figures.

  wellbehaved.py SOCKET CREDENTIAL TOKEN

It opens one connection at once (before any attack: it must keep being served when the daemon is at
its connection cap), prints {"ready": true, "pid": N}, then runs commands read from stdin, one JSON
object a line, and answers each with one JSON line:

  {"op": "measure", "n": N, "new": K, "deadline": S, "budget": B}
      N GetToken(CREDENTIAL) calls on the connection opened at the start, then K more, each on a
      new connection (connect, call, close). Every call must be answered with TOKEN (the cached
      token: a cache hit) within S seconds. When the daemon is so slow that this would take more
      than B seconds, fewer calls are made (at least 10 and 5): "n" and "new_n" say how many. Answers
      {"n": N, "ok": n_ok, "lat": STATS, "new_n": K, "new_ok": k_ok, "new_lat": STATS,
       "errors": [first few failures], "reconnects": R}
      where STATS is {"median": ms, "p99": ms, "max": ms, "mean": ms, "over_1s": n, "over_5s": n}
      of the successful calls.
  {"op": "exit"}    exits 0 (so does EOF on stdin).
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
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def call(self, frame, deadline):
        """Sends frame and returns the parsed reply; raises on EOF, timeout or a bad frame."""
        end = time.monotonic() + deadline
        self.sock.settimeout(deadline)
        self.sock.sendall(frame)
        while True:
            i = self.buf.find(b"\0")
            if i >= 0:
                raw, self.buf = self.buf[:i], self.buf[i + 1:]
                return json.loads(raw)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply within {deadline}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no reply within {deadline}s") from None
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self.buf += data


def stats(lat_ns):
    if not lat_ns:
        return None
    s = sorted(lat_ns)
    n = len(s)

    def pct(p):
        return s[min(n - 1, max(0, int(round(p / 100.0 * n + 0.5)) - 1))] / 1e6

    return {"median": pct(50), "p99": pct(99), "max": s[-1] / 1e6, "mean": sum(s) / n / 1e6,
            "over_1s": sum(1 for v in s if v > 1e9), "over_5s": sum(1 for v in s if v > 5e9)}


def main():
    path, credential, token = sys.argv[1], sys.argv[2], sys.argv[3]
    frame = json.dumps({"method": "io.tokend.agent.GetToken", "parameters": {"credential": credential}}).encode() + b"\0"
    conn = Conn(path, 10)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()

    def one(c, deadline, errors, label):
        t0 = time.perf_counter_ns()
        try:
            m = c.call(frame, deadline)
        except (OSError, ValueError) as e:  # TimeoutError, ConnectionError are OSErrors
            if len(errors) < 5:
                errors.append(f"{label}: {type(e).__name__}: {e}")
            return None, False
        dt = time.perf_counter_ns() - t0
        got = (m.get("parameters") or {}).get("token")
        if "error" in m or got != token:
            if len(errors) < 5:
                errors.append(f"{label}: unexpected reply {json.dumps(m)[:200]}"
                              + (" (another token: not a cache hit)" if got and got != token else ""))
            return None, True
        return dt, True

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            break
        if cmd.get("op") != "measure":
            out.write(json.dumps({"error": f"unknown op {cmd.get('op')}"}) + "\n")
            out.flush()
            continue
        n, k, deadline = int(cmd["n"]), int(cmd.get("new", 0)), float(cmd.get("deadline", 5.0))
        budget = float(cmd.get("budget", 1e9))
        errors, lat, new_lat, reconnects = [], [], [], 0
        t_start = time.monotonic()
        done = 0
        for i in range(n):
            if i >= 10 and time.monotonic() - t_start > budget:
                break
            done += 1
            dt, alive = one(conn, deadline, errors, f"call {i}")
            if dt is not None:
                lat.append(dt)
            if not alive or dt is None:
                # Counted as a failure; go on with a fresh connection so one failure is one failure.
                conn.close()
                reconnects += 1
                try:
                    conn = Conn(path, deadline)
                except OSError as e:
                    if len(errors) < 5:
                        errors.append(f"reconnect: {e}")
        n, done_new = done, 0
        for i in range(k):
            if i >= 5 and time.monotonic() - t_start > budget * 1.25:
                break
            done_new += 1
            t0 = time.perf_counter_ns()
            try:
                c = Conn(path, deadline)
            except OSError as e:
                if len(errors) < 5:
                    errors.append(f"new connection {i}: connect: {e}")
                continue
            try:
                dt, _ = one(c, deadline, errors, f"new connection {i}")
            finally:
                c.close()
            if dt is not None:
                new_lat.append(time.perf_counter_ns() - t0)
        out.write(json.dumps({"n": n, "ok": len(lat), "lat": stats(lat), "new_n": done_new, "new_ok": len(new_lat),
                              "new_lat": stats(new_lat), "errors": errors, "reconnects": reconnects}) + "\n")
        out.flush()
    conn.close()


if __name__ == "__main__":
    main()
