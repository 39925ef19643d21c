/* SPDX-License-Identifier: MIT */
/* daemon/store-router.c: one Store in front of several backends. Each
 * credential's secrets stay in the backend that holds them (as recorded in
 * credentials.json) until they are migrated; new credentials go to the
 * default backend (--store). So a daemon started with another store than
 * the one a credential was saved in still finds it, and never silently
 * writes a rotated refresh token somewhere else. */
#include <stdio.h>

#include "common/hashtab.h"
#include "common/list.h"
#include "common/util.h"
#include "store.h"

#define BACKENDS_MAX 4U

/* One per credential placed outside the default, or loaded from the state
 * file: found by name in a hash table (a daemon may hold thousands). */
typedef struct Placement {
        HashNode node;
        struct Placement *prev, *next;
        Store *backend;
        unsigned kinds; /* bit per SecretKind the backend may hold */
        char credential[];
} Placement;

typedef struct Router {
        Store base;
        StoreOps ops; /* a copy, so that its name follows the default backend */
        Store *backends[BACKENDS_MAX];
        unsigned n_backends;
        Store *def;
        Placement *placements;
        HashTable by_name;
        HashKey key;
        char *reason;
        StoreWatchCallback watch_cb;
        void *watch_userdata;
} Router;

static uint64_t router_hash(Router *r, const char *credential) {
        return siphash24(credential, strlen(credential), &r->key);
}

static Placement *router_find(Router *r, const char *credential) {
        for (HashNode *n = hashtab_first(&r->by_name, router_hash(r, credential)); n; n = hashtab_next(n)) {
                Placement *p = HASHTAB_ITEM(n, Placement, node);
                if (streq(p->credential, credential))
                        return p;
        }
        return NULL;
}

static void router_unplace(Router *r, Placement *p) {
        hashtab_remove(&r->by_name, &p->node);
        LIST_REMOVE(r->placements, p);
        free(p);
}

static int router_set_placement(Router *r, const char *credential, Store *backend, unsigned kinds) {
        Placement *p = router_find(r, credential);
        if (!p) {
                size_t l = strlen(credential);
                p = calloc(1, sizeof *p + l + 1);
                if (!p)
                        return -ENOMEM;
                memcpy(p->credential, credential, l + 1);
                if (hashtab_insert(&r->by_name, &p->node, router_hash(r, credential)) < 0) {
                        free(p);
                        return -ENOMEM;
                }
                LIST_PREPEND(r->placements, p);
        }
        if (p->backend != backend)
                p->kinds = 0;
        p->backend = backend;
        p->kinds |= kinds;
        return 0;
}

static Store *router_backend_for(Router *r, const char *credential) {
        Placement *p = router_find(r, credential);
        return p ? p->backend : r->def;
}

static int router_save(Store *s, const char *credential, SecretKind kind, const char *secret) {
        Router *r = (Router *) s;
        Store *b = router_backend_for(r, credential);
        int k = store_save(b, credential, kind, secret);
        if (k < 0)
                return k;
        return router_set_placement(r, credential, b, 1U << kind);
}

static int router_load(Store *s, const char *credential, SecretKind kind, char **ret) {
        Router *r = (Router *) s;
        return store_load(router_backend_for(r, credential), credential, kind, ret);
}

static int router_load_async(Store *s, const char *credential, SecretKind kind, bool durable, StoreLoadCallback cb,
                             void *userdata) {
        Router *r = (Router *) s;
        return store_load_async(router_backend_for(r, credential), credential, kind, durable, cb, userdata);
}

static int router_remove(Store *s, const char *credential, SecretKind kind) {
        Router *r = (Router *) s;
        Placement *p = router_find(r, credential);
        int k = store_remove(p ? p->backend : r->def, credential, kind);
        if (k < 0 || !p)
                return k;
        p->kinds &= ~(1U << kind);
        if (p->kinds == 0)
                router_unplace(r, p); /* the next credential of this name goes to the default */
        return 0;
}

static int state_rank(const char *state) {
        return streq(state, STORE_STATE_OK) ? 0 : streq(state, STORE_STATE_LOCKED) ? 1 : 2;
}

static const char *router_state(Store *s, const char **ret_reason, unsigned *ret_pending) {
        Router *r = (Router *) s;
        const char *worst = STORE_STATE_OK, *reason = NULL;
        Store *worst_backend = NULL;
        unsigned pending = 0;

        for (unsigned i = 0; i < r->n_backends; i++) {
                const char *br;
                unsigned bp;
                const char *st = store_state(r->backends[i], &br, &bp);
                pending += bp;
                if (state_rank(st) > state_rank(worst)) {
                        worst = st;
                        reason = br;
                        worst_backend = r->backends[i];
                }
        }
        r->reason = mfree(r->reason);
        if (worst_backend && worst_backend != r->def && reason) {
                /* Name the other backend, so "keyring: locked" cannot be misread. */
                if (asprintf(&r->reason, "%s: %s", store_name(worst_backend), reason) < 0)
                        r->reason = NULL;
                reason = r->reason ?: reason;
        }
        *ret_reason = reason;
        *ret_pending = pending;
        return worst;
}

static void router_on_backend_state(Store *backend, void *userdata) {
        Router *r = userdata;
        (void) backend;
        if (r->watch_cb)
                r->watch_cb(&r->base, r->watch_userdata);
}

static void router_watch(Store *s, StoreWatchCallback cb, void *userdata) {
        Router *r = (Router *) s;
        r->watch_cb = cb;
        r->watch_userdata = userdata;
}

static const char *router_where(Store *s, const char *credential) {
        Router *r = (Router *) s;
        return store_name(router_backend_for(r, credential));
}

static void router_free(Store *s) {
        Router *r = (Router *) s;
        while (r->placements)
                router_unplace(r, r->placements);
        hashtab_done(&r->by_name);
        for (unsigned i = 0; i < r->n_backends; i++)
                store_free(r->backends[i]);
        free(r->reason);
        free(r);
}

static const StoreOps router_ops = {
        .name = "none",
        .save = router_save,
        .load = router_load,
        .remove = router_remove,
        .free = router_free,
        .state = router_state,
        .load_async = router_load_async,
        .watch = router_watch,
        .where = router_where,
};

int store_router_new(Store **ret) {
        Router *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        int k = hash_key_new(&r->key);
        if (k < 0) {
                free(r);
                return k;
        }
        r->ops = router_ops;
        r->base.ops = &r->ops;
        *ret = &r->base;
        return 0;
}

int store_router_add(Store *s, Store *backend) {
        Router *r = (Router *) s;
        if (r->n_backends >= BACKENDS_MAX || store_router_get(s, store_name(backend))) {
                store_free(backend);
                return -EEXIST;
        }
        r->backends[r->n_backends++] = backend;
        store_watch(backend, router_on_backend_state, r);
        if (!r->def) {
                r->def = backend;
                r->ops.name = store_name(backend);
        }
        return 0;
}

Store *store_router_get(Store *s, const char *name) {
        Router *r = (Router *) s;
        for (unsigned i = 0; i < r->n_backends; i++)
                if (streq(store_name(r->backends[i]), name))
                        return r->backends[i];
        return NULL;
}

int store_router_set_default(Store *s, const char *name) {
        Router *r = (Router *) s;
        Store *b = store_router_get(s, name);
        if (!b)
                return -ENOENT;
        r->def = b;
        r->ops.name = store_name(b);
        return 0;
}

int store_router_place(Store *s, const char *credential, const char *name) {
        Router *r = (Router *) s;
        Store *b = store_router_get(s, name);
        if (!b)
                return -ENOENT;
        return router_set_placement(r, credential, b, (1U << _SECRET_KIND_MAX) - 1);
}
