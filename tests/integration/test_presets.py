#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3, item 3: provider presets and discovery.

1. The shipped generic "oidc" preset plus --issuer logs in to the loopback server: its endpoints
   come from discovery of the issuer alone.
2. A preset directory given with --providers-dir is searched first: a broken preset there is a
   clear error naming the file and the field, and nothing is kept.
3. An unknown preset name is a clear error; a name with a path in it is refused.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import EXIT_REFUSED, REPO, check, run_test  # noqa: E402
from logins import Login, device_approve, secret_file  # noqa: E402


def main(ctx):
    srv = ctx.oauth_server(access_ttl=60)
    pdir = os.path.join(ctx.tmp, "providers")
    os.makedirs(pdir)
    # The shipped generic preset, as installed (the daemon is not installed here).
    shutil.copy(os.path.join(REPO, "providers", "oidc.json"), pdir)
    with open(os.path.join(pdir, "broken.json"), "w") as f:
        json.dump({"name": "broken", "description": "x", "issuer": "https://idp.example", "discovery": True,
                   "flows": ["device"], "colour": "blue"}, f)
    with open(os.path.join(pdir, "plainhttp.json"), "w") as f:
        json.dump({"name": "plainhttp", "description": "x", "token_endpoint": "http://idp.example/token",
                   "device_authorization_endpoint": "https://idp.example/device", "discovery": False,
                   "flows": ["device"]}, f)
    d = ctx.tokend(extra_args=("--providers-dir", pdir))
    secret = secret_file(ctx, "test-secret")

    lg = Login(d, "viapreset", "--provider", "oidc", "--issuer", srv.issuer, "--client-id", "tokend-test",
               "--client-secret-file", secret, "--scope", "openid offline_access read", "--flow", "device",
               "--insecure-loopback")
    ev = lg.next_event()
    check(ev and ev["event"] == "device-code", "the oidc preset found the device endpoint by discovery", ev)
    check(device_approve(srv.issuer, ev["user_code"]) == 0, "approved")
    rc, events = lg.wait()
    check(rc == 0 and events[-1].get("event") == "done", "login through the preset succeeds", (rc, lg.stderr))
    check(srv.introspect(d.token("viapreset")["token"]).get("active") is True, "its token is active")

    for name, field in (("broken", "colour"), ("plainhttp", "token_endpoint")):
        lg = Login(d, "x" + name, "--provider", name, "--client-id", "tokend-test", "--client-secret-file", secret)
        rc, events = lg.wait()
        path = os.path.join(pdir, name + ".json")
        check(rc == EXIT_REFUSED and path in lg.stderr and field in lg.stderr,
              f"broken preset {name}: error names {path} and {field}", (rc, lg.stderr))
        check("x" + name not in d.list_json(), "nothing kept")

    lg = Login(d, "y", "--provider", "no-such-provider", "--client-id", "c")
    rc, _ = lg.wait()
    check(rc == EXIT_REFUSED and "no-such-provider" in lg.stderr, "unknown preset: clear error", (rc, lg.stderr))
    lg = Login(d, "z", "--provider", "../../etc/passwd", "--client-id", "c")
    rc, _ = lg.wait()
    check(rc != 0 and "passwd" not in d.list_json(), "a path as preset name is refused", (rc, lg.stderr))
    shipped = sorted(f[:-5] for f in os.listdir(os.path.join(REPO, "providers")) if f.endswith(".json"))
    check({"github", "google", "microsoft", "gitlab", "oidc"} <= set(shipped), "the five presets ship", shipped)


run_test(main, __doc__)
