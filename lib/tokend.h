/* SPDX-License-Identifier: MIT */
/* tokend.h: libtokend, the C client library for agents of tokend.
 *
 * An agent asks tokend for short-lived OAuth access tokens over tokend's
 * Varlink socket: once (tokend_get_token()), or as a stream that delivers a
 * fresh token before the previous one runs out (tokend_subscribe()).
 * Link with `pkg-config --cflags --libs libtokend`. See libtokend(3).
 *
 * Conventions:
 * - A function that can fail returns int: TOKEND_OK (0) or a negative
 *   tokend_code. Out-parameters are named ret and are written only on success.
 * - Handles are not thread-safe: use one handle from one thread at a time.
 *   Distinct handles may be used from distinct threads.
 * - Every string handed out is owned by the library and valid until the
 *   next call on the same handle (or its free), unless said otherwise.
 * - Token values are wiped from memory when their object is freed. The
 *   library never logs, and never prints anything.
 * - The *_free() functions accept NULL and return NULL. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. The values are part of the ABI and are never renumbered;
 * new codes get new values. tokend_strerror() describes each. */
typedef enum tokend_code {
        TOKEND_OK = 0,

        /* Local failures (no daemon error name). */
        TOKEND_ERR_INVALID_ARGUMENT = -1, /* the caller passed bad input: NULL, too long, not UTF-8, ... */
        TOKEND_ERR_NO_MEMORY = -2,
        TOKEND_ERR_NOT_REACHABLE = -3, /* no socket path known, or connecting failed */
        TOKEND_ERR_DISCONNECTED = -4,  /* the connection broke before the answer (or, for a
                                        * subscription, could not be re-established) */
        TOKEND_ERR_TIMEOUT = -5,       /* no answer within the client's timeout */
        TOKEND_ERR_PROTOCOL = -6,      /* the daemon sent something that is not a valid reply */

        /* Standard Varlink errors the daemon answers. */
        TOKEND_ERR_PERMISSION_DENIED = -10, /* org.varlink.service.PermissionDenied (e.g. another uid,
                                             * or a manager call from an agent) */
        TOKEND_ERR_INVALID_PARAMETER = -11, /* org.varlink.service.InvalidParameter */
        TOKEND_ERR_NOT_SUPPORTED = -12,     /* InterfaceNotFound, MethodNotFound, MethodNotImplemented:
                                             * the daemon is too old for this call */
        TOKEND_ERR_DAEMON = -13,            /* any other error name, e.g. io.tokend.InternalError;
                                             * see tokend_error_name() */

        /* The named errors of io.tokend.agent (protocol/io.tokend.agent.varlink). */
        TOKEND_ERR_CALLER_GONE = -20,
        TOKEND_ERR_NO_SUCH_CREDENTIAL = -21,
        TOKEND_ERR_REAUTHENTICATION_REQUIRED = -22,
        TOKEND_ERR_PROVIDER_UNAVAILABLE = -23, /* see tokend_error_retry_after() */
        TOKEND_ERR_SCOPE_NOT_ALLOWED = -24,
        TOKEND_ERR_POLICY_DENIED = -25,
        TOKEND_ERR_CONSENT_REQUIRED = -26,
        TOKEND_ERR_CONSENT_DENIED = -27,
        TOKEND_ERR_STORE_UNAVAILABLE = -28,
        TOKEND_ERR_LIFETIME_TOO_SHORT = -29,
        TOKEND_ERR_CONSENT_ENDED = -30,
        TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS = -31,
} tokend_code;

/* A static English description of a code ("Unknown error" for a value this
 * version does not know). Never NULL. */
const char *tokend_strerror(int code);

/* Timeouts are in microseconds; this one means "wait as long as it takes". */
#define TOKEND_INFINITY UINT64_MAX
/* min_ttl argument: let the daemon choose (a tenth of the token's lifetime). */
#define TOKEND_MIN_TTL_DEFAULT INT64_C(-1)

/* Flags of tokend_get_token(). */
typedef enum tokend_flags {
        /* Call io.tokend.manager.GetToken: the owner's own token, without policy
         * or consent. Only the owner (a process of the daemon's uid that no
         * agent of the policy matches) may; agents get TOKEND_ERR_PERMISSION_DENIED. */
        TOKEND_FLAG_MANAGER = 1 << 0,
        /* Call io.tokend.agent.GetToken with "as_owner": the owner gets its own
         * token as with TOKEND_FLAG_MANAGER; any other caller is served as an
         * agent (policy, consent), as without the flag. For programs that run
         * both as the owner and inside agents, in one round trip. A daemon
         * older than the flag refuses it: error InvalidParameter, parameter
         * "as_owner". Not together with TOKEND_FLAG_MANAGER. */
        TOKEND_FLAG_AS_OWNER = 1 << 1,
} tokend_flags;

/* Local caps, checked before anything is sent (TOKEND_ERR_INVALID_ARGUMENT). */
#define TOKEND_CREDENTIAL_MAX 64U /* bytes of a credential name (at least 1) */
#define TOKEND_SCOPES_MAX 64U     /* scopes per request */
#define TOKEND_SCOPE_MAX 256U     /* bytes of one scope (at least 1) */
#define TOKEND_RESOURCE_MAX 2048U /* bytes of a resource URI */

typedef struct tokend_client tokend_client;
typedef struct tokend_token tokend_token;
typedef struct tokend_error tokend_error;
typedef struct tokend_subscription tokend_subscription;

/* ---- errors ---- */

/* What went wrong in the last call on a handle (tokend_client_error(),
 * tokend_subscription_error()). Never contains a secret. */

/* The tokend_code; TOKEND_OK after a success. */
int tokend_error_code(const tokend_error *e);
/* The daemon's error name, e.g. "io.tokend.agent.PolicyDenied"; NULL for a
 * local failure or a success. */
const char *tokend_error_name(const tokend_error *e);
/* Text for humans: the daemon's "reason" parameter when it sent one, else,
 * for a local failure, what failed (e.g. "connecting to PATH: No such file
 * or directory"); NULL when there is none. */
const char *tokend_error_reason(const tokend_error *e);
/* ProviderUnavailable's retry_after in seconds; -1 when not given. */
int64_t tokend_error_retry_after(const tokend_error *e);
/* A string parameter of the daemon's error, e.g. "credential", "agent",
 * "request" (ConsentRequired, ConsentDenied), "grant" (ConsentEnded); NULL
 * when absent or not a string. */
const char *tokend_error_parameter(const tokend_error *e, const char *key);
/* All of the daemon's error parameters as a JSON object text ("{}" when none). */
const char *tokend_error_parameters_json(const tokend_error *e);

/* ---- client ---- */

/* Creates a client for the daemon at socket_path; NULL: $TOKEND_SOCKET when
 * set, else $XDG_RUNTIME_DIR/tokend/socket (as tokenctl). Fails with
 * TOKEND_ERR_NOT_REACHABLE when neither is set (or $XDG_RUNTIME_DIR is not
 * absolute). Does not connect yet: the first call does, and the connection
 * is kept for later calls. When a kept connection turns out to be broken
 * (the daemon restarted), a call reconnects once and is sent again. */
int tokend_client_new(const char *socket_path, tokend_client **ret);
/* Closes the connection and frees the client. Subscriptions made with it
 * are independent of it and stay valid. */
tokend_client *tokend_client_free(tokend_client *c);

/* The socket path the client uses. */
const char *tokend_client_socket_path(const tokend_client *c);
/* How long one call may wait for its answer (default TOKEND_INFINITY: the
 * daemon itself bounds every wait, a wait for consent by its
 * --consent-timeout). 0 is an invalid argument. Also bounds the sending of
 * the Subscribe call of subscriptions made afterwards. */
int tokend_client_set_timeout(tokend_client *c, uint64_t timeout_usec);
/* How long a subscription made afterwards tries to reconnect after its
 * connection broke (default 30 s); 0: never reconnect; TOKEND_INFINITY:
 * forever. See tokend_subscribe(). */
int tokend_client_set_reconnect(tokend_client *c, uint64_t budget_usec);
/* The outcome of the last call of tokend_get_token() or tokend_subscribe()
 * on this client. Never NULL. */
const tokend_error *tokend_client_error(const tokend_client *c);

/* ---- one token ---- */

/* Calls io.tokend.agent.GetToken (io.tokend.manager.GetToken with
 * TOKEND_FLAG_MANAGER; see also TOKEND_FLAG_AS_OWNER) and waits for the answer, which may take as long as
 * the owner takes to consent (ask mode).
 * credential: required. scopes: NULL-terminated; NULL or empty: those the
 * policy allows. resource: NULL for none. min_ttl: seconds the token must
 * stay valid at least, or TOKEND_MIN_TTL_DEFAULT.
 * On success *ret is a new token, to be released with tokend_token_free().
 * On failure returns a negative tokend_code; tokend_client_error(c) tells
 * more. */
int tokend_get_token(tokend_client *c, const char *credential, const char *const *scopes, const char *resource,
                     int64_t min_ttl, unsigned flags, tokend_token **ret);

/* ---- tokens ---- */

/* Wipes the token value and frees the token. */
tokend_token *tokend_token_free(tokend_token *t);
/* A copy, for keeping a subscription's token beyond its next event. */
int tokend_token_dup(const tokend_token *t, tokend_token **ret);
/* The access token itself (a secret: never log it). */
const char *tokend_token_value(const tokend_token *t);
/* The token type, usually "Bearer". */
const char *tokend_token_type(const tokend_token *t);
/* Expiry in seconds since the epoch (UTC). */
int64_t tokend_token_expires_at(const tokend_token *t);
/* The scopes the token carries, sorted, NULL-terminated (never NULL). */
const char *const *tokend_token_scopes(const tokend_token *t);

/* ---- subscriptions ---- */

/* Events of a subscription. */
typedef enum tokend_event {
        TOKEND_EVENT_NONE = 0,         /* nothing happened (within the timeout) */
        TOKEND_EVENT_TOKEN = 1,        /* a token arrived: tokend_subscription_token() */
        TOKEND_EVENT_DISCONNECTED = 2, /* the connection broke; the library is reconnecting
                                        * (the last token stays available and valid until it expires) */
        TOKEND_EVENT_ENDED = 3,        /* the stream ended for good; code says why */
} tokend_event;

/* Called once per event by tokend_subscription_process() and
 * tokend_subscription_run(). code is TOKEND_OK for TOKEND_EVENT_TOKEN,
 * TOKEND_ERR_DISCONNECTED for TOKEND_EVENT_DISCONNECTED, and why the stream
 * ended for TOKEND_EVENT_ENDED. The callback may call
 * tokend_subscription_token(), tokend_subscription_error() and
 * tokend_subscription_stop(), but must not free the subscription. */
typedef void (*tokend_subscription_fn)(tokend_subscription *s, tokend_event event, int code, void *userdata);

/* Calls io.tokend.agent.Subscribe (with "more") on a connection of its own:
 * the daemon sends a token at once (after its policy and consent checks,
 * which may wait for the owner), then a new one each time the token is
 * renewed, before the previous one has less than min_ttl seconds left.
 * Arguments as for tokend_get_token(); flags must be 0. callback may be NULL
 * when events are taken with tokend_subscription_next().
 * Returns after connecting and sending the call, without waiting for a
 * reply: errors of the daemon (PolicyDenied, ConsentRequired, ...) arrive as
 * the event TOKEND_EVENT_ENDED. Fails with TOKEND_ERR_INVALID_ARGUMENT,
 * TOKEND_ERR_NO_MEMORY, TOKEND_ERR_NOT_REACHABLE or TOKEND_ERR_TIMEOUT
 * (details: tokend_client_error(c)).
 *
 * When the daemon stops, restarts or otherwise drops the connection without
 * an error reply, the library reports TOKEND_EVENT_DISCONNECTED (once per
 * outage), then reconnects and calls Subscribe again with the same
 * arguments, retrying with a backoff of 0.1 s doubling up to 2 s between
 * attempts, the last attempt when the client's reconnect budget ends
 * (tokend_client_set_reconnect(), default 30 s, counted from the
 * disconnection). The next token after a successful resubscription is an
 * ordinary TOKEND_EVENT_TOKEN, and ends the outage. When the budget is
 * spent, the stream ends: TOKEND_EVENT_ENDED with TOKEND_ERR_DISCONNECTED
 * (with a budget of 0, at once, without TOKEND_EVENT_DISCONNECTED). An
 * error reply to the new Subscribe call (e.g. ConsentRequired) ends the
 * stream with that error. An error reply of the daemon always ends the
 * stream; the library never resubscribes after one. */
int tokend_subscribe(tokend_client *c, const char *credential, const char *const *scopes, const char *resource,
                     int64_t min_ttl, unsigned flags, tokend_subscription_fn callback, void *userdata,
                     tokend_subscription **ret);
/* Closes the connection, wipes the token and frees the subscription. */
tokend_subscription *tokend_subscription_free(tokend_subscription *s);

/* A file descriptor for event loops (epoll, poll, sd-event, GLib, ...): it
 * polls readable (POLLIN) whenever the subscription has work to do,
 * including a reply already read but not yet taken; then call
 * tokend_subscription_process() (with a callback) or
 * tokend_subscription_next() with timeout 0 (until it returns
 * TOKEND_EVENT_NONE, or once per wake-up: the fd stays readable while an
 * event is left). The descriptor stays the same across reconnections (an
 * epoll instance watching the socket, a backoff timer and an eventfd); do
 * not read from it or close it. -1 after the stream ended. */
int tokend_subscription_fd(const tokend_subscription *s);
/* Does all the work available now, without blocking, invoking the callback
 * once per event. Returns the number of events delivered (0: none), or, once
 * the stream has ended (after delivering TOKEND_EVENT_ENDED), its negative
 * end code on this and every later call. TOKEND_ERR_INVALID_ARGUMENT when
 * the subscription has no callback. */
int tokend_subscription_process(tokend_subscription *s);
/* Waits up to timeout_usec (0: do not wait; TOKEND_INFINITY) for the next
 * event and returns it: TOKEND_EVENT_TOKEN, TOKEND_EVENT_DISCONNECTED, or
 * TOKEND_EVENT_NONE on timeout. Once the stream has ended, returns its
 * negative end code (tokend_subscription_error() tells more), on this and
 * every later call. Does not invoke the callback. */
int tokend_subscription_next(tokend_subscription *s, uint64_t timeout_usec);
/* Blocks, invoking the callback once per event, until the stream ends
 * (returns its negative end code) or the callback calls
 * tokend_subscription_stop() (returns TOKEND_OK). TOKEND_ERR_INVALID_ARGUMENT
 * when the subscription has no callback. */
int tokend_subscription_run(tokend_subscription *s);
/* Makes tokend_subscription_run() return after the current callback (events
 * not yet delivered stay for the next call). No effect on
 * tokend_subscription_process(), which always delivers all it has. */
void tokend_subscription_stop(tokend_subscription *s);

/* The latest token delivered (NULL before the first), owned by the
 * subscription and valid until the next event is taken; tokend_token_dup()
 * keeps it longer. */
const tokend_token *tokend_subscription_token(const tokend_subscription *s);
/* Why the stream ended (or, while it runs, why it last disconnected); code
 * TOKEND_OK while nothing went wrong. Never NULL. */
const tokend_error *tokend_subscription_error(const tokend_subscription *s);
/* How many times the subscription reconnected and resubscribed. */
unsigned tokend_subscription_reconnects(const tokend_subscription *s);

#ifdef __cplusplus
}
#endif
