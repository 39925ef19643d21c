/* SPDX-License-Identifier: MIT */
/* daemon/login.c: io.tokend.manager.Login: the device authorization grant
 * (RFC 8628) and the authorization code grant with PKCE and a loopback
 * redirect (RFC 7636, RFC 8252), run inside the daemon so that device codes,
 * authorization codes, the PKCE verifier and the refresh token never leave it.
 * Progress is streamed to the caller as "more" replies; closing the
 * connection cancels the login. */
#include <stdio.h>

#include "audit.h"
#include "common/fileio.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "discovery.h"
#include "engine.h"
#include "login.h"
#include "loopback.h"
#include "provider.h"

#define ERR_FAILED "io.tokend.manager.LoginFailed"
#define ERR_EXISTS "io.tokend.manager.CredentialExists"
#define ERR_URL "io.tokend.manager.InvalidURL"
#define ERR_DISCOVERY "io.tokend.manager.DiscoveryFailed"
#define ERR_STORE "io.tokend.manager.StoreFailed"

#define AUTH_CODE_TIMEOUT_USEC (10 * 60 * USEC_PER_SEC)
#define SLOW_DOWN_STEP_USEC (5 * USEC_PER_SEC) /* RFC 8628 3.5 */
#define POLL_INTERVAL_MAX_USEC (60 * USEC_PER_SEC)
#define CLIENT_SECRET_FILE_MAX 1024U

typedef enum LoginFlow {
        LOGIN_FLOW_DEVICE,
        LOGIN_FLOW_AUTH_CODE,
        _LOGIN_FLOW_MAX,
        _LOGIN_FLOW_INVALID = -1,
} LoginFlow;

static const char *const login_flow_table[_LOGIN_FLOW_MAX] = {
        [LOGIN_FLOW_DEVICE] = "device",
        [LOGIN_FLOW_AUTH_CODE] = "auth-code",
};

static LoginFlow login_flow_from_string(const char *s) {
        for (int i = 0; i < _LOGIN_FLOW_MAX; i++)
                if (s && streq(s, login_flow_table[i]))
                        return (LoginFlow) i;
        return _LOGIN_FLOW_INVALID;
}

struct LoginOperation {
        Manager *manager;
        LoginOperation *prev, *next;
        VarlinkCall *call;
        Credential *cred; /* being built; the manager's once committed */

        LoginFlow flow; /* _LOGIN_FLOW_INVALID: pick from what the provider offers */
        unsigned preset_flows; /* ProviderFlow bits allowed by the preset; 0: no preset */
        bool preset_discovery; /* discovered endpoints win over the preset's */
        bool auth_method_given;
        char *notes; /* the preset's notes, shown with the first progress event */
        ScopeSet scopes; /* asked for */
        bool prompt_consent;
        char **extra_params; /* key, value, key, value, ..., NULL */
        char *authorization_endpoint;
        char *device_authorization_endpoint;

        Discovery *discovery;
        HttpRequest *req;
        sd_event_source *timer; /* device: next poll; auth-code: overall deadline */

        /* device flow */
        char *device_code; /* secret */
        uint64_t interval;
        uint64_t deadline; /* CLOCK_BOOTTIME usec */

        /* auth code flow */
        Loopback *loopback;
        sd_event_source *fail_later; /* ends the login outside the loopback's callback */
        char *fail_reason;
        char *state;    /* secret */
        char *verifier; /* secret */
        char *redirect_uri;
};

static LoginOperation *login_free(LoginOperation *op) {
        Manager *m = op->manager;
        LIST_REMOVE(m->logins, op);

        op->req = http_request_cancel(op->req);
        op->discovery = discovery_cancel(op->discovery);
        sd_event_source_disable_unref(op->timer);
        loopback_free(op->loopback);
        sd_event_source_disable_unref(op->fail_later);
        free(op->fail_reason);
        credential_free(op->cred);
        scope_set_done(&op->scopes);
        for (char **p = op->extra_params; p && *p; p++)
                free(*p);
        free(op->extra_params);
        free(op->authorization_endpoint);
        free(op->device_authorization_endpoint);
        free(op->notes);
        erase_and_free(op->device_code);
        erase_and_free(op->state);
        erase_and_free(op->verifier);
        free(op->redirect_uri);
        free(op);
        return NULL;
}

static void login_finish(LoginOperation *op, const char *error, json_object *params) {
        VarlinkCall *call = TAKE_PTR(op->call);
        varlink_call_set_cancel(call, NULL, NULL);
        login_free(op);
        if (error)
                varlink_call_error(call, error, params);
        else
                varlink_call_reply(call, params);
}

static void login_fail(LoginOperation *op, const char *reason, const char *oauth_error) {
        log_info("Login for credential %s failed: %s", op->cred->name, reason);
        login_finish(op, ERR_FAILED, varlink_params_kv("reason", reason, "error", oauth_error));
}

static void login_on_cancel(VarlinkCall *call, void *userdata) {
        LoginOperation *op = userdata;
        (void) call;
        log_info("Login for credential %s cancelled by the caller", op->cred->name);
        op->call = NULL;
        login_free(op);
}

static char *client_authorization(Credential *c) {
        if (c->auth_method != OAUTH_AUTH_CLIENT_SECRET_BASIC)
                return NULL;
        return oauth_basic_authorization(c->client_id, c->client_secret);
}

/* The provider answered the token request of either flow successfully. */
static void login_complete(LoginOperation *op, TokenResponse *t) {
        Credential *c = op->cred;
        const char *reason = NULL;

        if (!t->refresh_token) {
                login_fail(op,
                           "the provider issued no refresh token: it may need the offline_access scope, "
                           "prompt=consent, or (GitHub) expiring user tokens enabled for the app",
                           "no_refresh_token");
                return;
        }
        if (c->scopes.n == 0 && op->scopes.n > 0 && scope_set_copy(&op->scopes, &c->scopes) < 0) {
                login_fail(op, "out of memory", NULL);
                return;
        }
        int r = credential_commit(c, t, &reason);
        if (r < 0) {
                login_finish(op, ERR_STORE, varlink_params_kv("reason", reason, NULL, NULL));
                return;
        }
        op->cred = NULL; /* the manager's now */
        log_info("Credential %s added by %s login (client %s)", c->name, login_flow_table[op->flow], c->client_id);
        audit_log(op->manager, &(AuditRecord) { .event = AUDIT_LOGIN, .credential = c->name, .scopes = &c->scopes,
                                                .agent = audit_call_agent(op->call) });
        json_object *p = varlink_params_kv("event", "done", NULL, NULL);
        if (p)
                json_object_object_add(p, "credential", credential_to_json(c, false));
        login_finish(op, NULL, p);
}

/* Handles a token endpoint answer common to both flows; returns true when the
 * answer ended the login (success or failure). `pending` reports RFC 8628
 * authorization_pending / slow_down. */
static bool login_handle_token_response(LoginOperation *op, const HttpResponse *resp, bool *pending,
                                        bool *slow_down) {
        TokenResponse t = {};
        OAuthError err = {};

        OAuthOutcome o = oauth_parse_token_response(resp->status, resp->body, resp->body_len, &t, &err);
        t.issued = resp->started;
        switch (o) {
        case OAUTH_OK:
                login_complete(op, &t);
                token_response_done(&t);
                return true;
        case OAUTH_TRANSIENT:
                return false; /* the caller retries */
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
        case OAUTH_INVALID_SCOPE:
        case OAUTH_REFUSED:
                break;
        }
        if (streq(err.code, "authorization_pending")) {
                *pending = true;
                return false;
        }
        if (streq(err.code, "slow_down")) {
                *slow_down = true;
                return false;
        }
        /* Entra ID says authorization_declined for a denied device login. */
        if (streq(err.code, "access_denied") || streq(err.code, "authorization_declined"))
                login_fail(op, "the user denied access", err.code);
        else if (streq(err.code, "expired_token"))
                login_fail(op, "the code expired before the user finished", err.code);
        else {
                char reason[400];
                snprintf(reason, sizeof reason, "the provider refused: %s%s%s", err.code,
                         err.description[0] ? ": " : "", err.description);
                login_fail(op, reason, err.code);
        }
        return true;
}

/* ---- device flow ---- */

static void device_schedule_poll(LoginOperation *op);

static void device_on_token(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        LoginOperation *op = userdata;
        bool pending = false, slow_down = false;
        (void) req;

        op->req = NULL;
        if (login_handle_token_response(op, resp, &pending, &slow_down))
                return;
        if (slow_down && op->interval < POLL_INTERVAL_MAX_USEC)
                op->interval += SLOW_DOWN_STEP_USEC;
        /* Pending, slow_down or a transient failure: poll again, until the code expires. */
        device_schedule_poll(op);
}

static int device_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LoginOperation *op = userdata;
        Credential *c = op->cred;
        _cleanup_erase_ char *body = NULL, *auth = NULL;
        (void) s;
        (void) usec;

        if (usec >= op->deadline) {
                login_fail(op, "the code expired before the user finished", "expired_token");
                return 0;
        }
        body = oauth_device_token_body(op->device_code, c->auth_method, c->client_id, c->client_secret);
        auth = client_authorization(c);
        if (!body || (c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC && !auth) ||
            http_post_form(op->manager->http, c->token_endpoint, body, auth, device_on_token, op, &op->req) < 0)
                login_fail(op, "cannot poll the token endpoint", NULL);
        return 0;
}

static void device_schedule_poll(LoginOperation *op) {
        uint64_t now;
        sd_event_now(op->manager->event, CLOCK_BOOTTIME, &now);
        uint64_t when = now + op->interval;
        if (when > op->deadline)
                when = op->deadline;
        int r;
        if (!op->timer)
                r = sd_event_add_time(op->manager->event, &op->timer, CLOCK_BOOTTIME, when, USEC_PER_SEC / 10,
                                      device_on_timer, op);
        else {
                r = sd_event_source_set_time(op->timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(op->timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                login_fail(op, "cannot schedule polling", NULL);
}

static void device_on_authorization(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        LoginOperation *op = userdata;
        DeviceAuthorization d = {};
        OAuthError err = {};
        (void) req;

        op->req = NULL;
        OAuthOutcome o = oauth_parse_device_authorization(resp->status, resp->body, resp->body_len, &d, &err);
        if (o != OAUTH_OK) {
                char reason[400];
                snprintf(reason, sizeof reason, "device authorization refused: %s%s%s",
                         resp->curl_error ?: err.code, err.description[0] ? ": " : "", err.description);
                login_fail(op, reason, err.code);
                return;
        }

        uint64_t now;
        sd_event_now(op->manager->event, CLOCK_BOOTTIME, &now);
        op->device_code = TAKE_PTR(d.device_code);
        op->interval = (uint64_t) d.interval * USEC_PER_SEC;
        op->deadline = now + (uint64_t) d.expires_in * USEC_PER_SEC;

        json_object *p = varlink_params_kv("event", "device-code", "user_code", d.user_code);
        if (p) {
                json_object_object_add(p, "verification_uri", json_object_new_string(d.verification_uri));
                if (d.verification_uri_complete)
                        json_object_object_add(p, "verification_uri_complete",
                                               json_object_new_string(d.verification_uri_complete));
                json_object_object_add(p, "expires_at",
                                       json_object_new_int64((int64_t) (now_realtime_usec() / USEC_PER_SEC) + d.expires_in));
        }
        device_authorization_done(&d);
        if (p && op->notes)
                json_object_object_add(p, "notes", json_object_new_string(op->notes));
        if (varlink_call_reply_more(op->call, p) < 0) {
                login_fail(op, "cannot report progress", NULL);
                return;
        }
        device_schedule_poll(op);
}

static void device_start(LoginOperation *op) {
        Credential *c = op->cred;
        _cleanup_free_ char *scope = NULL;
        _cleanup_erase_ char *body = NULL, *auth = NULL;

        if (op->scopes.n > 0 && !(scope = scope_set_join(&op->scopes))) {
                login_fail(op, "out of memory", NULL);
                return;
        }
        body = oauth_device_authorization_body(scope, c->auth_method, c->client_id, c->client_secret);
        auth = client_authorization(c);
        if (!body || (c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC && !auth) ||
            http_post_form(op->manager->http, op->device_authorization_endpoint, body, auth, device_on_authorization,
                           op, &op->req) < 0)
                login_fail(op, "cannot start device authorization", NULL);
}

/* ---- authorization code flow ---- */

static void code_on_token(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        LoginOperation *op = userdata;
        bool pending = false, slow_down = false;
        (void) req;

        op->req = NULL;
        if (login_handle_token_response(op, resp, &pending, &slow_down))
                return;
        /* A code can be redeemed once: no retry on a transient failure. */
        login_fail(op, resp->curl_error ?: "the provider failed to redeem the authorization code", "server_error");
}

static int code_on_fail_later(sd_event_source *s, void *userdata);

/* Ends the login from the event loop, once the loopback's callback returned:
 * the loopback must not be freed inside its own callback. Takes `reason`. */
static void code_fail_later(LoginOperation *op, char *reason) {
        free(op->fail_reason);
        op->fail_reason = reason;
        if (!op->fail_later &&
            sd_event_add_defer(op->manager->event, &op->fail_later, code_on_fail_later, op) < 0)
                op->fail_later = NULL;
        else if (op->fail_later)
                (void) sd_event_source_set_enabled(op->fail_later, SD_EVENT_ONESHOT);
}

static LoopbackVerdict code_on_redirect(const char *query, const char **ret_message, void *userdata) {
        LoginOperation *op = userdata;
        Credential *c = op->cred;
        CallbackParams p = {};

        if (op->req) {
                *ret_message = "This login is already being completed.";
                return LOOPBACK_REJECT;
        }
        if (oauth_parse_callback_query(query, &p) < 0) {
                *ret_message = "Malformed redirect.";
                return LOOPBACK_REJECT;
        }
        /* The state is checked first, in constant time: a redirect that does
         * not carry ours did not come from this login (RFC 6749 10.12). */
        if (!p.state || !secret_equal(p.state, op->state)) {
                callback_params_done(&p);
                log_notice("Login for credential %s: redirect with a wrong or missing state refused", c->name);
                *ret_message = "Wrong or missing state: this redirect does not belong to the login in progress.";
                return LOOPBACK_REJECT;
        }
        if (p.error) {
                char *reason = NULL;
                if (asprintf(&reason, "the authorization server answered %s", p.error) < 0)
                        reason = NULL;
                callback_params_done(&p);
                code_fail_later(op, reason);
                *ret_message = "Login failed. You can close this window.";
                return LOOPBACK_FAIL;
        }
        if (!p.code) {
                callback_params_done(&p);
                *ret_message = "The redirect carries no authorization code.";
                return LOOPBACK_REJECT;
        }

        _cleanup_erase_ char *body = oauth_code_token_body(p.code, op->redirect_uri, op->verifier, c->auth_method,
                                                           c->client_id, c->client_secret);
        _cleanup_erase_ char *auth = client_authorization(c);
        callback_params_done(&p);
        if (!body || (c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC && !auth) ||
            http_post_form(op->manager->http, c->token_endpoint, body, auth, code_on_token, op, &op->req) < 0) {
                code_fail_later(op, strdup("cannot redeem the authorization code"));
                *ret_message = "tokend could not redeem the code.";
                return LOOPBACK_FAIL;
        }
        *ret_message = "Login complete. You can close this window and return to the terminal.";
        return LOOPBACK_ACCEPT;
}

static int code_on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        LoginOperation *op = userdata;
        (void) s;
        (void) usec;
        login_fail(op, "nobody completed the login in the browser in time", "expired_token");
        return 0;
}

static int code_on_fail_later(sd_event_source *s, void *userdata) {
        LoginOperation *op = userdata;
        _cleanup_free_ char *reason = TAKE_PTR(op->fail_reason);
        (void) s;
        login_fail(op, reason ?: "the login failed in the browser", "access_denied");
        return 0;
}

static void code_start(LoginOperation *op) {
        Manager *m = op->manager;
        Credential *c = op->cred;
        _cleanup_free_ char *scope = NULL, *challenge = NULL, *url = NULL;
        int r;

        r = loopback_new(m->event, code_on_redirect, op, &op->loopback);
        if (r < 0) {
                login_fail(op, "cannot listen on a loopback port for the redirect", NULL);
                return;
        }
        if (asprintf(&op->redirect_uri, "http://127.0.0.1:%u/callback", (unsigned) loopback_port(op->loopback)) < 0 ||
            !(op->state = oauth_random_token(32)) || oauth_pkce_pair(&op->verifier, &challenge) < 0 ||
            (op->scopes.n > 0 && !(scope = scope_set_join(&op->scopes)))) {
                login_fail(op, "out of memory", NULL);
                return;
        }

        const char *params[64] = {
                "response_type", "code",
                "client_id", c->client_id,
                "redirect_uri", op->redirect_uri,
                "state", op->state,
                "code_challenge", challenge,
                "code_challenge_method", "S256",
        };
        size_t n = 12;
        if (scope) {
                params[n++] = "scope";
                params[n++] = scope;
        }
        if (op->prompt_consent) {
                params[n++] = "prompt";
                params[n++] = "consent";
        }
        for (char **p = op->extra_params; p && p[0] && p[1] && n + 2 < ELEMENTSOF(params); p += 2) {
                params[n++] = p[0];
                params[n++] = p[1];
        }
        params[n] = NULL;
        url = oauth_authorization_url(op->authorization_endpoint, params);
        if (!url) {
                login_fail(op, "out of memory", NULL);
                return;
        }

        r = sd_event_add_time_relative(m->event, &op->timer, CLOCK_BOOTTIME, AUTH_CODE_TIMEOUT_USEC, 0,
                                       code_on_deadline, op);
        if (r < 0) {
                login_fail(op, "cannot arm the login deadline", NULL);
                return;
        }
        json_object *p = varlink_params_kv("event", "authorize", "authorization_url", url);
        if (p && op->notes)
                json_object_object_add(p, "notes", json_object_new_string(op->notes));
        if (p)
                json_object_object_add(p, "expires_at", json_object_new_int64(
                                (int64_t) ((now_realtime_usec() + AUTH_CODE_TIMEOUT_USEC) / USEC_PER_SEC)));
        if (varlink_call_reply_more(op->call, p) < 0)
                login_fail(op, "cannot report progress", NULL);
}

/* ---- start ---- */

static void login_run(LoginOperation *op) {
        Credential *c = op->cred;
        const char *reason;

        if (!c->token_endpoint) {
                login_fail(op, "the provider has no token endpoint", NULL);
                return;
        }
        if (op->flow < 0) {
                bool device_ok = op->device_authorization_endpoint &&
                                 (op->preset_flows == 0 || (op->preset_flows & PROVIDER_FLOW_DEVICE));
                op->flow = device_ok ? LOGIN_FLOW_DEVICE : LOGIN_FLOW_AUTH_CODE;
        }
        if (op->preset_flows != 0 &&
            !(op->preset_flows & (op->flow == LOGIN_FLOW_DEVICE ? PROVIDER_FLOW_DEVICE : PROVIDER_FLOW_AUTH_CODE))) {
                login_finish(op, ERR_FAILED, varlink_params_kv("reason", "the provider preset does not support this flow",
                                                       "error", "unsupported_flow"));
                return;
        }
        const char *endpoint = op->flow == LOGIN_FLOW_DEVICE ? op->device_authorization_endpoint
                                                             : op->authorization_endpoint;
        if (!endpoint) {
                login_finish(op, ERR_FAILED,
                             varlink_params_kv("reason", op->flow == LOGIN_FLOW_DEVICE
                                                         ? "the provider offers no device authorization endpoint"
                                                         : "the provider offers no authorization endpoint",
                                       "error", "unsupported_flow"));
                return;
        }
        if (oauth_check_url(endpoint, c->insecure_loopback, &reason) < 0) {
                login_finish(op, ERR_URL, varlink_params_kv("field", op->flow == LOGIN_FLOW_DEVICE ? "device_authorization_endpoint"
                                                                                          : "authorization_endpoint",
                                                    "reason", reason));
                return;
        }
        /* An OIDC provider issues a refresh token to a native app only with
         * offline_access, and (oidc-provider, Google) only after consent. */
        if (scope_set_contains(&op->scopes, "offline_access"))
                op->prompt_consent = true;

        if (op->flow == LOGIN_FLOW_DEVICE)
                device_start(op);
        else
                code_start(op);
}

static void login_on_discovery(DiscoveryDocument *d, const char *reason, void *userdata) {
        LoginOperation *op = userdata;
        Credential *c = op->cred;

        op->discovery = NULL;
        if (!d) {
                login_finish(op, ERR_DISCOVERY, varlink_params_kv("issuer", c->issuer, "reason", reason));
                return;
        }
        if (oauth_check_url(d->token_endpoint, c->insecure_loopback, &reason) < 0) {
                login_finish(op, ERR_URL, varlink_params_kv("field", "token_endpoint", "reason", reason));
                return;
        }
        free(c->token_endpoint);
        c->token_endpoint = TAKE_PTR(d->token_endpoint);
        if ((!c->revocation_endpoint || op->preset_discovery) && d->revocation_endpoint &&
            oauth_check_url(d->revocation_endpoint, c->insecure_loopback, &reason) >= 0)
                free(c->revocation_endpoint), c->revocation_endpoint = TAKE_PTR(d->revocation_endpoint);
        if (d->authorization_endpoint && (!op->authorization_endpoint || op->preset_discovery)) {
                free(op->authorization_endpoint);
                op->authorization_endpoint = TAKE_PTR(d->authorization_endpoint);
        }
        if (d->device_authorization_endpoint && (!op->device_authorization_endpoint || op->preset_discovery)) {
                free(op->device_authorization_endpoint);
                op->device_authorization_endpoint = TAKE_PTR(d->device_authorization_endpoint);
        }
        login_run(op);
}

static int dup_opt(const char *s, char **ret) {
        if (!s)
                return 0;
        char *d = strdup(s);
        if (!d)
                return -ENOMEM;
        free(*ret);
        *ret = d;
        return 0;
}

/* Loads a provider preset and applies it: endpoints, default scopes, the
 * refresh token quirks (offline_access, prompt=consent, extra parameters),
 * the flows it supports and its default client authentication. On failure
 * *ret_reason is a malloc'd message naming the file and field. */
static int login_apply_preset(LoginOperation *op, const char *name, const char *tenant, char **ret_reason) {
        Manager *m = op->manager;
        Credential *c = op->cred;
        _cleanup_provider_preset_ ProviderPreset *p = NULL;
        int r;

        r = provider_preset_load(name, (const char *const *) m->provider_dirs, c->insecure_loopback, &p, ret_reason);
        if (r < 0)
                return r;
        if (p->tenant || tenant) {
                r = provider_preset_expand_tenant(p, tenant, ret_reason);
                if (r < 0)
                        return r;
        }
        if (c->issuer || p->discovery) {
                r = provider_preset_set_issuer(p, c->issuer, c->insecure_loopback, ret_reason);
                if (r < 0)
                        return r;
        }
        r = provider_preset_check_complete(p, ret_reason);
        if (r < 0)
                return r;

        if (!c->issuer && (r = dup_opt(p->issuer, &c->issuer)) < 0)
                return r;
        if ((r = dup_opt(p->token_endpoint, &c->token_endpoint)) < 0 ||
            (r = dup_opt(p->revocation_endpoint, &c->revocation_endpoint)) < 0 ||
            (r = dup_opt(p->authorization_endpoint, &op->authorization_endpoint)) < 0 ||
            (r = dup_opt(p->device_authorization_endpoint, &op->device_authorization_endpoint)) < 0 ||
            (r = dup_opt(p->notes, &op->notes)) < 0)
                return r;
        op->preset_flows = p->flows;
        op->preset_discovery = p->discovery;
        if (op->scopes.n == 0 && (r = scope_set_copy(&p->default_scopes, &op->scopes)) < 0)
                return r;
        if (p->offline_access_scope && (r = scope_set_add(&op->scopes, "offline_access")) < 0)
                return r;
        op->prompt_consent = p->prompt_consent;
        if (p->n_extra_authorization_params > 0) {
                op->extra_params = calloc(2 * p->n_extra_authorization_params + 1, sizeof(char *));
                if (!op->extra_params)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_extra_authorization_params; i++)
                        if (!(op->extra_params[2 * i] = strdup(p->extra_authorization_params[i].key)) ||
                            !(op->extra_params[2 * i + 1] = strdup(p->extra_authorization_params[i].value)))
                                return -ENOMEM;
        }
        /* The preset's client authentication applies when the user gave a
         * secret but no method. */
        if (!op->auth_method_given && c->client_secret && p->auth_method != OAUTH_AUTH_NONE)
                c->auth_method = p->auth_method;
        return 0;
}

typedef struct LoginParams {
        const char *name, *provider, *tenant, *issuer, *client_id, *client_secret_file, *auth_method, *flow;
        json_object *scopes;
        bool insecure_loopback, replace;
} LoginParams;

static int read_client_secret(const char *path, char **ret) {
        _cleanup_erase_ char *text = NULL;
        size_t len;
        int r = read_file_full(path, CLIENT_SECRET_FILE_MAX, &text, &len);
        if (r < 0)
                return r;
        /* The first line, trimmed. */
        text[strcspn(text, "\r\n")] = 0;
        char *s = text;
        while (*s == ' ' || *s == '\t')
                s++;
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
                s[--l] = 0;
        if (l == 0)
                return -ENODATA;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                        return -EBADMSG;
        *ret = secret_strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int login_start(Manager *m, VarlinkCall *call, json_object *parameters) {
        static const VarlinkField fields[] = {
                { "name", VARLINK_FIELD_STRING, offsetof(LoginParams, name), VARLINK_FIELD_REQUIRED, CREDENTIAL_NAME_MAX, VARLINK_NO_PRESENT },
                { "provider", VARLINK_FIELD_STRING, offsetof(LoginParams, provider), VARLINK_FIELD_NONEMPTY, 32, VARLINK_NO_PRESENT },
                { "tenant", VARLINK_FIELD_STRING, offsetof(LoginParams, tenant), VARLINK_FIELD_NONEMPTY, 64, VARLINK_NO_PRESENT },
                { "issuer", VARLINK_FIELD_STRING, offsetof(LoginParams, issuer), 0, OAUTH_URL_MAX, VARLINK_NO_PRESENT },
                { "client_id", VARLINK_FIELD_STRING, offsetof(LoginParams, client_id), VARLINK_FIELD_REQUIRED, 256, VARLINK_NO_PRESENT },
                { "client_secret_file", VARLINK_FIELD_STRING, offsetof(LoginParams, client_secret_file), VARLINK_FIELD_NONEMPTY, 4096, VARLINK_NO_PRESENT },
                { "auth_method", VARLINK_FIELD_STRING, offsetof(LoginParams, auth_method), 0, 64, VARLINK_NO_PRESENT },
                { "scopes", VARLINK_FIELD_STRV, offsetof(LoginParams, scopes), 0, SCOPES_MAX, VARLINK_NO_PRESENT },
                { "flow", VARLINK_FIELD_STRING, offsetof(LoginParams, flow), 0, 16, VARLINK_NO_PRESENT },
                { "insecure_loopback", VARLINK_FIELD_BOOL, offsetof(LoginParams, insecure_loopback), 0, 0, VARLINK_NO_PRESENT },
                { "replace", VARLINK_FIELD_BOOL, offsetof(LoginParams, replace), 0, 0, VARLINK_NO_PRESENT },
                {},
        };
        LoginParams p = {};
        const char *bad = NULL, *reason = NULL;
        _cleanup_erase_ char *secret = NULL;
        Credential *c = NULL;
        int r;

        if (varlink_parse_parameters(parameters, fields, &p, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        if (!credential_name_valid(p.name))
                return varlink_call_error_invalid_parameter(call, "name");
        if (!client_id_valid(p.client_id))
                return varlink_call_error_invalid_parameter(call, "client_id");
        LoginFlow flow = p.flow ? login_flow_from_string(p.flow) : _LOGIN_FLOW_INVALID;
        if (p.flow && flow < 0)
                return varlink_call_error_invalid_parameter(call, "flow");
        if (!p.issuer && !p.provider)
                return varlink_call_error_invalid_parameter(call, "issuer");
        if (p.client_secret_file) {
                if (p.client_secret_file[0] != '/')
                        return varlink_call_error_invalid_parameter(call, "client_secret_file");
                r = read_client_secret(p.client_secret_file, &secret);
                if (r < 0) {
                        log_info_errno(r, "Login: cannot read client secret file %s: %m", p.client_secret_file);
                        return varlink_call_error_invalid_parameter(call, "client_secret_file");
                }
        }
        OAuthAuthMethod method = p.auth_method ? oauth_auth_method_from_string(p.auth_method)
                                               : (secret ? OAUTH_AUTH_CLIENT_SECRET_BASIC : OAUTH_AUTH_NONE);
        if (method < 0)
                return varlink_call_error_invalid_parameter(call, "auth_method");
        if ((method == OAUTH_AUTH_NONE) != !secret)
                return varlink_call_error_invalid_parameter(call, "client_secret_file");
        if (p.issuer && oauth_check_url(p.issuer, p.insecure_loopback, &reason) < 0)
                return varlink_call_error(call, ERR_URL, varlink_params_kv("field", "issuer", "reason", reason));
        if (manager_name_busy(m, p.name) || (manager_find_credential(m, p.name) && !p.replace))
                return varlink_call_error(call, ERR_EXISTS, varlink_params_kv("name", p.name, NULL, NULL));
        if (!manager_find_credential(m, p.name) && m->n_credentials >= CREDENTIALS_MAX)
                return varlink_call_error(call, ERR_STORE, varlink_params_kv("reason", "too many credentials", NULL, NULL));

        r = credential_new(m, p.name, &c);
        if (r < 0)
                return r;
        LoginOperation *op = calloc(1, sizeof *op);
        if (!op) {
                credential_free(c);
                return -ENOMEM;
        }
        op->manager = m;
        op->cred = c;
        op->flow = flow;
        LIST_PREPEND(m->logins, op);

        c->auth_method = method;
        c->insecure_loopback = p.insecure_loopback;
        c->client_secret = TAKE_PTR(secret);
        if ((p.issuer && !(c->issuer = strdup(p.issuer))) || !(c->client_id = strdup(p.client_id))) {
                login_free(op);
                return -ENOMEM;
        }
        if (p.scopes && scope_set_from_json(p.scopes, &op->scopes) < 0) {
                login_free(op);
                return varlink_call_error_invalid_parameter(call, "scopes");
        }

        op->call = call;
        varlink_call_set_cancel(call, login_on_cancel, op);

        op->auth_method_given = p.auth_method;
        if (p.provider) {
                _cleanup_free_ char *why = NULL;
                r = login_apply_preset(op, p.provider, p.tenant, &why);
                if (r < 0) {
                        login_finish(op, "io.tokend.manager.PresetInvalid",
                                     varlink_params_kv("reason", why ?: strerror(-r), NULL, NULL));
                        return 0;
                }
        } else if (p.tenant)
                return login_finish(op, ERR_FAILED, varlink_params_kv("reason", "--tenant needs --provider", "error", NULL)), 0;

        if (c->issuer && (op->preset_discovery || !c->token_endpoint ||
                          (!op->authorization_endpoint && !op->device_authorization_endpoint))) {
                r = discovery_start(m->http, c->issuer, login_on_discovery, op, &op->discovery);
                if (r < 0)
                        login_finish(op, ERR_DISCOVERY, varlink_params_kv("issuer", c->issuer, "reason", "cannot start discovery"));
                return 0;
        }
        login_run(op);
        return 0;
}

bool login_name_busy(Manager *m, const char *name) {
        for (LoginOperation *op = m->logins; op; op = op->next)
                if (op->cred && streq(op->cred->name, name))
                        return true;
        return false;
}
