/* SPDX-License-Identifier: MIT */
/* daemon/test-store-router.c: the router, over two in-memory fake backends. */
#include <stdio.h>

#include "common/test.h"
#include "common/util.h"
#include "store.h"

#define FAKE_MAX 8

typedef struct Fake {
        Store base;
        StoreOps ops;
        struct {
                char *credential;
                SecretKind kind;
                char *value;
        } slot[FAKE_MAX];
        const char *state, *reason;
        unsigned pending;
        StoreWatchCallback watch_cb;
        void *watch_userdata;
        bool *freed;
} Fake;

static int fake_find(Fake *f, const char *credential, SecretKind kind) {
        for (int i = 0; i < FAKE_MAX; i++)
                if (f->slot[i].credential && f->slot[i].kind == kind && streq(f->slot[i].credential, credential))
                        return i;
        return -1;
}

static int fake_save(Store *s, const char *credential, SecretKind kind, const char *secret) {
        Fake *f = (Fake *) s;
        int i = fake_find(f, credential, kind);
        for (int j = 0; i < 0 && j < FAKE_MAX; j++)
                if (!f->slot[j].credential)
                        i = j;
        ASSERT_TRUE(i >= 0);
        free(f->slot[i].credential);
        erase_and_free(f->slot[i].value);
        f->slot[i].credential = strdup(credential);
        f->slot[i].kind = kind;
        f->slot[i].value = secret_strdup(secret);
        return 0;
}

static int fake_load(Store *s, const char *credential, SecretKind kind, char **ret) {
        Fake *f = (Fake *) s;
        int i = fake_find(f, credential, kind);
        if (i < 0)
                return -ENOENT;
        *ret = secret_strdup(f->slot[i].value);
        return 0;
}

static int fake_remove(Store *s, const char *credential, SecretKind kind) {
        Fake *f = (Fake *) s;
        int i = fake_find(f, credential, kind);
        if (i >= 0) {
                f->slot[i].credential = mfree(f->slot[i].credential);
                f->slot[i].value = erase_and_free(f->slot[i].value);
        }
        return 0;
}

static void fake_free(Store *s) {
        Fake *f = (Fake *) s;
        for (int i = 0; i < FAKE_MAX; i++) {
                free(f->slot[i].credential);
                erase_and_free(f->slot[i].value);
        }
        *f->freed = true;
        free(f);
}

static const char *fake_state(Store *s, const char **ret_reason, unsigned *ret_pending) {
        Fake *f = (Fake *) s;
        *ret_reason = f->reason;
        *ret_pending = f->pending;
        return f->state;
}

static void fake_watch(Store *s, StoreWatchCallback cb, void *userdata) {
        Fake *f = (Fake *) s;
        f->watch_cb = cb;
        f->watch_userdata = userdata;
}

static Fake *fake_new(const char *name, bool *freed) {
        Fake *f = calloc(1, sizeof *f);
        ASSERT_TRUE(f);
        f->ops = (StoreOps) {
                .name = name,
                .save = fake_save,
                .load = fake_load,
                .remove = fake_remove,
                .free = fake_free,
                .state = fake_state,
                .watch = fake_watch,
        };
        f->base.ops = &f->ops;
        f->state = STORE_STATE_OK;
        f->freed = freed;
        *freed = false;
        return f;
}

static bool holds(Fake *f, const char *credential, SecretKind kind) {
        return fake_find(f, credential, kind) >= 0;
}

static unsigned watched;
static void on_watch(Store *s, void *userdata) {
        (void) s;
        (void) userdata;
        watched++;
}

TEST(routing) {
        bool freed_k, freed_s;
        Fake *k = fake_new(STORE_KEYRING, &freed_k), *ss = fake_new(STORE_SECRET_SERVICE, &freed_s);
        Store *r = NULL;
        char *v = NULL;

        ASSERT_OK(store_router_new(&r));
        ASSERT_OK(store_router_add(r, &ss->base));
        ASSERT_OK(store_router_add(r, &k->base));
        ASSERT_EQ(store_router_add(r, &fake_new(STORE_KEYRING, &(bool) { false })->base), -EEXIST); /* freed */
        ASSERT_STREQ(store_name(r), STORE_SECRET_SERVICE); /* the first added is the default */
        ASSERT_TRUE(store_router_get(r, STORE_KEYRING) == &k->base);
        ASSERT_TRUE(store_router_get(r, "nope") == NULL);

        /* New credentials go to the default; placed ones where they are. */
        ASSERT_OK(store_save(r, "new", SECRET_REFRESH_TOKEN, "n1"));
        ASSERT_TRUE(holds(ss, "new", SECRET_REFRESH_TOKEN) && !holds(k, "new", SECRET_REFRESH_TOKEN));
        ASSERT_STREQ(store_where(r, "new"), STORE_SECRET_SERVICE);
        ASSERT_OK(store_router_place(r, "old", STORE_KEYRING));
        ASSERT_EQ(store_router_place(r, "old", "nope"), -ENOENT);
        ASSERT_STREQ(store_where(r, "old"), STORE_KEYRING);
        ASSERT_OK(store_save(r, "old", SECRET_REFRESH_TOKEN, "o1"));
        ASSERT_OK(store_save(r, "old", SECRET_CLIENT_SECRET, "oc"));
        ASSERT_TRUE(holds(k, "old", SECRET_REFRESH_TOKEN) && !holds(ss, "old", SECRET_REFRESH_TOKEN));
        ASSERT_OK(store_load(r, "old", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, "o1");
        v = erase_and_free(v);

        /* Changing the default does not move anyone. */
        ASSERT_OK(store_router_set_default(r, STORE_KEYRING));
        ASSERT_STREQ(store_name(r), STORE_KEYRING);
        ASSERT_EQ(store_router_set_default(r, "nope"), -ENOENT);
        ASSERT_STREQ(store_where(r, "new"), STORE_SECRET_SERVICE);
        ASSERT_OK(store_save(r, "new", SECRET_REFRESH_TOKEN, "n2"));
        ASSERT_TRUE(!holds(k, "new", SECRET_REFRESH_TOKEN));

        /* Removing one kind keeps the place; removing all forgets it, so the
         * next credential of that name goes to the default. */
        ASSERT_OK(store_remove(r, "old", SECRET_CLIENT_SECRET));
        ASSERT_STREQ(store_where(r, "old"), STORE_KEYRING);
        ASSERT_OK(store_save(r, "new", SECRET_CLIENT_SECRET, "nc"));
        ASSERT_TRUE(holds(ss, "new", SECRET_CLIENT_SECRET));
        ASSERT_OK(store_remove(r, "new", SECRET_REFRESH_TOKEN));
        ASSERT_STREQ(store_where(r, "new"), STORE_SECRET_SERVICE); /* its client secret is still there */
        ASSERT_OK(store_remove(r, "new", SECRET_CLIENT_SECRET));
        ASSERT_STREQ(store_where(r, "new"), STORE_KEYRING);
        ASSERT_OK(store_save(r, "new", SECRET_REFRESH_TOKEN, "n3"));
        ASSERT_TRUE(holds(k, "new", SECRET_REFRESH_TOKEN));
        ASSERT_EQ(store_load_async(r, "new", SECRET_REFRESH_TOKEN, false, NULL, NULL), -EOPNOTSUPP);

        store_free(r);
        ASSERT_TRUE(freed_k && freed_s);
}

TEST(state) {
        bool freed_k, freed_s;
        Fake *k = fake_new(STORE_KEYRING, &freed_k), *ss = fake_new(STORE_SECRET_SERVICE, &freed_s);
        Store *r = NULL;
        const char *reason;
        unsigned pending;

        ASSERT_OK(store_router_new(&r));
        ASSERT_OK(store_router_add(r, &k->base));
        ASSERT_OK(store_router_add(r, &ss->base));
        store_watch(r, on_watch, NULL);

        static const struct {
                const char *state, *reason;
                unsigned pending;
                bool ss_default;
                const char *want_state, *want_reason;
        } table[] = {
                { STORE_STATE_OK, NULL, 0, false, STORE_STATE_OK, NULL },
                { STORE_STATE_LOCKED, "the login collection is locked", 1, true, STORE_STATE_LOCKED,
                  "the login collection is locked" },
                /* The other backend is named, so "keyring: locked" is not misread. */
                { STORE_STATE_LOCKED, "the login collection is locked", 2, false, STORE_STATE_LOCKED,
                  "secret-service: the login collection is locked" },
                { STORE_STATE_UNAVAILABLE, "gone", 3, true, STORE_STATE_UNAVAILABLE, "gone" },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ss->state = table[i].state;
                ss->reason = table[i].reason;
                ss->pending = table[i].pending;
                ASSERT_OK(store_router_set_default(r, table[i].ss_default ? STORE_SECRET_SERVICE : STORE_KEYRING));
                ASSERT_STREQ(store_state(r, &reason, &pending), table[i].want_state);
                ASSERT_TRUE(streq_ptr(reason, table[i].want_reason));
                ASSERT_EQ(pending, table[i].pending);
        }

        /* A backend's state change reaches the router's watcher. */
        ASSERT_TRUE(ss->watch_cb != NULL);
        ss->watch_cb(&ss->base, ss->watch_userdata);
        ASSERT_EQ(watched, 1);
        store_free(r);
}

int main(void) {
        RUN(routing);
        RUN(state);
        return 0;
}
