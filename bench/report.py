#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/report.py: turns bench/run's results (one JSON line per measurement
and run) into one markdown table, printed and written with the machine it ran
on. Every figure is the median over the runs, with min-max; every ratio or
difference is computed within each run first, then summarised the same way.

    report.py RESULTS.jsonl OUT.md RUNS SECONDS [OIDC_AGENT_VERSION]"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

results_path, out_path, runs, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
oidc_version = sys.argv[5] if len(sys.argv) > 5 else None

by_item = {}
with open(results_path) as f:
    for line in f:
        rec = json.loads(line)
        by_item.setdefault(rec["item"], []).append(rec["data"])


def series(item, fn):
    """fn(data) for each run of item, skipping runs where it is None."""
    out = []
    for d in by_item.get(item, []):
        try:
            v = fn(d)
        except (KeyError, TypeError, ZeroDivisionError):
            v = None
        if v is not None:
            out.append(v)
    return out


def fmt_num(v, digits):
    if abs(v) >= 1000 and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fig(vals, unit="", digits=1):
    """median (min-max) unit; one value: just it."""
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    s = fmt_num(med, digits)
    if len(vals) > 1:
        s += f" ({fmt_num(min(vals), digits)}–{fmt_num(max(vals), digits)})"
    return s + (f" {unit}" if unit else "")


def verdict(vals, ok):
    if not vals:
        return "n/a"
    return "yes" if ok(statistics.median(vals)) else "**no**"


rows = []  # (item, what, tokend, baseline, compare, target, met)


def row(*cells):
    rows.append(cells)


# 1. latency
lat = "latency"
if lat in by_item:
    tm = series(lat, lambda d: d["tok_med"])
    fm = series(lat, lambda d: d["floor_med"])
    rm = series(lat, lambda d: d["tok_med"] / d["floor_med"])
    row("1", "Cache-hit `GetToken`, persistent connection: median", fig(tm, "µs"),
        f"AF_UNIX echo, same sizes: {fig(fm, 'µs')}", fig(rm, "×", 2), "≤ 1.5×", verdict(rm, lambda v: v <= 1.5))
    tp = series(lat, lambda d: d["tok_p99"])
    fp = series(lat, lambda d: d["floor_p99"])
    rp = series(lat, lambda d: d["tok_p99"] / d["floor_p99"])
    row("1", "… p99", fig(tp, "µs"), f"floor p99: {fig(fp, 'µs')}", fig(rp, "×", 2), "≤ 3×",
        verdict(rp, lambda v: v <= 3))

# 2. throughput
for c in (1, 16, 256):
    it = f"throughput-{c}"
    if it not in by_item:
        continue
    t = series(it, lambda d: d["rps"])
    f_ = series(it, lambda d: d["floor_rps"])
    r = series(it, lambda d: d["rps"] / d["floor_rps"])
    target, met = ("≥ 30,000/s", verdict(t, lambda v: v >= 30000)) if c == 16 else ("", "")
    row("2", f"Cache-hit throughput, {c} client{'s' if c > 1 else ''} (2 cores)", fig(t, "/s", 0),
        f"AF_UNIX echo server: {fig(f_, '/s', 0)}", fig(r, "× floor", 2), target, met)

# 1-2 with a journal: the same cache hits, audit records to a journald of their own
if "journal" in by_item:
    tm = series("journal", lambda d: d["latency"]["tok_med"])
    fm = series("journal", lambda d: d["latency"]["floor_med"])
    rm = series("journal", lambda d: d["latency"]["tok_med"] / d["latency"]["floor_med"])
    row("1", "… the same, audit records to a journald: median", fig(tm, "µs"),
        f"AF_UNIX echo, same sizes: {fig(fm, 'µs')}", fig(rm, "×", 2), "≤ 1.5×", verdict(rm, lambda v: v <= 1.5))
    rp = series("journal", lambda d: d["latency"]["tok_p99"] / d["latency"]["floor_p99"])
    row("1", "… with a journald: p99", fig(series("journal", lambda d: d["latency"]["tok_p99"]), "µs"),
        f"floor p99: {fig(series('journal', lambda d: d['latency']['floor_p99']), 'µs')}", fig(rp, "×", 2), "≤ 3×",
        verdict(rp, lambda v: v <= 3))
    t = series("journal", lambda d: d["throughput"]["rps"])
    row("2", "… throughput, 16 clients, audit records to a journald", fig(t, "/s", 0),
        f"AF_UNIX echo server: {fig(series('journal', lambda d: d['throughput']['floor_rps']), '/s', 0)}",
        fig(series("journal", lambda d: d["throughput"]["rps"] / d["throughput"]["floor_rps"]), "× floor", 2),
        "≥ 30,000/s", verdict(t, lambda v: v >= 30000))
if "journal-audit" in by_item:
    a = by_item["journal-audit"][0]
    row("1", "… every issue of those runs on the journal's record (sum of `TOKEND_COUNT`)",
        f"{a['counted']:,} of {a['calls']:,} calls, in {a['records']:,} records",
        f"journald suppressed: {a['suppressed']:,}", f"{a['calls'] / max(a['records'], 1):,.0f} issues a record",
        "all", "yes" if a["counted"] == a["calls"] and a["suppressed"] == 0 else "**no**")

# 3. whole process
if "spawn" in by_item:
    tc = series("spawn", lambda d: d["tokenctl"]["med"] / 1000)
    tt = series("spawn", lambda d: d["true"]["med"] / 1000)
    diff = series("spawn", lambda d: (d["tokenctl"]["med"] - d["true"]["med"]) / 1000)
    row("3", "`tokenctl token NAME`, whole process: median", fig(tc, "ms", 2), f"`/bin/true`: {fig(tt, 'ms', 2)}",
        fig(diff, "ms", 2) + " more", "≤ +1 ms", verdict(diff, lambda v: v <= 1.0))
    oc = series("spawn", lambda d: d["oidc"]["med"] / 1000 if d["oidc"] else None)
    ro = series("spawn", lambda d: d["tokenctl"]["med"] / d["oidc"]["med"] if d["oidc"] else None)
    row("3", "… against oidc-agent (cache hit)", fig(tc, "ms", 2), f"`oidc-token NAME`: {fig(oc, 'ms', 2)}",
        fig(ro, "×", 2), "faster", verdict(ro, lambda v: v < 1.0))

# 4. storm
if "storm" in by_item:
    n = series("storm", lambda d: d["storm"]["server_refreshes"])
    clients = series("storm", lambda d: d["storm"]["clients"])
    errs = series("storm", lambda d: d["storm"]["errors"])
    row("4", f"Refresh storm: {int(max(clients)) if clients else '?'} clients, expired token: refreshes at the server",
        fig(n, "", 0) + (f" ({int(sum(errs))} errors)" if errs and sum(errs) else ""), "", "", "exactly 1",
        "yes" if n and all(v == 1 for v in n) else "**no**")
    last = series("storm", lambda d: d["storm"]["last_us"] / 1000)
    srv = series("storm", lambda d: d["server"]["med"] / 1000)
    diff = series("storm", lambda d: (d["storm"]["last_us"] - d["server"]["med"]) / 1000)
    row("4", "… time until the last client is served", fig(last, "ms", 1),
        f"server's refresh latency: {fig(srv, 'ms', 1)}", fig(diff, "ms", 1) + " more", "≤ +50 ms",
        verdict(diff, lambda v: v <= 50))

# 5. head-of-line
if "hol" in by_item:
    busy = series("hol", lambda d: d["busy"]["tok_p99"])
    alone = series("hol", lambda d: d["alone"]["tok_p99"])
    r = series("hol", lambda d: d["busy"]["tok_p99"] / d["alone"]["tok_p99"])
    bref = series("hol", lambda d: d["b_refreshes"])
    row("5", "Head-of-line: A's cache-hit p99 while B's provider takes 2 s per refresh", fig(busy, "µs"),
        f"A alone: {fig(alone, 'µs')}", fig(r, "×", 2), "≤ 2×", verdict(r, lambda v: v <= 2))
    bm = series("hol", lambda d: d["busy"]["tok_med"])
    am = series("hol", lambda d: d["alone"]["tok_med"])
    row("5", f"… A's median (B: {fig(bref, '', 0)} slow refreshes per run, 64 callers waiting)", fig(bm, "µs"),
        f"A alone: {fig(am, 'µs')}", fig(series('hol', lambda d: d['busy']['tok_med'] / d['alone']['tok_med']), '×', 2),
        "", "")

# 6. rotation
if "rotation" in by_item:
    t = series("rotation", lambda d: d["tokend"]["med"] / 1000)
    s = series("rotation", lambda d: d["server"]["med"] / 1000)
    diff = series("rotation", lambda d: (d["tokend"]["med"] - d["server"]["med"]) / 1000)
    row("6", "Refresh with rotation, request to token handed out (median)", fig(t, "ms", 2),
        f"server's refresh alone: {fig(s, 'ms', 2)}", fig(diff, "ms", 2) + " more", "≤ +5 ms",
        verdict(diff, lambda v: v <= 5))
    o = series("rotation", lambda d: d["oidc"]["med"] / 1000 if d["oidc"] else None)
    od = series("rotation", lambda d: (d["oidc"]["med"] - d["server"]["med"]) / 1000 if d["oidc"] else None)
    if o:
        row("6", "… oidc-agent: `oidc-token -t 3600` (forces a refresh), whole process", fig(o, "ms", 1),
            f"server's refresh alone: {fig(s, 'ms', 2)}", fig(od, "ms", 1) + " more", "(comparison)", "")

# 7. scale
MB = 1024.0
if "scale-idle" in by_item:
    a = series("scale-idle", lambda d: d["anon_kb"] / MB)
    rss = series("scale-idle", lambda d: d["rss_kb"] / MB)
    row("7", "Idle daemon, nothing loaded: private memory (RssAnon)", fig(a, "MB", 2), f"RSS: {fig(rss, 'MB', 2)}",
        "", "≤ 4 MB", verdict(a, lambda v: v <= 4))
if "scale" in by_item:
    d0 = by_item["scale"][0]
    creds, per = d0["creds"], d0["tokens_per_cred"]
    ntok = creds * per
    idle = by_item.get("scale-idle", [])
    idle_anon = statistics.median(x["anon_kb"] for x in idle) if idle else 0
    st = series("scale", lambda d: d["start_ms"])
    loaded = series("scale", lambda d: d.get("loaded"))
    row("7", f"Start-up with {creds:,} credentials (keyring), exec to first answer", fig(st, "ms", 1),
        f"credentials loaded: {fig(loaded, '', 0)}", "", "", "")
    ca = series("scale", lambda d: d["mem_creds"]["anon_kb"] / MB)
    cr = series("scale", lambda d: d["mem_creds"]["rss_kb"] / MB)
    row("7", f"{creds:,} credentials, no token cached: RssAnon", fig(ca, "MB", 2),
        f"RSS: {fig(cr, 'MB', 2)}", "", "", "")
    ta = series("scale", lambda d: d["mem_tokens"]["anon_kb"] / MB)
    tr = series("scale", lambda d: d["mem_tokens"]["rss_kb"] / MB)
    cached = series("scale", lambda d: d["cached"])
    row("7", f"{creds:,} credentials × {per} tokens each ({fig(cached, '', 0)} cached): RssAnon",
        fig(ta, "MB", 2), f"RSS: {fig(tr, 'MB', 2)}", "", "≤ 64 MB", verdict(ta, lambda v: v <= 64))
    per_tok = series("scale", lambda d: (d["mem_tokens"]["anon_kb"] - d["mem_creds"]["anon_kb"]) * 1024
                     / max(1, d["fill"]["ok"]))
    per_cred = series("scale", lambda d: (d["mem_creds"]["anon_kb"] - idle_anon) * 1024 / d["creds"])
    row("7", "… RssAnon per cached token", fig(per_tok, "B", 0), f"per credential: {fig(per_cred, 'B', 0)}", "", "",
        "")
    fs = series("scale", lambda d: d["fill"]["seconds"])
    cpu = series("scale", lambda d: d["fill_cpu_ticks"] / d["hz"] * 1e6 / max(1, d["fill"]["ok"]))
    row("7", "Filling the cache (each token one refresh at the server): daemon CPU per token", fig(cpu, "µs", 0),
        f"wall time for all: {fig(fs, 's', 1)}", "", "", "")
    keep = series("scale", lambda d: d["fill_cpu_ticks"] / d["hz"] / max(1, d["fill"]["ok"]) * ntok / (0.775 * 3600)
                  * 100)
    row("7", f"… keeping {ntok:,} one-hour tokens fresh (a refresh at ~77.5 % of each lifetime)",
        fig(keep, "% of a core", 1), f"from the CPU per token above: {ntok / (0.775 * 3600):.0f} refreshes/s", "", "",
        "")
    ic = series("scale", lambda d: d["idle_cpu_ticks"] / d["hz"] / d["idle_s"] * 100)
    iw = series("scale", lambda d: d["idle_ctxsw"] / d["idle_s"])
    row("7", f"Idle with {fig(cached, '', 0)} tokens in the refresh timer heap (one timer): daemon CPU",
        fig(ic, "%", 2), f"wake-ups: {fig(iw, '/s', 1)}", "", "", "")
    if all("hit" in d for d in by_item["scale"]):
        hm = series("scale", lambda d: d["hit"]["tok_med"])
        hp = series("scale", lambda d: d["hit"]["tok_p99"])
        fm = series("scale", lambda d: d["hit"]["floor_med"])
        row("7", f"Cache-hit `GetToken` among {fig(cached, '', 0)} entries: median (p99)",
            f"{fig(hm, 'µs', 1)} ({fig(hp, 'µs', 1)})", f"AF_UNIX echo: {fig(fm, 'µs', 1)}", "", "", "")
    if all("again" in d for d in by_item["scale"]):
        ag = series("scale", lambda d: d["again"]["seconds"] * 1e6 / max(1, d["again"]["ok"]))
        ar = series("scale", lambda d: d["again_refreshes"])
        row("7", f"… the fill's {ntok:,} requests again (all must hit): wall time per request, 32 connections",
            fig(ag, "µs", 1), f"refreshes at the server meanwhile: {fig(ar, '', 0)}", "", "", "")
    if all("add_ms" in d for d in by_item["scale"]):
        am = series("scale", lambda d: d["add_ms"])
        row("7", f"`tokenctl add` with {creds:,} credentials held (the state file rewritten whole)",
            fig(am, "ms", 1), "", "", "", "")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001: the machine description is best effort
        return ""


cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1") or platform.processor()
mem_gb = sh("awk '/^MemTotal/ {printf \"%.0f\", $2 / 1048576}' /proc/meminfo")
machine = (f"{cpu}, {os.cpu_count()} cores, {mem_gb} GB RAM; "
           f"Linux {platform.release()}; {sh('. /etc/os-release && echo $PRETTY_NAME')}; "
           f"{sh('node --version') and 'node ' + sh('node --version')}; "
           f"{oidc_version or 'oidc-agent: not measured'}")
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

lines = ["| # | Measurement | tokend | Baseline (same run) | tokend vs baseline | Target | Met |",
         "|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append("| " + " | ".join(str(c) for c in r) + " |")
table = "\n".join(lines)

extra = []
if "scale-add" in by_item:
    d0 = by_item["scale-add"][0]
    extra.append(f"- Scale: caps are 16,384 credentials (`CREDENTIALS_MAX`, daemon/manager.h), 131,072 cached "
                 f"tokens in all (`TOKENS_MAX`, daemon/engine.h) and 1,024 per credential "
                 f"(`ENTRIES_PER_CREDENTIAL_MAX`). Set-up, not measured: {d0['creds']:,} grants minted at the "
                 f"server in {d0.get('mint_s', 0):.0f} s; one credential added through the API, the others "
                 f"written beside it into the state file and the keyring in {d0.get('seed_s', 0):.1f} s "
                 f"(as many `AddCredential` calls would each rewrite the whole state file).")
notes = "\n".join(extra)

doc = f"""# tokend benchmark results

Generated by `bench/run` (see bench/README.md for what each row measures and how).

- Machine: {machine}
- Date: {when}; {runs} runs of each measurement, {seconds} s in all
- Figures: median over the runs (min–max across runs). Ratios and differences are computed
  within each run, from two things measured in that run, then summarised the same way.

{table}

{notes}
"""
with open(out_path, "w") as f:
    f.write(doc)
print(table)
if notes:
    print()
    print(notes)
