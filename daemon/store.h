/* SPDX-License-Identifier: MIT */
/* daemon/store.h: where secrets (refresh tokens, client secrets) live. An
 * interface with one backend per file; the kernel keyring is the default,
 * the Secret Service joins later. A store never logs secret values. */
#pragma once

typedef struct Store Store;

typedef enum SecretKind {
        SECRET_REFRESH_TOKEN,
        SECRET_CLIENT_SECRET,
        _SECRET_KIND_MAX,
} SecretKind;

const char *secret_kind_to_string(SecretKind k);

typedef struct StoreOps {
        const char *name;
        /* Saves or replaces atomically: after a crash either the old or the new value is there. */
        int (*save)(Store *s, const char *credential, SecretKind kind, const char *secret);
        /* -ENOENT when absent. *ret is a secret (erase_and_free). */
        int (*load)(Store *s, const char *credential, SecretKind kind, char **ret);
        /* Removes; absent is not an error. */
        int (*remove)(Store *s, const char *credential, SecretKind kind);
        void (*free)(Store *s);
} StoreOps;

struct Store {
        const StoreOps *ops;
};

static inline int store_save(Store *s, const char *c, SecretKind k, const char *v) {
        return s->ops->save(s, c, k, v);
}
static inline int store_load(Store *s, const char *c, SecretKind k, char **ret) {
        return s->ops->load(s, c, k, ret);
}
static inline int store_remove(Store *s, const char *c, SecretKind k) {
        return s->ops->remove(s, c, k);
}
static inline Store *store_free(Store *s) {
        if (s)
                s->ops->free(s);
        return (Store *) 0;
}
static inline const char *store_name(Store *s) {
        return s->ops->name;
}

/* Opens the kernel keyring store: the calling user's persistent keyring,
 * holding one keyring per tokend instance named "tokend:INSTANCE", so that
 * several instances under one uid never see each other's keys. */
int store_keyring_open(const char *instance, Store **ret);
