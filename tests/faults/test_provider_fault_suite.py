#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Provider-fault suite: one broken provider, one healthy one, every fault in turn.

Credential prov-a reaches its (real, oidc-provider) OAuth server through tests/faults/faultproxy.py,
over TLS with a test CA the daemon is given with --ca-file; prov-b talks to a second OAuth server
directly. tokend runs with --request-timeout 3 and --keep-fresh 0 (no proactive refreshes: every
attempt the proxy sees comes from the test's requests and their retries). For each fault the proxy
injects:

  1. prov-a's cached token keeps being served, at once, while the fault lasts (until it expires:
     shown during the 20 s stall, where it stops being served once less than a tenth of its
     lifetime is left);
  2. a request that needs a refresh of prov-a gets the named error: ProviderUnavailable (with the
     credential, a reason naming the fault and, while a backoff runs, retry_after) after
     --request-timeout; ReauthenticationRequired at once for invalid_grant and invalid_client,
     whose cached tokens are dropped (README "Failures"); `tokenctl --json list` shows the state;
  3. retries back off: the attempts seen at the proxy (or, for a refused connection, the daemon's
     "retrying in" log lines) never overlap (single flight), their spacing never shrinks, the
     delays the daemon logs grow, and Retry-After is honoured; nothing retries after
     invalid_grant/invalid_client;
  4. prov-b's GetToken, cache hit and refresh, is never delayed by prov-a's fault (each within
     2 s, measured while prov-a's request is pending or stalled);
  5. once the fault is cleared, tokens flow again with no tokenctl action (within the pending
     backoff); after invalid_grant/invalid_client the credential stays reauth-required until
     `tokenctl add --replace` with a new refresh token.

Faults: HTTP 500, 502, 503; 429 with Retry-After: 2; connection refused; a 200 with an HTML body;
a truncated body; 64 MiB bodies (chunked, and with Content-Length), which must be refused at the
64 KiB cap (daemon/http.c HTTP_BODY_MAX) without the daemon's memory growing (RssAnon from /proc);
TLS: a self-signed certificate, a certificate for another host name, plain HTTP on the TLS port;
a slow answer (4 s, then the body dribbled over 2 s: later than --request-timeout, sooner than the
15 s HTTP timeout); a stall (accepted, never answered) for 20 s; invalid_grant (400) and
invalid_client (401). Then: a Retry-After of 100000 s (capped at 10 minutes; `add --replace` ends
the backoff); `tokenctl add --replace` and `tokenctl remove` while a refresh hangs (the pending
request ends with NoSuchCredential, the transfer is cancelled); and a second daemon without
--ca-file, which must refuse the proxy's certificate. A summary table is printed.
"""
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)
from harness import (CLIENTS, EXIT_REAUTH, EXIT_UNAVAILABLE, TestFailure, _die_with_parent, check,  # noqa: E402
                     log, mint, run_test, stop_pid, wait_until)
import faultproxy  # noqa: E402

A, B = "prov-a", "prov-b"
A_TTL, B_TTL = 20, 60
REQUEST_TIMEOUT = 3
KEEP_FRESH = 0  # no proactive refreshes: every attempt comes from the test's requests and their retries
ERR_UNAVAILABLE = "io.tokend.agent.ProviderUnavailable"
ERR_REAUTH = "io.tokend.agent.ReauthenticationRequired"
B_LIMIT = 2.0     # prov-b must be served within this (s), whatever prov-a's provider does
HIT_LIMIT = 1.5   # a cache hit of prov-a during its fault (s)
MIB = 1024 * 1024


def now():
    return time.monotonic()


class Background:
    """Runs fn() on a thread; join() returns (result, seconds it took)."""

    def __init__(self, fn):
        self.t0 = now()
        self.t1 = None
        self.result = self.exc = None
        self.th = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.th.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:
            self.exc = e
        self.t1 = now()

    def join(self, timeout=40):
        self.th.join(timeout)
        if self.th.is_alive():
            raise TestFailure(f"background call still running after {timeout}s")
        if self.exc:
            raise self.exc
        return self.result, self.t1 - self.t0


class LogWatch:
    """Tails the daemon's log on a thread, timestamping each line as it appears (±50 ms), and
    keeps the "Credential NAME: REASON; retrying in Xs" lines of engine.c's backoff."""

    RETRY = re.compile(r"^(?:<\d>)?Credential (\S+): (.*); retrying in ([0-9.]+)s$")

    def __init__(self, ctx, path):
        self.path = path
        self.lines = []  # (t, line)
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        ctx._register(self.stop, "log watch")

    def _run(self):
        pos, buf = 0, b""
        while not self.stop_ev.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except OSError:
                data = b""
            if data:
                pos += len(data)
                buf += data
                t = now()
                *full, buf = buf.split(b"\n")
                self.lines.extend((t, ln.decode(errors="replace")) for ln in full)
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.th.join(5)

    def mark(self):
        return len(self.lines)

    def retries(self, since, cred=A):
        """[(t, reason, delay)] logged since mark `since` for the credential."""
        out = []
        for t, ln in self.lines[since:]:
            m = self.RETRY.match(ln)
            if m and m.group(1) == cred:
                out.append((t, m.group(2), float(m.group(3))))
        return out


class Proxy:
    """tests/faults/faultproxy.py as a process of its own, in front of one OAuth server."""

    def __init__(self, ctx, upstream, tls_dir):
        self.log_path = os.path.join(ctx.tmp, "faultproxy.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "faultproxy.py"), "--upstream", upstream,
                                      "--tls-dir", tls_dir], stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        ctx._register(self.stop, "faultproxy", self.log_path)
        line = self._ready_line(15)
        ready = json.loads(line)
        self.port, self.url = ready["port"], ready["url"]
        self.token_endpoint = self.url + "/token"
        self.ctl = faultproxy.Control(ready["control_port"])
        log(f"faultproxy pid {self.proc.pid} at {self.url} -> {upstream} (control port {ready['control_port']})")

    def _ready_line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = now() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - now()
                if left <= 0 or self.proc.poll() is not None:
                    raise TestFailure(f"faultproxy printed no ready line (status {self.proc.poll()})")
                if sel.select(left):
                    buf += os.read(self.proc.stdout.fileno(), 4096)
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def stop(self):
        if self.proc.poll() is None:
            stop_pid(self.proc, timeout=10)
        self.proc.stdout.close()
        self._log.close()

    def set(self, mode, **params):
        return self.ctl.set(mode, **params)

    def attempts(self, since=None):
        """The connections the proxy accepted (since monotonic time `since`), oldest first."""
        a = self.ctl.attempts()
        if since is not None:
            a = [x for x in a if x["t_accept"] >= since]
        return sorted(a, key=lambda x: x["t_accept"])


def rss_kib(pid):
    """(VmRSS, RssAnon) of a process, in KiB."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("RssAnon", 0)


class Suite:
    def __init__(self, ctx):
        self.ctx = ctx
        self.rows = []
        self.res_n = 0
        self.notes = []

    # -- set-up --
    def setup(self):
        ctx = self.ctx
        if not shutil.which("openssl"):
            raise TestFailure("the openssl command is missing (apt-get install openssl): the suite makes its "
                              "test CA and certificates with it")
        t0 = now()
        self.pki = os.path.join(ctx.tmp, "pki")
        self.ca = faultproxy.make_test_pki(self.pki)
        log(f"test PKI in {self.pki} ({now() - t0:.2f}s)")
        self.srv_a = ctx.oauth_server(access_ttl=A_TTL, name="oauth-a")
        self.srv_b = ctx.oauth_server(access_ttl=B_TTL, name="oauth-b")
        self.proxy = Proxy(ctx, self.srv_a.issuer, self.pki)
        self.d = ctx.tokend(request_timeout=REQUEST_TIMEOUT, keep_fresh=KEEP_FRESH,
                            extra_args=["--ca-file", self.ca])
        self.logw = LogWatch(ctx, self.d.log_path)
        self.secret = os.path.join(ctx.tmp, "tokend-test.secret")
        fd = os.open(self.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(CLIENTS["tokend-test"][0] + "\n")
        self.add_a()
        self.d.add(B, self.srv_b)
        c = self.d.list_json()[A]
        check(c["token_endpoint"] == self.proxy.token_endpoint and c["state"] == "ok",
              f"{A} is added behind the proxy ({self.proxy.token_endpoint}), over TLS, without --insecure-loopback", c)
        check(any(x["mode"] == "pass" and x["status"] == 200 for x in self.proxy.attempts()),
              "the add's check refresh went through the proxy to the real server")
        self.b_refreshes0 = self.srv_b.refresh_count()

    def add_a(self, replace=False, direct=False):
        """tokenctl add prov-a: behind the proxy (https, the test CA), or direct to its server
        (plain http on loopback: --insecure-loopback)."""
        rt = mint(self.srv_a.issuer)
        endpoint = self.srv_a.issuer + "/token" if direct else self.proxy.token_endpoint
        args = ["add", A, "--token-endpoint", endpoint, "--client-id", "tokend-test",
                "--client-secret-file", self.secret]
        if direct:
            args.append("--insecure-loopback")
        if replace:
            args.append("--replace")
        rc, out, err = self.d.tokenctl(*args, stdin=rt + "\n")
        check(rc == 0, f"tokenctl add {A}{' --replace' if replace else ''} "
              f"({'direct to its server' if direct else 'token endpoint behind the proxy'})", (rc, err))

    # -- helpers --
    def resource(self, tag):
        self.res_n += 1
        return f"https://api.example/{re.sub('[^A-Za-z0-9]+', '-', tag)}/{self.res_n}"

    def timed_token(self, cred, **kw):
        t0 = now()
        m = self.d.get_token(cred, timeout=30, **kw)
        return m, now() - t0

    def fresh_a(self, min_left):
        """prov-a's default token, with at least min_left seconds left (refreshed if needed)."""
        m, _ = self.timed_token(A, min_ttl=min_left)
        check("error" not in m, f"{A} has a cached token (>= {min_left}s left) before the fault", m)
        return m["parameters"]

    def cached_a(self, t0_token, what):
        m, dt = self.timed_token(A)
        ok = "error" not in m and m["parameters"]["token"] == t0_token and dt < HIT_LIMIT
        check(ok, f"{what}: {A}'s cached token is served at once ({dt * 1000:.0f} ms)", m)
        return dt

    def measure_b(self, what):
        """prov-b: a cache hit and a refresh (a new resource: a new cache entry), each timed."""
        m1, hit = self.timed_token(B)
        check("error" not in m1 and hit < B_LIMIT, f"{what}: {B} cache hit in {hit * 1000:.0f} ms (< {B_LIMIT}s)", m1)
        m2, ref = self.timed_token(B, resource=self.resource("b"))
        check("error" not in m2 and ref < B_LIMIT and m2["parameters"]["token"] != m1["parameters"]["token"],
              f"{what}: {B} refresh in {ref * 1000:.0f} ms (< {B_LIMIT}s)", m2)
        return hit, ref

    def wait_first_attempt(self, since, mark, refused=False, timeout=5):
        if refused:
            wait_until(lambda: self.logw.retries(mark), timeout, f"{A}'s first failed attempt in the log")
        else:
            wait_until(lambda: self.proxy.attempts(since), timeout, f"{A}'s first attempt at the proxy")

    def check_single_flight(self, atts, name):
        spans = [(a["t_accept"], a["t_end"] if a["t_end"] is not None else now()) for a in atts]
        overlap = [(i, j) for i in range(len(spans)) for j in range(i + 1, len(spans))
                   if spans[j][0] < spans[i][1] - 0.005]
        check(not overlap, f"{name}: never two connections of {A} at once (single flight)", overlap)

    def check_spacing(self, name, times, delays, retry_after=None, max_attempts=None):
        """times: the attempts (monotonic); delays: what the daemon logged it would wait."""
        gaps = [b - a for a, b in zip(times, times[1:])]
        check(len(times) >= 2, f"{name}: the daemon retries ({len(times)} attempts in the window)", times)
        if max_attempts is not None:
            check(len(times) <= max_attempts, f"{name}: no more than {max_attempts} attempts in the window", gaps)
        floor = (retry_after - 0.15) if retry_after else 0.4
        check(all(g >= floor for g in gaps), f"{name}: attempts spaced >= {floor:.2f}s apart "
              f"({', '.join(f'{g:.2f}' for g in gaps)})", gaps)
        # (the wall-clock spacing carries up to ~0.5 s of event-loop timer slack per attempt)
        check(all(b >= a - 0.6 for a, b in zip(gaps, gaps[1:])), f"{name}: the spacing never shrinks "
              "(beyond timer slack)", gaps)
        check(len(delays) >= 1 and all(0.45 <= d <= 60.05 for d in delays)
              and all(b >= a - 0.05 for a, b in zip(delays, delays[1:])),
              f"{name}: logged backoff delays grow within [0.5, 60] s ({', '.join(f'{d:.1f}' for d in delays)})",
              delays)
        if retry_after:
            check(all(d >= retry_after - 0.05 for d in delays), f"{name}: every delay honours Retry-After: "
                  f"{retry_after}", delays)
        return gaps

    def list_backoff(self, name, reason_re):
        """tokenctl --json list of prov-a during a fault the daemon retries: state backoff and the
        last error. While a retry is in flight the state reads "ok" (credential.c shows backoff
        only while retry_at is set); that is noted, and the list read again."""
        seen = []
        deadline = now() + 3
        while True:
            c = self.d.list_json()[A]
            seen.append(c["state"])
            if c["state"] == "backoff" or now() > deadline:
                break
            check(c["state"] == "ok" and re.search(reason_re, c.get("last_error", ""), re.I),
                  f"{name}: (list during a retry in flight: state ok, last error kept)", c)
            time.sleep(0.1)
        if "ok" in seen:
            self.notes.append(f"{name}: tokenctl list said state 'ok' while a retry was in flight "
                              f"(last_error {c.get('last_error')!r})")
        check(c["state"] == "backoff" and re.search(reason_re, c.get("last_error", ""), re.I),
              f"{name}: tokenctl --json list shows state backoff and the last error ({c.get('last_error')!r})"
              + (f" (read {len(seen)} times: {seen})" if len(seen) > 1 else ""), c)
        return c

    def add_row(self, **row):
        self.rows.append(row)
        log("row: " + ", ".join(f"{k}={v}" for k, v in row.items()))

    # -- a fault the daemon retries --
    def transient(self, name, mode, reason_re, *, retry_after=None, window=None, max_attempts=4, refused=False,
                  proxy_outcome=None, extra_checks=None, **params):
        log(f"===== fault {name}")
        d, px = self.d, self.proxy
        rss0 = rss_kib(d.pid)[1]
        t0_tok = self.fresh_a(12)["token"]
        check(d.list_json()[A]["state"] == "ok", f"{name}: {A} starts in state ok")
        mark = self.logw.mark()
        if retry_after is not None:
            params["retry_after"] = retry_after
        px.set(mode, **params)
        t_fault = now()

        # 1. the cached token, before any attempt
        hits = [self.cached_a(t0_tok, f"{name}, fault set")]

        # 2. a request that needs a refresh (a new resource: a new cache entry)
        res = self.resource(name)
        bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
        self.wait_first_attempt(t_fault, mark, refused)
        # 4. prov-b while prov-a's request waits; 1. prov-a's cache meanwhile
        b = [self.measure_b(f"{name}, {A} waiting")]
        hits.append(self.cached_a(t0_tok, f"{name}, {A} request pending"))
        m, t_err = bg.join()
        check(m.get("error") == ERR_UNAVAILABLE, f"{name}: the request needing a refresh gets ProviderUnavailable", m)
        p = m.get("parameters", {})
        check(p.get("credential") == A and re.search(reason_re, p.get("reason", ""), re.I),
              f"{name}: the error names {A} and the fault (reason {p.get('reason')!r} ~ /{reason_re}/)", p)
        check(REQUEST_TIMEOUT - 0.3 <= t_err <= REQUEST_TIMEOUT + 2.5,
              f"{name}: it came after --request-timeout {REQUEST_TIMEOUT}s ({t_err:.2f}s)", t_err)
        ra = p.get("retry_after")
        if ra is not None:
            check(isinstance(ra, int) and 0 <= ra <= max(4, retry_after or 0),
                  f"{name}: retry_after is given while the backoff runs ({ra} s)", p)
        else:
            # "when known": not while an attempt is in flight
            t_abs = bg.t1

            def near():
                if refused:  # the failure is logged when the attempt ends, right after
                    return [r for r in self.logw.retries(mark) if -0.45 < r[0] - t_abs < 0.8]
                return [a for a in px.attempts(t_fault) if a["t_accept"] <= t_abs + 0.05
                        and (a["t_end"] or now()) >= t_abs - 0.45]
            try:
                found = wait_until(near, 1.5, "an attempt in flight")
            except TestFailure:
                found = None
            check(found, f"{name}: no retry_after, because an attempt was in flight at that moment",
                  (t_abs, self.logw.retries(mark), px.attempts(t_fault)))
        c = self.list_backoff(name, reason_re)
        b.append(self.measure_b(f"{name}, {A} in backoff"))
        hits.append(self.cached_a(t0_tok, f"{name}, {A} in backoff"))

        # 3. the attempts over the window
        if window is None:
            window = REQUEST_TIMEOUT + 0.4
        left = t_fault + window - now()
        if left > 0:
            time.sleep(left)
        t_win = now()

        def settled():  # the attempts begun in the window, once each has ended
            a = [x for x in px.attempts(t_fault) if x["mode"] == mode and x["t_accept"] <= t_win]
            return (a,) if all(x["t_end"] is not None for x in a) else None
        atts = wait_until(settled, 5, f"{name}: the attempts of the window to end")[0]
        retries = self.logw.retries(mark)
        delays = [r[2] for r in retries]
        if refused:
            check(not atts, f"{name}: no connection reached the proxy while its port was closed", atts)
            times = [r[0] for r in retries]  # each line follows one failed attempt within ~50 ms
        else:
            self.check_single_flight(atts, name)
            times = [a["t_accept"] for a in atts]
            if proxy_outcome:
                check(all(re.search(proxy_outcome, a["outcome"] or "") for a in atts),
                      f"{name}: every attempt at the proxy ended as /{proxy_outcome}/",
                      [(a["outcome"], a["error"]) for a in atts])
            if mode.startswith("tls_"):
                check(all(a["t_request"] is None for a in atts),
                      f"{name}: tokend sent no request over the connection it could not trust "
                      f"({', '.join(sorted(set(a['outcome'] for a in atts)))})", atts)
            check(abs(len(retries) - len(atts)) <= 1,
                  f"{name}: the daemon logged a retry for each failed attempt ({len(retries)} vs {len(atts)})",
                  (retries, atts))
        gaps = self.check_spacing(name, times, delays, retry_after, max_attempts)
        if extra_checks:
            extra_checks(atts)

        # 5. recovery, with no tokenctl action
        px.set("pass")
        t_clear = now()
        # The retry already planned runs as planned: recovery comes at most that long after the
        # last failure (as logged, plus timer slack); an attempt in flight when the fault was
        # cleared may still fail, and plan one more.
        while not any(a["mode"] == "pass" and a["status"] == 200 for a in px.attempts(t_clear)):
            last = self.logw.retries(mark)[-1]
            if now() > max(last[0] + last[2] + 3.0, t_clear + 3.0):
                raise TestFailure(f"{name}: no successful refresh of {A} within the planned backoff "
                                  f"({last[2]}s after {last[1]!r}) + 3 s of the fault being cleared")
            time.sleep(0.05)
        t_rec = min(a["t_end"] or now() for a in px.attempts(t_clear) if a["status"] == 200) - t_clear
        n_before = len(px.attempts(t_clear))
        wait_until(lambda: d.list_json()[A]["state"] == "ok", 5, f"{name}: {A} back to state ok")
        m2, dt = self.timed_token(A, resource=res)
        check("error" not in m2 and dt < HIT_LIMIT, f"{name}: recovered by itself in {t_rec:.2f}s: the request's "
              f"token was fetched by the pending retry and is served from the cache ({dt * 1000:.0f} ms)", m2)
        check(len(px.attempts(t_clear)) == n_before, f"{name}: (that was a cache hit: no new attempt)")
        check("last_error" not in d.list_json()[A], f"{name}: last_error cleared")
        self.add_row(fault=name, outcome=f"ProviderUnavailable ({p.get('reason')})", t_err=t_err,
                     retry_after=ra, attempts=len(times), gaps=gaps, delays=delays,
                     b_hit=max(x[0] for x in b), b_ref=max(x[1] for x in b), a_hit=max(hits), recovery=t_rec,
                     rss=f"{(rss_kib(d.pid)[1] - rss0) / 1024:+.1f} MiB")

    # -- 64 MiB bodies --
    def huge(self, name, chunked, reason_re):
        pid = self.d.pid
        before = rss_kib(pid)
        log(f"{name}: daemon VmRSS {before[0]} KiB, RssAnon {before[1]} KiB before")
        result = {}

        def extra(atts):
            for a in atts:
                check(a["peer_closed"] and a["bytes_sent"] < 32 * MIB,
                      f"{name}: tokend hung up after {a['bytes_sent'] / MIB:.1f} MiB of the 64 MiB body "
                      f"(outcome {a['outcome']})", a)
            result["sent"] = [a["bytes_sent"] for a in atts]

        self.transient(name, "huge", reason_re, chunked=chunked, size=64 * MIB, extra_checks=extra)
        after = rss_kib(pid)
        grow = (after[1] - before[1]) / 1024
        log(f"{name}: daemon VmRSS {after[0]} KiB, RssAnon {after[1]} KiB after ({grow:+.1f} MiB anon); "
            f"bytes sent per attempt: {result.get('sent')}")
        # 3 attempts were offered 192 MiB; what grows is allocation churn (a sanitizer build
        # quarantines freed memory: compare the RSS column of the other faults)
        check(grow < 24, f"{name}: the daemon's anonymous memory did not grow with the body ({grow:+.1f} MiB)",
              (before, after))

    # -- a response that takes longer than --request-timeout, but less than the HTTP timeout --
    def slow(self, delay=4.0, dribble=2.0):
        name = "slow"
        log(f"===== fault {name} (answer after {delay}s, body dribbled over {dribble}s)")
        d, px = self.d, self.proxy
        t0_tok = self.fresh_a(12)["token"]
        px.set("slow", delay=delay, dribble=dribble)
        t_fault = now()
        hits = [self.cached_a(t0_tok, f"{name}, fault set")]
        res = self.resource(name)
        bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
        self.wait_first_attempt(t_fault, None)
        b = [self.measure_b(f"{name}, {A}'s answer delayed")]
        hits.append(self.cached_a(t0_tok, f"{name}, {A}'s request in flight"))
        m, t_err = bg.join()
        p = m.get("parameters", {})
        check(m.get("error") == ERR_UNAVAILABLE and p.get("credential") == A and p.get("reason"),
              f"{name}: the request gets ProviderUnavailable at --request-timeout ({t_err:.2f}s, reason "
              f"{p.get('reason')!r})", m)
        check(REQUEST_TIMEOUT - 0.3 <= t_err <= REQUEST_TIMEOUT + 2.5, f"{name}: after {REQUEST_TIMEOUT}s", t_err)
        # the dribbled answer is still read, and used
        wait_until(lambda: (px.attempts(t_fault) or [{}])[0].get("outcome") == "slow-answered"
                   and px.attempts(t_fault)[0].get("t_end"), delay + dribble + 5, f"{name}: the slow answer to end")
        b.append(self.measure_b(f"{name}, {A}'s body dribbling"))
        att = px.attempts(t_fault)
        t_answer = att[0]["t_end"] - att[0]["t_request"]
        check(len(att) == 1 and att[0]["status"] == 200 and not att[0]["peer_closed"],
              f"{name}: one attempt, answered in full after {t_answer:.1f}s (not abandoned, not retried)", att)
        px.set("pass")
        m2, dt = self.timed_token(A, resource=res)
        check("error" not in m2 and dt < HIT_LIMIT and len(px.attempts(t_fault)) == 1,
              f"{name}: the late answer's token is cached and served ({dt * 1000:.0f} ms), no new attempt", m2)
        check(d.list_json()[A]["state"] == "ok", f"{name}: state ok")
        self.add_row(fault=f"slow ({delay:g}+{dribble:g}s)", outcome=f"ProviderUnavailable ({p.get('reason')}); "
                     f"late token kept", t_err=t_err, retry_after=p.get("retry_after"), attempts=1, gaps=[],
                     delays=[], b_hit=max(x[0] for x in b), b_ref=max(x[1] for x in b), a_hit=max(hits),
                     recovery=0.0)

    # -- accept, never answer: the HTTP timeout (15 s), and the cached token up to its expiry --
    def stall(self):
        name = "stall"
        log(f"===== fault {name} (accept, never answer)")
        d, px = self.d, self.proxy
        tok = self.fresh_a(A_TTL - 2)
        t0_tok, exp_at = tok["token"], tok["expires_at"]
        mark = self.logw.mark()
        px.set("stall")
        t_fault = now()
        hits = [self.cached_a(t0_tok, f"{name}, fault set")]
        res = self.resource(name)
        bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
        self.wait_first_attempt(t_fault, mark)
        b = [self.measure_b(f"{name}, {A}'s connection hanging")]
        m, t_err = bg.join()
        p = m.get("parameters", {})
        check(m.get("error") == ERR_UNAVAILABLE and p.get("credential") == A and "timed out" in p.get("reason", ""),
              f"{name}: ProviderUnavailable after --request-timeout ({t_err:.2f}s, reason {p.get('reason')!r}, "
              f"retry_after {p.get('retry_after')})", m)
        check(REQUEST_TIMEOUT - 0.3 <= t_err <= REQUEST_TIMEOUT + 2.5, f"{name}: after {REQUEST_TIMEOUT}s", t_err)
        state_hanging = d.list_json()[A]
        log(f"{name}: while the attempt hangs, tokenctl list says state={state_hanging['state']!r} "
            f"last_error={state_hanging.get('last_error')!r}")
        # The cached token keeps being served while the attempt hangs, until less than a tenth of
        # its lifetime is left; prov-b is measured all along.
        # expires_at is the expiry truncated to a second: it is served at least until
        # expires_at - lifetime/10, and no longer from expires_at + 1 - lifetime/10.
        serve_until = exp_at - A_TTL / 10 - 0.3
        while time.time() < serve_until - 0.3:
            hits.append(self.cached_a(t0_tok, f"{name}, t+{now() - t_fault:.1f}s"))
            b.append(self.measure_b(f"{name}, t+{now() - t_fault:.1f}s"))
            time.sleep(max(0.0, min(1.5, serve_until - 0.3 - time.time())))
        # The first attempt was given up by libcurl at its 15 s total timeout.
        first = wait_until(lambda: next((a for a in px.attempts(t_fault) if a["peer_closed"]), None), 20,
                           f"{name}: tokend to give up the hanging connection")
        held = first["t_peer_closed"] - first["t_request"]
        check(14.0 <= held <= 17.5, f"{name}: tokend gave up the hanging request after {held:.1f}s (HTTP timeout 15 s)",
              first)
        # Past that point the token is no longer served: a request waits, and gets the error.
        sleep = exp_at + 1 - A_TTL / 10 + 0.3 - time.time()
        if sleep > 0:
            time.sleep(sleep)
        m3, dt3 = self.timed_token(A)
        p3 = m3.get("parameters", {})
        check(m3.get("error") == ERR_UNAVAILABLE and p3.get("token") is None,
              f"{name}: with less than a tenth of its lifetime left the cached token is no longer served: "
              f"ProviderUnavailable after {dt3:.2f}s (reason {p3.get('reason')!r})", m3)
        check(re.search("timed out", p3.get("reason", ""), re.I), f"{name}: the reason says the provider timed out", p3)
        atts = [a for a in px.attempts(t_fault) if a["mode"] == "stall"]
        self.check_single_flight(atts, name)
        retries = self.logw.retries(mark)
        check(len(atts) == 2 and len(retries) == 1 and 0.45 <= retries[0][2] <= 1.05,
              f"{name}: one retry, {retries[0][2] if retries else '?'}s after the timeout; it hangs too "
              f"({len(atts)} attempts in {now() - t_fault:.0f}s)", (atts, retries))
        gap = atts[1]["t_accept"] - atts[0]["t_accept"]
        # 5. clearing the fault closes the hanging connection; the next retry succeeds.
        px.set("pass")
        t_clear = now()
        wait_until(lambda: any(a["status"] == 200 for a in px.attempts(t_clear)), 8,
                   f"{name}: a refresh of {A} to succeed after the fault is cleared")
        t_rec = min(a["t_end"] or now() for a in px.attempts(t_clear) if a["status"] == 200) - t_clear
        wait_until(lambda: d.list_json()[A]["state"] == "ok", 5, f"{name}: {A} back to state ok")
        m4, dt4 = self.timed_token(A, resource=res)
        check("error" not in m4 and dt4 < HIT_LIMIT,
              f"{name}: recovered by itself in {t_rec:.2f}s; the pending request's token is cached", m4)
        m5, _ = self.timed_token(A)
        check("error" not in m5 and m5["parameters"]["token"] != t0_tok, f"{name}: a new default token flows", m5)
        self.add_row(fault="stall (never answers)", outcome=f"ProviderUnavailable ({p.get('reason')}); "
                     f"HTTP timeout at {held:.1f}s; expired token not served", t_err=t_err,
                     retry_after=p.get("retry_after"), attempts=len(atts), gaps=[gap], delays=[r[2] for r in retries],
                     b_hit=max(x[0] for x in b), b_ref=max(x[1] for x in b), a_hit=max(hits), recovery=t_rec)
        return state_hanging

    # -- invalid_grant / invalid_client: re-authentication, no retry --
    def reauth(self, name, status, error):
        log(f"===== fault {name} (HTTP {status} {error})")
        d, px = self.d, self.proxy
        t0_tok = self.fresh_a(12)["token"]
        mark = self.logw.mark()
        px.set("oauth_error", status=status, error=error, description=f"{error} injected by the fault suite")
        t_fault = now()
        hits = [self.cached_a(t0_tok, f"{name}, fault set (no attempt yet)")]
        res = self.resource(name)
        bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
        b = [self.measure_b(f"{name}, {A} refused")]
        m, t_err = bg.join()
        check(m.get("error") == ERR_REAUTH and m.get("parameters", {}).get("credential") == A,
              f"{name}: the request gets ReauthenticationRequired", m)
        check(t_err < REQUEST_TIMEOUT - 0.5, f"{name}: at once, not after --request-timeout ({t_err:.2f}s)", t_err)
        m2, dt2 = self.timed_token(A)
        check(m2.get("error") == ERR_REAUTH and dt2 < HIT_LIMIT,
              f"{name}: the cached token is dropped too (the grant is gone): ReauthenticationRequired "
              f"({dt2 * 1000:.0f} ms)", m2)
        c = d.list_json()[A]
        check(c["state"] == "reauth-required" and c.get("last_error", "").startswith(error) and not c.get("cached"),
              f"{name}: tokenctl --json list shows reauth-required, last_error {c.get('last_error')!r}, "
              "no cached token", c)
        rc, _, err = d.tokenctl("token", A)
        check(rc == EXIT_REAUTH, f"{name}: tokenctl token exits {EXIT_REAUTH} (re-authentication needed)", (rc, err))
        b.append(self.measure_b(f"{name}, {A} reauth-required"))
        # nothing retries, not even once the provider is fine again
        px.set("pass")
        time.sleep(2.5)
        atts = px.attempts(t_fault)
        check(len(atts) == 1 and atts[0]["status"] == status and not self.logw.retries(mark),
              f"{name}: exactly one attempt, no retry scheduled", atts)
        m3, _ = self.timed_token(A, resource=res)
        check(m3.get("error") == ERR_REAUTH and d.list_json()[A]["state"] == "reauth-required",
              f"{name}: no automatic recovery: still reauth-required with a healthy provider", m3)
        # re-authentication restores it
        t0 = now()
        self.add_a(replace=True)
        m4, _ = self.timed_token(A, resource=res)
        check("error" not in m4 and d.list_json()[A]["state"] == "ok",
              f"{name}: tokenctl add --replace with a new refresh token restores {A} ({now() - t0:.1f}s)", m4)
        self.add_row(fault=f"{name} ({status})", outcome=f"ReauthenticationRequired; state reauth-required",
                     t_err=t_err, retry_after=None, attempts=len(atts), gaps=[], delays=[],
                     b_hit=max(x[0] for x in b), b_ref=max(x[1] for x in b), a_hit=max(hits),
                     recovery="add --replace")

    # -- a Retry-After beyond the cap --
    def retry_after_cap(self):
        name = "429 Retry-After: 100000"
        log(f"===== fault {name}")
        d, px = self.d, self.proxy
        t0_tok = self.fresh_a(12)["token"]
        mark = self.logw.mark()
        px.set("status", status=429, retry_after=100000)
        t_fault = now()
        hits = [self.cached_a(t0_tok, f"{name}, fault set")]
        res = self.resource(name)
        bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
        self.wait_first_attempt(t_fault, mark)
        b = [self.measure_b(f"{name}, {A} waiting")]
        m, t_err = bg.join()
        p = m.get("parameters", {})
        check(m.get("error") == ERR_UNAVAILABLE and p.get("reason") == "http_429"
              and isinstance(p.get("retry_after"), int) and 590 <= p["retry_after"] <= 600,
              f"{name}: ProviderUnavailable with retry_after {p.get('retry_after')} (Retry-After is capped at "
              f"10 minutes) after {t_err:.2f}s", m)
        hits.append(self.cached_a(t0_tok, f"{name}, {A} in a 10-minute backoff"))
        c = self.list_backoff(name, "http_429")
        time.sleep(max(0.0, t_fault + REQUEST_TIMEOUT + 1.0 - now()))
        atts = px.attempts(t_fault)
        delays = [r[2] for r in self.logw.retries(mark)]
        check(len(atts) == 1 and delays == [600.0], f"{name}: one attempt, then a backoff of {delays} s", (atts, delays))
        # The owner need not wait 10 minutes: a re-added credential starts afresh.
        px.set("pass")
        t0 = now()
        self.add_a(replace=True)
        m2, _ = self.timed_token(A, resource=res)
        check("error" not in m2 and d.list_json()[A]["state"] == "ok",
              f"{name}: tokenctl add --replace ends the backoff: tokens flow ({now() - t0:.1f}s)", m2)
        self.add_row(fault=name, outcome=f"ProviderUnavailable (http_429), backoff capped at 600 s", t_err=t_err,
                     retry_after=p.get("retry_after"), attempts=len(atts), gaps=[], delays=delays,
                     b_hit=max(x[0] for x in b), b_ref=max(x[1] for x in b), a_hit=max(hits),
                     recovery="add --replace")

    # -- the owner replaces or removes the credential while its refresh hangs --
    def owner_actions_during_stall(self):
        name = "stall + add --replace / remove"
        log(f"===== {name}")
        d, px = self.d, self.proxy
        b = []
        for action in ("replace", "remove"):
            px.set("stall")
            t_fault = now()
            res = self.resource(action)
            bg = Background(lambda: d.get_token(A, resource=res, timeout=30))
            self.wait_first_attempt(t_fault, None)
            time.sleep(0.3)
            if action == "replace":
                # the new credential goes direct: its check refresh must not hang at the proxy
                self.add_a(replace=True, direct=True)
            else:
                rc, _, err = d.tokenctl("remove", A)
                check(rc == 0, f"{name}: tokenctl remove {A} while its refresh hangs", (rc, err))
            t_done = now()
            m, _ = bg.join()
            # README: re-adding a credential ends its streams with NoSuchCredential; a pending
            # GetToken gets the same answer.
            check(m.get("error") == "io.tokend.agent.NoSuchCredential" and bg.t1 < t_done + 0.5,
                  f"{name}: the pending request ends with NoSuchCredential when the {action} is done "
                  f"({bg.t1 - t_done:+.2f}s)", m)
            att = wait_until(lambda: next((a for a in px.attempts(t_fault) if a["peer_closed"]), None), 2,
                             f"{name}: tokend to drop the hanging connection after {action}")
            check(att["t_peer_closed"] < t_done + 0.5,
                  f"{name}: the hanging transfer was cancelled by the {action} "
                  f"({att['t_peer_closed'] - t_done:+.2f}s)", att)
            b.append(self.measure_b(f"{name}, after {action}"))
            if action == "replace":
                m2, _ = self.timed_token(A, resource=self.resource(action))
                check("error" not in m2, f"{name}: the replaced credential gets tokens (direct)", m2)
                px.set("pass")
                self.add_a(replace=True)  # back behind the proxy for the remove
            else:
                m2, _ = self.timed_token(A)
                check(m2.get("error") == "io.tokend.agent.NoSuchCredential" and A not in d.list_json(),
                      f"{name}: {A} is gone", m2)
        px.set("pass")
        check(d.alive(), f"{name}: the daemon is fine")
        self.add_row(fault=name, outcome="pending request: NoSuchCredential; transfer cancelled", t_err=None,
                     retry_after=None, attempts="-", gaps=[], delays=[], b_hit=max(x[0] for x in b),
                     b_ref=max(x[1] for x in b), a_hit=None, recovery="-")

    # -- a daemon without the test CA refuses the proxy's certificate --
    def no_ca_file(self):
        log("===== a tokend without --ca-file")
        self.proxy.set("pass")
        t0 = now()
        d2 = self.ctx.tokend(name="tokend-noca", request_timeout=REQUEST_TIMEOUT)
        rc, out, err = d2.tokenctl("add", "x", "--token-endpoint", self.proxy.token_endpoint, "--client-id",
                                   "tokend-test", "--client-secret-file", self.secret,
                                   stdin="not-a-real-refresh-token\n")
        check(rc == EXIT_UNAVAILABLE and re.search("certificate", err, re.I),
              "without --ca-file the proxy's certificate (signed by the test CA) is refused, and the error says why",
              (rc, err))
        atts = self.proxy.attempts(t0)
        check(atts and all(a["outcome"] == "tls-handshake-failed" for a in atts),
              "the refusal happened in the TLS handshake: no request was sent", atts)
        check("x" not in d2.list_json(), "nothing kept")
        rc = d2.stop()
        check(rc == 0, "tokend-noca exits 0", rc)

    def print_table(self):
        def ms(x):
            return f"{x * 1000:.0f}" if isinstance(x, (int, float)) else "-"

        def sec(x):
            return f"{x:.2f}" if isinstance(x, (int, float)) else "-" if x is None else str(x)

        hdr = ("fault", "A: outcome", "t_err s", "retry_after", "attempts", "spacing s", "logged delays s",
               "A hit ms", "B hit ms", "B refresh ms", "recovery s", "RSS")
        rows = [hdr]
        for r in self.rows:
            rows.append((r["fault"], r["outcome"][:90], sec(r["t_err"]),
                         "-" if r.get("retry_after") is None else str(r["retry_after"]), str(r["attempts"]),
                         " ".join(f"{g:.2f}" for g in r["gaps"]) or "-",
                         " ".join(f"{d:.1f}" for d in r["delays"]) or "-",
                         ms(r["a_hit"]), ms(r["b_hit"]), ms(r["b_ref"]), sec(r["recovery"]), r.get("rss", "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(hdr))]
        print("\n===== provider-fault suite summary (tokend %s, --request-timeout %ds) =====" % (
            os.environ.get("TOKEND", "build-it/daemon/tokend"), REQUEST_TIMEOUT), flush=True)
        for i, row in enumerate(rows):
            print(" | ".join(c.ljust(w) for c, w in zip(row, widths)), flush=True)
            if i == 0:
                print("-+-".join("-" * w for w in widths), flush=True)
        print(flush=True)


def main(ctx):
    s = Suite(ctx)
    t_start = now()
    try:
        s.setup()
        s.transient("http 500", "status", r"http_500", status=500, proxy_outcome="http-500")
        s.transient("http 502", "status", r"http_502", status=502, proxy_outcome="http-502")
        s.transient("http 503", "status", r"http_503", status=503, proxy_outcome="http-503")
        s.transient("429 Retry-After: 2", "status", r"http_429", status=429, retry_after=2,
                    window=REQUEST_TIMEOUT + 2.4, max_attempts=3, proxy_outcome="http-429")
        s.transient("connection refused", "refused", r"connect|refused", refused=True)
        s.transient("200 non-JSON body", "nonjson", r"malformed_response|not a JSON", proxy_outcome="non-json")
        s.transient("truncated body", "truncated", r"transfer closed|remaining|partial|unexpected eof",
                    proxy_outcome="truncated")
        s.huge("64 MiB body, chunked", True, r"too large")
        s.huge("64 MiB body, Content-Length", False, r"too large|maximum file size|exceed")
        s.transient("TLS: self-signed cert", "tls_untrusted", r"certificate",
                    proxy_outcome="tls-handshake-failed")
        # curl checks the host name after the handshake: the proxy sees the peer close, no request
        s.transient("TLS: wrong host name", "tls_hostname", r"certificate|subject name|host name",
                    proxy_outcome="tls-handshake-failed|peer-closed")
        s.transient("TLS: plain HTTP answer", "tls_plain", r"SSL|TLS|wrong version|handshake",
                    proxy_outcome="plain-http-on-tls")
        s.slow()
        s.stall()
        s.reauth("invalid_grant", 400, "invalid_grant")
        s.reauth("invalid_client", 401, "invalid_client")
        s.retry_after_cap()
        s.owner_actions_during_stall()
        s.no_ca_file()
        b_total = s.srv_b.refresh_count() - s.b_refreshes0
        check(b_total >= 2 * len(s.rows), f"{B}'s refreshes all reached its own server ({b_total})", b_total)
        check(s.d.alive(), "the daemon survived every fault")
    finally:
        if s.rows:
            s.print_table()
        for n in s.notes:
            log(f"note: {n}")
        log(f"suite body took {now() - t_start:.1f}s")


run_test(main, __doc__)
