#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An agent that gets its OAuth access tokens from tokend, in plain Python.

Only the standard library: a Unix socket, JSON, and Varlink's framing (each
message is one JSON object followed by a NUL byte). See
protocol/io.tokend.agent.varlink for the methods and errors used here.

  python-agent.py [options] CREDENTIAL
      One io.tokend.agent.GetToken call; prints one line about the token.
  python-agent.py [options] --subscribe N CREDENTIAL
      io.tokend.agent.Subscribe, the pattern for a long-running agent: one
      connection, and a fresh token pushed by tokend before the previous one
      runs low. Prints one line per token and exits after N tokens.

Options:
  --socket PATH    tokend's socket (default: $TOKEND_SOCKET, else
                   $XDG_RUNTIME_DIR/tokend/socket)
  --scope S        a scope the token must carry (repeatable; default: all the
                   policy allows)
  --min-ttl SECS   seconds each token must remain valid at least
  --api URL        use each token: GET URL with "Authorization: Bearer" and
                   print the HTTP status and the start of the answer (e.g. the
                   provider's userinfo endpoint)
  --resubscribe    with --subscribe: when tokend goes away (a restart) or the
                   provider is down, subscribe again (for up to 60 s without
                   a token) instead of exiting
  --whoami         first print how tokend sees this process (WhoAmI)

A token line looks like
  token fp=3fa2c1d04e5b expires_at=1795894812 (19:40:12Z) ttl=19s type=Bearer scopes=read,write
(with --subscribe: "token #2 fp=..."). fp is the first 12 hex digits of the
SHA-256 of the token: the same fingerprint tokend writes on its audit trail
(TOKEND_TOKEN_FP), so a line can be matched with 'tokenctl audit'. The token
itself is never printed or logged.

Exit status, the same as tokenctl's: 0 ok, 1 other failure, 2 usage,
3 tokend unreachable, 4 no such credential, 5 re-authentication needed,
6 provider unavailable (retry later), 7 request refused (scope, lifetime,
consent not given in time, too many subscriptions, bad input), 8 permission
denied (policy, the owner denied, or the consent a stream ran under ended).
"""

import argparse
import datetime
import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_SUCH = 4
EXIT_REAUTH = 5
EXIT_UNAVAILABLE = 6
EXIT_REFUSED = 7
EXIT_DENIED = 8

PROG = "python-agent"

# How long to wait for GetToken or for the first token of a stream. A request
# in ask mode waits for the owner's consent, which tokend bounds itself
# (--consent-timeout, 120 s by default); this is only a backstop.
FIRST_REPLY_TIMEOUT = 600.0
# A stream promises the next token before the previous one runs out. When none
# has come this long after the previous token expired, give up.
STREAM_GRACE = 30.0
# With --resubscribe: how long to keep subscribing again without getting a token.
RESUBSCRIBE_BUDGET = 60.0


class AgentError(Exception):
    """A failure to report: a message for humans and an exit status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def printable(value):
    """A string from the daemon (or any peer), safe to show on a terminal."""
    text = str(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def fingerprint(token):
    """First 12 hex digits of SHA-256 of the token, as tokend's audit trail has it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------
# Varlink over a Unix socket

class VarlinkClosed(Exception):
    pass


class Varlink:
    """One connection to tokend. Messages are JSON objects, each followed by NUL."""

    def __init__(self, path):
        self.path = path
        self.buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise AgentError(EXIT_UNREACHABLE, f"cannot connect to tokend at {path}: {e.strerror}. "
                             "Is it running? Set $TOKEND_SOCKET or pass --socket.") from None

    def close(self):
        self.sock.close()

    def call(self, method, parameters, more=False):
        message = {"method": method, "parameters": parameters}
        if more:
            message["more"] = True
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\0")
        except OSError as e:
            raise AgentError(EXIT_FAILURE, f"cannot send to tokend: {e.strerror}") from None

    def receive(self, timeout):
        """The next message; VarlinkClosed at EOF, TimeoutError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            except ConnectionResetError:
                data = b""
            if not data:
                raise VarlinkClosed
            self.buf += data
        raw, self.buf = self.buf.split(b"\0", 1)
        try:
            message = json.loads(raw)
        except ValueError:
            raise AgentError(EXIT_FAILURE, "tokend sent a message that is not JSON") from None
        if not isinstance(message, dict):
            raise AgentError(EXIT_FAILURE, "tokend sent a message that is not a JSON object")
        return message


# ---------------------------------------------------------------------------
# tokend's errors, each with an exit status and a message

def error_to_agent_error(error, p, method, credential):
    """Turns an error reply (name, parameters) into an AgentError."""
    name = error.rsplit(".", 1)[-1] if error.startswith(("io.tokend.", "org.varlink.service.")) else error
    cred = printable(p.get("credential", credential))
    reason = p.get("reason")
    why = f": {printable(reason)}" if reason else ""
    scopes = " ".join(printable(s) for s in p.get("scopes") or [])

    if name == "NoSuchCredential":
        return AgentError(EXIT_NO_SUCH, f"tokend holds no credential named '{cred}' (see 'tokenctl list').")
    if name == "ReauthenticationRequired":
        return AgentError(EXIT_REAUTH, f"credential '{cred}' needs a new login: the provider rejected its "
                          "refresh token. The owner must log in again; retrying does not help.")
    if name == "ProviderUnavailable":
        after = p.get("retry_after")
        hint = f" Retry in {after} s." if isinstance(after, int) else " Retry later."
        return AgentError(EXIT_UNAVAILABLE, f"the provider of '{cred}' is unavailable{why}.{hint}")
    if name == "ScopeNotAllowed":
        msg = f"scope(s) [{scopes}] not allowed with credential '{cred}'{why}."
        allowed = p.get("allowed")
        if isinstance(allowed, list):
            msg += (" The policy allows: [" + " ".join(printable(s) for s in allowed) + "]."
                    if allowed else " The policy allows no scope at all with it.")
        return AgentError(EXIT_REFUSED, msg)
    if name == "LifetimeTooShort":
        return AgentError(EXIT_REFUSED, f"the provider issues tokens for '{cred}' that live only "
                          f"{p.get('lifetime')} s: ask for a shorter --min-ttl.")
    if name == "StoreUnavailable":
        return AgentError(EXIT_FAILURE, f"tokend withheld the token because it cannot save secrets{why}. "
                          "It keeps retrying; try again later.")
    if name == "PolicyDenied":
        return AgentError(EXIT_DENIED, f"tokend's policy refuses this process the credential '{cred}'{why}. "
                          "Asking again does not help: the owner must change the policy.")
    if name == "ConsentRequired":
        req = p.get("request")
        hint = (f" The owner can approve it with 'tokenctl approve {printable(req)}' while it waits."
                if req else " The owner sees requests with 'tokenctl watch' or 'tokenctl pending'.")
        return AgentError(EXIT_REFUSED, f"credential '{cred}' needs the owner's consent, and none came{why}.{hint}")
    if name == "ConsentDenied":
        return AgentError(EXIT_DENIED, f"the owner denied request {printable(p.get('request', '?'))} "
                          f"for credential '{cred}'.")
    if name == "ConsentEnded":
        grant = p.get("grant")
        what = f"grant {printable(grant)}" if grant else "consent"
        return AgentError(EXIT_DENIED, f"the {what} this stream ran under for '{cred}' ended "
                          f"({printable(p.get('reason', '?'))}). Subscribing again asks the owner again.")
    if name == "TooManySubscriptions":
        return AgentError(EXIT_REFUSED, f"too many Subscribe streams are open on tokend "
                          f"(at most {p.get('max', '?')}); close one first.")
    if name == "CallerGone":
        return AgentError(EXIT_FAILURE, "tokend could not establish this process's identity any more.")
    if name == "PermissionDenied":
        return AgentError(EXIT_DENIED, "permission denied: this tokend serves another user.")
    if name in ("MethodNotFound", "MethodNotImplemented", "InterfaceNotFound"):
        return AgentError(EXIT_FAILURE, f"this tokend does not implement {method}: it is older than this "
                          "example. Upgrade and restart it.")
    if name == "InvalidParameter":
        return AgentError(EXIT_REFUSED, f"tokend rejected parameter '{printable(p.get('parameter', '?'))}'.")
    if name == "ExpectedMore":
        return AgentError(EXIT_FAILURE, f"tokend expected a streaming call for {method}.")
    return AgentError(EXIT_FAILURE, f"{method} failed: {printable(error)} "
                      f"{printable(json.dumps(p, sort_keys=True))}")


# ---------------------------------------------------------------------------
# Using a token

def describe(token_params, number=None):
    """One line about a token: everything but the token."""
    expires_at = token_params["expires_at"]
    ttl = int(expires_at - time.time())
    when = datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc).strftime("%H:%M:%SZ")
    label = "token" if number is None else f"token #{number}"
    scopes = ",".join(printable(s) for s in token_params.get("scopes", []))
    return (f"{label} fp={fingerprint(token_params['token'])} expires_at={expires_at} ({when}) ttl={ttl}s "
            f"type={printable(token_params.get('token_type', '?'))} scopes={scopes}")


def call_api(url, token):
    """GET url with the token (RFC 6750); prints the status and the start of the answer, never
    the token."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    # An unredirected header is not carried along a redirect: a token for this
    # API is never handed to whatever host a redirect points at.
    req.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            status, body = resp.status, resp.read(4096)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(4096)
    except (urllib.error.URLError, OSError) as e:
        print(f"api GET {url}: failed: {printable(getattr(e, 'reason', e))}", flush=True)
        return False
    text = body.decode(errors="replace").replace(token, "[token]").strip()
    if len(text) > 200:
        text = text[:200] + "..."
    print(f"api GET {url}: HTTP {status} {printable(text)}", flush=True)
    return 200 <= status < 300


# ---------------------------------------------------------------------------
# The calls

def token_parameters(args):
    p = {"credential": args.credential}
    if args.scope:
        p["scopes"] = args.scope
    if args.min_ttl is not None:
        p["min_ttl"] = args.min_ttl
    return p


def check_token_reply(m, method, credential):
    """The parameters of a token reply, or the AgentError its error means."""
    if "error" in m:
        raise error_to_agent_error(str(m["error"]), m.get("parameters") or {}, method, credential)
    p = m.get("parameters") or {}
    if not isinstance(p.get("token"), str) or not isinstance(p.get("expires_at"), int):
        raise AgentError(EXIT_FAILURE, f"{method}: a reply without a token or expires_at")
    return p


def whoami(path):
    conn = Varlink(path)
    try:
        conn.call("io.tokend.agent.WhoAmI", {})
        m = conn.receive(30)
    except VarlinkClosed:
        raise AgentError(EXIT_FAILURE, "tokend closed the connection without an answer") from None
    except TimeoutError:
        raise AgentError(EXIT_FAILURE, "tokend did not answer WhoAmI within 30 s") from None
    finally:
        conn.close()
    if "error" in m:
        raise error_to_agent_error(str(m["error"]), m.get("parameters") or {}, "WhoAmI", "")
    p = m.get("parameters") or {}
    policy = p.get("policy") or {}
    agent = policy.get("name")
    print(f"whoami pid={p.get('pid')} uid={p.get('uid')} exe={printable(p.get('exe', '?'))} "
          f"agent={printable(agent) if agent else '(unknown caller)'} mode={printable(policy.get('mode', '?'))}",
          flush=True)


def get_token(args, path):
    method = "io.tokend.agent.GetToken"
    conn = Varlink(path)
    try:
        conn.call(method, token_parameters(args))
        m = conn.receive(FIRST_REPLY_TIMEOUT)
    except VarlinkClosed:
        raise AgentError(EXIT_FAILURE, "tokend closed the connection without an answer") from None
    except TimeoutError:
        raise AgentError(EXIT_FAILURE, f"no answer from tokend within {FIRST_REPLY_TIMEOUT:.0f} s") from None
    finally:
        conn.close()
    p = check_token_reply(m, method, args.credential)
    print(describe(p), flush=True)
    if args.api and not call_api(args.api, p["token"]):
        return EXIT_FAILURE
    return EXIT_OK


class StreamLost(AgentError):
    """A subscription that ended in a way that subscribing again may mend, after delay seconds."""

    def __init__(self, status, message, delay):
        super().__init__(status, message)
        self.delay = delay


def stream(args, path, state):
    """One Subscribe call ("more"), one reply per token, until state["count"] reaches the number
    asked for. Raises StreamLost when tokend went away or the provider is down, AgentError for
    the other errors."""
    method = "io.tokend.agent.Subscribe"
    try:
        conn = Varlink(path)
    except AgentError as e:
        if state["count"] == 0:
            raise
        raise StreamLost(e.status, e.message, 1.0) from None  # tokend restarting, perhaps
    try:
        conn.call(method, token_parameters(args), more=True)
        timeout = FIRST_REPLY_TIMEOUT
        while state["count"] < args.subscribe:
            try:
                m = conn.receive(timeout)
            except VarlinkClosed:
                raise StreamLost(EXIT_FAILURE, f"tokend closed the stream after {state['count']} token(s) "
                                 "without saying why.", 1.0) from None
            except TimeoutError:
                raise AgentError(EXIT_FAILURE, f"no token from tokend within {timeout:.0f} s "
                                 f"(after {state['count']} token(s))") from None
            if "error" in m:
                if state["count"] > 0:
                    print(f"{PROG}: the subscription ended after {state['count']} token(s).", file=sys.stderr)
                e = error_to_agent_error(str(m["error"]), m.get("parameters") or {}, method, args.credential)
                if e.status == EXIT_UNAVAILABLE:
                    after = (m.get("parameters") or {}).get("retry_after")
                    raise StreamLost(e.status, e.message, after if isinstance(after, int) and after > 0 else 5.0)
                raise e
            p = check_token_reply(m, method, args.credential)
            state["count"] += 1
            state["lost_since"] = None
            print(describe(p, state["count"]), flush=True)
            if args.api and not call_api(args.api, p["token"]):
                state["failures"] += 1
            # The next token comes before this one runs low; wait until a
            # little after it expires before deciding that tokend stalled.
            timeout = max(p["expires_at"] - time.time(), 0) + STREAM_GRACE
            if not m.get("continues") and state["count"] < args.subscribe:
                raise AgentError(EXIT_FAILURE, f"tokend ended the stream after {state['count']} token(s) "
                                 "without an error")
    finally:
        # Hanging up cancels the subscription at tokend.
        conn.close()


def subscribe(args, path):
    """A long-running agent: it subscribes, and gets a fresh token pushed by
    tokend before the previous one runs low, so it always holds a usable token
    without polling.

    The stream ends with an error reply (the credential was removed, the
    consent ended, the policy changed, the provider is down, ...), or when
    tokend goes away. Without --resubscribe the example reports it and exits.
    With it, the example subscribes again where that may help: after a lost
    connection (tokend restarted) and after ProviderUnavailable, for at most
    RESUBSCRIBE_BUDGET seconds without a token. The other errors need the
    owner (a login, a policy, a consent), so retrying would not help.
    """
    state = {"count": 0, "failures": 0, "lost_since": None}
    while True:
        try:
            stream(args, path, state)
            break
        except StreamLost as e:
            now = time.monotonic()
            state["lost_since"] = state["lost_since"] or now
            if not args.resubscribe or now + e.delay - state["lost_since"] > RESUBSCRIBE_BUDGET:
                raise
            print(f"{PROG}: {e.message} Subscribing again in {e.delay:g} s.", file=sys.stderr, flush=True)
            time.sleep(e.delay)
    print(f"received {state['count']} token(s); unsubscribed", flush=True)
    return EXIT_FAILURE if state["failures"] else EXIT_OK


def default_socket():
    path = os.environ.get("TOKEND_SOCKET")
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and runtime.startswith("/"):
        return os.path.join(runtime, "tokend", "socket")
    return None


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{PROG}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def main(argv):
    parser = Parser(prog=PROG, description="Get OAuth access tokens from tokend (io.tokend.agent).")
    parser.add_argument("credential", help="the credential's name, as given to 'tokenctl add'")
    parser.add_argument("--socket", help="tokend's socket (default: $TOKEND_SOCKET, else "
                        "$XDG_RUNTIME_DIR/tokend/socket)")
    parser.add_argument("--scope", action="append", help="a scope the token must carry (repeatable)")
    parser.add_argument("--min-ttl", type=int, metavar="SECS", help="seconds each token must remain valid at least")
    parser.add_argument("--api", metavar="URL", help="GET this URL with each token and print the HTTP status")
    parser.add_argument("--subscribe", type=int, metavar="N", help="subscribe, print N tokens as they come, exit")
    parser.add_argument("--resubscribe", action="store_true",
                        help="with --subscribe: subscribe again when tokend restarts or the provider is down")
    parser.add_argument("--whoami", action="store_true", help="first print how tokend sees this process")
    args = parser.parse_args(argv)
    if args.subscribe is not None and args.subscribe < 1:
        parser.error("--subscribe takes a number of tokens of at least 1")
    if args.resubscribe and args.subscribe is None:
        parser.error("--resubscribe goes with --subscribe")
    if args.min_ttl is not None and args.min_ttl < 0:
        parser.error("--min-ttl takes a number of seconds")

    path = args.socket or default_socket()
    if not path:
        raise AgentError(EXIT_UNREACHABLE, "cannot find tokend: set $TOKEND_SOCKET or $XDG_RUNTIME_DIR, "
                         "or pass --socket")
    if args.whoami:
        whoami(path)
    if args.subscribe is not None:
        return subscribe(args, path)
    return get_token(args, path)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except AgentError as e:
        print(f"{PROG}: {e.message}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        sys.exit(130)
