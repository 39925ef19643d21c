#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Provider faults: backoff, Retry-After, cached tokens served meanwhile, named errors.

1. Two 503s: a GetToken that needs a refresh waits through the retries (capped exponential
   backoff) and gets a token; the server saw the two failures, then one successful refresh.
2. A 429 with Retry-After: 3 holds the next attempt back for at least 3 s.
3. A provider that keeps failing: a request that needs a refresh gets
   io.tokend.agent.ProviderUnavailable (with a reason and retry_after) after --request-timeout,
   while a still-valid cached token keeps being served at once; `tokenctl list` shows the state
   "backoff" and the last error; tokenctl exits 6. When the provider recovers, tokens flow again.
4. min_ttl: a min_ttl the cached token cannot meet triggers a refresh and the fresh token meets it,
   also when min_ttl equals the provider's lifetime (one refresh); a min_ttl longer than the
   provider's lifetime gets io.tokend.agent.LifetimeTooShort.
5. URL rules: a plain-http issuer is refused without --insecure-loopback (loopback) and always
   (elsewhere), with a clear message and exit 7.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CLIENTS, EXIT_REFUSED, EXIT_UNAVAILABLE, check, log, mint, run_test  # noqa: E402
from logins import secret_file  # noqa: E402


def inject(srv, query):
    status, body = srv._request("/_test/fail?" + query, method="POST", form={})
    check(status == 200, f"injected {query}", body)


def main(ctx):
    srv = ctx.oauth_server(access_ttl=30)
    d = ctx.tokend(request_timeout=4)
    d.add("p", srv)

    # 1. two 503s, then success
    srv.reset_stats()
    inject(srv, "count=2&status=503")
    t0 = time.monotonic()
    m = d.get_token("p", ["read"], timeout=30)
    elapsed = time.monotonic() - t0
    check("error" not in m, "GetToken succeeds after two 503s", m)
    s = srv.stats()
    check(s["injected_failures"] == 2 and s["grants"]["refresh_token"] == 1,
          "server saw two failures, then one successful refresh", s)
    check(elapsed >= 1.0, "the retries were spaced by backoff (>= 0.5 s + 1 s)", elapsed)
    log(f"two 503s cost {elapsed:.2f}s")

    # 2. 429 with Retry-After: 3
    srv.reset_stats()
    inject(srv, "count=1&status=429&retry_after=3")
    t0 = time.monotonic()
    m = d.get_token("p", ["write"], timeout=30)
    elapsed = time.monotonic() - t0
    check("error" not in m, "GetToken succeeds after a 429", m)
    check(srv.stats()["injected_failures"] == 1, "the first attempt got the 429")
    # The first attempt fails at once; the second may not start before Retry-After.
    check(elapsed >= 2.9, "Retry-After: 3 was honoured", elapsed)
    check(srv.stats()["grants"]["refresh_token"] == 1, "one refresh after the 429")

    # 3. a provider that keeps failing
    cached = d.get_token("p", ["read"])
    check("error" not in cached, "a cached token exists", cached)
    inject(srv, "count=100000&status=503&retry_after=1")
    t0 = time.monotonic()
    m = d.get_token("p", ["openid"], timeout=30)
    waited = time.monotonic() - t0
    check(m.get("error") == "io.tokend.agent.ProviderUnavailable", "uncached request: ProviderUnavailable", m)
    params = m.get("parameters", {})
    check(params.get("credential") == "p" and params.get("reason") and "retry_after" in params,
          "the error names the credential, a reason and retry_after", params)
    check(3.5 <= waited <= 10, "it came after --request-timeout (4 s)", waited)
    t0 = time.monotonic()
    again = d.get_token("p", ["read"])
    check(again.get("parameters", {}).get("token") == cached["parameters"]["token"],
          "the still-valid cached token is served meanwhile", again)
    check(time.monotonic() - t0 < 2, "and at once")
    c = d.list_json()["p"]
    check(c["state"] == "backoff" and c.get("last_error"), "tokenctl list shows backoff and the last error", c)
    rc, out, err = d.tokenctl("token", "p", "--scope", "openid")
    check(rc == EXIT_UNAVAILABLE and "unavailable" in err, "tokenctl exits 6 with a clear message", (rc, err))
    inject(srv, "count=0")
    deadline = time.monotonic() + 90
    while True:
        m = d.get_token("p", ["openid"], timeout=30)
        if "error" not in m:
            break
        check(time.monotonic() < deadline, "tokens flow again after the provider recovers", m)
    check(d.list_json()["p"]["state"] == "ok", "state back to ok")

    # 4. min_ttl
    t = d.get_token("p", ["read"], min_ttl=29)
    check("error" not in t and t["parameters"]["expires_at"] - time.time() >= 28,
          "min_ttl 29 is met (by a fresh token if needed)", t)
    before = srv.refresh_count()
    t = d.get_token("p", ["openid", "read"], min_ttl=30)
    check("error" not in t, "min_ttl equal to the provider's lifetime is met by a fresh token", t)
    check(srv.refresh_count() == before + 1, "with exactly one refresh")
    m = d.get_token("p", ["read"], min_ttl=31)
    check(m.get("error") == "io.tokend.agent.LifetimeTooShort" and m["parameters"].get("lifetime") == 30,
          "min_ttl 31 > 30 s lifetime: LifetimeTooShort with the lifetime", m)

    # 5. URL rules
    rt = mint(srv.issuer)
    secret = secret_file(ctx, CLIENTS["tokend-test"][0])
    rc, out, err = d.tokenctl("add", "h", "--issuer", srv.issuer, "--client-id", "tokend-test",
                              "--client-secret-file", secret, stdin=rt + "\n")
    check(rc == EXIT_REFUSED and "insecure-loopback" in err, "loopback http without the opt-in is refused", (rc, err))
    rc, out, err = d.tokenctl("add", "h", "--issuer", "http://idp.example", "--client-id", "tokend-test",
                              "--client-secret-file", secret, "--insecure-loopback", stdin=rt + "\n")
    check(rc == EXIT_REFUSED and "loopback" in err, "http outside loopback is refused even with the opt-in",
          (rc, err))
    check("h" not in d.list_json(), "nothing kept")
    check(d.alive(), "daemon still running")


run_test(main, __doc__)
