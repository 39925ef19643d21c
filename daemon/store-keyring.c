/* SPDX-License-Identifier: MIT */
/* daemon/store-keyring.c: the kernel keyring backend. Keys live in the
 * user's persistent keyring (kept across logins and daemon restarts, for
 * three days after last use by default, in RAM only: not across reboots).
 * Keys are "user" keys, readable only by their possessor, and removed by
 * invalidation so no stale payload lingers. */
#include <keyutils.h>
#include <stdio.h>

#include "common/crash-point.h"
#include "common/log.h"
#include "common/util.h"
#include "store.h"

typedef struct KeyringStore {
        Store base;
        key_serial_t keyring; /* the instance keyring */
        char *prefix;         /* "tokend:INSTANCE:" */
        char *suffix;         /* appended to descriptions; "" for the keyring backend */
} KeyringStore;

#define KEY_PERM_OWNER (KEY_POS_VIEW | KEY_POS_READ | KEY_POS_WRITE | KEY_POS_SEARCH | KEY_POS_LINK | KEY_POS_SETATTR)

static int key_description(KeyringStore *k, const char *credential, SecretKind kind, char **ret) {
        if (asprintf(ret, "%s%s:%s%s", k->prefix, credential, secret_kind_to_string(kind), k->suffix) < 0)
                return -ENOMEM;
        return 0;
}

static int keyring_save(Store *s, const char *credential, SecretKind kind, const char *secret) {
        KeyringStore *k = (KeyringStore *) s;
        _cleanup_free_ char *desc = NULL;

        if (key_description(k, credential, kind, &desc) < 0)
                return -ENOMEM;
        /* add_key() on an existing "user" key of the same description updates
         * its payload in one step: a crash leaves the old or the new value. */
        key_serial_t key = add_key("user", desc, secret, strlen(secret), k->keyring);
        if (key < 0)
                return -errno;
        crash_point("store-save"); /* written, and the save has not returned */
        if (keyctl_setperm(key, KEY_PERM_OWNER) < 0)
                return -errno;
        return 0;
}

static key_serial_t keyring_find(KeyringStore *k, const char *credential, SecretKind kind) {
        _cleanup_free_ char *desc = NULL;
        if (key_description(k, credential, kind, &desc) < 0) {
                errno = ENOMEM;
                return -1;
        }
        /* keyctl_search() is recursive, but the instance keyring holds no keyrings. */
        return (key_serial_t) keyctl_search(k->keyring, "user", desc, 0);
}

static int keyring_load(Store *s, const char *credential, SecretKind kind, char **ret) {
        KeyringStore *k = (KeyringStore *) s;

        key_serial_t key = keyring_find(k, credential, kind);
        if (key < 0)
                return errno == ENOKEY || errno == EKEYEXPIRED || errno == EKEYREVOKED ? -ENOENT : -errno;

        /* Read into a buffer we own, so it can be wiped (keyctl_read_alloc would not). */
        long n = keyctl_read(key, NULL, 0);
        if (n < 0)
                return -errno;
        if (n > 32767)
                return -E2BIG;
        char *buf = malloc((size_t) n + 1);
        if (!buf)
                return -ENOMEM;
        long m = keyctl_read(key, buf, (size_t) n);
        if (m != n) {
                erase_and_free(buf);
                return m < 0 ? -errno : -EIO;
        }
        buf[n] = 0;
        if (strlen(buf) != (size_t) n) {
                erase_and_free(buf);
                return -EBADMSG;
        }
        *ret = buf;
        return 0;
}

static int keyring_remove(Store *s, const char *credential, SecretKind kind) {
        KeyringStore *k = (KeyringStore *) s;
        key_serial_t key = keyring_find(k, credential, kind);
        if (key < 0)
                return errno == ENOKEY || errno == EKEYEXPIRED || errno == EKEYREVOKED ? 0 : -errno;
        if (keyctl_invalidate(key) < 0)
                return -errno;
        return 0;
}

static void keyring_free(Store *s) {
        KeyringStore *k = (KeyringStore *) s;
        free(k->prefix);
        free(k->suffix);
        free(k);
}

static const StoreOps keyring_ops = {
        .name = "keyring",
        .save = keyring_save,
        .load = keyring_load,
        .remove = keyring_remove,
        .free = keyring_free,
};

int store_keyring_open_suffixed(const char *instance, const char *suffix, Store **ret) {
        _cleanup_free_ char *name = NULL;

        /* Link the persistent keyring into our process keyring, so we possess it. */
        long persistent = keyctl_get_persistent(-1, KEY_SPEC_PROCESS_KEYRING);
        if (persistent < 0)
                return log_error_errno(errno, "Cannot reach the persistent keyring: %m");

        if (asprintf(&name, "tokend:%s", instance) < 0)
                return -ENOMEM;

        key_serial_t kr = (key_serial_t) keyctl_search((key_serial_t) persistent, "keyring", name, 0);
        if (kr < 0) {
                if (errno != ENOKEY)
                        return log_error_errno(errno, "Cannot search the persistent keyring: %m");
                kr = add_key("keyring", name, NULL, 0, (key_serial_t) persistent);
                if (kr < 0)
                        return log_error_errno(errno, "Cannot create keyring %s: %m", name);
        }
        if (keyctl_setperm(kr, KEY_PERM_OWNER) < 0)
                return log_error_errno(errno, "Cannot set permissions of keyring %s: %m", name);

        KeyringStore *k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->base.ops = &keyring_ops;
        k->keyring = kr;
        if (asprintf(&k->prefix, "%s:", name) < 0)
                k->prefix = NULL;
        k->suffix = strdup(suffix);
        if (!k->prefix || !k->suffix) {
                keyring_free(&k->base);
                return -ENOMEM;
        }
        *ret = &k->base;
        return 0;
}

int store_keyring_open(const char *instance, Store **ret) {
        return store_keyring_open_suffixed(instance, "", ret);
}
