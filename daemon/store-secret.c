/* SPDX-License-Identifier: MIT */
/* daemon/store-secret.c: the Secret Service backend (libsecret), durable
 * across reboots, with the kernel keyring as its write-ahead copy.
 *
 * save() writes "GENERATION:SECRET" to the keyring at once (key description
 * suffixed ":wal", so it never meets the keyring backend's keys) and queues
 * the Secret Service write; it returns once the keyring has it. The item
 * carries the same generation as an attribute. Generations grow: each is
 * max(last seen + 1, wall clock in µs), so a write after a reboot (which
 * empties the keyring) still outranks every older item.
 *
 * load() takes the higher generation of the two copies. A keyring copy newer
 * than the item (the daemon died before the Secret Service answered) is
 * queued again. The keyring copy stays after the item is written: it lives
 * in RAM only, and lets the daemon start while the collection is locked.
 *
 * Writes not yet answered are "intents", one per credential and kind, the
 * newest winning. They are sent while the state is "ok"; otherwise a probe
 * runs every few seconds (and the worker reports the service coming back or
 * being unlocked at once), and they are sent when it answers. */
#include <inttypes.h>
#include <stdio.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "secret-worker.h"
#include "store.h"

#define DEFAULT_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define DEFAULT_RETRY_USEC (2 * USEC_PER_SEC)
/* While "ok", a probe this often notices a lock the worker's signals missed. */
#define HEALTH_USEC (60 * USEC_PER_SEC)

typedef struct Intent Intent;

struct Intent {
        Intent *prev, *next;
        char *credential;
        SecretKind kind;
        bool remove;
        uint64_t generation;
        char *secret; /* writes only */
        bool inflight;
        SecretRequest *waiters; /* durable lookups sent once this intent is written */
};

typedef struct SecretStore {
        Store base;
        sd_event *event;
        Store *wal;
        SecretWorker *worker;
        sd_event_source *worker_source;
        sd_event_source *timer;
        sd_event_source *notify;
        SecretStoreOptions options;

        const char *state; /* STORE_STATE_* */
        char *reason;
        bool ready;   /* a probe or request has answered */
        bool probing; /* a probe is queued */

        Intent *intents;
        unsigned n_intents;
        uint64_t last_generation;

        StoreWatchCallback watch_cb;
        void *watch_userdata;
} SecretStore;

/* The keyring copy: "GENERATION:SECRET". */
typedef struct WalCopy {
        char *payload; /* erase_and_free */
        const char *secret;
        uint64_t generation;
} WalCopy;

static void wal_copy_done(WalCopy *c) {
        c->payload = erase_and_free(c->payload);
        c->secret = NULL;
        c->generation = 0;
}

static void secret_store_flush(SecretStore *s);
static void lookup_complete(SecretStore *s, SecretRequest *req);

static uint64_t secret_store_next_generation(SecretStore *s) {
        uint64_t g = now_realtime_usec();
        if (g <= s->last_generation)
                g = s->last_generation + 1;
        s->last_generation = g;
        return g;
}

static void secret_store_saw_generation(SecretStore *s, uint64_t g) {
        if (g > s->last_generation)
                s->last_generation = g;
}

static int wal_read(SecretStore *s, const char *credential, SecretKind kind, WalCopy *ret) {
        _cleanup_erase_ char *payload = NULL;
        int r = store_load(s->wal, credential, kind, &payload);
        if (r < 0)
                return r;
        char *colon = strchr(payload, ':');
        if (!colon || colon == payload || colon - payload > 20 || payload[0] == '0' ||
            strspn(payload, "0123456789") != (size_t) (colon - payload)) {
                log_debug("Keyring copy of %s's %s is malformed, ignoring it", credential,
                          secret_kind_to_string(kind));
                return -EBADMSG;
        }
        errno = 0;
        unsigned long long g = strtoull(payload, NULL, 10);
        if (errno != 0)
                return -EBADMSG;
        secret_store_saw_generation(s, g);
        ret->generation = g;
        ret->secret = colon + 1;
        ret->payload = TAKE_PTR(payload);
        return 0;
}

static int wal_write(SecretStore *s, const char *credential, SecretKind kind, uint64_t generation,
                     const char *secret) {
        _cleanup_erase_ char *payload = NULL;
        if (asprintf(&payload, "%" PRIu64 ":%s", generation, secret) < 0) {
                payload = NULL;
                return -ENOMEM;
        }
        return store_save(s->wal, credential, kind, payload);
}

/* ---- state ---- */

static int on_notify(sd_event_source *src, void *userdata) {
        SecretStore *s = userdata;
        (void) src;
        if (s->watch_cb)
                s->watch_cb(&s->base, s->watch_userdata);
        return 0;
}

static void secret_store_set_state(SecretStore *s, const char *state, const char *reason) {
        s->ready = true;
        if (streq(s->state, state) && streq_ptr(s->reason, reason))
                return;
        log_debug("Secret Service store: %s%s%s", state, reason ? ": " : "", strempty(reason));
        char *copy = reason ? strdup(reason) : NULL;
        free(s->reason);
        s->reason = copy;
        s->state = state;
        /* Watchers hear of it from the event loop, never from inside a store call. */
        (void) sd_event_source_set_enabled(s->notify, SD_EVENT_ONESHOT);
}

/* Durable lookups waiting for writes that are not being sent now (the store
 * is locked or away) fail rather than wait for the store's return. */
static void secret_store_fail_waiters(SecretStore *s, SecretStatus status) {
        SecretRequest *failed = NULL;
        for (Intent *i = s->intents; i; i = i->next) {
                if (i->inflight)
                        continue;
                while (i->waiters) {
                        SecretRequest *w = i->waiters;
                        i->waiters = w->next;
                        w->next = failed;
                        failed = w;
                }
        }
        /* Their callbacks may change the intents: answered once the walk is over. */
        while (failed) {
                SecretRequest *w = failed;
                failed = w->next;
                w->status = status;
                lookup_complete(s, w);
        }
}

static void secret_store_take_status(SecretStore *s, SecretRequest *req) {
        switch (req->status) {
        case SECRET_STATUS_OK:
                secret_store_set_state(s, STORE_STATE_OK, NULL);
                break;
        case SECRET_STATUS_LOCKED:
                secret_store_set_state(s, STORE_STATE_LOCKED, req->reason ?: "the default collection is locked");
                break;
        case SECRET_STATUS_UNAVAILABLE:
        case SECRET_STATUS_FAILED:
        case _SECRET_STATUS_MAX:
                secret_store_set_state(s, STORE_STATE_UNAVAILABLE, req->reason ?: "the Secret Service failed");
                break;
        }
        if (req->status != SECRET_STATUS_OK)
                secret_store_fail_waiters(s, req->status);
}

static int status_to_errno(SecretStatus st) {
        return st == SECRET_STATUS_LOCKED ? -EACCES : -EHOSTDOWN;
}

/* ---- intents ---- */

static Intent *intent_find(SecretStore *s, const char *credential, SecretKind kind) {
        for (Intent *i = s->intents; i; i = i->next)
                if (i->kind == kind && streq(i->credential, credential))
                        return i;
        return NULL;
}

static void intent_free(SecretStore *s, Intent *i) {
        LIST_REMOVE(s->intents, i);
        s->n_intents--;
        while (i->waiters) {
                SecretRequest *w = i->waiters;
                i->waiters = w->next;
                secret_request_free(w);
        }
        free(i->credential);
        erase_and_free(i->secret);
        free(i);
}

/* Records that the Secret Service must get this value (or lose the item). */
static int intent_set(SecretStore *s, const char *credential, SecretKind kind, bool remove, uint64_t generation,
                      const char *secret) {
        Intent *i = intent_find(s, credential, kind);
        char *copy = NULL;

        if (secret && !(copy = secret_strdup(secret)))
                return -ENOMEM;
        if (!i) {
                i = calloc(1, sizeof *i);
                if (!i || !(i->credential = strdup(credential))) {
                        free(i);
                        erase_and_free(copy);
                        return -ENOMEM;
                }
                i->kind = kind;
                LIST_PREPEND(s->intents, i);
                s->n_intents++;
        }
        erase_and_free(i->secret);
        i->secret = copy;
        i->remove = remove;
        i->generation = generation;
        return 0;
}

static void intent_submit(SecretStore *s, Intent *i) {
        SecretRequest *req = secret_request_new(i->remove ? SECRET_REQUEST_DELETE : SECRET_REQUEST_WRITE,
                                                i->credential, i->kind);
        if (!req || (i->secret && !(req->secret = secret_strdup(i->secret)))) {
                secret_request_free(req);
                return; /* retried with the next flush */
        }
        req->generation = i->generation;
        secret_worker_submit(s->worker, req);
        i->inflight = true;
}

/* A write or delete answered. */
static void intent_settle(SecretStore *s, SecretRequest *req) {
        Intent *i = intent_find(s, req->credential, req->kind);
        if (!i)
                return;
        i->inflight = false;
        bool current = i->generation == req->generation && i->remove == (req->type == SECRET_REQUEST_DELETE);
        if (req->status == SECRET_STATUS_OK && !current)
                return; /* superseded meanwhile: the flush sends the newer value */

        /* Durable lookups waiting for this write go now, or fail with it. */
        SecretRequest *waiters = TAKE_PTR(i->waiters);
        if (req->status == SECRET_STATUS_OK)
                intent_free(s, i);
        while (waiters) {
                SecretRequest *w = waiters;
                waiters = w->next;
                if (req->status == SECRET_STATUS_OK)
                        secret_worker_submit(s->worker, w);
                else {
                        w->status = req->status;
                        lookup_complete(s, w);
                }
        }
}

/* ---- loads ---- */

/* Chooses between the keyring copy and the Secret Service's answer. Returns
 * 0 with *ret set (erase_and_free), or a negative errno as for load. */
static int secret_store_reconcile(SecretStore *s, SecretRequest *req, bool durable, char **ret) {
        _cleanup_(wal_copy_done) WalCopy wal = {};
        const char *cred = req->credential, *kind = secret_kind_to_string(req->kind);

        if (req->found)
                secret_store_saw_generation(s, req->found_generation);
        if (durable) {
                if (req->status != SECRET_STATUS_OK)
                        return status_to_errno(req->status);
                if (!req->found || !req->secret)
                        return -ENOENT;
                *ret = TAKE_PTR(req->secret);
                return 0;
        }

        int r = wal_read(s, cred, req->kind, &wal);
        if (r < 0 && r != -ENOENT && r != -EBADMSG)
                log_debug_errno(r, "Cannot read the keyring copy of %s's %s, ignoring: %m", cred, kind);
        bool have_wal = r >= 0;

        switch (req->status) {
        case SECRET_STATUS_OK:
                if (req->found && req->secret && (!have_wal || req->found_generation >= wal.generation)) {
                        /* Keep the keyring copy in step, so a restart while the
                         * collection is locked still finds the newest value. */
                        if ((!have_wal || wal.generation < req->found_generation) &&
                            (r = wal_write(s, cred, req->kind, req->found_generation, req->secret)) < 0)
                                log_debug_errno(r, "Cannot refresh the keyring copy of %s's %s, ignoring: %m", cred,
                                                kind);
                        *ret = TAKE_PTR(req->secret);
                        return 0;
                }
                if (!have_wal)
                        return req->found ? -EBADMSG : -ENOENT;
                log_debug("%s's %s: the keyring copy (generation %" PRIu64
                          ") is newer than the Secret Service's (%" PRIu64 "), writing it again",
                          cred, kind, wal.generation, req->found ? req->found_generation : 0);
                break;
        case SECRET_STATUS_LOCKED:
                /* Attributes, and so generations, stay visible when locked. */
                if (!have_wal || (req->found && req->found_generation > wal.generation))
                        return -EACCES;
                break;
        case SECRET_STATUS_UNAVAILABLE:
        case SECRET_STATUS_FAILED:
        case _SECRET_STATUS_MAX:
                /* Every item is written after its keyring copy, so while the
                 * keyring copy exists no item is newer. */
                if (!have_wal)
                        return -EHOSTDOWN;
                break;
        }

        /* The keyring copy wins. Writing it again is harmless even if the item
         * has it already: a lookup takes the highest generation. */
        if (!(req->found && req->found_generation >= wal.generation) &&
            intent_set(s, cred, req->kind, false, wal.generation, wal.secret) < 0)
                return -ENOMEM;
        *ret = secret_strdup(wal.secret);
        return *ret ? 0 : -ENOMEM;
}

/* Finishes an asynchronous lookup: answers its caller and frees it. */
static void lookup_complete(SecretStore *s, SecretRequest *req) {
        char *secret = NULL;
        int r = secret_store_reconcile(s, req, req->durable, &secret);
        if (req->callback)
                req->callback(&s->base, req->credential, req->kind, r, r >= 0 ? secret : NULL, req->userdata);
        else
                erase_and_free(secret);
        secret_request_free(req);
}

static void secret_store_complete(SecretStore *s, SecretRequest *req) {
        switch (req->type) {
        case SECRET_REQUEST_PROBE:
                s->probing = false;
                secret_store_take_status(s, req);
                secret_request_free(req);
                break;
        case SECRET_REQUEST_EVENT:
                if (req->appeared) {
                        if (!s->probing) {
                                s->probing = true;
                                req->type = SECRET_REQUEST_PROBE;
                                secret_worker_submit(s->worker, req);
                                break;
                        }
                } else
                        secret_store_take_status(s, req);
                secret_request_free(req);
                break;
        case SECRET_REQUEST_WRITE:
        case SECRET_REQUEST_DELETE:
                secret_store_take_status(s, req);
                intent_settle(s, req);
                secret_request_free(req);
                break;
        case SECRET_REQUEST_LOOKUP:
                secret_store_take_status(s, req);
                lookup_complete(s, req);
                break;
        case _SECRET_REQUEST_TYPE_MAX:
                secret_request_free(req);
                break;
        }
}

static int on_worker(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        SecretStore *s = userdata;
        SecretRequest *req;
        (void) src;
        (void) fd;
        (void) revents;

        while ((req = secret_worker_pop(s->worker)))
                secret_store_complete(s, req);
        secret_store_flush(s);
        return 0;
}

static void secret_store_probe(SecretStore *s) {
        if (s->probing)
                return;
        SecretRequest *req = secret_request_new(SECRET_REQUEST_PROBE, NULL, 0);
        if (!req)
                return;
        s->probing = true;
        secret_worker_submit(s->worker, req);
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        SecretStore *s = userdata;
        (void) src;
        (void) usec;
        secret_store_probe(s);
        return 0;
}

/* Sends what is waiting when the service can take it, and plans the next probe. */
static void secret_store_flush(SecretStore *s) {
        bool ok = streq(s->state, STORE_STATE_OK);
        if (ok)
                for (Intent *i = s->intents; i; i = i->next)
                        if (!i->inflight)
                                intent_submit(s, i);
        if (!s->ready)
                secret_store_probe(s); /* the first answer is wanted now, not after a retry delay */
        uint64_t delay = ok ? HEALTH_USEC : s->options.retry_usec;
        if (sd_event_source_set_time_relative(s->timer, delay) < 0 ||
            sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT) < 0)
                log_debug("Cannot arm the Secret Service probe timer, ignoring");
}

/* ---- ops ---- */

static int secret_save(Store *base, const char *credential, SecretKind kind, const char *secret) {
        SecretStore *s = (SecretStore *) base;
        uint64_t gen = secret_store_next_generation(s);

        /* The keyring copy first: once it is there, the value survives a crash
         * of the daemon (not a reboot) whatever the Secret Service does. */
        int r = wal_write(s, credential, kind, gen, secret);
        if (r < 0)
                return r;
        r = intent_set(s, credential, kind, false, gen, secret);
        if (r < 0)
                return r;
        secret_store_flush(s);
        return 0;
}

static int secret_remove(Store *base, const char *credential, SecretKind kind) {
        SecretStore *s = (SecretStore *) base;
        int r = store_remove(s->wal, credential, kind);
        if (r < 0)
                return r;
        r = intent_set(s, credential, kind, true, secret_store_next_generation(s), NULL);
        if (r < 0)
                return r;
        secret_store_flush(s);
        return 0;
}

static SecretRequest *lookup_new(const char *credential, SecretKind kind) {
        return secret_request_new(SECRET_REQUEST_LOOKUP, credential, kind);
}

static int secret_load(Store *base, const char *credential, SecretKind kind, char **ret) {
        SecretStore *s = (SecretStore *) base;
        SecretRequest *req = lookup_new(credential, kind);
        if (!req)
                return -ENOMEM;
        req->sync = true;
        secret_worker_submit(s->worker, req);
        int r = secret_worker_wait(s->worker, req);
        if (r < 0) {
                /* The worker missed its own deadline by far; it frees req.
                 * Answer from the keyring copy alone. */
                req = lookup_new(credential, kind);
                if (!req)
                        return -ENOMEM;
                req->status = SECRET_STATUS_UNAVAILABLE;
                req->reason = strdup("the Secret Service worker is stuck");
        }
        secret_store_take_status(s, req);
        r = secret_store_reconcile(s, req, false, ret);
        secret_request_free(req);
        secret_store_flush(s);
        return r;
}

static int secret_load_async(Store *base, const char *credential, SecretKind kind, bool durable,
                             StoreLoadCallback cb, void *userdata) {
        SecretStore *s = (SecretStore *) base;

        /* A durable copy cannot be had while locked or away: say so now rather
         * than wait for a write that is not being sent. (Before the first
         * answer, wait: the probe under way decides.) */
        if (durable && s->ready && !streq(s->state, STORE_STATE_OK))
                return streq(s->state, STORE_STATE_LOCKED) ? -EACCES : -EHOSTDOWN;

        SecretRequest *req = lookup_new(credential, kind);
        if (!req)
                return -ENOMEM;
        req->durable = durable;
        req->callback = cb;
        req->userdata = userdata;

        Intent *i = durable ? intent_find(s, credential, kind) : NULL;
        if (i) {
                /* After the write in flight or about to be sent: FIFO order alone
                 * would not do, as a newer value may be queued behind it. */
                req->next = i->waiters;
                i->waiters = req;
                secret_store_flush(s);
                return 0;
        }
        secret_worker_submit(s->worker, req);
        return 0;
}

static const char *secret_state(Store *base, const char **ret_reason, unsigned *ret_pending) {
        SecretStore *s = (SecretStore *) base;
        *ret_reason = s->reason;
        *ret_pending = s->n_intents;
        return s->state;
}

static void secret_watch(Store *base, StoreWatchCallback cb, void *userdata) {
        SecretStore *s = (SecretStore *) base;
        s->watch_cb = cb;
        s->watch_userdata = userdata;
}

static void secret_free(Store *base) {
        SecretStore *s = (SecretStore *) base;

        /* Give writes already sent a moment to land; whatever is left is in
         * the keyring copy and is sent again at the next start. */
        uint64_t drain = s->n_intents > 0 && streq(s->state, STORE_STATE_OK) ? s->options.timeout_usec : 0;
        s->worker = secret_worker_free(s->worker, drain);
        sd_event_source_disable_unref(s->worker_source);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->notify);
        while (s->intents)
                intent_free(s, s->intents);
        store_free(s->wal);
        sd_event_unref(s->event);
        free(s->reason);
        free(s);
}

static const StoreOps secret_ops = {
        .name = STORE_SECRET_SERVICE,
        .save = secret_save,
        .load = secret_load,
        .remove = secret_remove,
        .free = secret_free,
        .state = secret_state,
        .load_async = secret_load_async,
        .watch = secret_watch,
};

int store_secret_open(sd_event *event, const char *instance, const SecretStoreOptions *options, Store **ret) {
        SecretStore *s = calloc(1, sizeof *s);
        int r;

        if (!s)
                return -ENOMEM;
        s->base.ops = &secret_ops;
        s->event = sd_event_ref(event);
        s->state = STORE_STATE_UNAVAILABLE;
        if (options)
                s->options = *options;
        s->options.timeout_usec = s->options.timeout_usec ?: DEFAULT_TIMEOUT_USEC;
        s->options.retry_usec = s->options.retry_usec ?: DEFAULT_RETRY_USEC;
        s->reason = strdup("waiting for the Secret Service to answer");
        if (!s->reason) {
                secret_free(&s->base);
                return -ENOMEM;
        }

        r = store_keyring_open_suffixed(instance, ":wal", &s->wal);
        if (r >= 0)
                r = secret_worker_new(instance, s->options.timeout_usec, &s->worker);
        if (r >= 0)
                r = sd_event_add_io(event, &s->worker_source, secret_worker_fd(s->worker), EPOLLIN, on_worker, s);
        /* The first probe, from the event loop. */
        if (r >= 0)
                r = sd_event_add_time_relative(event, &s->timer, CLOCK_MONOTONIC, 0, 0, on_timer, s);
        if (r >= 0)
                r = sd_event_add_defer(event, &s->notify, on_notify, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->notify, SD_EVENT_OFF);
        if (r < 0) {
                secret_free(&s->base);
                return r;
        }
        *ret = &s->base;
        return 0;
}

bool store_secret_bus_configured(void) {
        return secret_service_bus_configured();
}

void store_secret_wait_ready(Store *base, uint64_t timeout_usec, bool no_activate) {
        SecretStore *s = (SecretStore *) base;
        if (s->ready)
                return;
        SecretRequest *req = secret_request_new(SECRET_REQUEST_PROBE, NULL, 0);
        if (!req)
                return;
        req->sync = true;
        req->no_activate = no_activate;
        req->timeout_usec = timeout_usec;
        secret_worker_submit(s->worker, req);
        if (secret_worker_wait(s->worker, req) < 0)
                return;
        secret_store_take_status(s, req);
        secret_request_free(req);
        secret_store_flush(s);
}
