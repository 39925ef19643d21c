/* SPDX-License-Identifier: MIT */
/* daemon/credential.c: credential lifecycle and metadata (de)serialization. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "engine.h"

static const char *const credential_state_table[_CREDENTIAL_STATE_MAX] = {
        [CREDENTIAL_OK] = "ok",
        [CREDENTIAL_REAUTH_REQUIRED] = "reauth-required",
};

const char *credential_state_to_string(CredentialState s) {
        if (s < 0 || s >= _CREDENTIAL_STATE_MAX)
                return NULL;
        return credential_state_table[s];
}

CredentialState credential_state_from_string(const char *s) {
        for (int i = 0; i < _CREDENTIAL_STATE_MAX; i++)
                if (s && streq(s, credential_state_table[i]))
                        return (CredentialState) i;
        return _CREDENTIAL_STATE_INVALID;
}

bool credential_name_valid(const char *name) {
        size_t l = name ? strlen(name) : 0;
        if (l == 0 || l > CREDENTIAL_NAME_MAX || !isalnum((unsigned char) name[0]))
                return false;
        for (const char *p = name; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._-", *p))
                        return false;
        return true;
}

bool client_id_valid(const char *id) {
        size_t l = id ? strlen(id) : 0;
        if (l == 0 || l > 256)
                return false;
        for (const char *p = id; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                        return false;
        return true;
}

int credential_new(Manager *m, const char *name, Credential **ret) {
        Credential *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->manager = m;
        c->auth_method = OAUTH_AUTH_NONE;
        c->created = now_realtime_usec();
        c->name = strdup(name);
        if (!c->name) {
                free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

Credential *credential_free(Credential *c) {
        if (!c)
                return NULL;
        engine_flush(c, "io.tokend.agent.NoSuchCredential", NULL);
        free(c->name);
        free(c->issuer);
        free(c->token_endpoint);
        free(c->revocation_endpoint);
        free(c->client_id);
        free(c->last_error);
        scope_set_done(&c->scopes);
        erase_and_free(c->refresh_token);
        erase_and_free(c->client_secret);
        free(c);
        return NULL;
}

int credential_link(Manager *m, Credential *c) {
        int r = hashtab_insert(&m->credentials_by_name, &c->name_node, manager_name_hash(m, c->name));
        if (r < 0)
                return r;

        /* Kept sorted by name, so listings are stable. The state file is
         * sorted already: loading it appends at the tail, without a walk. */
        Credential **p = &m->credentials, *prev = NULL;
        if (m->credentials_tail && strcmp(m->credentials_tail->name, c->name) < 0) {
                prev = m->credentials_tail;
                p = &prev->next;
        } else
                while (*p && strcmp((*p)->name, c->name) < 0) {
                        prev = *p;
                        p = &(*p)->next;
                }
        c->next = *p;
        c->prev = prev;
        if (c->next)
                c->next->prev = c;
        else
                m->credentials_tail = c;
        *p = c;
        m->n_credentials++;
        return 0;
}

void credential_unlink(Credential *c) {
        Manager *m = c->manager;
        hashtab_remove(&m->credentials_by_name, &c->name_node);
        if (m->credentials_tail == c)
                m->credentials_tail = c->prev;
        LIST_REMOVE(m->credentials, c);
        m->n_credentials--;
}

void credential_set_last_error(Credential *c, const char *fmt, ...) {
        char *s = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(c->last_error);
        c->last_error = s;
}

static void add_opt_string(json_object *o, const char *key, const char *v) {
        if (v)
                json_object_object_add(o, key, json_object_new_string(v));
}

json_object *credential_to_json(Credential *c, bool for_state_file) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "name", json_object_new_string(c->name));
        add_opt_string(o, "issuer", c->issuer);
        json_object_object_add(o, "token_endpoint", json_object_new_string(c->token_endpoint));
        add_opt_string(o, "revocation_endpoint", for_state_file ? c->revocation_endpoint : NULL);
        json_object_object_add(o, "client_id", json_object_new_string(c->client_id));
        json_object_object_add(o, "auth_method", json_object_new_string(oauth_auth_method_to_string(c->auth_method)));
        json_object_object_add(o, "scopes", scope_set_to_json(&c->scopes));
        /* The backend holding its secrets, so that a daemon started with
         * another --store still looks there. */
        add_opt_string(o, "store", c->manager && c->manager->store ? store_where(c->manager->store, c->name) : NULL);
        if (for_state_file) {
                /* Waiting for a locked store is not a state worth keeping. */
                CredentialState st = c->secrets_deferred ? CREDENTIAL_OK : c->state;
                json_object_object_add(o, "state", json_object_new_string(credential_state_to_string(st)));
                json_object_object_add(o, "insecure_loopback", json_object_new_boolean(c->insecure_loopback));
                json_object_object_add(o, "created", json_object_new_int64((int64_t) (c->created / USEC_PER_SEC)));
                add_opt_string(o, "last_error", st != CREDENTIAL_OK ? c->last_error : NULL);
        } else {
                const char *state = credential_state_to_string(c->state);
                if (c->secrets_deferred)
                        state = "waiting-for-store";
                else if (c->state == CREDENTIAL_OK && c->retry_at > 0)
                        state = "backoff";
                json_object_object_add(o, "state", json_object_new_string(state));
                add_opt_string(o, "last_error", c->last_error);
                json_object_object_add(o, "cached", engine_entries_to_json(c));
        }
        return o;
}

static int json_dup_string(json_object *o, const char *key, bool required, char **ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
                *ret = NULL;
                return required ? -EBADMSG : 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return -EBADMSG;
        *ret = strdup(json_object_get_string(v));
        return *ret ? 0 : -ENOMEM;
}

int credential_from_json(Manager *m, json_object *o, Credential **ret) {
        json_object *v;
        _cleanup_free_ char *name = NULL, *state = NULL, *auth = NULL;
        Credential *c = NULL;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return -EBADMSG;
        r = json_dup_string(o, "name", true, &name);
        if (r < 0)
                return r;
        if (!credential_name_valid(name))
                return -EBADMSG;
        r = credential_new(m, name, &c);
        if (r < 0)
                return r;

        if ((r = json_dup_string(o, "issuer", false, &c->issuer)) < 0 ||
            (r = json_dup_string(o, "token_endpoint", true, &c->token_endpoint)) < 0 ||
            (r = json_dup_string(o, "revocation_endpoint", false, &c->revocation_endpoint)) < 0 ||
            (r = json_dup_string(o, "client_id", true, &c->client_id)) < 0 ||
            (r = json_dup_string(o, "auth_method", true, &auth)) < 0 ||
            (r = json_dup_string(o, "state", true, &state)) < 0 ||
            (r = json_dup_string(o, "last_error", false, &c->last_error)) < 0)
                goto fail;

        c->auth_method = oauth_auth_method_from_string(auth);
        c->state = credential_state_from_string(state);
        if (c->auth_method < 0 || c->state < 0 || !client_id_valid(c->client_id)) {
                r = -EBADMSG;
                goto fail;
        }
        if (json_object_object_get_ex(o, "scopes", &v) && (r = scope_set_from_json(v, &c->scopes)) < 0)
                goto fail;
        if (json_object_object_get_ex(o, "insecure_loopback", &v))
                c->insecure_loopback = json_object_get_boolean(v);
        if (json_object_object_get_ex(o, "created", &v) && json_object_is_type(v, json_type_int))
                c->created = (uint64_t) json_object_get_int64(v) * USEC_PER_SEC;

        const char *reason;
        if (oauth_check_url(c->token_endpoint, c->insecure_loopback, &reason) < 0) {
                r = -EBADMSG;
                goto fail;
        }
        *ret = c;
        return 0;
fail:
        credential_free(c);
        return r;
}

int credential_commit(Credential *c, TokenResponse *t, const char **ret_reason) {
        Manager *m = c->manager;
        int r;

        /* The scopes the provider granted are what the credential holds,
         * whatever was asked for. */
        if (t->scope) {
                ScopeSet granted = {};
                if (scope_set_from_string(t->scope, &granted) < 0)
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

        /* The refresh token the provider just issued or rotated goes to the
         * store before anything else happens. */
        if (t->refresh_token) {
                erase_and_free(c->refresh_token);
                c->refresh_token = TAKE_PTR(t->refresh_token);
        }
        if (!c->refresh_token) {
                *ret_reason = "the provider issued no refresh token";
                return -ENOKEY;
        }
        r = store_save(m->store, c->name, SECRET_REFRESH_TOKEN, c->refresh_token);
        if (r >= 0)
                r = c->client_secret ? store_save(m->store, c->name, SECRET_CLIENT_SECRET, c->client_secret)
                                     : store_remove(m->store, c->name, SECRET_CLIENT_SECRET);
        if (r < 0) {
                log_error_errno(r, "Credential %s: cannot save its secrets in the %s store: %m", c->name,
                                store_name(m->store));
                *ret_reason = "cannot save secrets in the store";
                return r;
        }

        Credential *old = manager_find_credential(m, c->name);
        /* Linked before the old one goes, so that a failure leaves the old one in place. */
        r = credential_link(m, c);
        if (r < 0) {
                *ret_reason = "out of memory";
                return r;
        }
        if (old) {
                credential_unlink(old);
                credential_free(old);
        }
        c->state = CREDENTIAL_OK;
        c->last_error = mfree(c->last_error);
        (void) manager_save_state(m);
        if (engine_seed(c, t) < 0)
                log_warning("Credential %s: cannot cache its first token, ignoring", c->name);
        manager_update_status(m);
        return 0;
}
