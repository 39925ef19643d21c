/* SPDX-License-Identifier: MIT */
/* daemon/engine.c: see engine.h. All times used for decisions are
 * CLOCK_BOOTTIME (runs through suspend, immune to wall clock changes); the
 * wall clock is only used to report expires_at. */
#include <stdio.h>
#include <time.h>

#include "audit.h"
#include "consent.h"
#include "common/crash-point.h"
#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "engine.h"
#include "policy.h"

#define ENTRIES_MAX 64U
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
/* Never wake a subscriber's timer sooner than this after a delivery. */
#define SUBSCRIBE_MIN_PERIOD_USEC (1 * USEC_PER_SEC)

typedef struct Waiter Waiter;
typedef struct Subscriber Subscriber;

struct TokenEntry {
        Credential *cred;
        TokenEntry *prev, *next;

        ScopeSet scopes;  /* what the callers asked for */
        bool full_scope;  /* scopes are all the credential holds: send no scope parameter */
        char *resource;   /* may be NULL */

        char *access_token; /* secret; NULL when none is cached */
        char *token_type;
        ScopeSet granted;
        uint64_t expires;  /* boottime usec */
        uint64_t lifetime; /* usec, of the last token issued */
        uint64_t refresh_at; /* boottime usec of the proactive refresh, 0 when none */
        sd_event_source *timer; /* proactive refresh, or expiry */

        uint64_t last_used; /* boottime usec */
        bool queued;
        uint64_t queue_seq;
        Waiter *waiters;
        unsigned n_waiters;
        Subscriber *subscribers;
        unsigned n_subscribers;
        uint64_t generation; /* counts the tokens installed */
        const char *fail_error; /* the error of the last failed refresh, for subscribers */
};

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
        (void) engine_deny(e->cred, call, &e->scopes, e->resource, error, params);
}

/* The parameters of an agent error about the entry's token. */
static json_object *entry_error_parameters(TokenEntry *e, const char *error, const char *reason) {
        json_object *p;
        if (streq(error, ERR_SCOPE)) {
                p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(e->cred->name));
                        json_object_object_add(p, "scopes", scope_set_to_json(&e->scopes));
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

/* max_lifetime (usec, 0: none): the agent's MaxLifetime=. The token cannot be
 * shortened at the provider; the agent is told it expires that soon, so that
 * it comes back, through policy and consent, no later than that. */
static json_object *entry_token_parameters(TokenEntry *e, VarlinkCall *call, uint64_t max_lifetime,
                                           uint64_t *ret_expires) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        uint64_t expires = e->expires;
        if (max_lifetime > 0 && now_boot() + max_lifetime < expires)
                expires = now_boot() + max_lifetime;
        json_object_object_add(p, "token", json_object_new_string(e->access_token));
        json_object_object_add(p, "token_type", json_object_new_string(e->token_type ?: "Bearer"));
        json_object_object_add(p, "expires_at", json_object_new_int64(boot_to_epoch_sec(expires)));
        json_object_object_add(p, "scopes", scope_set_to_json(e->granted.n > 0 ? &e->granted : &e->scopes));
        engine_audit(e->cred, AUDIT_ISSUE, call, e->granted.n > 0 ? &e->granted : &e->scopes, e->resource,
                     e->access_token, NULL);
        if (ret_expires)
                *ret_expires = expires;
        return p;
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
        json_object *p = entry_token_parameters(e, call, max_lifetime, NULL);
        if (!p)
                return -ENOMEM;
        return varlink_call_reply(call, p);
}

/* ---- entries ---- */

static void entry_drop_token(TokenEntry *e) {
        e->access_token = erase_and_free(e->access_token);
        e->token_type = mfree(e->token_type);
        scope_set_done(&e->granted);
        e->expires = 0;
        e->refresh_at = 0;
        (void) sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
}

static void entry_free(TokenEntry *e) {
        Credential *c = e->cred;

        entry_fail_waiters(e, ERR_UNAVAILABLE, "cache entry dropped");
        entry_end_subscribers(e, ERR_UNAVAILABLE, "cache entry dropped");
        if (c->refreshing == e)
                c->refreshing = NULL;
        entry_drop_token(e);
        sd_event_source_disable_unref(e->timer);
        scope_set_done(&e->scopes);
        free(e->resource);
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

static int entry_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        TokenEntry *e = userdata;
        Manager *m = e->cred->manager;
        uint64_t now = now_boot();
        (void) s;
        (void) usec;

        if (e->access_token && e->expires <= now) {
                /* Expired and not refreshed (idle): wipe it. */
                entry_drop_token(e);
                entry_gc(e);
                return 0;
        }
        if (e->refresh_at > 0 && now >= e->refresh_at) {
                e->refresh_at = 0;
                if (now - e->last_used <= m->keep_fresh_usec) {
                        /* Already queued or being refreshed: that refresh plans the next one. */
                        if (e->queued || e->cred->refreshing == e)
                                return 0;
                        log_debug("Refreshing a token of credential %s proactively", e->cred->name);
                        e->queued = true;
                        e->queue_seq = ++m->queue_seq;
                        cred_kick(e->cred);
                        return 0;
                }
        }
        entry_schedule(e);
        return 0;
}

/* Arms the entry's timer: at refresh_at when one is planned, else at expiry. */
static void entry_schedule(TokenEntry *e) {
        uint64_t when = e->refresh_at ?: e->expires;
        if (!e->access_token || when == 0) {
                (void) sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
                return;
        }
        if (sd_event_source_set_time(e->timer, when) < 0 ||
            sd_event_source_set_enabled(e->timer, SD_EVENT_ONESHOT) < 0)
                log_warning("Cannot arm refresh timer of credential %s, ignoring", e->cred->name);
}

static TokenEntry *entry_find(Credential *c, const ScopeSet *scopes, const char *resource) {
        for (TokenEntry *e = c->entries; e; e = e->next)
                if (scope_set_equal(&e->scopes, scopes) && streq_ptr(e->resource, resource))
                        return e;
        return NULL;
}

/* Makes room by dropping the least recently used idle entry. */
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

static int entry_new(Credential *c, ScopeSet *scopes, const char *resource, TokenEntry **ret) {
        if (c->n_entries >= ENTRIES_MAX && !cred_evict_one(c))
                return -EBUSY;

        TokenEntry *e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->cred = c;
        if (resource && !(e->resource = strdup(resource))) {
                free(e);
                return -ENOMEM;
        }
        int r = sd_event_add_time(c->manager->event, &e->timer, CLOCK_BOOTTIME, UINT64_MAX, USEC_PER_SEC / 10,
                                  entry_on_timer, e);
        if (r < 0) {
                free(e->resource);
                free(e);
                return r;
        }
        (void) sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
        e->scopes = *scopes;
        *scopes = (ScopeSet) {};
        e->full_scope = c->scopes.n == 0 || scope_set_equal(&e->scopes, &c->scopes);
        LIST_PREPEND(c->entries, e);
        c->n_entries++;
        *ret = e;
        return 0;
}

/* Installs a fresh token in the entry and plans its proactive refresh.
 * issued: when the token was asked for (boottime usec; 0: now). Its life is
 * counted from then, so that what agents are told never exceeds the truth
 * by the provider's latency. */
static int entry_set_token(TokenEntry *e, const TokenResponse *t, uint64_t issued) {
        Credential *c = e->cred;
        char *at = secret_strdup(t->access_token);
        char *type = strdup(t->token_type ?: "Bearer");
        ScopeSet granted = {};

        if (!at || !type || (t->scope && scope_set_from_string(t->scope, &granted) < 0)) {
                erase_and_free(at);
                free(type);
                scope_set_done(&granted);
                return -ENOMEM;
        }
        if (granted.n > 0 && e->scopes.n > 0 && !scope_set_is_subset(&granted, &e->scopes, NULL))
                log_warning("Provider of credential %s granted wider scopes than asked for", c->name);

        entry_drop_token(e);
        e->access_token = at;
        e->token_type = type;
        e->granted = granted;
        e->generation++;

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
        (void) engine_deny(e->cred, call, &e->scopes, e->resource, error, params);
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
        }
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
                int r = consent_check_stream(c->manager, s->call, c, &e->scopes, e->resource, s->min_ttl, true,
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
        json_object *p = entry_token_parameters(e, s->call, s->max_lifetime, &told);
        if (!p) {
                subscriber_end(s, ERR_UNAVAILABLE, engine_error_parameters(c->name, ERR_UNAVAILABLE, "out of memory", -1));
                return;
        }
        e->last_used = now_boot();
        s->told_expires = told;
        s->generation = e->generation;
        subscriber_schedule(s, false);
        /* A failure kills the connection later, from the event loop, which
         * then cancels the call: nothing more to do here. */
        (void) varlink_call_reply_more(s->call, p);
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
                return engine_deny(c, call, &e->scopes, e->resource, ERR_LIFETIME, p);
        }
        if (m->n_subscriptions >= SUBSCRIPTIONS_MAX) {
                json_object *p = json_object_new_object();
                if (p)
                        json_object_object_add(p, "max", json_object_new_int64(SUBSCRIPTIONS_MAX));
                return engine_deny(c, call, &e->scopes, e->resource, ERR_TOO_MANY_SUBSCRIPTIONS, p);
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

        int r = consent_check_stream(e->cred->manager, s->call, e->cred, &e->scopes, e->resource, s->min_ttl, true,
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
        int r = consent_check_stream(e->cred->manager, w->call, e->cred, &e->scopes, e->resource, w->min_ttl, false,
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
                /* On behalf of the first waiter, if any; else proactive (no agent). */
                engine_audit(c, AUDIT_REFRESH, e && e->waiters ? e->waiters->call : NULL, e ? &e->scopes : NULL,
                             e ? e->resource : NULL, t.access_token, NULL);
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
                if (entry_set_token(e, &t, c->refresh_started) < 0) {
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
                engine_audit(c, AUDIT_REAUTH_NEEDED, e && e->waiters ? e->waiters->call : NULL, e ? &e->scopes : NULL,
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
        manager_update_status(m);
        manager_check_stop(m);
}

static int cred_start_refresh(Credential *c, TokenEntry *e) {
        crash_point("refresh-send");
        int r = engine_refresh_request(c, e->full_scope ? NULL : &e->scopes, e->resource, cred_on_refresh_done, c,
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
                                                                   "too many distinct scope sets in use", -1));
                if (r < 0)
                        return r;
        }

        uint64_t now = now_boot();
        e->last_used = now;
        uint64_t limit = e->lifetime;
        if (max_lifetime > 0 && (limit == 0 || max_lifetime < limit))
                limit = max_lifetime;
        if (min_ttl >= 0 && limit > 0 && (uint64_t) min_ttl * USEC_PER_SEC > limit) {
                json_object *p = json_object_new_object();
                if (p) {
                        json_object_object_add(p, "credential", json_object_new_string(c->name));
                        json_object_object_add(p, "lifetime", json_object_new_int64((int64_t) (limit / USEC_PER_SEC)));
                }
                return engine_deny(c, call, &e->scopes, resource, ERR_LIFETIME, p);
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
        ScopeSet s = {};
        TokenEntry *e;

        if (scope_set_copy(&c->scopes, &s) < 0)
                return -ENOMEM;
        int r = entry_new(c, &s, NULL, &e);
        scope_set_done(&s);
        if (r < 0)
                return r;
        e->last_used = now_boot();
        r = entry_set_token(e, t, 0);
        if (r < 0)
                entry_free(e);
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
                json_object_object_add(o, "scopes", scope_set_to_json(e->granted.n > 0 ? &e->granted : &e->scopes));
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
        unsigned n = 0;
        uint64_t now = now_boot();
        for (Credential *c = m->credentials; c; c = c->next)
                for (TokenEntry *e = c->entries; e; e = e->next)
                        n += e->access_token && e->expires > now;
        return n;
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
