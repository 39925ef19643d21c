/* SPDX-License-Identifier: MIT */
/* daemon/credential.h: a held credential: provider endpoints, client, the
 * scopes it holds, its secrets (in memory and in the store) and its cache. */
#pragma once

#include <json-c/json.h>

#include "http.h"
#include "manager.h"
#include "oauth.h"
#include "scopes.h"

typedef struct TokenEntry TokenEntry;

typedef enum CredentialState {
        CREDENTIAL_OK,
        CREDENTIAL_REAUTH_REQUIRED,
        _CREDENTIAL_STATE_MAX,
        _CREDENTIAL_STATE_INVALID = -1,
} CredentialState;

#define CREDENTIAL_NAME_MAX 64U

struct Credential {
        Manager *manager;
        Credential *prev, *next;
        HashNode name_node; /* in the manager's credentials_by_name, while linked */

        char *name;
        char *issuer; /* may be NULL */
        char *token_endpoint;
        char *revocation_endpoint; /* may be NULL */
        char *client_id;
        OAuthAuthMethod auth_method;
        ScopeSet scopes; /* held; empty when the provider never said */
        bool insecure_loopback;
        CredentialState state;
        char *last_error;
        uint64_t created; /* realtime usec */

        char *refresh_token; /* secret */
        char *client_secret; /* secret, may be NULL */

        /* Refresh engine state (engine.c). */
        TokenEntry *entries;
        unsigned n_entries;
        TokenEntry *refreshing; /* the entry whose refresh is in flight */
        HttpRequest *inflight;
        sd_event_source *retry_timer;
        uint64_t retry_at; /* CLOCK_BOOTTIME usec, 0 when no retry is scheduled */
        unsigned failures;
        uint64_t refresh_started; /* CLOCK_BOOTTIME usec of the refresh in flight */
        uint64_t refresh_latency; /* usec the last successful refresh took */
        bool store_dirty; /* the in-memory refresh token is newer than the store's */

        /* Secrets not loaded yet: their store was locked or unavailable at
         * start-up. Until it answers, the credential is reauth-required in
         * memory (refresh_token is "-"), and "ok" in the state file. */
        bool secrets_deferred;
        unsigned secrets_loaded;  /* bits (1 << SecretKind) loaded since */
        unsigned secrets_loading; /* bits being loaded */
};

const char *credential_state_to_string(CredentialState s);
CredentialState credential_state_from_string(const char *s);

bool credential_name_valid(const char *name);
bool client_id_valid(const char *id);

int credential_new(Manager *m, const char *name, Credential **ret);
/* Frees a credential not (or no longer) linked into the manager. Cancels its
 * refresh and answers its waiting calls with `error_name` (NULL: NoSuchCredential). */
Credential *credential_free(Credential *c);

/* Links the credential into the manager (sorted list, name index). -ENOMEM:
 * not linked. */
int credential_link(Manager *m, Credential *c);
void credential_unlink(Credential *c);
void credential_set_last_error(Credential *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes a freshly obtained credential (from AddCredential or a login) the
 * manager's: adopts the scopes the provider granted and a rotated refresh
 * token, saves the secrets in the store first, replaces a credential of the
 * same name, persists the metadata and caches the access token. On failure
 * (-errno, *ret_reason set) nothing changed and the caller still owns `c`;
 * on success the manager owns it. */
int credential_commit(Credential *c, TokenResponse *t, const char **ret_reason);

/* Metadata, without secrets, for the state file and for ListCredentials. */
json_object *credential_to_json(Credential *c, bool for_state_file);
int credential_from_json(Manager *m, json_object *o, Credential **ret);
