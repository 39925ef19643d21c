/* SPDX-License-Identifier: MIT */
/* daemon/api-manager.c: io.tokend.manager, the owner's interface. */
#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "engine.h"
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
        char *fallback_url; /* RFC 8414 discovery, tried when OIDC discovery fails */
};

static json_object *params_kv(const char *k1, const char *v1, const char *k2, const char *v2) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        if (k1 && v1)
                json_object_object_add(p, k1, json_object_new_string(v1));
        if (k2 && v2)
                json_object_object_add(p, k2, json_object_new_string(v2));
        return p;
}

static AddOperation *add_free(AddOperation *op) {
        Manager *m = op->manager;
        if (op->prev)
                op->prev->next = op->next;
        else
                m->adds = op->next;
        if (op->next)
                op->next->prev = op->prev;
        op->req = http_request_cancel(op->req);
        credential_free(op->cred);
        free(op->fallback_url);
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
        Manager *m = op->manager;
        Credential *c = op->cred;
        TokenResponse t = {};
        OAuthError err = {};
        int r;
        (void) req;

        op->req = NULL;
        OAuthOutcome o = oauth_parse_token_response(resp->status, resp->body, resp->body_len, &t, &err);
        switch (o) {
        case OAUTH_OK:
                break;
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
        case OAUTH_INVALID_SCOPE:
        case OAUTH_REFUSED:
                log_info("Adding credential %s: provider refused the refresh token (%s)", c->name, err.code);
                add_finish(op, ERR_AUTH, params_kv("error", err.code, "description",
                                                   err.description[0] ? err.description : NULL));
                return;
        case OAUTH_TRANSIENT:
                add_finish(op, ERR_UNAVAILABLE,
                           params_kv("reason", resp->curl_error ?: err.code, NULL, NULL));
                return;
        }

        /* The scopes the provider granted are what the credential holds,
         * whatever was asked for. */
        if (t.scope) {
                ScopeSet granted = {};
                if (scope_set_from_string(t.scope, &granted) < 0)
                        log_warning("Credential %s: provider returned an unusable scope list, ignoring", c->name);
                else if (granted.n > 0) {
                        if (c->scopes.n > 0 && !scope_set_equal(&granted, &c->scopes))
                                log_notice("Credential %s: the provider granted other scopes than asked for", c->name);
                        scope_set_done(&c->scopes);
                        c->scopes = granted;
                        granted = (ScopeSet) {};
                }
                scope_set_done(&granted);
        }

        /* The refresh token the provider just rotated (or the one given) goes
         * to the store before anything else happens. */
        if (t.refresh_token) {
                erase_and_free(c->refresh_token);
                c->refresh_token = TAKE_PTR(t.refresh_token);
        }
        r = store_save(m->store, c->name, SECRET_REFRESH_TOKEN, c->refresh_token);
        if (r >= 0)
                r = c->client_secret ? store_save(m->store, c->name, SECRET_CLIENT_SECRET, c->client_secret)
                                     : store_remove(m->store, c->name, SECRET_CLIENT_SECRET);
        if (r < 0) {
                log_error_errno(r, "Adding credential %s: cannot save its secrets in the %s store: %m", c->name,
                                store_name(m->store));
                token_response_done(&t);
                add_finish(op, ERR_STORE, params_kv("reason", strerror(-r), NULL, NULL));
                return;
        }

        Credential *old = manager_find_credential(m, c->name);
        if (old) {
                credential_unlink(old);
                credential_free(old);
        }
        credential_link(m, TAKE_PTR(op->cred));
        (void) manager_save_state(m);
        if (engine_seed(c, &t) < 0)
                log_warning("Credential %s: cannot cache its first token, ignoring", c->name);
        token_response_done(&t);

        log_info("Credential %s added (client %s, %zu scopes)", c->name, c->client_id, c->scopes.n);
        manager_update_status(m);
        json_object *p = json_object_new_object();
        if (p)
                json_object_object_add(p, "credential", credential_to_json(c, false));
        add_finish(op, NULL, p);
}

static void add_check(AddOperation *op) {
        Credential *c = op->cred;
        int r = engine_refresh_request(c, c->scopes.n > 0 ? &c->scopes : NULL, NULL, add_on_check, op, &op->req);
        if (r < 0)
                add_finish(op, ERR_UNAVAILABLE, params_kv("reason", "cannot start the refresh", NULL, NULL));
}

static void add_on_discovery(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        AddOperation *op = userdata;
        Credential *c = op->cred;
        DiscoveryDocument d = {};
        const char *reason = NULL;
        (void) req;

        op->req = NULL;
        if (resp->status == 200 && oauth_parse_discovery(resp->body, resp->body_len, c->issuer, &d, &reason) >= 0) {
                if (oauth_check_url(d.token_endpoint, c->insecure_loopback, &reason) < 0) {
                        discovery_document_done(&d);
                        add_finish(op, ERR_URL, params_kv("field", "token_endpoint", "reason", reason));
                        return;
                }
                c->token_endpoint = TAKE_PTR(d.token_endpoint);
                if (d.revocation_endpoint && oauth_check_url(d.revocation_endpoint, c->insecure_loopback, &reason) >= 0)
                        c->revocation_endpoint = TAKE_PTR(d.revocation_endpoint);
                discovery_document_done(&d);
                add_check(op);
                return;
        }

        if (op->fallback_url) {
                _cleanup_free_ char *url = TAKE_PTR(op->fallback_url);
                if (http_get(op->manager->http, url, add_on_discovery, op, &op->req) >= 0)
                        return;
        }
        if (!reason)
                reason = resp->curl_error ?: (resp->status == 200 ? "malformed discovery document"
                                                                  : "no discovery document at the issuer");
        add_finish(op, ERR_DISCOVERY, params_kv("issuer", c->issuer, "reason", reason));
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
                return varlink_call_error(call, ERR_URL, params_kv("field", "issuer", "reason", reason));
        if (p.token_endpoint && oauth_check_url(p.token_endpoint, p.insecure_loopback, &reason) < 0)
                return varlink_call_error(call, ERR_URL, params_kv("field", "token_endpoint", "reason", reason));

        if (manager_find_credential(m, p.name) && !p.replace)
                return varlink_call_error(call, ERR_EXISTS, params_kv("name", p.name, NULL, NULL));
        for (AddOperation *i = m->adds; i; i = i->next)
                if (streq(i->cred->name, p.name))
                        return varlink_call_error(call, ERR_EXISTS, params_kv("name", p.name, NULL, NULL));
        if (!manager_find_credential(m, p.name) && m->n_credentials >= CREDENTIALS_MAX)
                return varlink_call_error(call, ERR_STORE, params_kv("reason", "too many credentials", NULL, NULL));

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
        op->next = m->adds;
        if (op->next)
                op->next->prev = op;
        m->adds = op;

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

        _cleanup_free_ char *oidc = NULL;
        r = oauth_discovery_urls(c->issuer, &oidc, &op->fallback_url);
        if (r >= 0)
                r = http_get(m->http, oidc, add_on_discovery, op, &op->req);
        if (r < 0)
                add_finish(op, ERR_DISCOVERY, params_kv("issuer", c->issuer, "reason", "cannot start discovery"));
        return 0;
}

static int manager_remove_credential(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                     void *userdata) {
        static const VarlinkField fields[] = {
                { "name", VARLINK_FIELD_STRING, 0, VARLINK_FIELD_REQUIRED, CREDENTIAL_NAME_MAX, VARLINK_NO_PRESENT },
                {},
        };
        Manager *m = userdata;
        const char *name = NULL, *bad = NULL;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, &name, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        Credential *c = manager_find_credential(m, name);
        if (!c)
                return varlink_call_error(call, ERR_NO_SUCH, params_kv("name", name, NULL, NULL));

        for (int k = 0; k < _SECRET_KIND_MAX; k++) {
                int r = store_remove(m->store, c->name, (SecretKind) k);
                if (r < 0)
                        log_warning_errno(r, "Credential %s: cannot remove its %s from the store, ignoring: %m",
                                          c->name, secret_kind_to_string((SecretKind) k));
        }
        log_info("Credential %s removed", c->name);
        credential_unlink(c);
        credential_free(c);
        (void) manager_save_state(m);
        manager_update_status(m);
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
        return varlink_call_reply(call, p);
}

static const VarlinkMethod manager_methods[] = {
        { "AddCredential", manager_add_credential, 0 },
        { "RemoveCredential", manager_remove_credential, 0 },
        { "ListCredentials", manager_list_credentials, 0 },
        {},
};

const VarlinkInterface manager_interface = {
        .name = "io.tokend.manager",
        .description = varlink_idl_io_tokend_manager,
        .methods = manager_methods,
};
