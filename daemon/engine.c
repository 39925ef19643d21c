/* SPDX-License-Identifier: MIT */
/* daemon/engine.c: see engine.h. All times used for decisions are
 * CLOCK_BOOTTIME (runs through suspend, immune to wall clock changes); the
 * wall clock is only used to report expires_at. */
#include <stdio.h>
#include <time.h>

#include "audit.h"
#include "consent.h"
#include "common/crash-point.h"
#include "common/hashtab.h"
#include "common/heap.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "engine.h"
#include "policy.h"

#define BACKOFF_MIN_USEC (1 * USEC_PER_SEC)
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)
#define RETRY_AFTER_MAX_USEC (600 * USEC_PER_SEC)
/* A refresh is never scheduled sooner than this after the token arrived. */
#define REFRESH_MIN_DELAY_USEC (1 * USEC_PER_SEC)

#define ERR_NO_SUCH_CREDENTIAL "io.tokend.agent.NoSuchCredential"
#define ERR_REAUTH "io.tokend.agent.ReauthenticationRequired"
#define ERR_UNAVAILABLE "io.tokend.agent.ProviderUnavailable"
#define ERR_SCOPE "io.tokend.agent.ScopeNotAllowed"
#define ERR_LIFETIME "io.tokend.agent.LifetimeTooShort"
#define ERR_STORE "io.tokend.agent.StoreUnavailable"
#define ERR_CONSENT_ENDED "io.tokend.agent.ConsentEnded"
#define ERR_TOO_MANY_SUBSCRIPTIONS "io.tokend.agent.TooManySubscriptions"

/* A subscriber's renewal is asked for this long, plus the provider's last
 * refresh latency, before its token falls under its min_ttl. */
#define SUBSCRIBE_LEAD_USEC (2 * USEC_PER_SEC)
#define SUBSCRIBE_LATENCY_MAX_USEC (30 * USEC_PER_SEC)
/* The end of a stream whose renewal did not come is sent this long before
 * the token it holds falls under min_ttl: the timer may fire up to its
 * accuracy (50 ms) late, and the notice must still arrive in time. */
#define SUBSCRIBE_END_EARLY_USEC (250 * USEC_PER_MSEC)
/* Never wake a subscriber's timer sooner than this after a delivery. */
#define SUBSCRIBE_MIN_PERIOD_USEC (1 * USEC_PER_SEC)

typedef struct Waiter Waiter;
typedef struct Subscriber Subscriber;

/* A scope set shared by every cache entry that asked for (or was granted)
 * the same scopes: most entries of a credential ask for all it holds. */
typedef struct SharedScopes {
        HashNode node; /* in Engine.scope_sets, by content */
        unsigned n_ref;
        ScopeSet set;
} SharedScopes;

/* A cache entry. With 100,000 of them its size is the daemon's size: no
 * event source of its own (one timer serves all, over a heap), scope sets
 * shared, the resource in the same allocation. */
struct TokenEntry {
        HashNode node;   /* in Engine.entries, by (credential, scopes, resource) */
        HeapNode due;    /* in Engine.timers, by boottime usec: refresh_at, else expires */
        Credential *cred;
        TokenEntry *prev, *next;         /* the credential's entries */
        TokenEntry *lru_prev, *lru_next; /* every entry, most recently used first */

        SharedScopes *scopes;  /* what the callers asked for */
        SharedScopes *granted; /* what the provider said it granted; NULL: as asked */
        char *resource;        /* may be NULL; points into this allocation */

        char *access_token; /* secret; NULL when none is cached */
        char *token_type;   /* NULL: "Bearer" */
        uint64_t expires;    /* boottime usec */
        uint64_t lifetime;   /* usec, of the last token issued */
        uint64_t refresh_at; /* boottime usec of the proactive refresh, 0 when none */
        uint64_t last_used;  /* boottime usec */
        uint64_t queue_seq;
        uint64_t generation; /* counts the tokens installed */

        Waiter *waiters;
        Subscriber *subscribers;
        const char *fail_error; /* the error of the last failed refresh, for subscribers */
        unsigned n_waiters;
        unsigned n_subscribers;
        char token_fp[13]; /* audit fingerprint of access_token ("" when none) */
        bool full_scope;   /* scopes are all the credential holds: send no scope parameter */
        bool queued;
        bool token_plain;  /* access_token and token_type need no JSON escaping (json_plain()) */
        /* Fields ordered so that none needs padding: 208 bytes on 64-bit. */
};

struct Engine {
        Manager *manager;
        HashTable entries;    /* TokenEntry by (credential, scopes, resource) */
        HashTable scope_sets; /* SharedScopes by content */
        /* Entries with a token, by when their timer is due (proactive
         * refresh, else expiry): a binary min-heap, and one event source
         * armed at its top. */
        Heap timers;
        sd_event_source *timer;
        uint64_t timer_at; /* what the timer is armed at; 0: off */
        TokenEntry *lru_head, *lru_tail;
        unsigned n_entries;
        unsigned n_tokens; /* entries holding a token */
};

static const ScopeSet *entry_scopes(const TokenEntry *e) {
        return &e->scopes->set;
}

/* What the token covers, for replies and the record. */
static const ScopeSet *entry_granted(const TokenEntry *e) {
        return e->granted ? &e->granted->set : &e->scopes->set;
}

struct Waiter {
        TokenEntry *entry;
        Waiter *prev, *next;
        VarlinkCall *call;
        int64_t min_ttl;
        uint64_t max_lifetime; /* usec; 0: none */
        sd_event_source *timeout;
};

/* A Subscribe stream that received its first token: it gets every token
 * the entry is given, and asks for a renewal itself when its token would
 * otherwise fall under its min_ttl. */
struct Subscriber {
        TokenEntry *entry;
        Subscriber *prev, *next;
        VarlinkCall *call;
        int64_t min_ttl;       /* < 0: a tenth of the lifetime */
        uint64_t max_lifetime; /* usec; 0: none */
        uint64_t told_expires; /* boottime usec: the expiry it was told last */
        uint64_t generation;   /* of the token delivered last */
        bool renewal_asked;    /* the timer is at the min_ttl point, not the renewal point */
        sd_event_source *timer;
};

static uint64_t now_boot(void) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Converts a boottime instant to seconds since the epoch. */
static int64_t boot_to_epoch_sec(uint64_t boot) {
        uint64_t nb = now_boot(), nr = now_realtime_usec();
        uint64_t r = boot >= nb ? nr + (boot - nb) : nr - (nb - boot);
        return (int64_t) (r / USEC_PER_SEC);
}

static void cred_kick(Credential *c);
static void entry_schedule(TokenEntry *e);
static void entry_end_subscribers(TokenEntry *e, const char *error, const char *reason);

/* ---- audit: one record per decision ---- */

static void engine_audit(Credential *c, AuditEvent ev, VarlinkCall *call, const ScopeSet *scopes,
                         const char *resource, const char *token, const char *reason) {
        audit_log(c->manager, &(AuditRecord) { .event = ev, .credential = c->name, .scopes = scopes,
                                               .resource = resource, .agent = audit_call_agent(call),
                                               .grant = varlink_call_get_tag(call), .token = token,
                                               .reason = reason });
}

/* A record about the token an entry holds: its fingerprint was taken once,
 * when the token came (if that failed, audit takes it from the token). */
static void engine_audit_token(TokenEntry *e, AuditEvent ev, VarlinkCall *call) {
        Credential *c = e->cred;
        audit_log(c->manager, &(AuditRecord) { .event = ev, .credential = c->name, .scopes = entry_granted(e),
                                               .resource = e->resource, .agent = audit_call_agent(call),
                                               .grant = varlink_call_get_tag(call),
                                               .token = e->token_fp[0] ? NULL : e->access_token,
                                               .token_fp = e->token_fp[0] ? e->token_fp : NULL });
}

/* Refuses a GetToken call with a named error, on the record. */
static int engine_deny(Credential *c, VarlinkCall *call, const ScopeSet *scopes, const char *resource,
                       const char *error, json_object *params) {
        engine_audit(c, AUDIT_DENY, call, scopes, resource, NULL, error);
        return varlink_call_error(call, error, params);
}

/* ---- replies ---- */

json_object *engine_error_parameters(const char *credential, const char *error, const char *reason,
                                     int64_t retry_after) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        if (!streq(error, ERR_STORE))
                json_object_object_add(p, "credential", json_object_new_string(credential));
        if (streq(error, ERR_UNAVAILABLE) || streq(error, ERR_STORE))
                json_object_object_add(p, "reason", json_object_new_string(reason ?: "unknown"));
        if (streq(error, ERR_UNAVAILABLE) && retry_after >= 0)
                json_object_object_add(p, "retry_after", json_object_new_int64(retry_after));
        return p;
}

static void waiter_free(Waiter *w) {
        TokenEntry *e = w->entry;

        LIST_REMOVE(e->waiters, w);
        e->n_waiters--;
        sd_event_source_disable_unref(w->timeout);
        free(w);
}

static int64_t cred_retry_after_sec(Credential *c) {
        if (c->retry_at == 0)
                return -1;
        uint64_t n = now_boot();
        return c->retry_at > n ? (int64_t) ((c->retry_at - n + USEC_PER_SEC - 1) / USEC_PER_SEC) : 0;
}

/* Answers a waiter's call with an error and forgets the waiter. */
static void waiter_fail(Waiter *w, const char *error, json_object *params) {
        VarlinkCall *call = w->call;
        TokenEntry *e = w->entry;
        varlink_call_set_cancel(call, NULL, NULL);
        waiter_free(w);
        (void) engine_deny(e->cred, call, entry_scopes(e), e->resource, error, params);
}

/* The parameters of an agent error about the entry's token. */
static json_object *entry_error_parameters(TokenEntry *e, const char *error, const char *reason) {
        json_object *p;
        if (streq(error, ERR_SCOPE)) {
                p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(e->cred->name));
                        json_object_object_add(p, "scopes", scope_set_to_json(entry_scopes(e)));
                }
        } else if (streq(error, ERR_LIFETIME)) {
                p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(e->cred->name));
                        json_object_object_add(p, "lifetime",
                                               json_object_new_int64((int64_t) (e->lifetime / USEC_PER_SEC)));
                }
        } else
                p = engine_error_parameters(e->cred->name, error, reason, cred_retry_after_sec(e->cred));
        return p;
}

static void entry_fail_waiters(TokenEntry *e, const char *error, const char *reason) {
        while (e->waiters)
                waiter_fail(e->waiters, error, entry_error_parameters(e, error, reason));
}

static uint64_t entry_need_usec(TokenEntry *e, int64_t min_ttl) {
        if (min_ttl >= 0)
                return (uint64_t) min_ttl * USEC_PER_SEC;
        return e->lifetime / 10;
}

static bool entry_satisfies(TokenEntry *e, int64_t min_ttl, uint64_t now) {
        if (!e->access_token || e->expires <= now)
                return false;
        return e->expires - now >= entry_need_usec(e, min_ttl);
}

static void entry_audit_issue(VarlinkCall *call, void *userdata) {
        engine_audit_token(userdata, AUDIT_ISSUE, call);
}

/* Answers `call` with the entry's token ("continues" for a stream), written
 * straight into the connection's output (no json-c objects: the cache-hit
 * path), and audits the issue.
 *
 * max_lifetime (usec, 0: none): the agent's MaxLifetime=. The token cannot be
 * shortened at the provider; the agent is told it expires that soon, so that
 * it comes back, through policy and consent, no later than that.
 * *ret_expires (if not NULL) says which expiry it was told.
 *
 * The audit record is written right after the reply went to the kernel, in
 * the same turn of the event loop (no other call is served in between), so
 * that its write (the journal's socket, or the fallback file) does not delay
 * the token; a repeat of the same token on the same connection is only
 * counted (audit.h). An audit failure never held a token back (audit_log()
 * logs it); what the order changes is that a daemon killed between the two
 * sends without recording. */
static int entry_send_token(TokenEntry *e, VarlinkCall *call, uint64_t max_lifetime, bool continues,
                            uint64_t *ret_expires) {
        uint64_t expires = e->expires;
        if (max_lifetime > 0 && now_boot() + max_lifetime < expires)
                expires = now_boot() + max_lifetime;
        const ScopeSet *scopes = entry_granted(e);
        const char *type = e->token_type ?: "Bearer";
        const VarlinkOutField fields[] = {
                { .name = "token", .type = VARLINK_OUT_STRING, .string = e->access_token,
                  .len = strlen(e->access_token), .plain = e->token_plain },
                { .name = "token_type", .type = VARLINK_OUT_STRING, .string = type, .len = strlen(type),
                  .plain = e->token_plain },
                { .name = "expires_at", .type = VARLINK_OUT_INT, .integer = boot_to_epoch_sec(expires) },
                /* Scope tokens hold no '"', '\\' or control character (scope_token_valid()). */
                { .name = "scopes", .type = VARLINK_OUT_STRV, .strv = (const char *const *) scopes->items,
                  .len = scopes->n, .plain = true },
        };
        if (ret_expires)
                *ret_expires = expires;
        return varlink_call_reply_fields(call, fields, ELEMENTSOF(fields), continues, entry_audit_issue, e);
}

static bool call_is_subscription(VarlinkCall *call) {
        return (varlink_call_flags(call) & VARLINK_CALL_MORE) &&
               streq(varlink_call_method(call), "io.tokend.agent.Subscribe");
}

static int subscriber_attach(TokenEntry *e, VarlinkCall *call, int64_t min_ttl, uint64_t max_lifetime);

/* Answers a token request from the entry: a GetToken call is completed, a
 * Subscribe call becomes a subscriber of the entry. */
static int entry_reply(TokenEntry *e, VarlinkCall *call, int64_t min_ttl, uint64_t max_lifetime) {
        if (call_is_subscription(call))
                return subscriber_attach(e, call, min_ttl, max_lifetime);
        return entry_send_token(e, call, max_lifetime, false, NULL);
}

/* ---- shared scope sets ---- */

static uint64_t scopes_hash(Engine *g, const ScopeSet *set) {
        SipHash h;
        siphash24_init(&h, &g->manager->hash_key);
        for (size_t i = 0; i < set->n; i++)
                siphash24_feed_string(&h, set->items[i]);
        return siphash24_end(&h);
}

/* The shared set equal to `set`, or NULL: then no entry asked for it. */
static SharedScopes *scopes_lookup(Engine *g, const ScopeSet *set, uint64_t hash) {
        for (HashNode *n = hashtab_first(&g->scope_sets, hash); n; n = hashtab_next(n)) {
                SharedScopes *x = HASHTAB_ITEM(n, SharedScopes, node);
                if (scope_set_equal(&x->set, set))
                        return x;
        }
        return NULL;
}

/* A reference to the shared set equal to `set` (copied when new). */
static int scopes_ref(Engine *g, const ScopeSet *set, SharedScopes **ret) {
        uint64_t hash = scopes_hash(g, set);
        SharedScopes *x = scopes_lookup(g, set, hash);
        if (x) {
                x->n_ref++;
                *ret = x;
                return 0;
        }
        x = calloc(1, sizeof *x);
        if (!x)
                return -ENOMEM;
        if (scope_set_copy(set, &x->set) < 0 || hashtab_insert(&g->scope_sets, &x->node, hash) < 0) {
                scope_set_done(&x->set);
                free(x);
                return -ENOMEM;
        }
        x->n_ref = 1;
        *ret = x;
        return 0;
}

static SharedScopes *scopes_unref(Engine *g, SharedScopes *x) {
        if (x && --x->n_ref == 0) {
                hashtab_remove(&g->scope_sets, &x->node);
                scope_set_done(&x->set);
                free(x);
        }
        return NULL;
}

/* ---- the timer heap ---- */

static TokenEntry *entry_of_due(HeapNode *n) {
        return n ? (TokenEntry *) (void *) ((char *) n - offsetof(TokenEntry, due)) : NULL;
}

/* Arms the one timer at the heap's top. */
static void engine_arm(Engine *g) {
        HeapNode *top = heap_top(&g->timers);
        if (!top) {
                if (g->timer_at != 0)
                        (void) sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
                g->timer_at = 0;
                return;
        }
        uint64_t when = top->key;
        if (when == g->timer_at)
                return;
        if (sd_event_source_set_time(g->timer, when) < 0 ||
            sd_event_source_set_enabled(g->timer, SD_EVENT_ONESHOT) < 0) {
                log_warning("Cannot arm the token cache's timer, ignoring");
                g->timer_at = 0;
                return;
        }
        g->timer_at = when;
}

/* ---- entries ---- */

static void lru_unlink(Engine *g, TokenEntry *e) {
        if (e->lru_prev)
                e->lru_prev->lru_next = e->lru_next;
        else
                g->lru_head = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                g->lru_tail = e->lru_prev;
        e->lru_prev = e->lru_next = NULL;
}

static void lru_push(Engine *g, TokenEntry *e) {
        e->lru_prev = NULL;
        e->lru_next = g->lru_head;
        if (g->lru_head)
                g->lru_head->lru_prev = e;
        else
                g->lru_tail = e;
        g->lru_head = e;
}

/* The entry was asked for (or delivered) now. */
static void entry_touch(TokenEntry *e, uint64_t now) {
        Engine *g = e->cred->manager->engine;
        e->last_used = now;
        if (g->lru_head != e) {
                lru_unlink(g, e);
                lru_push(g, e);
        }
}

static void entry_drop_token(TokenEntry *e) {
        Engine *g = e->cred->manager->engine;
        if (e->access_token)
                g->n_tokens--;
        e->access_token = erase_and_free(e->access_token);
        e->token_type = mfree(e->token_type);
        e->granted = scopes_unref(g, e->granted);
        e->token_fp[0] = 0;
        e->token_plain = false;
        e->expires = 0;
        e->refresh_at = 0;
        heap_remove(&g->timers, &e->due);
        engine_arm(g);
}

static void entry_free(TokenEntry *e) {
        Credential *c = e->cred;
        Engine *g = c->manager->engine;

        entry_fail_waiters(e, ERR_UNAVAILABLE, "cache entry dropped");
        entry_end_subscribers(e, ERR_UNAVAILABLE, "cache entry dropped");
        if (c->refreshing == e)
                c->refreshing = NULL;
        entry_drop_token(e);
        hashtab_remove(&g->entries, &e->node);
        lru_unlink(g, e);
        g->n_entries--;
        e->scopes = scopes_unref(g, e->scopes);
        LIST_REMOVE(c->entries, e);
        c->n_entries--;
        free(e);
}

static bool entry_idle(TokenEntry *e) {
        return !e->waiters && !e->subscribers && !e->queued && e->cred->refreshing != e;
}

/* Frees an entry that holds nothing and nobody waits for. */
static void entry_gc(TokenEntry *e) {
        if (!e->access_token && entry_idle(e))
                entry_free(e);
}

/* The entry's timer is due (it is out of the heap): a proactive refresh, or expiry. */
static void entry_on_timer(TokenEntry *e, uint64_t now) {
        Manager *m = e->cred->manager;

        if (e->access_token && e->expires <= now) {
                /* Expired and not refreshed (idle): wipe it. */
                entry_drop_token(e);
                entry_gc(e);
                return;
        }
        if (e->refresh_at > 0 && now >= e->refresh_at) {
                e->refresh_at = 0;
                if (now - e->last_used <= m->keep_fresh_usec) {
                        /* Already queued or being refreshed: that refresh plans the next one. */
                        if (e->queued || e->cred->refreshing == e)
                                return;
                        log_debug("Refreshing a token of credential %s proactively", e->cred->name);
                        e->queued = true;
                        e->queue_seq = ++m->queue_seq;
                        cred_kick(e->cred);
                        return;
                }
        }
        entry_schedule(e);
}

static int engine_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Engine *g = userdata;
        uint64_t now = now_boot();
        (void) s;
        (void) usec;

        g->timer_at = 0; /* a oneshot: off now */
        /* Each handler may free entries, the one after it included: take the top afresh each time. */
        for (TokenEntry *e; (e = entry_of_due(heap_top(&g->timers))) && e->due.key <= now;) {
                heap_remove(&g->timers, &e->due);
                entry_on_timer(e, now);
        }
        engine_arm(g);
        return 0;
}

/* Puts the entry in the timer heap: at refresh_at when one is planned, else at expiry. */
static void entry_schedule(TokenEntry *e) {
        Engine *g = e->cred->manager->engine;
        uint64_t when = e->refresh_at ?: e->expires;
        if (!e->access_token || when == 0)
                heap_remove(&g->timers, &e->due);
        else if (heap_set(&g->timers, &e->due, when) < 0)
                log_warning("Cannot arm refresh timer of credential %s, ignoring", e->cred->name);
        engine_arm(g);
}

static uint64_t entry_hash(Engine *g, Credential *c, SharedScopes *scopes, const char *resource) {
        SipHash h;
        siphash24_init(&h, &g->manager->hash_key);
        siphash24_feed(&h, &c, sizeof c);
        siphash24_feed(&h, &scopes, sizeof scopes);
        siphash24_feed_string(&h, resource);
        return siphash24_end(&h);
}

static TokenEntry *entry_find(Credential *c, const ScopeSet *scopes, const char *resource) {
        Engine *g = c->manager->engine;
        SharedScopes *x = scopes_lookup(g, scopes, scopes_hash(g, scopes));
        if (!x)
                return NULL;
        uint64_t hash = entry_hash(g, c, x, resource);
        for (HashNode *n = hashtab_first(&g->entries, hash); n; n = hashtab_next(n)) {
                TokenEntry *e = HASHTAB_ITEM(n, TokenEntry, node);
                if (e->cred == c && e->scopes == x && streq_ptr(e->resource, resource))
                        return e;
        }
        return NULL;
}

/* Makes room in the credential by dropping its least recently used idle entry. */
static bool cred_evict_one(Credential *c) {
        TokenEntry *victim = NULL;
        for (TokenEntry *e = c->entries; e; e = e->next)
                if (entry_idle(e) && (!victim || e->last_used < victim->last_used))
                        victim = e;
        if (!victim)
                return false;
        entry_free(victim);
        return true;
}

/* Makes room in the cache: the least recently used idle entry of any credential goes. */
static bool engine_evict_one(Engine *g) {
        for (TokenEntry *e = g->lru_tail; e; e = e->lru_prev)
                if (entry_idle(e)) {
                        entry_free(e);
                        return true;
                }
        return false;
}

static int entry_new(Credential *c, const ScopeSet *scopes, const char *resource, TokenEntry **ret) {
        Engine *g = c->manager->engine;
        int r;

        if (c->n_entries >= ENTRIES_PER_CREDENTIAL_MAX && !cred_evict_one(c))
                return -EBUSY;
        if (g->n_entries >= TOKENS_MAX && !engine_evict_one(g))
                return -EBUSY;

        size_t rl = resource ? strlen(resource) + 1 : 0;
        TokenEntry *e = calloc(1, sizeof *e + rl);
        if (!e)
                return -ENOMEM;
        e->cred = c;
        e->due = HEAP_NODE_INIT;
        if (resource)
                e->resource = memcpy((char *) (e + 1), resource, rl);
        r = scopes_ref(g, scopes, &e->scopes);
        if (r < 0) {
                free(e);
                return r;
        }
        r = hashtab_insert(&g->entries, &e->node, entry_hash(g, c, e->scopes, e->resource));
        if (r < 0) {
                scopes_unref(g, e->scopes);
                free(e);
                return r;
        }
        e->full_scope = c->scopes.n == 0 || scope_set_equal(entry_scopes(e), &c->scopes);
        LIST_PREPEND(c->entries, e);
        c->n_entries++;
        lru_push(g, e);
        g->n_entries++;
        *ret = e;
        return 0;
}

/* Installs a fresh token in the entry and plans its proactive refresh.
 * issued: when the token was asked for (boottime usec; 0: now). Its life is
 * counted from then, so that what agents are told never exceeds the truth
 * by the provider's latency. fp: the token's audit fingerprint when the
 * caller took it already ("" or NULL: taken here). */
static int entry_set_token(TokenEntry *e, const TokenResponse *t, uint64_t issued, const char *fp) {
        Credential *c = e->cred;
        Engine *g = c->manager->engine;
        char *at = secret_strdup(t->access_token);
        char *type = NULL;
        ScopeSet granted = {};
        SharedScopes *shared = NULL;

        /* Nearly every provider says "Bearer": no copy of it per entry. */
        if (t->token_type && !streq(t->token_type, "Bearer"))
                type = strdup(t->token_type);
        if (!at || (t->token_type && !streq(t->token_type, "Bearer") && !type) ||
            (t->scope && scope_set_from_string(t->scope, &granted) < 0) ||
            /* Granted as asked (the usual case): nothing to keep. */
            (granted.n > 0 && !scope_set_equal(&granted, entry_scopes(e)) && scopes_ref(g, &granted, &shared) < 0)) {
                erase_and_free(at);
                free(type);
                scope_set_done(&granted);
                return -ENOMEM;
        }
        if (granted.n > 0 && e->scopes->set.n > 0 && !scope_set_is_subset(&granted, entry_scopes(e), NULL))
                log_warning("Provider of credential %s granted wider scopes than asked for", c->name);
        scope_set_done(&granted);

        entry_drop_token(e);
        e->access_token = at;
        e->token_type = type;
        e->granted = shared;
        g->n_tokens++;
        e->generation++;
        e->token_plain = json_plain(at, strlen(at)) && (!type || json_plain(type, strlen(type)));
        if (fp && fp[0])
                memcpy(e->token_fp, fp, sizeof e->token_fp);
        else if (audit_fingerprint(at, e->token_fp) < 0)
                e->token_fp[0] = 0; /* audit takes it from the token */

        uint64_t now = issued ?: now_boot();
        e->lifetime = (uint64_t) t->expires_in * USEC_PER_SEC;
        e->expires = now + e->lifetime;
        /* Refresh at 75-80% of the lifetime: the jitter spreads refreshes of
         * tokens issued together. */
        uint64_t at_pct = 7500 + random_below(501); /* hundredths of a percent */
        uint64_t delay = e->lifetime / 10000 * at_pct + (e->lifetime % 10000) * at_pct / 10000;
        if (delay < REFRESH_MIN_DELAY_USEC)
                delay = REFRESH_MIN_DELAY_USEC;
        e->refresh_at = delay < e->lifetime ? now + delay : 0;
        entry_schedule(e);
        return 0;
}

/* The instant a fresh token's remaining life is judged at, against the
 * min_ttl of those waiting for it: its issue (when it was asked for), so a
 * min_ttl equal to the provider's lifetime is met rather than missed by the
 * milliseconds of the round trip; but never more than a second before now,
 * so that an answer held up for long is judged for what is left of it. */
static uint64_t entry_judged_at(TokenEntry *e) {
        uint64_t issued = e->expires - e->lifetime, now = now_boot();
        return now > issued + USEC_PER_SEC ? now - USEC_PER_SEC : issued;
}

/* ---- subscribers (io.tokend.agent.Subscribe) ---- */

static void subscriber_free(Subscriber *s) {
        TokenEntry *e = s->entry;
        LIST_REMOVE(e->subscribers, s);
        e->n_subscribers--;
        e->cred->manager->n_subscriptions--;
        sd_event_source_disable_unref(s->timer);
        free(s);
}

/* Ends a stream with an error reply, on the record. Takes ownership of
 * params. The entry may be left idle: the caller collects it. */
static void subscriber_end(Subscriber *s, const char *error, json_object *params) {
        VarlinkCall *call = s->call;
        TokenEntry *e = s->entry;
        varlink_call_set_cancel(call, NULL, NULL);
        subscriber_free(s);
        (void) engine_deny(e->cred, call, entry_scopes(e), e->resource, error, params);
}

static void entry_end_subscribers(TokenEntry *e, const char *error, const char *reason) {
        while (e->subscribers)
                subscriber_end(e->subscribers, error, entry_error_parameters(e, error, reason));
}

static uint64_t subscriber_need_usec(Subscriber *s) {
        return entry_need_usec(s->entry, s->min_ttl);
}

/* How long before its token falls under min_ttl a subscriber asks for the
 * next one: a fixed lead plus what the provider took last time. */
static uint64_t cred_lead_usec(Credential *c) {
        uint64_t latency = c->refresh_latency;
        if (latency > SUBSCRIBE_LATENCY_MAX_USEC)
                latency = SUBSCRIBE_LATENCY_MAX_USEC;
        /* Single flight: a renewal may have to wait for the refreshes of the
         * credential's other streamed keys before its own. */
        unsigned n = 0;
        for (TokenEntry *e = c->entries; e; e = e->next)
                n += e->subscribers != NULL;
        return SUBSCRIBE_LEAD_USEC + latency * (n > 0 ? n : 1);
}

static uint64_t subscriber_lead_usec(Subscriber *s) {
        return cred_lead_usec(s->entry->cred);
}

/* Arms the subscriber's timer: at the renewal point (told expiry - min_ttl -
 * lead); once the renewal was asked for, at the point where the token it
 * holds falls under min_ttl. */
static void subscriber_schedule(Subscriber *s, bool renewal_asked) {
        uint64_t now = now_boot(), need = subscriber_need_usec(s);
        uint64_t when = s->told_expires > need ? s->told_expires - need : 0;

        if (!renewal_asked) {
                uint64_t lead = subscriber_lead_usec(s);
                when = when > lead ? when - lead : 0;
                if (when < now + SUBSCRIBE_MIN_PERIOD_USEC)
                        when = now + SUBSCRIBE_MIN_PERIOD_USEC;
        } else
                when = when > SUBSCRIBE_END_EARLY_USEC ? when - SUBSCRIBE_END_EARLY_USEC : 0;
        s->renewal_asked = renewal_asked;
        if (sd_event_source_set_time(s->timer, when > 0 ? when : 1) < 0 ||
            sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT) < 0)
                log_warning("Cannot arm the renewal timer of a subscriber of credential %s", s->entry->cred->name);
}

/* MaxLifetime= as the policy in force says (a reload may have changed it). */
static void subscriber_update_limits(Subscriber *s) {
        Manager *m = s->entry->cred->manager;
        s->max_lifetime = policy_agent_max_lifetime_usec(policy_match(m->policy, audit_call_agent(s->call)));
}

/* Sends the entry's token to the subscriber. check: judge the policy and the
 * grant the stream runs under first (every delivery but the first, which was
 * just decided). */
static void subscriber_deliver(Subscriber *s, bool check) {
        TokenEntry *e = s->entry;
        Credential *c = e->cred;
        const char *error = NULL;
        json_object *params = NULL;

        if (check) {
                int r = consent_check_stream(c->manager, s->call, c, entry_scopes(e), e->resource, s->min_ttl, true,
                                             &error, &params);
                if (r == -EPERM) {
                        subscriber_end(s, error, params);
                        return;
                }
                if (r < 0) {
                        subscriber_end(s, ERR_UNAVAILABLE, engine_error_parameters(c->name, ERR_UNAVAILABLE,
                                                                                   "out of memory", -1));
                        return;
                }
                subscriber_update_limits(s);
        }
        uint64_t told;
        entry_touch(e, now_boot());
        s->generation = e->generation;
        /* A failure kills the connection later, from the event loop, which
         * then cancels the call: nothing more to do here. */
        (void) entry_send_token(e, s->call, s->max_lifetime, true, &told);
        s->told_expires = told;
        subscriber_schedule(s, false);
}

static int subscriber_on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Subscriber *s = userdata;
        TokenEntry *e = s->entry;
        Credential *c = e->cred;
        Manager *m = c->manager;
        uint64_t now = now_boot();
        (void) src;
        (void) usec;

        /* A token it was not told about, or, under MaxLifetime=, more life
         * left in the one it holds than it was told: pass it on. */
        if (e->access_token && e->expires > now &&
            e->expires - now >= subscriber_need_usec(s) + subscriber_lead_usec(s) &&
            (e->generation != s->generation || e->expires > s->told_expires)) {
                subscriber_deliver(s, true);
                return 0;
        }
        if (!s->renewal_asked) {
                /* Shared: every subscriber of the entry waits for the same refresh. */
                if (!e->queued && c->refreshing != e) {
                        e->queued = true;
                        e->queue_seq = ++m->queue_seq;
                }
                subscriber_schedule(s, true);
                cred_kick(c);
                return 0;
        }
        /* No successor before the token it holds fell under min_ttl: the
         * promise of the stream is broken, so it ends, saying why. */
        const char *error = e->fail_error ?: ERR_UNAVAILABLE;
        subscriber_end(s, error,
                       entry_error_parameters(e, error, c->last_error ?: "no new token before the one held fell under min_ttl"));
        entry_gc(e);
        return 0;
}

static void subscriber_on_cancel(VarlinkCall *call, void *userdata) {
        Subscriber *s = userdata;
        TokenEntry *e = s->entry;
        (void) call;
        subscriber_free(s);
        entry_gc(e);
}

/* Turns an answered Subscribe call into a subscriber of the entry, and sends
 * it its first token. */
static int subscriber_attach(TokenEntry *e, VarlinkCall *call, int64_t min_ttl, uint64_t max_lifetime) {
        Credential *c = e->cred;
        Manager *m = c->manager;

        uint64_t limit = e->lifetime;
        if (max_lifetime > 0 && max_lifetime < limit)
                limit = max_lifetime;
        if (entry_need_usec(e, min_ttl) + SUBSCRIBE_LEAD_USEC + SUBSCRIBE_MIN_PERIOD_USEC > limit) {
                /* No room to renew ahead of min_ttl. */
                json_object *p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(c->name));
                        json_object_object_add(p, "lifetime", json_object_new_int64((int64_t) (limit / USEC_PER_SEC)));
                }
                return engine_deny(c, call, entry_scopes(e), e->resource, ERR_LIFETIME, p);
        }
        if (m->n_subscriptions >= SUBSCRIPTIONS_MAX) {
                json_object *p = json_object_new_object();
                if (p)
                        json_object_object_add(p, "max", json_object_new_int64(SUBSCRIPTIONS_MAX));
                return engine_deny(c, call, entry_scopes(e), e->resource, ERR_TOO_MANY_SUBSCRIPTIONS, p);
        }

        Subscriber *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        int r = sd_event_add_time(m->event, &s->timer, CLOCK_BOOTTIME, UINT64_MAX, USEC_PER_SEC / 20,
                                  subscriber_on_timer, s);
        if (r < 0) {
                free(s);
                return r;
        }
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        s->entry = e;
        s->call = call;
        s->min_ttl = min_ttl;
        s->max_lifetime = max_lifetime;
        LIST_PREPEND(e->subscribers, s);
        e->n_subscribers++;
        m->n_subscriptions++;
        varlink_call_set_cancel(call, subscriber_on_cancel, s);
        log_debug("Credential %s: a subscriber joined (%u on this token, %u in all)", c->name, e->n_subscribers,
                  m->n_subscriptions);
        subscriber_deliver(s, false);
        return 0;
}

/* A new token arrived in the entry: every subscriber gets it, or learns
 * that tokens now live too short for its min_ttl. */
static void entry_deliver_subscribers(TokenEntry *e) {
        uint64_t now = entry_judged_at(e); /* as for waiters */
        for (Subscriber *s = e->subscribers, *next; s; s = next) {
                next = s->next;
                if (s->generation == e->generation)
                        continue; /* joined with this very token, from the waiters */
                if (entry_satisfies(e, s->min_ttl, now) &&
                    e->lifetime >= subscriber_need_usec(s) + SUBSCRIBE_LEAD_USEC + SUBSCRIBE_MIN_PERIOD_USEC)
                        subscriber_deliver(s, true);
                else
                        subscriber_end(s, ERR_LIFETIME, entry_error_parameters(e, ERR_LIFETIME, NULL));
        }
}

/* Calls fn on every subscriber; fn may end the one it is given. */
static void subscribers_foreach(Manager *m, void (*fn)(Subscriber *s, void *userdata), void *userdata) {
        for (Credential *c = m->credentials; c; c = c->next)
                for (TokenEntry *e = c->entries, *enext; e; e = enext) {
                        enext = e->next;
                        for (Subscriber *s = e->subscribers, *next; s; s = next) {
                                next = s->next;
                                fn(s, userdata);
                        }
                        entry_gc(e);
                }
}

typedef struct GrantEnded {
        const char *grant, *agent, *reason;
} GrantEnded;

static json_object *grant_ended_parameters(const char *credential, const GrantEnded *g);
static void subscription_waiters_foreach(Manager *m, void (*fn)(Waiter *w, void *userdata), void *userdata);

static void subscriber_grant_ended(Subscriber *s, void *userdata) {
        const GrantEnded *g = userdata;
        if (streq_ptr(varlink_call_get_tag(s->call), g->grant))
                subscriber_end(s, ERR_CONSENT_ENDED, grant_ended_parameters(s->entry->cred->name, g));
}

static json_object *grant_ended_parameters(const char *credential, const GrantEnded *g) {
        json_object *p = json_object_new_object();
        if (p) {
                json_object_object_add(p, "credential", json_object_new_string(credential));
                if (g->agent)
                        json_object_object_add(p, "agent", json_object_new_string(g->agent));
                json_object_object_add(p, "grant", json_object_new_string(g->grant));
                json_object_object_add(p, "reason", json_object_new_string(g->reason));
        }
        return p;
}

static void waiter_grant_ended(Waiter *w, void *userdata) {
        const GrantEnded *g = userdata;
        if (streq_ptr(varlink_call_get_tag(w->call), g->grant))
                waiter_fail(w, ERR_CONSENT_ENDED, grant_ended_parameters(w->entry->cred->name, g));
}

void engine_subscriptions_grant_ended(Manager *m, const char *grant, const char *agent, const char *reason) {
        GrantEnded g = { grant, agent, reason };
        /* A stream still waiting for its first token ends too: no token
         * leaves under a grant that has ended. */
        subscription_waiters_foreach(m, waiter_grant_ended, &g);
        if (m->n_subscriptions > 0)
                subscribers_foreach(m, subscriber_grant_ended, &g);
}

static void subscriber_recheck(Subscriber *s, void *userdata) {
        TokenEntry *e = s->entry;
        const char *error = NULL;
        json_object *params = NULL;
        (void) userdata;

        int r = consent_check_stream(e->cred->manager, s->call, e->cred, entry_scopes(e), e->resource, s->min_ttl, true,
                                     &error, &params);
        if (r == -EPERM) {
                subscriber_end(s, error, params);
                return;
        }
        if (r >= 0)
                subscriber_update_limits(s);
}

/* Calls fn on every Subscribe call still waiting for its first token (on a
 * refresh: it is a waiter, not a subscriber yet); fn may fail the waiter. */
static void subscription_waiters_foreach(Manager *m, void (*fn)(Waiter *w, void *userdata), void *userdata) {
        for (Credential *c = m->credentials; c; c = c->next)
                for (TokenEntry *e = c->entries, *enext; e; e = enext) {
                        enext = e->next;
                        for (Waiter *w = e->waiters, *next; w; w = next) {
                                next = w->next;
                                if (call_is_subscription(w->call))
                                        fn(w, userdata);
                        }
                        entry_gc(e);
                }
}

static void waiter_recheck(Waiter *w, void *userdata) {
        TokenEntry *e = w->entry;
        const char *error = NULL;
        json_object *params = NULL;
        (void) userdata;

        /* The policy only: the grant it was let in under is watched by
         * engine_subscriptions_grant_ended() (and a single-use one is
         * already spent on this very call). */
        int r = consent_check_stream(e->cred->manager, w->call, e->cred, entry_scopes(e), e->resource, w->min_ttl, false,
                                     &error, &params);
        if (r == -EPERM)
                waiter_fail(w, error, params);
}

void engine_subscriptions_recheck(Manager *m) {
        subscription_waiters_foreach(m, waiter_recheck, NULL);
        if (m->n_subscriptions > 0)
                subscribers_foreach(m, subscriber_recheck, NULL);
}

/* ---- the refresh of one credential ---- */

static uint64_t backoff_usec(unsigned failures) {
        uint64_t d = BACKOFF_MIN_USEC;
        for (unsigned i = 1; i < failures && d < BACKOFF_MAX_USEC; i++)
                d *= 2;
        if (d > BACKOFF_MAX_USEC)
                d = BACKOFF_MAX_USEC;
        /* Full jitter in [d/2, d]. */
        return d / 2 + random_below(d / 2 + 1);
}

static int cred_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Credential *c = userdata;
        (void) s;
        (void) usec;
        c->retry_at = 0;
        cred_kick(c);
        return 0;
}

static void cred_schedule_retry(Credential *c, int64_t retry_after) {
        uint64_t d = backoff_usec(++c->failures);
        if (retry_after >= 0) {
                uint64_t ra = (uint64_t) retry_after * USEC_PER_SEC;
                if (ra > RETRY_AFTER_MAX_USEC)
                        ra = RETRY_AFTER_MAX_USEC;
                if (ra > d)
                        d = ra;
        }
        c->retry_at = now_boot() + d;
        if (!c->retry_timer) {
                if (sd_event_add_time(c->manager->event, &c->retry_timer, CLOCK_BOOTTIME, c->retry_at, USEC_PER_MSEC,
                                      cred_on_retry, c) < 0) {
                        c->retry_at = 0;
                        return;
                }
        } else {
                (void) sd_event_source_set_time(c->retry_timer, c->retry_at);
        }
        (void) sd_event_source_set_enabled(c->retry_timer, SD_EVENT_ONESHOT);
        log_info("Credential %s: %s; retrying in %.1fs", c->name, strna(c->last_error), (double) d / USEC_PER_SEC);
}

/* Saves the in-memory refresh token when the store has an older one. */
static int cred_flush_store(Credential *c) {
        if (!c->store_dirty)
                return 0;
        int r = store_save(c->manager->store, c->name, SECRET_REFRESH_TOKEN, c->refresh_token);
        if (r < 0)
                return log_error_errno(r, "Credential %s: cannot save the rotated refresh token: %m", c->name);
        c->store_dirty = false;
        crash_point("refresh-saved"); /* durable, no access token handed out yet */
        engine_audit(c, AUDIT_ROTATE, NULL, NULL, NULL, NULL, NULL);
        return 0;
}

/* Adopts a rotated refresh token: into the store first, then into memory.
 * If the store fails, the new token is still kept in memory (the old one is
 * dead at the provider) and the store is retried before the next hand-out. */
static int cred_adopt_refresh_token(Credential *c, const char *rt) {
        if (!rt || secret_equal(rt, c->refresh_token))
                return cred_flush_store(c);
        char *copy = secret_strdup(rt);
        if (!copy)
                return -ENOMEM;
        erase_and_free(c->refresh_token);
        c->refresh_token = copy;
        c->store_dirty = true;
        return cred_flush_store(c);
}

static void cred_on_refresh_done(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        Credential *c = userdata;
        Manager *m = c->manager;
        TokenEntry *e = TAKE_PTR(c->refreshing);
        TokenResponse t = {};
        OAuthError err = {};
        (void) req;

        c->inflight = NULL;
        OAuthOutcome o = oauth_parse_token_response(resp->status, resp->body, resp->body_len, &t, &err);

        switch (o) {
        case OAUTH_OK: {
                c->refresh_latency = now_boot() - c->refresh_started;
                /* The provider may have rotated the refresh token: the new
                 * one exists only in this response until it is saved. */
                crash_point("refresh-response");
                /* On behalf of the first waiter, if any; else proactive (no agent).
                 * The fingerprint is taken once, for this record and the entry. */
                char fp[13] = "";
                if (t.access_token && audit_fingerprint(t.access_token, fp) < 0)
                        fp[0] = 0;
                audit_log(m, &(AuditRecord) { .event = AUDIT_REFRESH, .credential = c->name,
                                              .scopes = e ? entry_scopes(e) : NULL, .resource = e ? e->resource : NULL,
                                              .agent = audit_call_agent(e && e->waiters ? e->waiters->call : NULL),
                                              .grant = varlink_call_get_tag(e && e->waiters ? e->waiters->call : NULL),
                                              .token = fp[0] ? NULL : t.access_token, .token_fp = fp[0] ? fp : NULL });
                int r = cred_adopt_refresh_token(c, t.refresh_token);
                c->failures = 0;
                if (r < 0) {
                        credential_set_last_error(c, "cannot save rotated refresh token");
                        if (e) {
                                e->fail_error = ERR_STORE;
                                entry_fail_waiters(e, ERR_STORE, "cannot save the rotated refresh token");
                        }
                        cred_schedule_retry(c, -1);
                        break;
                }
                c->last_error = mfree(c->last_error);
                if (!e)
                        break;
                if (entry_set_token(e, &t, c->refresh_started, fp) < 0) {
                        e->fail_error = ERR_UNAVAILABLE;
                        entry_fail_waiters(e, ERR_UNAVAILABLE, "out of memory");
                        break;
                }
                e->fail_error = NULL;
                if (e->expires <= now_boot()) {
                        /* Counted from when it was asked for, the token is dead
                         * already (the answer was held up that long): never
                         * hand it out; ask again. */
                        credential_set_last_error(c, "the provider's answer came after its token had expired");
                        entry_drop_token(e);
                        e->queued = true;
                        e->queue_seq = 0;
                        break;
                }
                log_debug("Credential %s: token refreshed", c->name);
                uint64_t now = entry_judged_at(e);
                for (Waiter *w = e->waiters, *next; w; w = next) {
                        next = w->next;
                        VarlinkCall *call = w->call;
                        uint64_t max_lifetime = w->max_lifetime;
                        int64_t min_ttl = w->min_ttl;
                        if (entry_satisfies(e, min_ttl, now)) {
                                varlink_call_set_cancel(call, NULL, NULL);
                                waiter_free(w);
                                (void) entry_reply(e, call, min_ttl, max_lifetime);
                        }
                }
                entry_fail_waiters(e, ERR_LIFETIME, NULL);
                entry_deliver_subscribers(e);
                break;
        }
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
                log_warning("Credential %s: provider refused the refresh (%s); re-authentication required", c->name,
                            err.code);
                credential_set_last_error(c, "%s%s%s", err.code, err.description[0] ? ": " : "", err.description);
                c->state = CREDENTIAL_REAUTH_REQUIRED;
                engine_audit(c, AUDIT_REAUTH_NEEDED, e && e->waiters ? e->waiters->call : NULL, e ? entry_scopes(e) : NULL,
                             e ? e->resource : NULL, NULL, err.code);
                (void) manager_save_state(m);
                engine_flush(c, ERR_REAUTH, NULL);
                e = NULL;
                break;
        case OAUTH_INVALID_SCOPE:
                credential_set_last_error(c, "invalid_scope");
                if (e) {
                        e->fail_error = ERR_SCOPE;
                        entry_fail_waiters(e, ERR_SCOPE, NULL);
                }
                break;
        case OAUTH_REFUSED:
                credential_set_last_error(c, "provider refused: %s%s%s", err.code, err.description[0] ? ": " : "",
                                          err.description);
                if (e) {
                        e->fail_error = ERR_UNAVAILABLE;
                        entry_fail_waiters(e, ERR_UNAVAILABLE, c->last_error);
                }
                break;
        case OAUTH_TRANSIENT:
                if (resp->curl_error)
                        credential_set_last_error(c, "%s", resp->curl_error);
                else
                        credential_set_last_error(c, "%s%s%s", err.code, err.description[0] ? ": " : "",
                                                  err.description);
                if (e) {
                        e->fail_error = ERR_UNAVAILABLE;
                        /* Retried first once the backoff ends; waiters keep waiting until their deadline. */
                        e->queued = true;
                        e->queue_seq = 0;
                }
                cred_schedule_retry(c, resp->retry_after);
                break;
        }
        token_response_done(&t);
        if (e) {
                /* Whatever happened, a token still held must be wiped at its expiry. */
                entry_schedule(e);
                entry_gc(e);
        }
        cred_kick(c);
        manager_update_status_soon(m);
        manager_check_stop(m);
}

static int cred_start_refresh(Credential *c, TokenEntry *e) {
        crash_point("refresh-send");
        int r = engine_refresh_request(c, e->full_scope ? NULL : entry_scopes(e), e->resource, cred_on_refresh_done, c,
                                       &c->inflight);
        if (r < 0)
                return r;
        c->refreshing = e;
        c->refresh_started = now_boot();
        e->queued = false;
        return 0;
}

/* Starts the next queued refresh of the credential unless one is in flight or
 * a backoff is running. */
static void cred_kick(Credential *c) {
        if (c->inflight || c->retry_at > 0 || c->manager->stopping)
                return;
        if (c->state != CREDENTIAL_OK) {
                engine_flush(c, ERR_REAUTH, NULL);
                return;
        }
        if (c->store_dirty && cred_flush_store(c) < 0) {
                for (TokenEntry *e = c->entries; e; e = e->next)
                        if (e->queued) {
                                e->fail_error = ERR_STORE;
                                entry_fail_waiters(e, ERR_STORE, "cannot save the rotated refresh token");
                                entry_schedule(e); /* a token it still holds is wiped at expiry */
                        }
                /* The only valid refresh token is in memory: keep trying to save it. */
                cred_schedule_retry(c, -1);
                return;
        }

        for (;;) {
                TokenEntry *next = NULL;
                for (TokenEntry *e = c->entries; e; e = e->next)
                        if (e->queued && (!next || e->queue_seq < next->queue_seq))
                                next = e;
                if (!next)
                        return;
                int r = cred_start_refresh(c, next);
                if (r >= 0)
                        return;
                log_error_errno(r, "Credential %s: cannot start refresh: %m", c->name);
                next->queued = false;
                entry_fail_waiters(next, ERR_UNAVAILABLE, "cannot start the refresh");
                entry_gc(next);
        }
}

/* ---- GetToken ---- */

static void waiter_on_cancel(VarlinkCall *call, void *userdata) {
        Waiter *w = userdata;
        TokenEntry *e = w->entry;
        (void) call;
        waiter_free(w);
        entry_gc(e);
}

static int waiter_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Waiter *w = userdata;
        TokenEntry *e = w->entry;
        Credential *c = e->cred;
        (void) s;
        (void) usec;

        waiter_fail(w, ERR_UNAVAILABLE,
                    engine_error_parameters(c->name, ERR_UNAVAILABLE, c->last_error ?: "timed out waiting for the provider",
                                            cred_retry_after_sec(c)));
        entry_gc(e);
        return 0;
}

int engine_get_token(Credential *c, VarlinkCall *call, ScopeSet *scopes, const char *resource, int64_t min_ttl,
                     uint64_t max_lifetime) {
        Manager *m = c->manager;
        _cleanup_(scope_set_done) ScopeSet requested = *scopes;
        int r;

        *scopes = (ScopeSet) {};
        if (c->secrets_deferred)
                /* Its secrets are in a store that is locked or away: not a login problem. */
                return engine_deny(c, call, &requested, resource, ERR_STORE,
                                   engine_error_parameters(c->name, ERR_STORE, c->last_error ?: "the store is not available", -1));
        if (c->state != CREDENTIAL_OK)
                return engine_deny(c, call, &requested, resource, ERR_REAUTH,
                                   engine_error_parameters(c->name, ERR_REAUTH, NULL, -1));

        if (requested.n == 0 && scope_set_copy(&c->scopes, &requested) < 0)
                return -ENOMEM;
        if (c->scopes.n > 0) {
                ScopeSet missing = {};
                if (!scope_set_is_subset(&requested, &c->scopes, &missing)) {
                        json_object *p = json_object_new_object();
                        if (p) {
                                json_object_object_add(p, "credential", json_object_new_string(c->name));
                                json_object_object_add(p, "scopes", scope_set_to_json(&missing));
                        }
                        scope_set_done(&missing);
                        return engine_deny(c, call, &requested, resource, ERR_SCOPE, p);
                }
        }

        TokenEntry *e = entry_find(c, &requested, resource);
        if (!e) {
                r = entry_new(c, &requested, resource, &e);
                if (r == -EBUSY)
                        return engine_deny(c, call, &requested, resource, ERR_UNAVAILABLE,
                                           engine_error_parameters(c->name, ERR_UNAVAILABLE,
                                                                   c->n_entries >= ENTRIES_PER_CREDENTIAL_MAX
                                                                           ? "too many distinct scope sets in use"
                                                                           : "too many cached tokens",
                                                                   -1));
                if (r < 0)
                        return r;
        }

        uint64_t now = now_boot();
        entry_touch(e, now);
        uint64_t limit = e->lifetime;
        if (max_lifetime > 0 && (limit == 0 || max_lifetime < limit))
                limit = max_lifetime;
        if (min_ttl >= 0 && limit > 0 && (uint64_t) min_ttl * USEC_PER_SEC > limit) {
                json_object *p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(c->name));
                        json_object_object_add(p, "lifetime", json_object_new_int64((int64_t) (limit / USEC_PER_SEC)));
                }
                return engine_deny(c, call, entry_scopes(e), resource, ERR_LIFETIME, p);
        }
        /* A new subscriber needs more than min_ttl: room to renew ahead of it
         * without a hurry, or it would be told to go away at once. */
        if (entry_satisfies(e, min_ttl, now) &&
            (!call_is_subscription(call) ||
             e->expires - now >= entry_need_usec(e, min_ttl) + cred_lead_usec(c) + SUBSCRIBE_MIN_PERIOD_USEC))
                return entry_reply(e, call, min_ttl, max_lifetime);

        Waiter *w = calloc(1, sizeof *w);
        if (!w) {
                entry_gc(e);
                return -ENOMEM;
        }
        w->entry = e;
        w->call = call;
        w->min_ttl = min_ttl;
        w->max_lifetime = max_lifetime;
        r = sd_event_add_time_relative(m->event, &w->timeout, CLOCK_BOOTTIME, m->request_timeout_usec, USEC_PER_MSEC,
                                       waiter_on_timeout, w);
        if (r < 0) {
                free(w);
                entry_gc(e);
                return r;
        }
        LIST_PREPEND(e->waiters, w);
        e->n_waiters++;
        varlink_call_set_cancel(call, waiter_on_cancel, w);

        if (!e->queued && c->refreshing != e) {
                e->queued = true;
                e->queue_seq = ++m->queue_seq;
        }
        cred_kick(c);
        return 0;
}

/* ---- the rest ---- */

int engine_seed(Credential *c, const TokenResponse *t) {
        TokenEntry *e = entry_find(c, &c->scopes, NULL);
        int r;

        if (!e) {
                r = entry_new(c, &c->scopes, NULL, &e);
                if (r < 0)
                        return r;
        }
        entry_touch(e, now_boot());
        /* Its life counts from when it was asked for, as for a refresh:
         * not from now, after the login and the store's save. */
        r = entry_set_token(e, t, t->issued, NULL);
        if (r < 0)
                entry_gc(e);
        return r;
}

void engine_flush(Credential *c, const char *error, const char *reason) {
        c->inflight = http_request_cancel(c->inflight);
        c->refreshing = NULL;
        if (c->retry_timer)
                (void) sd_event_source_set_enabled(c->retry_timer, SD_EVENT_OFF);
        c->retry_at = 0;
        while (c->entries) {
                TokenEntry *e = c->entries;
                entry_fail_waiters(e, error, reason);
                entry_end_subscribers(e, error, reason);
                e->queued = false;
                entry_free(e);
        }
        c->retry_timer = sd_event_source_disable_unref(c->retry_timer);
}

json_object *engine_entries_to_json(Credential *c) {
        json_object *a = json_object_new_array();
        uint64_t now = now_boot();

        for (TokenEntry *e = c->entries; a && e; e = e->next) {
                if (!e->access_token || e->expires <= now)
                        continue;
                json_object *o = json_object_new_object();
                if (!o)
                        break;
                json_object_object_add(o, "scopes", scope_set_to_json(entry_granted(e)));
                if (e->resource)
                        json_object_object_add(o, "resource", json_object_new_string(e->resource));
                json_object_object_add(o, "expires_at", json_object_new_int64(boot_to_epoch_sec(e->expires)));
                /* Only when it will happen: a token unused for longer than
                 * --keep-fresh by then is left to expire. */
                if (e->refresh_at > e->last_used && e->refresh_at - e->last_used <= c->manager->keep_fresh_usec)
                        json_object_object_add(o, "refresh_at", json_object_new_int64(boot_to_epoch_sec(e->refresh_at)));
                json_object_array_add(a, o);
        }
        return a;
}

unsigned engine_count_cached(Manager *m) {
        return m->engine ? m->engine->n_tokens : 0;
}

int engine_new(Manager *m, Engine **ret) {
        Engine *g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        g->manager = m;
        int r = sd_event_add_time(m->event, &g->timer, CLOCK_BOOTTIME, UINT64_MAX, USEC_PER_SEC / 10, engine_on_timer,
                                  g);
        if (r < 0) {
                free(g);
                return r;
        }
        (void) sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
        *ret = g;
        return 0;
}

Engine *engine_free(Engine *g) {
        if (!g)
                return NULL;
        /* The credentials went first, and their entries with them. */
        sd_event_source_disable_unref(g->timer);
        hashtab_done(&g->entries);
        hashtab_done(&g->scope_sets);
        heap_done(&g->timers);
        free(g);
        return NULL;
}

void engine_flush_stores(Manager *m) {
        for (Credential *c = m->credentials; c; c = c->next)
                if (c->store_dirty)
                        (void) cred_flush_store(c);
}

bool engine_busy(Manager *m) {
        for (Credential *c = m->credentials; c; c = c->next)
                if (c->inflight)
                        return true;
        return false;
}

/* ---- requests ---- */

int engine_refresh_request(Credential *c, const ScopeSet *scopes, const char *resource, HttpDoneFn done,
                           void *userdata, HttpRequest **ret) {
        _cleanup_free_ char *scope = NULL;
        _cleanup_erase_ char *body = NULL, *auth = NULL;

        if (scopes && scopes->n > 0 && !(scope = scope_set_join(scopes)))
                return -ENOMEM;
        body = oauth_refresh_body(c->refresh_token, scope, resource, c->auth_method, c->client_id, c->client_secret);
        if (!body)
                return -ENOMEM;
        if (c->auth_method == OAUTH_AUTH_CLIENT_SECRET_BASIC &&
            !(auth = oauth_basic_authorization(c->client_id, c->client_secret)))
                return -ENOMEM;
        return http_post_form(c->manager->http, c->token_endpoint, body, auth, done, userdata, ret);
}
