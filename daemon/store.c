/* SPDX-License-Identifier: MIT */
/* daemon/store.c: helpers shared by the store backends. */
#include "store.h"

static const char *const secret_kind_table[_SECRET_KIND_MAX] = {
        [SECRET_REFRESH_TOKEN] = "refresh_token",
        [SECRET_CLIENT_SECRET] = "client_secret",
};

const char *secret_kind_to_string(SecretKind k) {
        if (k < 0 || k >= _SECRET_KIND_MAX)
                return (const char *) 0;
        return secret_kind_table[k];
}

const char *store_state(Store *s, const char **ret_reason, unsigned *ret_pending) {
        const char *reason = 0;
        unsigned pending = 0;
        const char *state = s->ops->state ? s->ops->state(s, &reason, &pending) : STORE_STATE_OK;
        if (ret_reason)
                *ret_reason = reason;
        if (ret_pending)
                *ret_pending = pending;
        return state;
}

int store_load_async(Store *s, const char *credential, SecretKind kind, bool durable, StoreLoadCallback cb,
                     void *userdata) {
        if (!s->ops->load_async)
                return -EOPNOTSUPP;
        return s->ops->load_async(s, credential, kind, durable, cb, userdata);
}

void store_watch(Store *s, StoreWatchCallback cb, void *userdata) {
        if (s->ops->watch)
                s->ops->watch(s, cb, userdata);
}

const char *store_where(Store *s, const char *credential) {
        return s->ops->where ? s->ops->where(s, credential) : s->ops->name;
}
