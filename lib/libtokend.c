/* SPDX-License-Identifier: MIT */
/* lib/libtokend.c: libtokend, the client library for agents: GetToken and
 * Subscribe over tokend's Varlink socket, errors mapped to stable codes. */
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>

#include "common/util.h"
#include "libtokend-internal.h"
#include "protocol/varlink.h"
#include "tokend.h"

#define _public_ __attribute__((visibility("default")))

/* A subscription's replies are small; a credential list is not involved. */
#define SUB_MESSAGE_MAX (1024U * 1024U)
#define RECONNECT_BUDGET_DEFAULT_USEC (30 * USEC_PER_SEC)
#define BACKOFF_FIRST_USEC (100 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (2 * USEC_PER_SEC)

struct tokend_error {
        int code;
        char *name;   /* the daemon's error name, or NULL */
        char *reason; /* for humans, or NULL */
        int64_t retry_after;
        json_object *parameters; /* the daemon's error parameters (never secret), or NULL */
};

struct tokend_token {
        char *value; /* secret: erase_and_free() */
        char *type;
        int64_t expires_at;
        char **scopes; /* NULL-terminated */
};

struct tokend_client {
        char *path;
        uint64_t timeout_usec; /* TOKEND_INFINITY: none */
        uint64_t reconnect_usec;
        VarlinkClient *conn; /* kept between calls; NULL until the first */
        tokend_error error;
};

typedef enum SubState {
        SUB_STREAMING, /* connected, the Subscribe call sent or being sent */
        SUB_BACKOFF,   /* disconnected, waiting for the next connection attempt */
        SUB_ENDED,
} SubState;

struct tokend_subscription {
        char *path;
        json_object *parameters; /* of the Subscribe call (no secret), re-sent on reconnection */
        uint64_t reconnect_usec;
        tokend_subscription_fn callback;
        void *userdata;

        int epoll_fd;   /* what tokend_subscription_fd() hands out: watches the socket, timer_fd, pending_fd */
        int timer_fd;   /* the backoff timer */
        int pending_fd; /* an eventfd, readable while work is left without I/O (a buffered message) */
        VarlinkStream stream; /* stream.fd is -1 while disconnected */
        bool want_out;        /* EPOLLOUT registered for stream.fd */

        SubState state;
        bool outage;            /* disconnected since the last token (reported once) */
        uint64_t outage_start;  /* monotonic usec */
        uint64_t next_attempt;  /* monotonic usec */
        uint64_t backoff_usec;
        unsigned reconnects;
        bool end_reported;
        bool stop;

        tokend_token *token;
        tokend_error error;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(tokend_subscription *, tokend_subscription_free);

/* ---- codes ---- */

static const struct {
        int code;
        const char *text;
} code_texts[] = {
        { TOKEND_OK, "Success" },
        { TOKEND_ERR_INVALID_ARGUMENT, "Invalid argument" },
        { TOKEND_ERR_NO_MEMORY, "Out of memory" },
        { TOKEND_ERR_NOT_REACHABLE, "tokend is not reachable" },
        { TOKEND_ERR_DISCONNECTED, "Disconnected from tokend" },
        { TOKEND_ERR_TIMEOUT, "Timed out waiting for tokend" },
        { TOKEND_ERR_PROTOCOL, "Protocol error in tokend's reply" },
        { TOKEND_ERR_PERMISSION_DENIED, "Permission denied by tokend" },
        { TOKEND_ERR_INVALID_PARAMETER, "tokend refused a parameter" },
        { TOKEND_ERR_NOT_SUPPORTED, "Not supported by this tokend" },
        { TOKEND_ERR_DAEMON, "tokend failed" },
        { TOKEND_ERR_CALLER_GONE, "The calling process is gone" },
        { TOKEND_ERR_NO_SUCH_CREDENTIAL, "No such credential" },
        { TOKEND_ERR_REAUTHENTICATION_REQUIRED, "The credential needs a new login" },
        { TOKEND_ERR_PROVIDER_UNAVAILABLE, "The token provider is unavailable" },
        { TOKEND_ERR_SCOPE_NOT_ALLOWED, "Scope not allowed" },
        { TOKEND_ERR_POLICY_DENIED, "Denied by policy" },
        { TOKEND_ERR_CONSENT_REQUIRED, "The owner's consent is required" },
        { TOKEND_ERR_CONSENT_DENIED, "The owner denied consent" },
        { TOKEND_ERR_STORE_UNAVAILABLE, "tokend's secret store is unavailable" },
        { TOKEND_ERR_LIFETIME_TOO_SHORT, "Tokens do not live long enough" },
        { TOKEND_ERR_CONSENT_ENDED, "The consent ended" },
        { TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS, "Too many subscriptions" },
};

/* Error names of the daemon. Manager calls answer with the agent names;
 * the manager's homonyms are mapped too, in case. */
static const struct {
        const char *name;
        int code;
} error_names[] = {
        { "org.varlink.service.PermissionDenied", TOKEND_ERR_PERMISSION_DENIED },
        { "org.varlink.service.InvalidParameter", TOKEND_ERR_INVALID_PARAMETER },
        { "org.varlink.service.InterfaceNotFound", TOKEND_ERR_NOT_SUPPORTED },
        { "org.varlink.service.MethodNotFound", TOKEND_ERR_NOT_SUPPORTED },
        { "org.varlink.service.MethodNotImplemented", TOKEND_ERR_NOT_SUPPORTED },
        { "io.tokend.agent.CallerGone", TOKEND_ERR_CALLER_GONE },
        { "io.tokend.agent.NoSuchCredential", TOKEND_ERR_NO_SUCH_CREDENTIAL },
        { "io.tokend.agent.ReauthenticationRequired", TOKEND_ERR_REAUTHENTICATION_REQUIRED },
        { "io.tokend.agent.ProviderUnavailable", TOKEND_ERR_PROVIDER_UNAVAILABLE },
        { "io.tokend.agent.ScopeNotAllowed", TOKEND_ERR_SCOPE_NOT_ALLOWED },
        { "io.tokend.agent.PolicyDenied", TOKEND_ERR_POLICY_DENIED },
        { "io.tokend.agent.ConsentRequired", TOKEND_ERR_CONSENT_REQUIRED },
        { "io.tokend.agent.ConsentDenied", TOKEND_ERR_CONSENT_DENIED },
        { "io.tokend.agent.StoreUnavailable", TOKEND_ERR_STORE_UNAVAILABLE },
        { "io.tokend.agent.LifetimeTooShort", TOKEND_ERR_LIFETIME_TOO_SHORT },
        { "io.tokend.agent.ConsentEnded", TOKEND_ERR_CONSENT_ENDED },
        { "io.tokend.agent.TooManySubscriptions", TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS },
        { "io.tokend.manager.NoSuchCredential", TOKEND_ERR_NO_SUCH_CREDENTIAL },
        { "io.tokend.manager.ProviderUnavailable", TOKEND_ERR_PROVIDER_UNAVAILABLE },
};

_public_ const char *tokend_strerror(int code) {
        for (size_t i = 0; i < ELEMENTSOF(code_texts); i++)
                if (code_texts[i].code == code)
                        return code_texts[i].text;
        return "Unknown error";
}

static int code_from_error_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(error_names); i++)
                if (streq(error_names[i].name, name))
                        return error_names[i].code;
        return TOKEND_ERR_DAEMON;
}

/* Transport failures of the Varlink client (negative errno) as codes. */
static int code_from_errno(int r) {
        switch (-r) {
        case ENOMEM:
                return TOKEND_ERR_NO_MEMORY;
        case ETIMEDOUT:
                return TOKEND_ERR_TIMEOUT;
        case EBADMSG:
        case EMSGSIZE:
        case ENOBUFS:
                return TOKEND_ERR_PROTOCOL;
        default:
                return TOKEND_ERR_DISCONNECTED;
        }
}

/* ---- errors ---- */

static void error_clear(tokend_error *e) {
        e->name = mfree(e->name);
        e->reason = mfree(e->reason);
        if (e->parameters)
                json_object_put(e->parameters);
        e->parameters = NULL;
        e->retry_after = -1;
        e->code = TOKEND_OK;
}

/* A local failure: a code and a description (without secrets). Returns code. */
_printf_(3, 4) static int error_local(tokend_error *e, int code, const char *fmt, ...) {
        va_list ap;

        error_clear(e);
        e->code = code;
        if (fmt) {
                va_start(ap, fmt);
                if (vasprintf(&e->reason, fmt, ap) < 0)
                        e->reason = NULL;
                va_end(ap);
        }
        return code;
}

/* An error reply of the daemon (parameters are copied). Returns its code. */
static int error_daemon(tokend_error *e, const char *name, json_object *parameters) {
        json_object *v;

        error_clear(e);
        e->code = code_from_error_name(name);
        e->name = strdup(name);
        if (!e->name)
                return error_local(e, TOKEND_ERR_NO_MEMORY, "out of memory");
        if (parameters && json_object_is_type(parameters, json_type_object)) {
                /* A copy: the reply the parameters came in is wiped when dropped. */
                if (json_object_deep_copy(parameters, &e->parameters, NULL) < 0) {
                        e->parameters = NULL;
                        return error_local(e, TOKEND_ERR_NO_MEMORY, "out of memory");
                }
                if (json_object_object_get_ex(parameters, "reason", &v) && json_object_is_type(v, json_type_string))
                        e->reason = strdup(json_object_get_string(v));
                if (json_object_object_get_ex(parameters, "retry_after", &v) && json_object_is_type(v, json_type_int))
                        e->retry_after = json_object_get_int64(v);
        }
        return e->code;
}

_public_ int tokend_error_code(const tokend_error *e) {
        return e ? e->code : TOKEND_ERR_INVALID_ARGUMENT;
}

_public_ const char *tokend_error_name(const tokend_error *e) {
        return e ? e->name : NULL;
}

_public_ const char *tokend_error_reason(const tokend_error *e) {
        return e ? e->reason : NULL;
}

_public_ int64_t tokend_error_retry_after(const tokend_error *e) {
        return e ? e->retry_after : -1;
}

_public_ const char *tokend_error_parameter(const tokend_error *e, const char *key) {
        json_object *v;

        if (!e || !key || !e->parameters)
                return NULL;
        if (!json_object_object_get_ex(e->parameters, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

_public_ const char *tokend_error_parameters_json(const tokend_error *e) {
        if (!e || !e->parameters)
                return "{}";
        return json_object_to_json_string_ext(e->parameters, JSON_C_TO_STRING_PLAIN) ?: "{}";
}

/* ---- tokens ---- */

_public_ tokend_token *tokend_token_free(tokend_token *t) {
        if (!t)
                return NULL;
        erase_and_free(t->value);
        free(t->type);
        if (t->scopes)
                for (char **s = t->scopes; *s; s++)
                        free(*s);
        free(t->scopes);
        free(t);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(tokend_token *, tokend_token_free);

static int token_new(const char *value, const char *type, int64_t expires_at, size_t n_scopes, tokend_token **ret) {
        _cleanup_(tokend_token_freep) tokend_token *t = calloc(1, sizeof *t);
        if (!t)
                return TOKEND_ERR_NO_MEMORY;
        t->value = secret_strdup(value);
        t->type = strdup(type);
        t->scopes = calloc(n_scopes + 1, sizeof *t->scopes);
        if (!t->value || !t->type || !t->scopes)
                return TOKEND_ERR_NO_MEMORY;
        t->expires_at = expires_at;
        *ret = TAKE_PTR(t);
        return TOKEND_OK;
}

_public_ int tokend_token_dup(const tokend_token *t, tokend_token **ret) {
        _cleanup_(tokend_token_freep) tokend_token *n = NULL;
        size_t k = 0;

        if (!t || !ret)
                return TOKEND_ERR_INVALID_ARGUMENT;
        while (t->scopes[k])
                k++;
        int r = token_new(t->value, t->type, t->expires_at, k, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < k; i++) {
                n->scopes[i] = strdup(t->scopes[i]);
                if (!n->scopes[i])
                        return TOKEND_ERR_NO_MEMORY;
        }
        *ret = TAKE_PTR(n);
        return TOKEND_OK;
}

_public_ const char *tokend_token_value(const tokend_token *t) {
        return t ? t->value : NULL;
}

_public_ const char *tokend_token_type(const tokend_token *t) {
        return t ? t->type : NULL;
}

_public_ int64_t tokend_token_expires_at(const tokend_token *t) {
        return t ? t->expires_at : 0;
}

_public_ const char *const *tokend_token_scopes(const tokend_token *t) {
        static const char *const none[] = { NULL };
        return t ? (const char *const *) t->scopes : none;
}

/* A token from a reply's parameters: TOKEND_ERR_PROTOCOL when a field is missing or mistyped. */
static int token_from_reply(json_object *p, tokend_token **ret) {
        json_object *value, *type, *expires, *scopes;
        _cleanup_(tokend_token_freep) tokend_token *t = NULL;

        if (!json_object_object_get_ex(p, "token", &value) || !json_object_is_type(value, json_type_string) ||
            !json_object_object_get_ex(p, "token_type", &type) || !json_object_is_type(type, json_type_string) ||
            !json_object_object_get_ex(p, "expires_at", &expires) || !json_object_is_type(expires, json_type_int) ||
            !json_object_object_get_ex(p, "scopes", &scopes) || !json_object_is_type(scopes, json_type_array))
                return TOKEND_ERR_PROTOCOL;
        size_t n = json_object_array_length(scopes);
        int r = token_new(json_object_get_string(value), json_object_get_string(type),
                          json_object_get_int64(expires), n, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                json_object *s = json_object_array_get_idx(scopes, i);
                if (!json_object_is_type(s, json_type_string))
                        return TOKEND_ERR_PROTOCOL;
                t->scopes[i] = strdup(json_object_get_string(s));
                if (!t->scopes[i])
                        return TOKEND_ERR_NO_MEMORY;
        }
        *ret = TAKE_PTR(t);
        return TOKEND_OK;
}

/* ---- request parameters ---- */

/* Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF), no
 * NUL by construction: the daemon closes a connection that sends less. */
static bool utf8_valid(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                unsigned c = *p, n;
                uint32_t cp;
                if (c < 0x80) {
                        p++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1, cp = c & 0x1f;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2, cp = c & 0x0f;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3, cp = c & 0x07;
                else
                        return false;
                for (unsigned i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}

/* Checks the arguments against the local caps and builds the parameters of
 * GetToken/Subscribe. Returns a code; on TOKEND_ERR_INVALID_ARGUMENT,
 * *ret_what names the offending argument. */
static int request_parameters(const char *credential, const char *const *scopes, const char *resource,
                              int64_t min_ttl, json_object **ret, const char **ret_what) {
        size_t n_scopes = 0;

        *ret_what = NULL;
        if (!credential || strlen(credential) == 0 || strlen(credential) > TOKEND_CREDENTIAL_MAX ||
            !utf8_valid(credential))
                return *ret_what = "credential", TOKEND_ERR_INVALID_ARGUMENT;
        if (scopes)
                for (; scopes[n_scopes]; n_scopes++) {
                        size_t l = strlen(scopes[n_scopes]);
                        if (n_scopes >= TOKEND_SCOPES_MAX || l == 0 || l > TOKEND_SCOPE_MAX ||
                            !utf8_valid(scopes[n_scopes]))
                                return *ret_what = "scopes", TOKEND_ERR_INVALID_ARGUMENT;
                }
        if (resource && (strlen(resource) == 0 || strlen(resource) > TOKEND_RESOURCE_MAX || !utf8_valid(resource)))
                return *ret_what = "resource", TOKEND_ERR_INVALID_ARGUMENT;
        if (min_ttl < 0 && min_ttl != TOKEND_MIN_TTL_DEFAULT)
                return *ret_what = "min_ttl", TOKEND_ERR_INVALID_ARGUMENT;

        _cleanup_(json_object_putp) json_object *p = json_object_new_object();
        if (!p || json_object_object_add(p, "credential", json_object_new_string(credential)) < 0)
                return TOKEND_ERR_NO_MEMORY;
        if (n_scopes > 0) {
                json_object *a = json_object_new_array_ext((int) n_scopes);
                if (!a || json_object_object_add(p, "scopes", a) < 0) {
                        json_object_put(a);
                        return TOKEND_ERR_NO_MEMORY;
                }
                for (size_t i = 0; i < n_scopes; i++) {
                        json_object *s = json_object_new_string(scopes[i]);
                        if (!s || json_object_array_add(a, s) < 0) {
                                json_object_put(s);
                                return TOKEND_ERR_NO_MEMORY;
                        }
                }
        }
        if (resource && json_object_object_add(p, "resource", json_object_new_string(resource)) < 0)
                return TOKEND_ERR_NO_MEMORY;
        if (min_ttl >= 0 && json_object_object_add(p, "min_ttl", json_object_new_int64(min_ttl)) < 0)
                return TOKEND_ERR_NO_MEMORY;
        /* json_object_object_add() takes NULL values silently: check every member arrived. */
        if (json_object_object_length(p) != 1 + (n_scopes > 0) + !!resource + (min_ttl >= 0))
                return TOKEND_ERR_NO_MEMORY;
        json_object_object_foreach(p, key, val) {
                (void) key;
                if (!val)
                        return TOKEND_ERR_NO_MEMORY;
        }
        *ret = TAKE_PTR(p);
        return TOKEND_OK;
}

/* ---- client ---- */

/* The socket path, as tokenctl finds it: explicit, $TOKEND_SOCKET, $XDG_RUNTIME_DIR/tokend/socket. */
static int socket_path(const char *explicit_path, char **ret) {
        const char *p = explicit_path ?: secure_getenv("TOKEND_SOCKET");
        if (p) {
                *ret = strdup(p);
                return *ret ? TOKEND_OK : TOKEND_ERR_NO_MEMORY;
        }
        const char *rt = secure_getenv("XDG_RUNTIME_DIR");
        if (!rt || rt[0] != '/')
                return TOKEND_ERR_NOT_REACHABLE;
        return asprintf(ret, "%s/tokend/socket", rt) < 0 ? TOKEND_ERR_NO_MEMORY : TOKEND_OK;
}

_public_ int tokend_client_new(const char *socket_path_arg, tokend_client **ret) {
        struct sockaddr_un sa;

        if (!ret || (socket_path_arg && (socket_path_arg[0] == '\0' || strlen(socket_path_arg) >= sizeof sa.sun_path)))
                return TOKEND_ERR_INVALID_ARGUMENT;
        tokend_client *c = calloc(1, sizeof *c);
        if (!c)
                return TOKEND_ERR_NO_MEMORY;
        int r = socket_path(socket_path_arg, &c->path);
        if (r < 0) {
                free(c);
                return r;
        }
        c->timeout_usec = TOKEND_INFINITY;
        c->reconnect_usec = RECONNECT_BUDGET_DEFAULT_USEC;
        c->error.retry_after = -1;
        *ret = c;
        return TOKEND_OK;
}

_public_ tokend_client *tokend_client_free(tokend_client *c) {
        if (!c)
                return NULL;
        varlink_client_free(c->conn);
        error_clear(&c->error);
        free(c->path);
        free(c);
        return NULL;
}

void tokend_client_adopt_connection(tokend_client *c, VarlinkClient *conn) {
        varlink_client_free(c->conn);
        c->conn = conn;
}

_public_ const char *tokend_client_socket_path(const tokend_client *c) {
        return c ? c->path : NULL;
}

_public_ int tokend_client_set_timeout(tokend_client *c, uint64_t timeout_usec) {
        if (!c || timeout_usec == 0)
                return TOKEND_ERR_INVALID_ARGUMENT;
        c->timeout_usec = timeout_usec;
        return TOKEND_OK;
}

_public_ int tokend_client_set_reconnect(tokend_client *c, uint64_t budget_usec) {
        if (!c)
                return TOKEND_ERR_INVALID_ARGUMENT;
        c->reconnect_usec = budget_usec;
        return TOKEND_OK;
}

_public_ const tokend_error *tokend_client_error(const tokend_client *c) {
        return c ? &c->error : NULL;
}

/* The timeout for varlink_client_call(): 0 means none there. */
static uint64_t varlink_timeout(uint64_t timeout_usec) {
        return timeout_usec == TOKEND_INFINITY ? 0 : timeout_usec;
}

_public_ int tokend_get_token(tokend_client *c, const char *credential, const char *const *scopes,
                              const char *resource, int64_t min_ttl, unsigned flags, tokend_token **ret) {
        const char *method = (flags & TOKEND_FLAG_MANAGER) ? "io.tokend.manager.GetToken" : "io.tokend.agent.GetToken";
        const char *what;
        int r;

        if (!c)
                return TOKEND_ERR_INVALID_ARGUMENT;
        if (!ret || (flags & ~(unsigned) (TOKEND_FLAG_MANAGER | TOKEND_FLAG_AS_OWNER)) ||
            ((flags & TOKEND_FLAG_MANAGER) && (flags & TOKEND_FLAG_AS_OWNER)))
                return error_local(&c->error, TOKEND_ERR_INVALID_ARGUMENT, "invalid %s", !ret ? "ret" : "flags");
        /* Checked once before anything is sent; built again for each attempt
         * because sending consumes (and wipes) the parameters. */
        _cleanup_(json_object_putp) json_object *check = NULL;
        r = request_parameters(credential, scopes, resource, min_ttl, &check, &what);
        if (r < 0)
                return error_local(&c->error, r, what ? "invalid %s" : "out of memory", what);

        for (unsigned attempt = 0;; attempt++) {
                _cleanup_(json_object_put_erasep) json_object *reply = NULL;
                json_object *p = NULL;
                const char *error = NULL;
                bool fresh = false;

                if (!c->conn) {
                        r = varlink_client_connect(c->path, &c->conn);
                        if (r < 0)
                                return error_local(&c->error,
                                                   r == -ENOMEM ? TOKEND_ERR_NO_MEMORY : TOKEND_ERR_NOT_REACHABLE,
                                                   "connecting to %s: %s", c->path, strerror(-r));
                        fresh = true;
                }
                r = request_parameters(credential, scopes, resource, min_ttl, &p, &what);
                if (r < 0)
                        return error_local(&c->error, r, "out of memory");
                if (flags & TOKEND_FLAG_AS_OWNER) {
                        json_object *b = json_object_new_boolean(1);
                        if (!b || json_object_object_add(p, "as_owner", b) < 0) {
                                json_object_put(b);
                                json_object_put(p);
                                return error_local(&c->error, TOKEND_ERR_NO_MEMORY, "out of memory");
                        }
                }
                r = varlink_client_call(c->conn, method, p, 0, varlink_timeout(c->timeout_usec), &reply, &error, NULL);
                if (r < 0) {
                        /* Whatever happened, this connection is out of step now. */
                        c->conn = varlink_client_free(c->conn);
                        int code = code_from_errno(r);
                        /* A kept connection may have been closed by a daemon that
                         * restarted since: GetToken is safe to send once more. */
                        if (code == TOKEND_ERR_DISCONNECTED && !fresh && attempt == 0)
                                continue;
                        return error_local(&c->error, code, "calling %s: %s", method, strerror(-r));
                }
                if (error) {
                        r = error_daemon(&c->error, error, reply);
                        return r < 0 ? r : TOKEND_ERR_DAEMON;
                }
                r = token_from_reply(reply, ret);
                if (r < 0) {
                        c->conn = varlink_client_free(c->conn);
                        return error_local(&c->error, r,
                                           r == TOKEND_ERR_PROTOCOL ? "malformed reply to %s" : "out of memory",
                                           method);
                }
                error_clear(&c->error);
                return TOKEND_OK;
        }
}

/* ---- subscriptions ---- */

static int sub_epoll_update(tokend_subscription *s, int op) {
        struct epoll_event ev = {
                .events = EPOLLIN | (s->want_out ? EPOLLOUT : 0),
                .data.fd = s->stream.fd,
        };
        return epoll_ctl(s->epoll_fd, op, s->stream.fd, &ev) < 0 ? -errno : 0;
}

static void sub_close_stream(tokend_subscription *s) {
        if (s->stream.fd >= 0)
                (void) epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->stream.fd, NULL);
        varlink_stream_done(&s->stream);
        s->stream.fd = -1;
        s->want_out = false;
}

/* Writes what is queued without blocking; keeps EPOLLOUT registered while some is left. */
static int sub_flush(tokend_subscription *s) {
        int r = varlink_stream_flush(&s->stream);
        if (r < 0 && r != -EAGAIN)
                return r;
        bool want = r == -EAGAIN;
        if (want != s->want_out) {
                s->want_out = want;
                r = sub_epoll_update(s, EPOLL_CTL_MOD);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Connects and queues the Subscribe call. Negative errno. */
static int sub_connect(tokend_subscription *s) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        if (strlen(s->path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, s->path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                return -errno;

        /* The enqueue wipes and drops the message it serializes: give it a
         * copy of the parameters, which are sent again on every reconnection. */
        json_object *params = NULL, *m = json_object_new_object();
        if (!m || json_object_deep_copy(s->parameters, &params, NULL) < 0 ||
            json_object_object_add(m, "method", json_object_new_string("io.tokend.agent.Subscribe")) < 0 ||
            json_object_object_add(m, "parameters", TAKE_PTR(params)) < 0 ||
            json_object_object_add(m, "more", json_object_new_boolean(true)) < 0) {
                json_object_put(params);
                json_object_put(m);
                return -ENOMEM;
        }
        json_object_object_foreach(m, key, val) {
                (void) key;
                if (!val) {
                        json_object_put(m);
                        return -ENOMEM;
                }
        }

        varlink_stream_init(&s->stream, TAKE_FD(fd), SUB_MESSAGE_MAX, VARLINK_DEPTH_MAX_DEFAULT);
        r = varlink_stream_enqueue(&s->stream, m);
        if (r < 0)
                goto fail;
        r = sub_epoll_update(s, EPOLL_CTL_ADD);
        if (r < 0)
                goto fail;
        r = sub_flush(s);
        if (r < 0)
                goto fail;
        s->state = SUB_STREAMING;
        return 0;
fail:
        sub_close_stream(s);
        return r;
}

static uint64_t usec_add(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int sub_arm_timer(tokend_subscription *s, uint64_t at_usec) {
        struct itimerspec its = {
                .it_value.tv_sec = (time_t) (at_usec / USEC_PER_SEC),
                .it_value.tv_nsec = (long) (at_usec % USEC_PER_SEC) * 1000,
        };
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                its.it_value.tv_nsec = 1;
        return timerfd_settime(s->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

/* Ends the stream for good; returns code. */
static int sub_end(tokend_subscription *s, int code) {
        sub_close_stream(s);
        s->state = SUB_ENDED;
        s->error.code = code;
        return code;
}

_printf_(3, 4) static int sub_end_local(tokend_subscription *s, int code, const char *fmt, ...) {
        va_list ap;

        error_clear(&s->error);
        va_start(ap, fmt);
        if (vasprintf(&s->error.reason, fmt, ap) < 0)
                s->error.reason = NULL;
        va_end(ap);
        return sub_end(s, code);
}

/* Schedules the next connection attempt, the last one when the budget ends,
 * or ends the stream once the budget is spent. Returns 0 or the end code. */
static int sub_schedule_attempt(tokend_subscription *s, int cause) {
        uint64_t now = now_monotonic_usec();
        uint64_t at = now + s->backoff_usec;
        uint64_t budget_end = usec_add(s->outage_start, s->reconnect_usec);

        if (at > budget_end)
                at = budget_end;
        if (s->reconnect_usec == 0 || now >= budget_end)
                return sub_end_local(s, TOKEND_ERR_DISCONNECTED, "connection to %s lost (%s); %s", s->path,
                                     strerror(-cause), s->reconnect_usec == 0 ? "reconnecting is disabled"
                                                                              : "could not reconnect in time");
        s->next_attempt = at;
        s->backoff_usec = s->backoff_usec * 2 > BACKOFF_MAX_USEC ? BACKOFF_MAX_USEC : s->backoff_usec * 2;
        int r = sub_arm_timer(s, at);
        if (r < 0)
                return sub_end_local(s, TOKEND_ERR_DISCONNECTED, "arming the reconnection timer: %s", strerror(-r));
        s->state = SUB_BACKOFF;
        return 0;
}

/* The connection broke without an error reply. Returns TOKEND_EVENT_DISCONNECTED
 * at the start of an outage, 0 during one, or the end code. */
static int sub_disconnected(tokend_subscription *s, int cause) {
        bool first = !s->outage;

        sub_close_stream(s);
        if (first) {
                s->outage = true;
                s->outage_start = now_monotonic_usec();
                s->backoff_usec = BACKOFF_FIRST_USEC;
                (void) error_local(&s->error, TOKEND_ERR_DISCONNECTED, "connection to %s lost: %s", s->path,
                                   strerror(-cause));
        }
        int r = sub_schedule_attempt(s, cause);
        if (r < 0)
                return r;
        return first ? TOKEND_EVENT_DISCONNECTED : 0;
}

/* One reply message of the stream: an event, or the end code. */
static int sub_handle_message(tokend_subscription *s, json_object *m) {
        json_object *v, *p = NULL;

        if (json_object_object_get_ex(m, "error", &v)) {
                if (!json_object_is_type(v, json_type_string))
                        return sub_end_local(s, TOKEND_ERR_PROTOCOL, "malformed error reply");
                (void) json_object_object_get_ex(m, "parameters", &p);
                (void) error_daemon(&s->error, json_object_get_string(v), p);
                return sub_end(s, s->error.code < 0 ? s->error.code : TOKEND_ERR_DAEMON);
        }
        bool continues = json_object_object_get_ex(m, "continues", &v) && json_object_is_type(v, json_type_boolean) &&
                         json_object_get_boolean(v);
        if (!json_object_object_get_ex(m, "parameters", &p) || !json_object_is_type(p, json_type_object))
                return sub_end_local(s, TOKEND_ERR_PROTOCOL, "reply without parameters");
        tokend_token *t = NULL;
        int r = token_from_reply(p, &t);
        if (r < 0)
                return sub_end_local(s, r, r == TOKEND_ERR_PROTOCOL ? "malformed token reply" : "out of memory");
        tokend_token_free(s->token);
        s->token = t;
        if (s->outage) {
                s->outage = false;
                error_clear(&s->error);
        }
        if (!continues)
                /* Subscribe ends with an error, never with a plain last reply:
                 * deliver this token, and the end at the next step. */
                (void) sub_end_local(s, TOKEND_ERR_PROTOCOL, "the stream ended without an error reply");
        return TOKEND_EVENT_TOKEN;
}

/* Does the next piece of work without blocking: an event (> 0), nothing to
 * do now (0), or the end code (< 0). */
static int sub_step(tokend_subscription *s) {
        int r;

        for (;;) {
                switch (s->state) {
                case SUB_ENDED:
                        return s->error.code < 0 ? s->error.code : TOKEND_ERR_DISCONNECTED;

                case SUB_BACKOFF: {
                        uint64_t expirations;
                        (void) !read(s->timer_fd, &expirations, sizeof expirations);
                        if (now_monotonic_usec() < s->next_attempt)
                                return 0;
                        r = sub_connect(s);
                        if (r == -ENOMEM)
                                return sub_end_local(s, TOKEND_ERR_NO_MEMORY, "out of memory");
                        if (r < 0) {
                                r = sub_schedule_attempt(s, r);
                                if (r < 0)
                                        return r;
                                return 0;
                        }
                        s->reconnects++;
                        continue;
                }

                case SUB_STREAMING: {
                        _cleanup_(json_object_put_erasep) json_object *m = NULL;

                        if (s->want_out) {
                                r = sub_flush(s);
                                if (r < 0) {
                                        r = sub_disconnected(s, r);
                                        if (r != 0)
                                                return r;
                                        continue;
                                }
                        }
                        r = varlink_stream_next(&s->stream, &m);
                        if (r == -ENOMEM)
                                return sub_end_local(s, TOKEND_ERR_NO_MEMORY, "out of memory");
                        if (r < 0)
                                return sub_end_local(s, TOKEND_ERR_PROTOCOL, "malformed message from tokend");
                        if (r > 0)
                                return sub_handle_message(s, m);

                        size_t before = s->stream.rlen;
                        r = varlink_stream_fill(&s->stream);
                        if (r == -ENOMEM)
                                return sub_end_local(s, TOKEND_ERR_NO_MEMORY, "out of memory");
                        if (r == -ENOBUFS)
                                return sub_end_local(s, TOKEND_ERR_PROTOCOL, "message from tokend too large");
                        if (r < 0) {
                                r = sub_disconnected(s, r);
                                if (r != 0)
                                        return r;
                                continue;
                        }
                        if (s->stream.rlen == before)
                                return 0; /* nothing to read now */
                        continue;
                }
                }
                return sub_end_local(s, TOKEND_ERR_PROTOCOL, "bad state");
        }
}

_public_ int tokend_subscribe(tokend_client *c, const char *credential, const char *const *scopes,
                              const char *resource, int64_t min_ttl, unsigned flags, tokend_subscription_fn callback,
                              void *userdata, tokend_subscription **ret) {
        const char *what;
        int r;

        if (!c)
                return TOKEND_ERR_INVALID_ARGUMENT;
        if (!ret || flags != 0)
                return error_local(&c->error, TOKEND_ERR_INVALID_ARGUMENT, "invalid %s", !ret ? "ret" : "flags");

        _cleanup_(tokend_subscription_freep) tokend_subscription *s = calloc(1, sizeof *s);
        if (!s)
                return error_local(&c->error, TOKEND_ERR_NO_MEMORY, "out of memory");
        s->epoll_fd = s->timer_fd = s->pending_fd = -1;
        varlink_stream_init(&s->stream, -1, SUB_MESSAGE_MAX, VARLINK_DEPTH_MAX_DEFAULT);
        s->error.retry_after = -1;
        s->callback = callback;
        s->userdata = userdata;
        s->reconnect_usec = c->reconnect_usec;

        r = request_parameters(credential, scopes, resource, min_ttl, &s->parameters, &what);
        if (r < 0)
                return error_local(&c->error, r, what ? "invalid %s" : "out of memory", what);
        s->path = strdup(c->path);
        if (!s->path)
                return error_local(&c->error, TOKEND_ERR_NO_MEMORY, "out of memory");

        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epoll_fd < 0)
                return error_local(&c->error, errno == ENOMEM ? TOKEND_ERR_NO_MEMORY : TOKEND_ERR_NOT_REACHABLE,
                                   "epoll_create1: %s", strerror(errno));
        s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (s->timer_fd < 0)
                return error_local(&c->error, errno == ENOMEM ? TOKEND_ERR_NO_MEMORY : TOKEND_ERR_NOT_REACHABLE,
                                   "timerfd_create: %s", strerror(errno));
        s->pending_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->pending_fd < 0)
                return error_local(&c->error, errno == ENOMEM ? TOKEND_ERR_NO_MEMORY : TOKEND_ERR_NOT_REACHABLE,
                                   "eventfd: %s", strerror(errno));
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = s->timer_fd };
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->timer_fd, &ev) < 0)
                return error_local(&c->error, TOKEND_ERR_NO_MEMORY, "epoll_ctl: %s", strerror(errno));
        ev = (struct epoll_event) { .events = EPOLLIN, .data.fd = s->pending_fd };
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->pending_fd, &ev) < 0)
                return error_local(&c->error, TOKEND_ERR_NO_MEMORY, "epoll_ctl: %s", strerror(errno));

        r = sub_connect(s);
        if (r < 0)
                return error_local(&c->error, r == -ENOMEM ? TOKEND_ERR_NO_MEMORY : TOKEND_ERR_NOT_REACHABLE,
                                   "connecting to %s: %s", s->path, strerror(-r));
        /* The call is small: it nearly always leaves at once. Otherwise wait
         * (bounded by the client's timeout) so that a daemon that does not read
         * is reported here. */
        uint64_t deadline = c->timeout_usec == TOKEND_INFINITY ? 0 : now_monotonic_usec() + c->timeout_usec;
        while (s->want_out) {
                struct pollfd p = { .fd = s->stream.fd, .events = POLLOUT };
                int timeout = -1;
                if (deadline > 0) {
                        uint64_t now = now_monotonic_usec();
                        if (now >= deadline)
                                return error_local(&c->error, TOKEND_ERR_TIMEOUT, "sending Subscribe to %s timed out",
                                                   s->path);
                        timeout = (int) ((deadline - now + 999) / 1000);
                }
                if (poll(&p, 1, timeout) < 0 && errno != EINTR)
                        return error_local(&c->error, TOKEND_ERR_DISCONNECTED, "poll: %s", strerror(errno));
                r = sub_flush(s);
                if (r < 0)
                        return error_local(&c->error, TOKEND_ERR_DISCONNECTED, "sending Subscribe to %s: %s", s->path,
                                           strerror(-r));
        }
        error_clear(&c->error);
        *ret = TAKE_PTR(s);
        return TOKEND_OK;
}

_public_ tokend_subscription *tokend_subscription_free(tokend_subscription *s) {
        if (!s)
                return NULL;
        varlink_stream_done(&s->stream);
        safe_close(s->timer_fd);
        safe_close(s->pending_fd);
        safe_close(s->epoll_fd);
        if (s->parameters)
                json_object_put(s->parameters);
        tokend_token_free(s->token);
        error_clear(&s->error);
        free(s->path);
        free(s);
        return NULL;
}

_public_ int tokend_subscription_fd(const tokend_subscription *s) {
        if (!s || s->state == SUB_ENDED)
                return -1;
        return s->epoll_fd;
}

/* Keeps the fd readable while an event can be taken without new input: a
 * complete message already read, or an end not yet reported. The socket
 * alone would not say so, and a caller polling the fd would wait forever. */
static void sub_update_pending(tokend_subscription *s) {
        bool pending = (s->state == SUB_ENDED && !s->end_reported) ||
                       (s->state == SUB_STREAMING && s->stream.rlen > 0 && memchr(s->stream.rbuf, 0, s->stream.rlen));
        uint64_t v = 1;

        if (pending)
                (void) !write(s->pending_fd, &v, sizeof v);
        else
                (void) !read(s->pending_fd, &v, sizeof v);
}

/* One event without blocking, marking the end as reported. */
static int sub_take(tokend_subscription *s) {
        int r = sub_step(s);
        if (r < 0)
                s->end_reported = true;
        sub_update_pending(s);
        return r;
}

/* Delivers every event available now to the callback; from run(), stops
 * early when the callback asked to. */
static int sub_dispatch(tokend_subscription *s, bool honour_stop) {
        int n = 0;

        for (;;) {
                bool reported = s->end_reported;
                int r = sub_take(s);
                if (r < 0) {
                        if (!reported)
                                s->callback(s, TOKEND_EVENT_ENDED, r, s->userdata);
                        return r;
                }
                if (r == 0)
                        return n;
                n = n < INT_MAX ? n + 1 : n;
                s->callback(s, (tokend_event) r, r == TOKEND_EVENT_TOKEN ? TOKEND_OK : TOKEND_ERR_DISCONNECTED,
                            s->userdata);
                if (honour_stop && s->stop)
                        return n;
        }
}

_public_ int tokend_subscription_process(tokend_subscription *s) {
        if (!s || !s->callback)
                return TOKEND_ERR_INVALID_ARGUMENT;
        return sub_dispatch(s, false);
}

/* Waits until the epoll fd is readable or the deadline (0: none) passes. */
static int sub_wait(tokend_subscription *s, uint64_t deadline) {
        struct pollfd p = { .fd = s->epoll_fd, .events = POLLIN };
        int timeout = -1;

        if (deadline > 0) {
                uint64_t now = now_monotonic_usec();
                if (now >= deadline)
                        return 0;
                uint64_t ms = (deadline - now + 999) / 1000;
                timeout = ms > INT_MAX ? INT_MAX : (int) ms;
        }
        if (poll(&p, 1, timeout) < 0 && errno != EINTR)
                return -errno;
        return 1;
}

_public_ int tokend_subscription_next(tokend_subscription *s, uint64_t timeout_usec) {
        uint64_t deadline = 0;

        if (!s)
                return TOKEND_ERR_INVALID_ARGUMENT;
        if (timeout_usec != TOKEND_INFINITY)
                deadline = usec_add(now_monotonic_usec(), timeout_usec);
        for (;;) {
                int r = sub_take(s);
                if (r != 0)
                        return r;
                if (timeout_usec == 0)
                        return TOKEND_EVENT_NONE;
                r = sub_wait(s, deadline);
                if (r < 0)
                        return sub_end_local(s, TOKEND_ERR_DISCONNECTED, "poll: %s", strerror(-r));
                if (r == 0)
                        return TOKEND_EVENT_NONE;
        }
}

_public_ int tokend_subscription_run(tokend_subscription *s) {
        if (!s || !s->callback)
                return TOKEND_ERR_INVALID_ARGUMENT;
        s->stop = false;
        for (;;) {
                int r = sub_dispatch(s, true);
                if (r < 0)
                        return r;
                if (s->stop) {
                        s->stop = false;
                        return TOKEND_OK;
                }
                if (r == 0) {
                        r = sub_wait(s, 0);
                        if (r < 0) {
                                r = sub_end_local(s, TOKEND_ERR_DISCONNECTED, "poll: %s", strerror(-r));
                                s->end_reported = true;
                                s->callback(s, TOKEND_EVENT_ENDED, r, s->userdata);
                                return r;
                        }
                }
        }
}

_public_ void tokend_subscription_stop(tokend_subscription *s) {
        if (s)
                s->stop = true;
}

_public_ const tokend_token *tokend_subscription_token(const tokend_subscription *s) {
        return s ? s->token : NULL;
}

_public_ const tokend_error *tokend_subscription_error(const tokend_subscription *s) {
        return s ? &s->error : NULL;
}

_public_ unsigned tokend_subscription_reconnects(const tokend_subscription *s) {
        return s ? s->reconnects : 0;
}
