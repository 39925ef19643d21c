/* SPDX-License-Identifier: MIT */
/* daemon/engine.h: the refresh engine and access token cache.
 *
 * Tokens are cached per (credential, scope set, resource). At most one
 * refresh per credential is in flight at any time (a rotating provider would
 * see a concurrent second refresh as token reuse and revoke the grant):
 * requests needing a refresh wait on it, and refreshes of other cache keys
 * of the same credential queue behind it. A rotated refresh token is saved
 * in the store before any access token from that response is handed out.
 * Tokens in use are refreshed ahead of expiry, at 75-80% of their lifetime. */
#pragma once

#include <stdint.h>

#include "credential.h"
#include "scopes.h"
#include "varlink.h"

/* Cached tokens (cache entries: one per credential, scope set and
 * resource) in all, at most. Each costs about 300 bytes, so the cache
 * stays under about 40 MB however it is filled. Past the cap, the least
 * recently used entry nobody waits for or subscribes to is dropped (its
 * token wiped); when every entry is in use, the request fails with
 * ProviderUnavailable ("too many cached tokens"). */
#define TOKENS_MAX 131072U
/* Cache entries of one credential, at most. An agent the policy lets ask
 * for any resource or scope subset can make one entry per distinct request:
 * this keeps one credential (or one caller of it) from taking the whole
 * cache, and bounds the per-credential scans of the refresh queue. Past it,
 * the credential's least recently used idle entry goes, as above. */
#define ENTRIES_PER_CREDENTIAL_MAX 1024U

/* The engine's daemon-wide state: the cache's indexes and its one timer. */
int engine_new(Manager *m, Engine **ret);
Engine *engine_free(Engine *g);

/* Answers an io.tokend.agent.GetToken call, now or once a refresh completes.
 * A Subscribe call (with "more") is answered the same way, and then stays a
 * subscriber of the cache entry: it gets each new token of the entry, and
 * has the entry refreshed early enough for its own min_ttl.
 * Takes ownership of *scopes (NULL or empty set: every scope the credential
 * holds). min_ttl < 0: the default (a tenth of the token's lifetime).
 * max_lifetime (usec, 0: none): the reply's expires_at is at most this far
 * ahead, and a min_ttl beyond it is LifetimeTooShort. */
int engine_get_token(Credential *c, VarlinkCall *call, ScopeSet *scopes, const char *resource, int64_t min_ttl,
                     uint64_t max_lifetime);

/* Subscribe streams past their first token, at most. */
#define SUBSCRIPTIONS_MAX 1024U

/* A grant ended: every Subscribe stream that runs under it ends with
 * ConsentEnded(reason). */
void engine_subscriptions_grant_ended(Manager *m, const char *grant, const char *agent, const char *reason);
/* The policy changed: every Subscribe stream is judged again, and those the
 * policy or their grant no longer cover end. */
void engine_subscriptions_recheck(Manager *m);

/* Caches a token obtained outside the engine (the check refresh of AddCredential). */
int engine_seed(Credential *c, const TokenResponse *t);

/* Fails every waiting call of the credential with `error` (and its parameters
 * built per call), drops every cached token, cancels a refresh in flight. */
void engine_flush(Credential *c, const char *error, const char *reason);

json_object *engine_entries_to_json(Credential *c);
/* Cache entries holding a token (one past its expiry is wiped by then, within 0.1 s). */
unsigned engine_count_cached(Manager *m);
bool engine_busy(Manager *m); /* refreshes in flight */
/* One last attempt to save rotated refresh tokens the store refused earlier (at stop). */
void engine_flush_stores(Manager *m);

/* Starts a refresh_token grant for the credential with the given scopes
 * (NULL or empty: no scope parameter, i.e. the whole grant). */
int engine_refresh_request(Credential *c, const ScopeSet *scopes, const char *resource, HttpDoneFn done,
                           void *userdata, HttpRequest **ret);

/* Builds the io.tokend.agent error parameters for the credential. */
json_object *engine_error_parameters(const char *credential, const char *error, const char *reason,
                                     int64_t retry_after);
