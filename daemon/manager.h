/* SPDX-License-Identifier: MIT */
/* daemon/manager.h: the daemon's one context object. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "common/hashtab.h"
#include "http.h"
#include "store.h"
#include "varlink.h"

typedef struct Credential Credential;
typedef struct AddOperation AddOperation;
typedef struct LoginOperation LoginOperation;
typedef struct RevokeOperation RevokeOperation;
typedef struct MigrateOperation MigrateOperation;
typedef struct Audit Audit;
typedef struct Policy Policy;
typedef struct Grant Grant;
typedef struct ConsentRequest ConsentRequest;
typedef struct ConsentWatcher ConsentWatcher;
typedef struct Engine Engine;

/* Credentials held, at most. Each costs about a kilobyte of memory plus
 * its cached tokens (engine.h: TOKENS_MAX in all), and its two secrets in the
 * store; only the owner adds them (AddCredential, Login). */
#define CREDENTIALS_MAX 16384U
/* Connections of each uid other than the owner's (of VARLINK_CONNECTIONS_MAX_DEFAULT in all). */
#define CONNECTIONS_PER_UID_MAX 1024U

typedef struct ManagerConfig {
        const char *socket_path;       /* NULL: socket activation or $XDG_RUNTIME_DIR/tokend/socket */
        const char *state_dir;         /* NULL: $XDG_STATE_HOME/tokend */
        const char *ca_file;
        const char *providers_dir;     /* searched before the user's and the system's preset dirs */
        uint64_t keep_fresh_usec;      /* keep refreshing a token this long after its last use */
        uint64_t request_timeout_usec; /* how long a GetToken may wait for a refresh */
        const char *store;             /* for new credentials: "auto" (NULL), "keyring" or "secret-service" */
        const char *policy_dir;        /* NULL: $XDG_CONFIG_HOME/tokend/policy.d */
        uint64_t consent_timeout_usec; /* how long a request waits for the owner's consent; 0: default */
        uint64_t audit_coalesce_usec;  /* repeated issues counted in one record within this; 0: none (audit.h) */
} ManagerConfig;

typedef struct Manager {
        sd_event *event;
        VarlinkServer *varlink;
        Http *http;
        Store *store; /* a router (store-router.c) over the backends in use */
        char *store_mode; /* --store */
        const char *store_state_seen; /* last state logged */
        MigrateOperation *migration;
        Audit *audit; /* audit.c: where the audit trail goes */
        Policy *policy; /* never NULL once started: the default or failsafe policy at worst */
        char *policy_dir;

        Grant *grants; /* consent.c */
        unsigned n_grants;
        ConsentRequest *requests;
        unsigned n_requests;
        ConsentWatcher *watchers;
        uint64_t consent_timeout_usec;
        unsigned n_subscriptions; /* engine.c: Subscribe streams past their first token */

        Credential *credentials; /* sorted by name */
        Credential *credentials_tail;
        HashTable credentials_by_name;
        HashKey hash_key; /* for names and cache keys (engine.c), from getrandom() */
        unsigned n_credentials;
        Engine *engine; /* engine.c: the token cache's indexes and its one timer */
        AddOperation *adds;
        LoginOperation *logins;
        RevokeOperation *revokes;

        char *state_dir;
        char *socket_path; /* set when we bound it ourselves */
        char *instance;
        char **provider_dirs; /* NULL-terminated lookup order of provider presets */
        uid_t owner_uid;

        uint64_t keep_fresh_usec;
        uint64_t request_timeout_usec;
        uint64_t audit_coalesce_usec;
        uint64_t queue_seq;

        bool stopping;
        sd_event_source *stop_timer;
        sd_event_source *status_timer; /* a STATUS= update held back (at most one a second) */
        uint64_t status_sent;          /* CLOCK_MONOTONIC usec of the last one */
} Manager;

int manager_new(const ManagerConfig *config, Manager **ret);
Manager *manager_free(Manager *m);
int manager_start(Manager *m, const char *socket_path);
/* Begins a graceful stop: no new connections; exits once in-flight refreshes
 * have completed and their rotated tokens are saved, or after a grace period. */
void manager_stop(Manager *m);
/* Called when a refresh completes: lets a pending stop finish. */
void manager_check_stop(Manager *m);
/* STATUS= for systemd: now (the owner's doings: adds, removals, consent), or
 * at most once a second (after each refresh). */
void manager_update_status(Manager *m);
void manager_update_status_soon(Manager *m);

/* Reads the policy directory. On error keeps the policy in force (on the
 * first load: the failsafe policy), logs, and sets *ret_error (may be NULL)
 * to "PATH:LINE: why". */
int manager_load_policy(Manager *m, char **ret_error);

Credential *manager_find_credential(Manager *m, const char *name);
/* The keyed hash of a credential name in credentials_by_name. */
uint64_t manager_name_hash(Manager *m, const char *name);
/* An add, login or revocation of this credential name is in progress. */
bool manager_name_busy(Manager *m, const char *name);
/* Opens store backend `name` ("keyring", "secret-service") behind the
 * router, unless it is open already. */
int manager_open_store(Manager *m, const char *name, Store **ret);
/* Persists non-secret credential metadata atomically. Logs on failure. */
int manager_save_state(Manager *m);

extern const VarlinkInterface agent_interface;
extern const VarlinkInterface manager_interface;
