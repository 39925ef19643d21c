/* SPDX-License-Identifier: MIT */
/* daemon/consent.h: the policy applied to token requests, the owner's consent
 * (grants), and the requests waiting for it.
 *
 * A request of an agent in `allow` mode is answered at once. In `ask` mode,
 * and for callers no agent matches, it needs a grant: (agent, credential,
 * scopes, resource, expiry), time-limited, single-use, or bound to one
 * process (ended when its pidfd reports the exit). Without one, the request
 * waits, bounded in number and time, until the owner approves or denies it,
 * it times out, or its caller hangs up. Grants other than process-bound ones
 * are saved in STATE_DIR/grants.json and survive restarts. */
#pragma once

#include <stdint.h>

#include "scopes.h"
#include "varlink.h"

typedef struct Manager Manager;
typedef struct Credential Credential;

#define GRANTS_FILE "grants.json"
#define GRANTS_MAX 1024U
#define CONSENT_REQUESTS_MAX 64U          /* waiting requests, in all */
#define CONSENT_REQUESTS_PER_AGENT_MAX 8U /* per agent, or per uid for unknown callers */
#define CONSENT_ID_MAX 64U
#define CONSENT_WATCHERS_MAX 16U /* each may hold up to the connection's output cap unread */
#define CONSENT_TIMEOUT_DEFAULT_USEC (120 * USEC_PER_SEC)

/* Loads the saved grants (expired ones are dropped). A missing file is no
 * grant; a malformed entry is skipped, never widened. */
int consent_load(Manager *m);
void consent_done(Manager *m);

/* The parameters of a GetToken call (agent's or owner's). */
typedef struct TokenRequest {
        const char *credential; /* borrowed from the call's parameters */
        ScopeSet scopes;        /* owned */
        const char *resource;   /* borrowed; NULL: none */
        int64_t min_ttl;        /* < 0: none asked */
        bool as_owner;          /* io.tokend.agent.GetToken only: the owner's token if the caller is the owner */
} TokenRequest;

/* Checks them; 1 and *ret filled, or 0 with the call answered with an
 * InvalidParameter error (api-agent.c). "as_owner" is a parameter only where
 * accept_as_owner says so (io.tokend.agent.GetToken). */
int api_parse_get_token(VarlinkCall *call, json_object *parameters, bool accept_as_owner, TokenRequest *ret);

/* io.tokend.manager.GetToken after parameter checks: the owner's own token,
 * without policy or consent (api-manager.c). The caller must have been found
 * to be the owner. Takes ownership of t->scopes. */
int api_owner_get_token(Manager *m, VarlinkCall *call, TokenRequest *t);

/* io.tokend.agent.GetToken after parameter checks: policy, consent, then the
 * engine. Takes ownership of *scopes. */
int consent_get_token(Manager *m, VarlinkCall *call, const char *credential, ScopeSet *scopes, const char *resource,
                      int64_t min_ttl);

/* Judges a Subscribe stream again before a renewal, or after a reload: 0 if
 * the policy still allows (credential, scopes, resource) to the caller of
 * `call` and, in ask mode and with check_grant, the grant the stream runs
 * under (the call's tag) still covers it. -EPERM with *ret_error and
 * *ret_params (owned by the caller) saying why not: CallerGone,
 * PermissionDenied, PolicyDenied, ScopeNotAllowed, LifetimeTooShort or
 * ConsentEnded. -ENOMEM. */
int consent_check_stream(Manager *m, VarlinkCall *call, Credential *c, const ScopeSet *scopes, const char *resource,
                         int64_t min_ttl, bool check_grant, const char **ret_error, json_object **ret_params);

/* The manager methods. Each answers the call itself. */
int consent_list_pending(Manager *m, VarlinkCall *call);
int consent_watch(Manager *m, VarlinkCall *call);
int consent_approve(Manager *m, VarlinkCall *call, const char *id, int64_t duration_sec, bool once, bool process,
                    json_object *scopes);
int consent_deny(Manager *m, VarlinkCall *call, const char *id);
int consent_list_grants(Manager *m, VarlinkCall *call);
int consent_revoke_grant(Manager *m, VarlinkCall *call, const char *id);

/* The policy was reloaded: every waiting request is judged again (refused,
 * answered when its agent is now in allow mode, or left waiting), and Watch
 * streams of callers that may no longer use the manager interface end. */
void consent_policy_changed(Manager *m);

/* A credential was removed: its grants and waiting requests end. */
void consent_forget_credential(Manager *m, const char *credential);
/* Fails every waiting request (at stop). */
void consent_flush(Manager *m);
