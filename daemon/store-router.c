/* SPDX-License-Identifier: MIT */
/* daemon/store-router.c: one Store in front of several backends. Each
 * credential's secrets stay in the backend that holds them (as recorded in
 * credentials.json) until they are migrated; new credentials go to the
 * default backend (--store). So a daemon started with another store than
 * the one a credential was saved in still finds it, and never silently
 * writes a rotated refresh token somewhere else. */
#include <stdio.h>

#include "common/util.h"
#include "store.h"

#define BACKENDS_MAX 4U

typedef struct Placement Placement;
struct Placement {
        Placement *next;
        char *credential;
        Store *backend;
        unsigned kinds; /* bit per SecretKind the backend may hold */
};

typedef struct Router {
        Store base;
        StoreOps ops; /* a copy, so that its name follows the default backend */
        Store *backends[BACKENDS_MAX];
        unsigned n_backends;
        Store *def;
        Placement *placements;
        char *reason;
        StoreWatchCallback watch_cb;
        void *watch_userdata;
} Router;

static Placement *router_find(Router *r, const char *credential) {
        for (Placement *p = r->placements; p; p = p->next)
                if (streq(p->credential, credential))
                        return p;
        return NULL;
}

static void router_unplace(Router *r, Placement *p) {
        for (Placement **i = &r->placements; *i; i = &(*i)->next)
                if (*i == p) {
                        *i = p->next;
                        break;
                }
        free(p->credential);
        free(p);
}

static int router_set_placement(Router *r, const char *credential, Store *backend, unsigned kinds) {
        Placement *p = router_find(r, credential);
        if (!p) {
                p = calloc(1, sizeof *p);
                if (!p || !(p->credential = strdup(credential))) {
                        free(p);
                        return -ENOMEM;
                }
                p->next = r->placements;
                r->placements = p;
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
