#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Agent identity: the same program is a different agent in another unit or cgroup, and another
program is not the agent at all. Real cgroups (root): X = /tokend-test-T.slice/agent-T.scope (a
systemd unit, agent-T.scope, as libsystemd reads it from the path), Y = /tokend-test-T.slice/box-T
(no unit). Executables: this interpreter, a copy of it at another path, tests/integration/pidreuse.

Policy (first match wins), --consent-timeout 3:
  10-unit.conf    "in-unit":  Unit=agent-T.scope + Exe=this interpreter, Mode=ask,
                              [Credential cred] Scopes=read write
  20-box.conf     "in-box":   Cgroup=/tokend-test-T.slice/box-*, Mode=allow, [Credential cred] Scopes=read
  30-other.conf   "other-exe": Exe=the copy, Mode=deny, [Credential *] Scopes=*
  40-python.conf  "python-outside": Exe=this interpreter + Uid=ours, Mode=ask,
                              [Credential cred] Scopes=read write
(a) The interpreter in X: WhoAmI unit agent-T.scope, agent in-unit; its request waits (pending
    shows agent, unit, exe, pid); approved, it gets a token; another process of it in X gets one at
    once (the grant is the agent's).
(b) The same interpreter outside X is agent python-outside: the grant does not cover it; its request
    waits as python-outside's and, denied, ends in ConsentDenied.
(c) The copy, in X and outside: agent other-exe, PolicyDenied (Unit= alone does not make it in-unit).
(d) In Y (no unit): the interpreter and the copy are both in-box (Cgroup=, the first match): a token
    with "read" at once; ["write"] -> ScopeNotAllowed.
(e) pidreuse (a C client; no agent matches) is an unknown caller: its request waits (no agent, its
    exe); approved, it gets a token; the grant matches uid, exe and unit exactly: another pidreuse
    process outside any unit gets a token at once, but pidreuse in X (unit agent-T.scope) is asked
    again (ConsentRequired).
(f) PID reuse: a pidreuse process covered by that grant connects and exits, and /bin/sleep takes its
    PID (clone3 set_tid) before the GetToken on its connection: CallerGone or a closed connection,
    never a token and never a decision about someone (ConsentRequired, PolicyDenied). Control: while
    it lives, the same call gets a token.
"""
import json
import os
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import approve_grant, ask, deny, expect_error, expect_token, find_grant  # noqa: E402
from harness import (ERR_CONSENT_DENIED, ERR_CONSENT_REQUIRED, ERR_POLICY_DENIED, ERR_SCOPE_NOT_ALLOWED,  # noqa: E402
                     PYTHON_EXE, REPO, Cgroups, Skip, TestFailure, _die_with_parent, agent_policy, check, log,
                     move_to_cgroup, own_cgroup, run_test)

CRED = "cred"
TIMEOUT = 3
PIDREUSE = os.environ.get("PIDREUSE") or os.path.join(REPO, "build-it", "tests", "integration", "pidreuse")
ERR_CALLER_GONE = "io.tokend.agent.CallerGone"


def parse_facts(text):
    facts = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key.endswith("REPLY"):
            facts[key] = json.loads(value)
        elif key:
            facts[key] = value
    return facts


def pidreuse_env(scopes):
    return dict(os.environ, PIDREUSE_CALL=json.dumps(
        {"method": "io.tokend.agent.GetToken", "parameters": {"credential": CRED, "scopes": scopes}}))


def pidreuse(args, env, cgroup=None, timeout=60):
    """Runs pidreuse ARGS to the end; (status, facts, stdout, stderr)."""
    def pre():
        _die_with_parent()
        if cgroup:
            move_to_cgroup(cgroup)
    r = subprocess.run([PIDREUSE, *args], capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=pre)
    return r.returncode, parse_facts(r.stdout), r.stdout, r.stderr


def pidreuse_bg(args, env, cgroup=None):
    def pre():
        _die_with_parent()
        if cgroup:
            move_to_cgroup(cgroup)
    return subprocess.Popen([PIDREUSE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=pre)


def main(ctx):
    if not os.path.exists(PIDREUSE):
        raise TestFailure(f"{PIDREUSE} missing: build it (PIDREUSE)")
    cgs = Cgroups(ctx)  # Skip unless root with a cgroup v2 hierarchy
    tag = secrets.token_hex(4)
    slice_ = f"tokend-test-{tag}.slice"
    unit = f"agent-{tag}.scope"
    x = cgs.make(f"{slice_}/{unit}")
    y = cgs.make(f"{slice_}/box-{tag}")
    copy = ctx.python_copy("other")
    pr_exe = os.path.realpath(PIDREUSE)
    uid = os.getuid()
    srv = ctx.oauth_server()
    d = ctx.tokend(policy={
        "10-unit.conf": agent_policy("in-unit", mode="ask", unit=unit, exe=PYTHON_EXE,
                                     credentials={CRED: "read write"}),
        "20-box.conf": agent_policy("in-box", mode="allow", cgroup=f"/{slice_}/box-*", credentials={CRED: "read"}),
        "30-other.conf": agent_policy("other-exe", mode="deny", exe=copy, credentials={"*": "*"}),
        "40-python.conf": agent_policy("python-outside", mode="ask", exe=PYTHON_EXE, uid=uid,
                                       credentials={CRED: "read write"}),
    }, consent_timeout=TIMEOUT)
    d.add(CRED, srv)

    log("=== (a) the interpreter in unit X")
    a1 = ctx.caller(d.socket, cgroup=x, name="python-in-X")
    w = a1.whoami()
    check(w.get("unit") == unit and w.get("cgroup") == f"/{slice_}/{unit}" and w.get("exe") == PYTHON_EXE,
          f"in X: unit {unit}, cgroup /{slice_}/{unit}, exe the interpreter", w)
    check(w["policy"].get("name") == "in-unit" and w["policy"].get("mode") == "ask", "in X: agent in-unit (ask)", w)
    req = ask(d, a1, CRED, ["write"])
    c = req["caller"]
    check(req.get("agent") == "in-unit" and c.get("unit") == unit and c.get("exe") == PYTHON_EXE and c["pid"] == a1.pid,
          "pending: agent in-unit, its unit, exe and pid", req)
    g = approve_grant(d, req["id"])
    expect_token(a1.reply(), "in X, approved", ["write"])
    check(g.get("agent") == "in-unit", "the grant is agent in-unit's", g)
    a2 = ctx.caller(d.socket, cgroup=x, name="python-in-X-2")
    t0 = time.monotonic()
    expect_token(a2.get_token(CRED, ["write"]), "another process of in-unit (in X), covered by the grant", ["write"])
    check(time.monotonic() - t0 < TIMEOUT - 1, "... at once")
    a2.exit()

    log("=== (b) the same interpreter outside X")
    o = ctx.caller(d.socket, name="python-outside")
    w = o.whoami()
    check(w.get("unit") != unit and w.get("cgroup") == own_cgroup() and w["policy"].get("name") == "python-outside",
          "outside X: agent python-outside", w)
    req = ask(d, o, CRED, ["write"])
    check(req.get("agent") == "python-outside", "its request waits as python-outside's: in-unit's grant does not cover "
          "it", req)
    deny(d, req["id"])
    expect_error(o.reply(), ERR_CONSENT_DENIED, "outside X, denied")
    o.exit()

    log("=== (c) another executable, in X and outside")
    for label, cg in (("in X", x), ("outside", None)):
        oc = ctx.caller(d.socket, python=copy, cgroup=cg, name=f"copy-{label}")
        w = oc.whoami()
        check(w.get("exe") == copy and w["policy"].get("name") == "other-exe",
              f"the copy {label}: agent other-exe (exe {copy})", w)
        if cg:
            check(w.get("unit") == unit, "the copy in X has unit " + unit, w)
        p = expect_error(oc.get_token(CRED, ["write"]), ERR_POLICY_DENIED, f"the copy {label}")
        check(p.get("agent") == "other-exe", "... PolicyDenied names other-exe", p)
        oc.exit()

    log("=== (d) cgroup Y")
    for label, py in (("the interpreter", None), ("the copy", copy)):
        b = ctx.caller(d.socket, python=py, cgroup=y, name=f"{'copy' if py else 'python'}-in-Y")
        w = b.whoami()
        check(w.get("cgroup") == f"/{slice_}/box-{tag}" and not w.get("unit") and w["policy"].get("name") == "in-box",
              f"{label} in Y: cgroup /{slice_}/box-{tag}, no unit, agent in-box", w)
        t0 = time.monotonic()
        expect_token(b.get_token(CRED, ["read"]), f"{label} in Y: ['read']", ["read"])
        check(time.monotonic() - t0 < TIMEOUT - 1, "... at once (Mode=allow)")
        p = expect_error(b.get_token(CRED, ["write"]), ERR_SCOPE_NOT_ALLOWED, f"{label} in Y: ['write']")
        check(p.get("allowed") == ["read"], "... allowed [read]", p)
        b.exit()

    log("=== (e) an unknown caller: pidreuse")
    rc, facts, out, err = pidreuse(["whoami", d.socket], os.environ)
    w = (facts.get("REPLY") or {}).get("parameters", {})
    check(rc == 0 and w.get("exe") == pr_exe and "name" not in w.get("policy", {"name": "?"})
          and w["policy"].get("mode") == "ask", "pidreuse is an unknown caller (no agent name, mode ask)",
          (rc, out, err))
    env = pidreuse_env(["read"])
    p = pidreuse_bg(["call", d.socket], env)
    try:
        req = d.wait_pending(lambda r: r["caller"].get("exe") == pr_exe, what="pidreuse's request")
        check(req.get("agent") is None and not req["caller"].get("unit") and req["caller"]["uid"] == uid,
              "pending: no agent, pidreuse's exe and uid, no unit", req)
        ug = approve_grant(d, req["id"])
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    expect_token(parse_facts(out).get("REPLY", {}), "pidreuse approved", ["read"])
    m = ug.get("match") or {}
    check(ug.get("agent") is None and m.get("uid") == uid and m.get("exe") == pr_exe and not m.get("unit"),
          "the grant matches the unknown caller exactly: uid, exe, no unit", ug)
    t0 = time.monotonic()
    rc, facts, out, err = pidreuse(["call", d.socket], env)
    expect_token(facts.get("REPLY", {}), "another pidreuse process (same uid, exe, no unit)", ["read"])
    check(time.monotonic() - t0 < TIMEOUT - 0.5, "... at once")
    t0 = time.monotonic()
    p = pidreuse_bg(["call", d.socket], env, cgroup=x)
    try:
        req = d.wait_pending(lambda r: r["caller"].get("exe") == pr_exe, what="pidreuse in X to be asked")
        check(req["caller"].get("unit") == unit and req.get("agent") is None,
              f"pidreuse in X: unknown caller with unit {unit}, asked (the grant is for no unit)", req)
        out, err = p.communicate(timeout=TIMEOUT + 30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    expect_error(parse_facts(out).get("REPLY", {}), ERR_CONSENT_REQUIRED, "pidreuse in X, nobody answers")

    log("=== (f) PID reuse")
    rc, facts, out, err = pidreuse(["control", d.socket], env)
    check(rc == 0, "pidreuse control ran", (rc, err))
    expect_token(facts.get("REPLY", {}), "control: the call on a live pidreuse-A's connection", ["read"])
    counted = 0
    for i in range(8):
        rc, facts, out, err = pidreuse(["reuse", d.socket, "accepted"], env)
        if rc == 77:
            raise Skip(f"(f) clone3(set_tid) refused: {err.strip()}; (a)-(e) passed")
        if rc == 3:
            log("PID taken by someone else before clone3: run not counted")
            continue
        check(rc == 0 and facts.get("A_PID") == facts.get("B_PID"), f"reuse #{i + 1}: B has A's PID", (rc, out, err))
        m = facts.get("REPLY")
        if m is None:
            check("CLOSED" in facts, f"reuse #{i + 1}: no reply: the connection was closed", out)
        else:
            check("token" not in (m.get("parameters") or {}) and m.get("error") == ERR_CALLER_GONE,
                  f"reuse #{i + 1}: CallerGone, not a token nor a decision about the new process", m)
        counted += 1
    check(counted >= 5, f"{counted} PID-reuse runs counted")
    check(find_grant(d, ug["id"]) is not None, "the unknown caller's grant is still in force (it was not the point)")
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
