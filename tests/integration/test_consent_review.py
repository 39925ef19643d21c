#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Regression tests for the consent review: each case is a bug the review found (scripts of
/tmp/review-x), fixed in "consent: a reload judges waiting requests again ...". Every case has a
daemon of its own (--consent-timeout 60, so a request that waits is never answered by the timeout
during a case) and a policy with agent "asker" = this interpreter and uid, Mode=ask. Requests come
from caller processes (vclient.py); the owner is tokenctl or an owner copy of the interpreter.
A case that fails does not stop the others; the test fails at the end, naming every failed case.

1. A reload judges waiting requests again.
   1a/1b [Credential cred] Scopes=read write; a request without scopes waits for [read, write];
         the policy is narrowed to Scopes=read and reloaded (1a: `tokenctl reload`, 1b: SIGHUP):
         the request keeps waiting, ListPending shows it narrowed to [read]; approved, it gets
         a token whose introspected scope is "read" alone (the grant: [read]).
   1c    reloaded to Mode=deny: the waiting request gets PolicyDenied at once (no approval), it
         leaves pending, and `tokenctl approve` of its id exits 4.
   1d    reloaded without the [Credential cred] section: PolicyDenied at once, likewise.
   1e    reloaded to Mode=allow: the waiting request gets its token at once, no approval, no grant.
2. The cover loop (root, cgroup v2): two processes of agent asker wait for [read]; a reload puts
   the second one (moved to a cgroup of its own) under another agent (Mode=deny); approving the
   first one's request must not answer the second one with a token (it gets ConsentRequired).
3. grants.json tampering (daemon stopped, file edited, daemon started); two time grants, G1 [read]
   and G2 [openid]. Control: untouched, both are listed and G1 covers [read]. G1 with
   all_scopes "false" (a string), all_scopes 1, resource 5, or expires = created + 40 days: G1 is
   not listed (G2 is), and requests for [write] and for [read] wait. A grants.json over 4 MiB:
   tokend starts, lists no grant, logs an error, and a request for [openid] waits.
4. `approve --once --scope write` of a request for [read]: ConsentDenied; the single-use grant is
   not listed afterwards, and a later request for [write] waits.
5. RemoveCredential of a credential with a grant: an audit record event=grant,
   reason=credential-removed, with that grant's id (TOKEND_AUDIT_JOURNAL=0, set here for that
   daemon: the harness does not set it; read back with `tokenctl audit --json --state-dir`).
6. Unknown callers of the owner's uid, from 9 executable paths (links to a copy of the
   interpreter), 8 requests each: at most 8 of the 72 wait, the others get ConsentRequired ("too
   many") at once; agent asker can still queue a request afterwards.
7. MaxLifetime=1m and min_ttl=3600 in ask mode: LifetimeTooShort at once; no pending request (no
   "pending" event to a watcher, ListPending empty), no grant.
8. A Watch stream of an owner process (a copy of the interpreter) that a reload makes an agent
   ends with org.varlink.service.PermissionDenied; another owner's Watch goes on.

Arguments (for debugging): case names (e.g. 1a 3) to run only those.
"""
import copy
import json
import os
import re
import secrets
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import (approve, approve_grant, ask, deny, expect_error, expect_token, find_grant,  # noqa: E402
                        introspected_scopes)
from harness import (ERR_CONSENT_DENIED, ERR_CONSENT_REQUIRED, ERR_PERMISSION_DENIED, ERR_POLICY_DENIED,  # noqa: E402
                     EXIT_NO_SUCH, PYTHON_EXE, TOKENCTL, VCLIENT, Cgroups, LineReader, Skip, TestFailure,
                     _die_with_parent, agent_policy, check, log, python_env, run_test, stop_pid,
                     test_agent_policy, wait_until)

CRED = "cred"
AGENT = "asker"
TIMEOUT = 60  # consent timeout: longer than any case waits for an answer
AT_ONCE = 5  # an answer "at once": within this many seconds (far below TIMEOUT)
ERR_LIFETIME = "io.tokend.agent.LifetimeTooShort"
DAY_USEC = 86400 * 10**6


# ---------------------------------------------------------------------------
# helpers

def ask_policy(scopes="read write", mode="ask", credentials=None, **kw):
    """Agent asker: this interpreter and uid."""
    return test_agent_policy(AGENT, mode=mode, credentials=credentials or {CRED: scopes}, **kw)


def new_daemon(ctx, srv, name, policy, env=None):
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        d = ctx.tokend(name=name, policy=policy, consent_timeout=TIMEOUT)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    d.add(CRED, srv)
    return d


def finish(d, *callers):
    for c in callers:
        c.exit()
    rc = d.stop()
    check(rc == 0, f"tokend '{d.name}' exits 0 on SIGTERM", rc)


def policy_loads(d):
    with open(d.log_path, errors="replace") as f:
        return len(re.findall(r"Policy: \d+ agents from", f.read()))


def reload(d, how):
    """Reloads the policy (`tokenctl reload` or SIGHUP) and returns once the daemon has loaded it."""
    if how == "tokenctl":
        rc, out, err = d.tokenctl("reload")
        check(rc == 0, "tokenctl reload exits 0", (rc, out, err))
        return
    n = policy_loads(d)
    d.sighup()
    wait_until(lambda: policy_loads(d) > n, 10, "the daemon to log the policy loaded after SIGHUP")


def still_waits(caller, what, seconds=1.0):
    """The caller's call in progress has no answer after `seconds`."""
    got = caller.has_result(seconds)
    check(not got, f"{what}: still waits (no answer within {seconds}s)",
          caller.result(5) if got else None)


def answered_at_once(caller, what, seconds=AT_ONCE):
    """The caller's call in progress is answered within `seconds`; returns the reply message."""
    check(caller.has_result(seconds), f"{what}: answered at once (within {seconds}s, consent timeout {TIMEOUT}s)")
    return caller.reply(10)


def must_wait(d, caller, scopes, what):
    """A new request of the caller waits for consent (no answer within 1.5 s, listed by ListPending);
    then the owner denies it (ConsentDenied). Returns the pending request."""
    caller.start_token(CRED, scopes, timeout=TIMEOUT + 10)
    got = caller.has_result(1.5)
    check(not got, f"{what}: the request for {scopes} waits for consent (no answer within 1.5s)",
          caller.result(5) if got else None)
    req = d.wait_pending(lambda r: r["caller"]["pid"] == caller.pid, what=f"{what}: the request to be pending")
    check(req["scopes"] == scopes, f"{what}: ListPending shows it with scopes {scopes}", req)
    deny(d, req["id"])
    expect_error(caller.reply(10), ERR_CONSENT_DENIED, f"{what}: then denied")
    return req


def no_token(m, what):
    check("error" in m and "token" not in (m.get("parameters") or {}), f"{what}: an error, no token", m)


# ---------------------------------------------------------------------------
# 1. a reload judges waiting requests again

def narrow(ctx, srv, how):
    d = new_daemon(ctx, srv, f"narrow-{how}", ask_policy("read write"))
    a = ctx.caller(d.socket, name=f"narrow-{how}")
    req = ask(d, a, CRED, None, timeout=TIMEOUT + 10)
    check(req["scopes"] == ["read", "write"], "a request without scopes waits for all the policy allows: [read, write]",
          req)
    still_waits(a, "before the reload")
    d.write_policy(ask_policy("read"))
    reload(d, how)
    still_waits(a, f"after the reload ({how}) narrowing Scopes= to read")
    now = [r for r in d.pending() if r["id"] == req["id"]]
    check(len(now) == 1 and now[0]["scopes"] == ["read"],
          f"ListPending after the reload ({how}): the same request, narrowed to [read]", d.pending())
    g = approve_grant(d, req["id"])
    check(g["scopes"] == ["read"], "the approval (without --scope) grants [read] only", g)
    p = expect_token(a.reply(10), "the approved request", ["read"])
    check(introspected_scopes(srv, p["token"]) == ["read"], "the approved token's introspected scope is read alone")
    finish(d, a)


def case_1a(ctx, srv):
    narrow(ctx, srv, "tokenctl")


def case_1b(ctx, srv):
    narrow(ctx, srv, "sighup")


def refused_by_reload(ctx, srv, name, new_policy, scopes):
    d = new_daemon(ctx, srv, name, ask_policy("read write"))
    a = ctx.caller(d.socket, name=name)
    req = ask(d, a, CRED, scopes, timeout=TIMEOUT + 10)
    still_waits(a, "before the reload")
    d.write_policy(new_policy)
    reload(d, "tokenctl")
    m = answered_at_once(a, f"{name}: the waiting request, after the reload")
    expect_error(m, ERR_POLICY_DENIED, f"{name}: the waiting request, judged again by the reload")
    check(d.pending() == [], f"{name}: it left pending", d.pending())
    approve(d, req["id"], expect=EXIT_NO_SUCH)
    check(d.grants() == [], f"{name}: no grant was made", d.grants())
    finish(d, a)


def case_1c(ctx, srv):
    refused_by_reload(ctx, srv, "to-deny", ask_policy("read write", mode="deny"), ["write"])


def case_1d(ctx, srv):
    refused_by_reload(ctx, srv, "no-section", ask_policy(credentials={"other": "read write"}), None)


def case_1e(ctx, srv):
    d = new_daemon(ctx, srv, "to-allow", ask_policy("read write"))
    a = ctx.caller(d.socket, name="to-allow")
    ask(d, a, CRED, None, timeout=TIMEOUT + 10)
    still_waits(a, "before the reload")
    d.write_policy(ask_policy("read write", mode="allow"))
    reload(d, "tokenctl")
    m = answered_at_once(a, "the waiting request, after the reload to Mode=allow")
    p = expect_token(m, "the waiting request, now allowed, without an approval", ["read", "write"])
    check(introspected_scopes(srv, p["token"]) == ["read", "write"], "its token carries read and write at the server")
    check(d.pending() == [] and d.grants() == [], "nothing pending, no grant made", (d.pending(), d.grants()))
    finish(d, a)


# ---------------------------------------------------------------------------
# 2. the cover loop

def case_2(ctx, srv):
    cgs = Cgroups(ctx)  # Skip unless root with a cgroup v2 hierarchy
    tag = secrets.token_hex(4)
    slice_ = f"tokend-review-{tag}.slice"
    jail = cgs.make(f"{slice_}/jail-{tag}.scope")
    asker = ask_policy("read write")
    d = new_daemon(ctx, srv, "cover", {"50-asker.conf": asker})
    o1 = ctx.caller(d.socket, name="o1")
    o2 = ctx.caller(d.socket, cgroup=jail, name="o2-in-jail")
    for c in (o1, o2):
        check(c.whoami()["policy"].get("name") == AGENT, f"{c.name} is agent {AGENT} before the reload")
    r1 = ask(d, o1, CRED, ["read"], timeout=TIMEOUT + 10)
    r2 = ask(d, o2, CRED, ["read"], timeout=TIMEOUT + 10)
    check(r1["agent"] == AGENT and r2["agent"] == AGENT, "both requests wait as agent asker's", (r1, r2))

    d.write_policy({
        "10-jail.conf": agent_policy("jailed", mode="deny", exe=PYTHON_EXE, cgroup=f"/{slice_}/*",
                                     credentials={CRED: "read write"}),
        "50-asker.conf": asker,
    })
    reload(d, "tokenctl")
    o3 = ctx.caller(d.socket, cgroup=jail, name="o3-in-jail")
    check(o3.whoami()["policy"].get("name") == "jailed", "after the reload, a process in the jail is agent jailed")
    o3.exit()
    still_waits(o1, "o1 (still asker), after the reload")
    approve(d, r1["id"])
    expect_token(o1.reply(10), "o1, approved", ["read"])
    m = answered_at_once(o2, "o2 (now agent jailed, Mode=deny)")
    no_token(m, "o2: approving o1's request does not answer o2 with a token")
    expect_error(m, ERR_CONSENT_REQUIRED, "o2, classified differently by the reload")
    check(d.pending() == [], "nothing left pending", d.pending())
    finish(d, o1, o2)


# ---------------------------------------------------------------------------
# 3. grants.json tampering

def write_private(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def log_since_last_start(d):
    with open(d.log_path, errors="replace") as f:
        text = f.read()
    return text[text.rfind("===== start #"):]


def case_3(ctx, srv):
    d = new_daemon(ctx, srv, "grantsfile", ask_policy("*"))
    a = ctx.caller(d.socket, name="grantsfile")
    req = ask(d, a, CRED, ["read"], timeout=TIMEOUT + 10)
    g1 = approve_grant(d, req["id"])
    expect_token(a.reply(10), "G1 approved", ["read"])
    req = ask(d, a, CRED, ["openid"], timeout=TIMEOUT + 10)
    g2 = approve_grant(d, req["id"])
    expect_token(a.reply(10), "G2 approved", ["openid"])
    check(g1["kind"] == "time" and g2["kind"] == "time", "G1 [read] and G2 [openid]: time grants", (g1, g2))
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    path = os.path.join(d.state_dir, "grants.json")
    with open(path) as f:
        original = json.load(f)
    ids = [g.get("id") for g in original.get("grants", [])]
    check(sorted(ids) == sorted([g1["id"], g2["id"]]), "grants.json holds G1 and G2", original)
    entry = next(g for g in original["grants"] if g["id"] == g1["id"])
    check(entry.get("all_scopes") is False and "resource" not in entry and entry.get("scopes") == ["read"],
          "G1 in grants.json: scopes [read], all_scopes false, no resource", entry)

    log("--- control: grants.json untouched")
    d.start()
    listed = {g["id"] for g in d.grants()}
    check({g1["id"], g2["id"]} <= listed, "control: G1 and G2 are listed", listed)
    t0 = time.monotonic()
    expect_token(a.get_token(CRED, ["read"], timeout=30), "control: G1 covers [read]", ["read"])
    check(time.monotonic() - t0 < AT_ONCE, "control: ... at once")
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)

    variants = (
        ("all_scopes \"false\" (a string)", lambda g: g.update(all_scopes="false")),
        ("all_scopes 1", lambda g: g.update(all_scopes=1)),
        ("resource 5", lambda g: g.update(resource=5)),
        ("expires = created + 40 days", lambda g: g.update(expires=g["created"] + 40 * DAY_USEC)),
    )
    failed = []
    for name, mutate in variants:
        log(f"--- G1 with {name}")
        data = copy.deepcopy(original)
        mutate(next(g for g in data["grants"] if g["id"] == g1["id"]))
        write_private(path, json.dumps(data))
        try:
            d.start()
            listed = {g["id"] for g in d.grants()}
            check(g1["id"] not in listed, f"[{name}] G1 is not listed", d.grants())
            check(g2["id"] in listed, f"[{name}] G2 (intact) still is", d.grants())
            must_wait(d, a, ["write"], f"[{name}] another scope than G1's")
            must_wait(d, a, ["read"], f"[{name}] G1's own scope")
        except Exception as e:  # noqa: BLE001 - every variant runs
            log(f"variant {name} FAILED: {e}")
            failed.append(str(e))
        finally:
            if d.alive():
                rc = d.stop()
                check(rc == 0, "tokend exits 0 on SIGTERM", rc)

    log("--- grants.json over 4 MiB")
    text = json.dumps(original)
    write_private(path, text + " " * (4 * 1024 * 1024 + 1 - len(text)))
    check(os.path.getsize(path) > 4 * 1024 * 1024, "grants.json is over 4 MiB (valid JSON, G1 and G2 in it)")
    try:
        try:
            d.start()
            started, why = True, None
        except TestFailure as e:
            started, why = False, str(e)
        check(started, "tokend starts with a grants.json over 4 MiB", (why, log_since_last_start(d)[-2000:]))
        check(d.grants() == [], "... without any saved grant", d.grants())
        text = log_since_last_start(d)
        check(any("grants.json" in line and "larger than" in line for line in text.splitlines()),
              "... and logs an error about grants.json being too large", text[-2000:])
        must_wait(d, a, ["openid"], "over 4 MiB: G2's scope")
    except Exception as e:  # noqa: BLE001
        log(f"over 4 MiB FAILED: {e}")
        failed.append(f"[over 4 MiB] {e}")
    if failed:
        raise TestFailure(f"{len(failed)} of 5 grants.json variants failed:\n    " + "\n    ".join(failed))
    finish(d, a)


# ---------------------------------------------------------------------------
# 4. a single-use grant that answered nothing

def case_4(ctx, srv):
    d = new_daemon(ctx, srv, "once", ask_policy("*"))
    a = ctx.caller(d.socket, name="once")
    req = ask(d, a, CRED, ["read"], timeout=TIMEOUT + 10)
    g = approve_grant(d, req["id"], "--once", "--scope", "write")
    check(g["kind"] == "once" and g["scopes"] == ["write"], "the approval made a single-use grant for [write]", g)
    expect_error(a.reply(10), ERR_CONSENT_DENIED, "the request for [read], approved only for [write]")
    check(find_grant(d, g["id"]) is None, "the single-use grant is not listed afterwards", d.grants())
    rc, out, err = d.tokenctl("grants")
    check(rc == 0 and g["id"] not in out, "nor by `tokenctl grants`", (rc, out, err))
    must_wait(d, a, ["write"], "a later request for [write]")
    finish(d, a)


# ---------------------------------------------------------------------------
# 5. credential removal ends grants on the record

def case_5(ctx, srv):
    d = new_daemon(ctx, srv, "removal", ask_policy("*"), env={"TOKEND_AUDIT_JOURNAL": "0"})
    a = ctx.caller(d.socket, name="removal")
    req = ask(d, a, CRED, ["read"], timeout=TIMEOUT + 10)
    g = approve_grant(d, req["id"])
    expect_token(a.reply(10), "approved", ["read"])
    d.manager_ok("RemoveCredential", {"name": CRED})
    check(find_grant(d, g["id"]) is None, "the grant ended with the credential", d.grants())
    env = dict(os.environ, TOKEND_SOCKET=d.socket, XDG_STATE_HOME="/nonexistent")
    r = subprocess.run([TOKENCTL, "audit", "--json", "--state-dir", d.state_dir], capture_output=True, text=True,
                       timeout=60, env=env)
    check(r.returncode == 0, "tokenctl audit --json --state-dir exits 0", (r.returncode, r.stderr))
    recs = [x for x in map(json.loads, filter(str.strip, r.stdout.splitlines())) if x.get("source") == "file"]
    check(any(x.get("event") == "approve" and x.get("grant") == g["id"] for x in recs),
          "the fallback file (audit.log) has this daemon's records (the approval)", recs)
    ended = [x for x in recs if x.get("event") == "grant" and x.get("grant") == g["id"]]
    check(len(ended) == 1 and ended[0].get("reason") == "credential-removed" and ended[0].get("credential") == CRED
          and ended[0].get("agent_name") == AGENT,
          "one audit record event=grant reason=credential-removed with the grant's id (credential, agent)",
          ended or recs)
    finish(d, a)


# ---------------------------------------------------------------------------
# 6. one waiting cap per uid for unknown callers

FLOOD = r'''
import json, select, socket, sys
path, n, cred = sys.argv[1], int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(json.dumps({"method": "io.tokend.agent.GetToken",
                          "parameters": {"credential": cred, "scopes": ["read"]}}).encode() + b"\0")
    socks.append(s)
print(json.dumps({"sent": n}), flush=True)
bufs = {s: b"" for s in socks}
done = {}
for line in sys.stdin:
    if line.strip() != "collect":
        continue
    while True:
        left = [s for s in socks if s not in done]
        ready = select.select(left, [], [], 0.2)[0] if left else []
        if not ready:
            break
        for s in ready:
            data = s.recv(65536)
            if not data:
                done[s] = {"closed": True}
                continue
            bufs[s] += data
            if b"\0" in bufs[s]:
                done[s] = json.loads(bufs[s].split(b"\0", 1)[0])
    print(json.dumps([done.get(s, "no answer") for s in socks]), flush=True)
'''


class Flood:
    """A process (python: a path of the interpreter) that sends n GetToken calls, each on a connection
    of its own, and keeps them open; collect() says what each got so far ("no answer": none)."""

    def __init__(self, ctx, python, socket_path, n, name):
        self.proc = subprocess.Popen([python, os.path.join(ctx.tmp, "flood.py"), socket_path, str(n), CRED],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=python_env(python), preexec_fn=_die_with_parent)
        ctx._register(lambda: self.proc.poll() is None and stop_pid(self.proc), name)
        line = self.proc.stdout.readline()
        check(json.loads(line or "{}").get("sent") == n, f"{name} ({python}) sent {n} requests", line)

    def collect(self):
        self.proc.stdin.write("collect\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=15)
        self.proc.stdout.close()


def exe_paths(ctx, n):
    """n paths of the interpreter: a copy, and hard links to it (each its own /proc/PID/exe)."""
    first = ctx.python_copy("flood-0")
    paths = [first]
    for i in range(1, n):
        p = os.path.join(ctx.tmp, f"exe-flood-{i}", "python3")
        os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
        try:
            os.link(first, p)
        except OSError:
            p = ctx.python_copy(f"flood-{i}")
        paths.append(p)
    return paths


def case_6(ctx, srv):
    n_exes, per_exe = 9, 8
    total = n_exes * per_exe
    d = new_daemon(ctx, srv, "flood", ask_policy("*"))
    with open(os.path.join(ctx.tmp, "flood.py"), "w") as f:
        f.write(FLOOD)
    floods = [Flood(ctx, py, d.socket, per_exe, f"flood-{i}") for i, py in enumerate(exe_paths(ctx, n_exes))]

    def settled():
        # Every request handled: answered (as the callers see it) or waiting (as ListPending shows it).
        results = [r for fl in floods for r in fl.collect()]
        unknown = [r for r in d.pending() if r.get("agent") is None]
        answered = [r for r in results if r != "no answer"]
        return (results, unknown) if len(answered) + len(unknown) == total else None
    results, unknown = wait_until(settled, 20, f"the daemon to handle the {total} requests of unknown callers",
                                  interval=0.2)
    exes = {r["caller"].get("exe") for r in unknown}
    log(f"{len(unknown)} requests of unknown callers wait, from {len(exes)} executables")
    check(len(unknown) == 8, f"unknown callers of the owner's uid, {total} requests from {n_exes} executables: "
          "8 wait (one cap for the uid, whatever the executable)", {"waiting": len(unknown), "exes": len(exes)})
    answered = [r for r in results if r != "no answer"]
    check(len(results) - len(answered) == 8, "the callers see 8 requests unanswered", len(results) - len(answered))
    check(all(isinstance(r, dict) and r.get("error") == ERR_CONSENT_REQUIRED
              and "too many" in (r.get("parameters") or {}).get("reason", "") for r in answered),
          f"the {len(answered)} others got ConsentRequired (too many requests are waiting)",
          [r for r in answered if not (isinstance(r, dict) and r.get("error") == ERR_CONSENT_REQUIRED)][:3])
    a = ctx.caller(d.socket, name="asker-after-flood")
    check(a.whoami()["policy"].get("name") == AGENT, "the caller is agent asker")
    must_wait(d, a, ["read"], "agent asker, after the unknown callers' flood")
    for fl in floods:
        fl.close()
    wait_until(lambda: d.pending() == [], 10, "the flood's requests to leave pending when its callers exit")
    finish(d, a)


# ---------------------------------------------------------------------------
# 7. min_ttl beyond MaxLifetime= in ask mode

def case_7(ctx, srv):
    d = new_daemon(ctx, srv, "lifetime", ask_policy("*", max_lifetime="1m"))
    py = ctx.owner_python
    w = LineReader(ctx, [py, VCLIENT, d.socket, "stream", "io.tokend.manager.Watch", "{}"], "lifetime-watch",
                   env=python_env(py))
    a = ctx.caller(d.socket, name="lifetime")
    # The watcher is subscribed once it has seen a request come and go.
    req = ask(d, a, CRED, ["openid"], timeout=TIMEOUT + 10)
    deny(d, req["id"])
    expect_error(a.reply(10), ERR_CONSENT_DENIED, "a first request, denied")
    for event in ("pending", "denied"):
        w.wait_line(lambda line: json.loads(line).get("reply", {}).get("parameters", {}).get("event") == event
                    and json.loads(line)["reply"]["parameters"]["request"]["id"] == req["id"], 10,
                    f"the watcher to see {event} {req['id']}")
    a.start("io.tokend.agent.GetToken", a.token_params(CRED, ["read"], min_ttl=3600), timeout=TIMEOUT + 10)
    m = answered_at_once(a, "GetToken min_ttl=3600 with MaxLifetime=1m")
    p = expect_error(m, ERR_LIFETIME, "min_ttl beyond MaxLifetime=, in ask mode")
    check(p.get("credential") == CRED and p.get("lifetime") == 60, "LifetimeTooShort names the credential, 60 s", p)
    check(d.pending() == [], "no pending request", d.pending())
    line = w.read_line(1.0)
    check(line is None, "no event was sent to a watcher (no request was created)", line)
    check(d.grants() == [], "no grant", d.grants())
    finish(d, a)


# ---------------------------------------------------------------------------
# 8. Watch streams of callers that become agents

def case_8(ctx, srv):
    d = new_daemon(ctx, srv, "watchers", ask_policy("*"))
    a = ctx.caller(d.socket, name="watched")
    req = ask(d, a, CRED, ["read"], timeout=TIMEOUT + 10)
    wpy = ctx.python_copy("watcher")
    opy = ctx.owner_python
    ww = LineReader(ctx, [wpy, VCLIENT, d.socket, "stream", "io.tokend.manager.Watch", "{}"], "watch-becomes-agent",
                    env=python_env(wpy))
    wo = LineReader(ctx, [opy, VCLIENT, d.socket, "stream", "io.tokend.manager.Watch", "{}"], "watch-owner",
                    env=python_env(opy))
    for w in (ww, wo):
        first = json.loads(w.wait_line(lambda line: True, 10, "the first event"))
        ev = ((first.get("reply") or {}).get("parameters") or {})
        check(ev.get("event") == "pending" and ev.get("request", {}).get("id") == req["id"],
              f"{w.name}: subscribed (first event: pending {req['id']})", first)
    d.write_policy({
        "40-watcher.conf": agent_policy("watcher", mode="ask", exe=wpy, uid=os.getuid(), credentials={CRED: "*"}),
        "50-test.conf": ask_policy("*"),
    })
    reload(d, "tokenctl")
    line = ww.read_line(AT_ONCE)
    res = json.loads(line) if line else None
    check(res is not None and (res.get("reply") or {}).get("error") == ERR_PERMISSION_DENIED,
          "the Watch of the process now an agent ends with PermissionDenied", res)
    check(not (res.get("reply") or {}).get("continues"), "... as its last reply", res)
    try:
        ww.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    check(ww.proc.poll() is not None, "... and the stream is over")
    m = ctx.vclient_call(d.socket, "io.tokend.manager.ListPending", {}, python=wpy)
    check((m.get("reply") or {}).get("error") == ERR_PERMISSION_DENIED,
          "a new manager call from that executable is refused too", m)
    check(wo.proc.poll() is None, "the owner's Watch goes on")
    deny(d, req["id"])
    expect_error(a.reply(10), ERR_CONSENT_DENIED, "the watched request, denied")
    ev = json.loads(wo.wait_line(lambda line: True, 10, "the denied event"))
    check(((ev.get("reply") or {}).get("parameters") or {}).get("event") == "denied",
          "the owner's Watch sees the denial", ev)
    finish(d, a)


# ---------------------------------------------------------------------------

CASES = (
    ("1a", "reload (tokenctl) narrows a waiting request", case_1a),
    ("1b", "reload (SIGHUP) narrows a waiting request", case_1b),
    ("1c", "reload to Mode=deny refuses a waiting request", case_1c),
    ("1d", "reload without the [Credential] section refuses a waiting request", case_1d),
    ("1e", "reload to Mode=allow answers a waiting request", case_1e),
    ("2", "the cover loop after a reload", case_2),
    ("3", "grants.json tampering and size", case_3),
    ("4", "approve --once that answered nothing", case_4),
    ("5", "credential removal ends grants on the record", case_5),
    ("6", "one waiting cap per uid for unknown callers", case_6),
    ("7", "min_ttl beyond MaxLifetime= in ask mode", case_7),
    ("8", "Watch of a caller a reload makes an agent", case_8),
)


def main(ctx):
    only = set(sys.argv[1:])
    failed, skipped = [], []
    # Registered first, so run last at teardown: the failed cases again, after the daemons' logs.
    ctx._register(lambda: failed and print("\nFailed cases:\n  " + "\n  ".join(failed), flush=True),
                  "the summary of the failed cases")
    srv = ctx.oauth_server()
    for key, title, fn in CASES:
        if only and key not in only:
            continue
        log(f"===== case {key}: {title}")
        try:
            fn(ctx, srv)
            log(f"===== case {key}: passed")
        except Skip as e:
            log(f"===== case {key}: SKIPPED: {e}")
            skipped.append(f"{key} ({e})")
        except Exception as e:  # noqa: BLE001 - every case runs; the test fails at the end
            log(f"===== case {key}: FAILED\n{''.join(traceback.format_exception(e))}")
            failed.append(f"case {key} ({title}): {str(e) or type(e).__name__}")
    if failed:
        try:  # run_test does this only when main() returns: also after a failed case
            ctx.verify_daemons()
        except TestFailure as e:
            failed.append(f"at the end: {e}")
        raise TestFailure(f"{len(failed)} case(s) failed:\n  " + "\n  ".join(failed))
    if skipped:
        raise Skip("not run: " + ", ".join(skipped) + "; the other cases passed")


if __name__ == "__main__":
    run_test(main, __doc__)
