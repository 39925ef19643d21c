/* SPDX-License-Identifier: MIT */
/* daemon/store.h: where secrets (refresh tokens, client secrets) live. An
 * interface with one backend per file: the kernel keyring (store-keyring.c)
 * and the Secret Service (store-secret.c, with the keyring as its
 * write-ahead copy). The manager talks to a router (store-router.c) that
 * sends each credential to the backend holding its secrets. A store never
 * logs secret values. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct Store Store;

typedef enum SecretKind {
        SECRET_REFRESH_TOKEN,
        SECRET_CLIENT_SECRET,
        _SECRET_KIND_MAX,
} SecretKind;

const char *secret_kind_to_string(SecretKind k);

/* Backend names, as used by --store, in credentials.json and on the wire. */
#define STORE_KEYRING "keyring"
#define STORE_SECRET_SERVICE "secret-service"

/* Store states (store_state()). */
#define STORE_STATE_OK "ok"
#define STORE_STATE_LOCKED "locked"           /* the collection is locked: secrets cannot be read or written */
#define STORE_STATE_UNAVAILABLE "unavailable" /* not on the bus, or it did not answer in time */

/* The result of an asynchronous load: r is 0 with `secret` set (the callback
 * takes it over: erase_and_free), or a negative errno as for load. */
typedef void (*StoreLoadCallback)(Store *s, const char *credential, SecretKind kind, int r, char *secret,
                                  void *userdata);
/* Called from the event loop when store_state() changed. */
typedef void (*StoreWatchCallback)(Store *s, void *userdata);

typedef struct StoreOps {
        const char *name;
        /* Saves or replaces atomically: after a crash either the old or the new value is there.
         * Returns once the value would survive a crash of the daemon. */
        int (*save)(Store *s, const char *credential, SecretKind kind, const char *secret);
        /* -ENOENT when absent, -EACCES when the store is locked, -EHOSTDOWN when it is
         * unavailable (so absence cannot be told). *ret is a secret (erase_and_free).
         * May block up to the backend's timeout: for start-up, not for the event loop. */
        int (*load)(Store *s, const char *credential, SecretKind kind, char **ret);
        /* Removes; absent is not an error. */
        int (*remove)(Store *s, const char *credential, SecretKind kind);
        void (*free)(Store *s);

        /* Optional. NULL: "ok", no reason, nothing pending. */
        const char *(*state)(Store *s, const char **ret_reason, unsigned *ret_pending);
        /* Optional: like load, without blocking; `cb` runs later from the event loop,
         * never from within this call (a negative return means it never runs). With
         * `durable`, only the durable copy counts (the Secret Service item, after the
         * writes of that secret queued before have answered). Callbacks still
         * pending when the store is freed are dropped uncalled. */
        int (*load_async)(Store *s, const char *credential, SecretKind kind, bool durable, StoreLoadCallback cb,
                          void *userdata);
        /* Optional: registers the one state-change callback (NULL to clear). */
        void (*watch)(Store *s, StoreWatchCallback cb, void *userdata);
        /* Optional: the name of the backend holding this credential (routers). NULL: ops->name. */
        const char *(*where)(Store *s, const char *credential);
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

/* "ok", "locked" or "unavailable"; *ret_reason (may be NULL: none) says why, for
 * humans, valid until the next store_state() call; *ret_pending counts
 * writes and removals not yet confirmed by the durable store. */
const char *store_state(Store *s, const char **ret_reason, unsigned *ret_pending);
/* -EOPNOTSUPP when the backend only loads synchronously (then use store_load()). */
int store_load_async(Store *s, const char *credential, SecretKind kind, bool durable, StoreLoadCallback cb,
                     void *userdata);
void store_watch(Store *s, StoreWatchCallback cb, void *userdata);
const char *store_where(Store *s, const char *credential);
/* True for -EACCES and -EHOSTDOWN from load: the secret may be there, but cannot
 * be read now; try again when the store's state is "ok". */
static inline bool store_error_is_transient(int r) {
        return r == -EACCES || r == -EHOSTDOWN;
}

/* Opens the kernel keyring store: the calling user's persistent keyring,
 * holding one keyring per tokend instance named "tokend:INSTANCE", so that
 * several instances under one uid never see each other's keys. */
int store_keyring_open(const char *instance, Store **ret);
/* The same keyring, with `suffix` appended to every key description (e.g.
 * ":wal", for the Secret Service's write-ahead copies). Descriptions never
 * collide with store_keyring_open()'s: a credential name holds no ':'. */
int store_keyring_open_suffixed(const char *instance, const char *suffix, Store **ret);

typedef struct SecretStoreOptions {
        uint64_t timeout_usec; /* per Secret Service call; 0: 5 s */
        uint64_t retry_usec;   /* probe interval while not "ok"; 0: 2 s */
} SecretStoreOptions;

/* Opens the Secret Service store: items in the default collection, one
 * libsecret worker thread answering through the event loop, and the kernel
 * keyring (store_keyring_open_suffixed(instance, ":wal")) as write-ahead copy.
 * Does not block: the state is "unavailable" until the service answers. */
int store_secret_open(sd_event *event, const char *instance, const SecretStoreOptions *options, Store **ret);
/* Whether a session bus is configured ($DBUS_SESSION_BUS_ADDRESS or
 * $XDG_RUNTIME_DIR/bus): without one, GLib would try to autolaunch a bus. */
bool store_secret_bus_configured(void);
/* Probes now and blocks for the answer (at most `timeout_usec`; 0: the
 * store's), unless one came already: for start-up. With `no_activate`, a
 * Secret Service that is not running is not started by the bus. */
void store_secret_wait_ready(Store *s, uint64_t timeout_usec, bool no_activate);

/* The router: owns its backends, sends each credential to the backend that
 * holds it (recorded with store_router_place(), else the default one). Its
 * name is the default backend's; its state is the worst of its backends'. */
int store_router_new(Store **ret);
/* Takes ownership of `backend` (also on failure). The first one added is the default. */
int store_router_add(Store *router, Store *backend);
Store *store_router_get(Store *router, const char *name);
int store_router_set_default(Store *router, const char *name);
/* Records that `credential`'s secrets live in backend `name`. */
int store_router_place(Store *router, const char *credential, const char *name);
