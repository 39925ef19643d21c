/* SPDX-License-Identifier: MIT */
/* daemon/api-manager.c: io.tokend.manager, the owner's interface. */
#include <stdio.h>

#include "audit.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "consent.h"
#include "credential.h"
#include "discovery.h"
#include "engine.h"
#include "login.h"
#include "manager.h"
#include "peer.h"
#include "policy.h"
#include "store-migrate.h"
#include "varlink-idl.h"

#define ERR_EXISTS "io.tokend.manager.CredentialExists"
#define ERR_NO_SUCH "io.tokend.manager.NoSuchCredential"
#define ERR_URL "io.tokend.manager.InvalidURL"
#define ERR_DISCOVERY "io.tokend.manager.DiscoveryFailed"
#define ERR_AUTH "io.tokend.manager.AuthenticationFailed"
#define ERR_UNAVAILABLE "io.tokend.manager.ProviderUnavailable"
#define ERR_STORE "io.tokend.manager.StoreFailed"

#define CLIENT_SECRET_MAX 1024U

struct AddOperation {
        Manager *manager;
        AddOperation *prev, *next;
        VarlinkCall *call;
        Credential *cred;
        bool replace;
        HttpRequest *req;
        Discovery *discovery;
};

static AddOperation *add_free(AddOperation *op) {
        Manager *m = op->manager;
        LIST_REMOVE(m->adds, op);
        op->req = http_request_cancel(op->req);
        op->discovery = discovery_cancel(op->discovery);
        credential_free(op->cred);
        free(op);
        return NULL;
}

/* Answers the call and ends the operation. */
static void add_finish(AddOperation *op, const char *error, json_object *params) {
        VarlinkCall *call = TAKE_PTR(op->call);
        varlink_call_set_cancel(call, NULL, NULL);
        add_free(op);
        if (error)
                varlink_call_error(call, error, params);
        else
                varlink_call_reply(call, params);
}

static void add_on_cancel(VarlinkCall *call, void *userdata) {
        AddOperation *op = userdata;
        (void) call;
        op->call = NULL;
        add_free(op);
}

static void add_on_check(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        AddOperation *op = userdata;
        Credential *c = op->cred;
        TokenResponse t = {};
        OAuthError err = {};
        int r;
        (void) req;

        op->req = NULL;
        OAuthOutcome o = oauth_parse_token_response(resp->status, resp->body, resp->body_len, &t, &err);
        t.issued = resp->started;
        switch (o) {
        case OAUTH_OK:
                break;
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
        case OAUTH_INVALID_SCOPE:
        case OAUTH_REFUSED:
                log_info("Adding credential %s: provider refused the refresh token (%s)", c->name, err.code);
                add_finish(op, ERR_AUTH, varlink_params_kv("error", err.code, "description",
                                                   err.description[0] ? err.description : NULL));
                return;
        case OAUTH_TRANSIENT:
                add_finish(op, ERR_UNAVAILABLE,
                           varlink_params_kv("reason", resp->curl_error ?: err.code, NULL, NULL));
                return;
        }

        const char *reason = NULL;
        r = credential_commit(c, &t, &reason);
        token_response_done(&t);
        if (r < 0) {
                add_finish(op, ERR_STORE, varlink_params_kv("reason", reason, NULL, NULL));
                return;
        }
        op->cred = NULL; /* now the manager's */

        log_info("Credential %s added (client %s, %zu scopes)", c->name, c->client_id, c->scopes.n);
        audit_log(op->manager, &(AuditRecord) { .event = AUDIT_ADD, .credential = c->name, .scopes = &c->scopes,
                                                .agent = audit_call_agent(op->call) });
        json_object *p = json_object_new_object();
        if (p)
                json_object_object_add(p, "credential", credential_to_json(c, false));
        add_finish(op, NULL, p);
}

static void add_check(AddOperation *op) {
        Credential *c = op->cred;
        int r = engine_refresh_request(c, c->scopes.n > 0 ? &c->scopes : NULL, NULL, add_on_check, op, &op->req);
        if (r < 0)
                add_finish(op, ERR_UNAVAILABLE, varlink_params_kv("reason", "cannot start the refresh", NULL, NULL));
}

static void add_on_discovery(DiscoveryDocument *d, const char *reason, void *userdata) {
        AddOperation *op = userdata;
        Credential *c = op->cred;

        op->discovery = NULL;
        if (!d) {
                add_finish(op, ERR_DISCOVERY, varlink_params_kv("issuer", c->issuer, "reason", reason));
                return;
        }
        if (oauth_check_url(d->token_endpoint, c->insecure_loopback, &reason) < 0) {
                add_finish(op, ERR_URL, varlink_params_kv("field", "token_endpoint", "reason", reason));
                return;
        }
        c->token_endpoint = TAKE_PTR(d->token_endpoint);
        if (d->revocation_endpoint && oauth_check_url(d->revocation_endpoint, c->insecure_loopback, &reason) >= 0)
                c->revocation_endpoint = TAKE_PTR(d->revocation_endpoint);
        add_check(op);
}

typedef struct AddParams {
        const char *name, *issuer, *token_endpoint, *client_id, *client_secret, *auth_method, *refresh_token;
        json_object *scopes;
        bool insecure_loopback, replace;
} AddParams;

static bool token_chars_valid(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7e)
                        return false;
        return true;
}

static int manager_add_credential(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                  void *userdata) {
        static const VarlinkField fields[] = {
                { "name", VARLINK_FIELD_STRING, offsetof(AddParams, name), VARLINK_FIELD_REQUIRED, CREDENTIAL_NAME_MAX, VARLINK_NO_PRESENT },
                { "issuer", VARLINK_FIELD_STRING, offsetof(AddParams, issuer), 0, OAUTH_URL_MAX, VARLINK_NO_PRESENT },
                { "token_endpoint", VARLINK_FIELD_STRING, offsetof(AddParams, token_endpoint), 0, OAUTH_URL_MAX, VARLINK_NO_PRESENT },
                { "client_id", VARLINK_FIELD_STRING, offsetof(AddParams, client_id), VARLINK_FIELD_REQUIRED, 256, VARLINK_NO_PRESENT },
                { "client_secret", VARLINK_FIELD_STRING, offsetof(AddParams, client_secret), VARLINK_FIELD_NONEMPTY, CLIENT_SECRET_MAX, VARLINK_NO_PRESENT },
                { "auth_method", VARLINK_FIELD_STRING, offsetof(AddParams, auth_method), 0, 64, VARLINK_NO_PRESENT },
                { "scopes", VARLINK_FIELD_STRV, offsetof(AddParams, scopes), 0, SCOPES_MAX, VARLINK_NO_PRESENT },
                { "refresh_token", VARLINK_FIELD_STRING, offsetof(AddParams, refresh_token), VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY, OAUTH_REFRESH_TOKEN_MAX, VARLINK_NO_PRESENT },
                { "insecure_loopback", VARLINK_FIELD_BOOL, offsetof(AddParams, insecure_loopback), 0, 0, VARLINK_NO_PRESENT },
                { "replace", VARLINK_FIELD_BOOL, offsetof(AddParams, replace), 0, 0, VARLINK_NO_PRESENT },
                {},
        };
        Manager *m = userdata;
        AddParams p = {};
        const char *bad = NULL, *reason = NULL;
        Credential *c = NULL;
        int r;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, &p, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        if (!credential_name_valid(p.name))
                return varlink_call_error_invalid_parameter(call, "name");
        if (!client_id_valid(p.client_id))
                return varlink_call_error_invalid_parameter(call, "client_id");
        if (!token_chars_valid(p.refresh_token))
                return varlink_call_error_invalid_parameter(call, "refresh_token");
        if (p.client_secret && !token_chars_valid(p.client_secret))
                return varlink_call_error_invalid_parameter(call, "client_secret");
        if (!p.issuer && !p.token_endpoint)
                return varlink_call_error_invalid_parameter(call, "issuer");

        OAuthAuthMethod method = p.auth_method ? oauth_auth_method_from_string(p.auth_method)
                                               : (p.client_secret ? OAUTH_AUTH_CLIENT_SECRET_BASIC : OAUTH_AUTH_NONE);
        if (method < 0)
                return varlink_call_error_invalid_parameter(call, "auth_method");
        if ((method == OAUTH_AUTH_NONE) != !p.client_secret)
                return varlink_call_error_invalid_parameter(call, "client_secret");

        if (p.issuer && oauth_check_url(p.issuer, p.insecure_loopback, &reason) < 0)
                return varlink_call_error(call, ERR_URL, varlink_params_kv("field", "issuer", "reason", reason));
        if (p.token_endpoint && oauth_check_url(p.token_endpoint, p.insecure_loopback, &reason) < 0)
                return varlink_call_error(call, ERR_URL, varlink_params_kv("field", "token_endpoint", "reason", reason));

        if (manager_find_credential(m, p.name) && !p.replace)
                return varlink_call_error(call, ERR_EXISTS, varlink_params_kv("name", p.name, NULL, NULL));
        if (manager_name_busy(m, p.name))
                return varlink_call_error(call, ERR_EXISTS, varlink_params_kv("name", p.name, NULL, NULL));
        if (!manager_find_credential(m, p.name) && m->n_credentials >= CREDENTIALS_MAX)
                return varlink_call_error(call, ERR_STORE, varlink_params_kv("reason", "too many credentials", NULL, NULL));

        r = credential_new(m, p.name, &c);
        if (r < 0)
                return r;
        AddOperation *op = calloc(1, sizeof *op);
        if (!op) {
                credential_free(c);
                return -ENOMEM;
        }
        op->manager = m;
        op->cred = c;
        op->replace = p.replace;
        LIST_PREPEND(m->adds, op);

        c->auth_method = method;
        c->insecure_loopback = p.insecure_loopback;
        if ((p.issuer && !(c->issuer = strdup(p.issuer))) ||
            (p.token_endpoint && !(c->token_endpoint = strdup(p.token_endpoint))) ||
            !(c->client_id = strdup(p.client_id)) || !(c->refresh_token = secret_strdup(p.refresh_token)) ||
            (p.client_secret && !(c->client_secret = secret_strdup(p.client_secret)))) {
                add_free(op);
                return -ENOMEM;
        }
        if (p.scopes && scope_set_from_json(p.scopes, &c->scopes) < 0) {
                add_free(op);
                return varlink_call_error_invalid_parameter(call, "scopes");
        }

        op->call = call;
        varlink_call_set_cancel(call, add_on_cancel, op);

        if (c->token_endpoint) {
                add_check(op);
                return 0;
        }

        r = discovery_start(m->http, c->issuer, add_on_discovery, op, &op->discovery);
        if (r < 0)
                add_finish(op, ERR_DISCOVERY, varlink_params_kv("issuer", c->issuer, "reason", "cannot start discovery"));
        return 0;
}

/* Parses the parameters of a method that takes just a credential name and
 * looks it up. Returns false when it answered the call with an error. */
static bool parse_name_parameter(Manager *m, VarlinkCall *call, json_object *parameters, const char **ret_name,
                                 Credential **ret) {
        static const VarlinkField fields[] = {
                { "name", VARLINK_FIELD_STRING, 0, VARLINK_FIELD_REQUIRED, CREDENTIAL_NAME_MAX, VARLINK_NO_PRESENT },
                {},
        };
        const char *name = NULL, *bad = NULL;

        if (varlink_parse_parameters(parameters, fields, &name, &bad) < 0) {
                varlink_call_error_invalid_parameter(call, bad);
                return false;
        }
        Credential *c = manager_find_credential(m, name);
        if (!c) {
                varlink_call_error(call, ERR_NO_SUCH, varlink_params_kv("name", name, NULL, NULL));
                return false;
        }
        *ret_name = name;
        *ret = c;
        return true;
}

/* Removes a credential and its secrets; shared by RemoveCredential and RevokeCredential. */
static void manager_remove(Manager *m, Credential *c) {
        for (int k = 0; k < _SECRET_KIND_MAX; k++) {
                int r = store_remove(m->store, c->name, (SecretKind) k);
                if (r < 0)
                        log_warning_errno(r, "Credential %s: cannot remove its %s from the store, ignoring: %m",
                                          c->name, secret_kind_to_string((SecretKind) k));
        }
        consent_forget_credential(m, c->name);
        credential_unlink(c);
        credential_free(c);
        (void) manager_save_state(m);
        manager_update_status(m);
}

static int manager_remove_credential(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                     void *userdata) {
        Manager *m = userdata;
        const char *name = NULL;
        Credential *c;
        (void) flags;

        if (!parse_name_parameter(m, call, parameters, &name, &c))
                return 0;

        log_info("Credential %s removed", c->name);
        audit_log(m, &(AuditRecord) { .event = AUDIT_REMOVE, .credential = c->name, .agent = audit_call_agent(call) });
        manager_remove(m, c);
        return varlink_call_reply(call, NULL);
}

static int manager_list_credentials(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                    void *userdata) {
        static const VarlinkField fields[] = { {} };
        Manager *m = userdata;
        const char *bad = NULL;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, NULL, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);

        json_object *a = json_object_new_array();
        if (!a)
                return -ENOMEM;
        for (Credential *c = m->credentials; c; c = c->next)
                json_object_array_add(a, credential_to_json(c, false));
        json_object *p = json_object_new_object();
        if (!p) {
                json_object_put(a);
                return -ENOMEM;
        }
        json_object_object_add(p, "credentials", a);
        const char *reason = NULL;
        unsigned pending = 0;
        const char *st = store_state(m->store, &reason, &pending);
        json_object_object_add(p, "store", json_object_new_string(store_name(m->store)));
        json_object_object_add(p, "store_state", json_object_new_string(st));
        if (reason)
                json_object_object_add(p, "store_reason", json_object_new_string(reason));
        json_object_object_add(p, "store_pending", json_object_new_int64(pending));
        return varlink_call_reply(call, p);
}

static int manager_migrate_store(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                 void *userdata) {
        static const VarlinkField fields[] = {
                { "to", VARLINK_FIELD_STRING, 0, VARLINK_FIELD_REQUIRED, 64, VARLINK_NO_PRESENT },
                {},
        };
        const char *to = NULL, *bad = NULL;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, &to, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        return store_migrate_start(userdata, call, to);
}

struct RevokeOperation {
        Manager *manager;
        RevokeOperation *prev, *next;
        VarlinkCall *call;
        char *name;
        HttpRequest *req;
};

bool manager_name_busy(Manager *m, const char *name) {
        for (AddOperation *i = m->adds; i; i = i->next)
                if (i->cred && streq(i->cred->name, name))
                        return true;
        for (RevokeOperation *i = m->revokes; i; i = i->next)
                if (streq(i->name, name))
                        return true;
        return login_name_busy(m, name);
}

static int manager_login(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        (void) flags;
        return login_start(userdata, call, parameters);
}

/* ---- RevokeCredential ---- */


static void revoke_free(RevokeOperation *op) {
        Manager *m = op->manager;
        LIST_REMOVE(m->revokes, op);
        http_request_cancel(op->req);
        free(op->name);
        free(op);
}

static void revoke_on_cancel(VarlinkCall *call, void *userdata) {
        RevokeOperation *op = userdata;
        (void) call;
        revoke_free(op);
}

static void revoke_on_done(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        RevokeOperation *op = userdata;
        Manager *m = op->manager;
        VarlinkCall *call = TAKE_PTR(op->call);
        (void) req;

        op->req = NULL;
        varlink_call_set_cancel(call, NULL, NULL);
        Credential *c = manager_find_credential(m, op->name);
        /* RFC 7009 2.2: 200 means revoked (or the token was already invalid). */
        if (resp->status == 200) {
                if (c) {
                        log_info("Credential %s revoked at the provider and removed", c->name);
                        audit_log(m, &(AuditRecord) { .event = AUDIT_REVOKE, .credential = c->name,
                                                      .agent = audit_call_agent(call) });
                        manager_remove(m, c);
                }
                revoke_free(op);
                varlink_call_reply(call, NULL);
                return;
        }
        char reason[300];
        if (resp->curl_error)
                snprintf(reason, sizeof reason, "%s", resp->curl_error);
        else {
                TokenResponse t = {};
                OAuthError err = {};
                (void) oauth_parse_token_response(resp->status, resp->body, resp->body_len, &t, &err);
                token_response_done(&t);
                snprintf(reason, sizeof reason, "the provider answered HTTP %ld (%s)", resp->status, err.code);
        }
        log_warning("Credential %s: revocation failed, keeping it: %s", op->name, reason);
        json_object *p = varlink_params_kv("name", op->name, "reason", reason);
        revoke_free(op);
        varlink_call_error(call, "io.tokend.manager.RevocationFailed", p);
}

static int manager_revoke_credential(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                     void *userdata) {
        Manager *m = userdata;
        const char *name = NULL;
        Credential *c;
        (void) flags;

        if (!parse_name_parameter(m, call, parameters, &name, &c))
                return 0;
        if (manager_name_busy(m, name))
                return varlink_call_error(call, ERR_EXISTS, varlink_params_kv("name", name, NULL, NULL));
        if (c->secrets_deferred)
                return varlink_call_error(call, ERR_STORE,
                                          varlink_params_kv("reason", "its refresh token is in a store that cannot be read now",
                                                    NULL, NULL));
        if (!c->revocation_endpoint)
                return varlink_call_error(call, "io.tokend.manager.NoRevocationEndpoint",
                                          varlink_params_kv("name", name, NULL, NULL));

        RevokeOperation *op = calloc(1, sizeof *op);
        if (!op || !(op->name = strdup(name))) {
                free(op);
                return -ENOMEM;
        }
        op->manager = m;
        LIST_PREPEND(m->revokes, op);

        /* The refresh token: revoking it ends the whole grant (RFC 7009 2.1). */
        _cleanup_erase_ char *body = oauth_revocation_body(c->refresh_token, "refresh_token", c->auth_method,
                                                           c->client_id, c->client_secret);
        _cleanup_erase_ char *auth = c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC
                                             ? oauth_basic_authorization(c->client_id, c->client_secret)
                                             : NULL;
        int r = -ENOMEM;
        if (!body || (c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC && !auth) ||
            (r = http_post_form(m->http, c->revocation_endpoint, body, auth, revoke_on_done, op, &op->req)) < 0) {
                revoke_free(op);
                return r;
        }
        op->call = call;
        varlink_call_set_cancel(call, revoke_on_cancel, op);
        return 0;
}

/* ---- the owner's own token, consent and policy ---- */

int api_owner_get_token(Manager *m, VarlinkCall *call, TokenRequest *t) {
        Credential *c = manager_find_credential(m, t->credential);
        if (!c) {
                audit_log(m, &(AuditRecord) { .event = AUDIT_DENY, .credential = t->credential, .scopes = &t->scopes,
                                              .resource = t->resource, .agent = audit_call_agent(call),
                                              .reason = "io.tokend.agent.NoSuchCredential" });
                scope_set_done(&t->scopes);
                return varlink_call_error(call, "io.tokend.agent.NoSuchCredential",
                                          engine_error_parameters(t->credential, "io.tokend.agent.NoSuchCredential",
                                                                  NULL, -1));
        }
        return engine_get_token(c, call, &t->scopes, t->resource, t->min_ttl, 0);
}

static int manager_get_token(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        TokenRequest t;
        (void) flags;

        int r = api_parse_get_token(call, parameters, false, &t);
        if (r <= 0)
                return r;
        return api_owner_get_token(userdata, call, &t);
}

static int parse_no_parameters(VarlinkCall *call, json_object *parameters) {
        static const VarlinkField fields[] = { {} };
        const char *bad = NULL;
        if (varlink_parse_parameters(parameters, fields, NULL, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad), 0;
        return 1;
}

/* Parses {"id": string} (a request's or a grant's). */
static int parse_id_parameter(VarlinkCall *call, json_object *parameters, const char **ret) {
        static const VarlinkField fields[] = {
                { "id", VARLINK_FIELD_STRING, 0, VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY, CONSENT_ID_MAX,
                  VARLINK_NO_PRESENT },
                {},
        };
        const char *bad = NULL;
        if (varlink_parse_parameters(parameters, fields, ret, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad), 0;
        return 1;
}

static int manager_list_pending(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        (void) flags;
        int r = parse_no_parameters(call, parameters);
        return r <= 0 ? r : consent_list_pending(userdata, call);
}

static int manager_watch(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        (void) flags;
        int r = parse_no_parameters(call, parameters);
        return r <= 0 ? r : consent_watch(userdata, call);
}

typedef struct ApproveParams {
        const char *id;
        int64_t duration;
        bool once, process;
        json_object *scopes;
} ApproveParams;

static int manager_approve(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = {
                { "id", VARLINK_FIELD_STRING, offsetof(ApproveParams, id), VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY,
                  CONSENT_ID_MAX, VARLINK_NO_PRESENT },
                { "duration", VARLINK_FIELD_INT, offsetof(ApproveParams, duration), 0, 0, VARLINK_NO_PRESENT },
                { "once", VARLINK_FIELD_BOOL, offsetof(ApproveParams, once), 0, 0, VARLINK_NO_PRESENT },
                { "process", VARLINK_FIELD_BOOL, offsetof(ApproveParams, process), 0, 0, VARLINK_NO_PRESENT },
                { "scopes", VARLINK_FIELD_STRV, offsetof(ApproveParams, scopes), VARLINK_FIELD_NONEMPTY, SCOPES_MAX,
                  VARLINK_NO_PRESENT },
                {},
        };
        ApproveParams p = { .duration = -1 };
        const char *bad = NULL;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, &p, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        if (p.duration == 0 || p.duration < -1)
                return varlink_call_error_invalid_parameter(call, "duration");
        return consent_approve(userdata, call, p.id, p.duration > 0 ? p.duration : -1, p.once, p.process, p.scopes);
}

static int manager_deny(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        const char *id = NULL;
        (void) flags;
        int r = parse_id_parameter(call, parameters, &id);
        return r <= 0 ? r : consent_deny(userdata, call, id);
}

static int manager_list_grants(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        (void) flags;
        int r = parse_no_parameters(call, parameters);
        return r <= 0 ? r : consent_list_grants(userdata, call);
}

static int manager_revoke_grant(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        const char *id = NULL;
        (void) flags;
        int r = parse_id_parameter(call, parameters, &id);
        return r <= 0 ? r : consent_revoke_grant(userdata, call, id);
}

static int manager_reload(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *error = NULL;
        (void) flags;

        int r = parse_no_parameters(call, parameters);
        if (r <= 0)
                return r;
        r = manager_load_policy(m, &error);
        if (r == -ENOMEM && !error)
                return r;
        if (r < 0)
                return varlink_call_error(call, "io.tokend.manager.PolicyInvalid",
                                          varlink_params_kv("reason", error, NULL, NULL));
        json_object *p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "agents", json_object_new_int64((int64_t) policy_n_agents(m->policy)));
        json_object_object_add(p, "directory", json_object_new_string(m->policy_dir));
        return varlink_call_reply(call, p);
}

/* The manager interface answers the owner only, and never a caller the
 * policy calls an agent (so an agent cannot approve itself). Decided per
 * call, under the policy in force at that call. */
static bool manager_authorize(VarlinkCall *call, void *userdata) {
        Manager *m = userdata;
        const PeerIdentity *id = audit_call_agent(call);
        if (id && policy_is_manager_allowed(m->policy, id, m->owner_uid))
                return true;
        log_notice("Refusing %s to pid %d (uid %u): the manager interface answers only the owner, never an agent",
                   varlink_call_method(call), id ? (int) id->pid : 0, id ? (unsigned) id->uid : 0);
        audit_log(m, &(AuditRecord) { .event = AUDIT_DENY, .agent = id, .reason = VARLINK_ERROR_PERMISSION_DENIED,
                                      .message = "tokend deny: manager interface refused to a caller that is not the "
                                                 "owner" });
        return false;
}

static const VarlinkMethod manager_methods[] = {
        { "GetToken", manager_get_token, 0 },
        { "ListPending", manager_list_pending, 0 },
        { "Watch", manager_watch, VARLINK_METHOD_REQUIRES_MORE },
        { "Approve", manager_approve, 0 },
        { "Deny", manager_deny, 0 },
        { "ListGrants", manager_list_grants, 0 },
        { "RevokeGrant", manager_revoke_grant, 0 },
        { "Reload", manager_reload, 0 },
        { "AddCredential", manager_add_credential, 0 },
        { "Login", manager_login, VARLINK_METHOD_REQUIRES_MORE },
        { "RevokeCredential", manager_revoke_credential, 0 },
        { "RemoveCredential", manager_remove_credential, 0 },
        { "ListCredentials", manager_list_credentials, 0 },
        { "MigrateStore", manager_migrate_store, 0 },
        {},
};

const VarlinkInterface manager_interface = {
        .name = "io.tokend.manager",
        .description = varlink_idl_io_tokend_manager,
        .methods = manager_methods,
        .authorize = manager_authorize,
};
