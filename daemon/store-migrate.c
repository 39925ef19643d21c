/* SPDX-License-Identifier: MIT */
/* daemon/store-migrate.c: see store-migrate.h.
 *
 * The values moved are the ones in memory (the newest: a rotated refresh
 * token is there even when its save failed). Order, per credential: write
 * to the target, read the target's durable copy back and compare, switch
 * the credential's place and write the state file, delete the old copies.
 * A crash before the state file is written leaves the credential where it
 * was (plus a copy in the target); after, in the target (plus an old copy).
 * A refresh that rotates the token meanwhile is noticed at the switch (the
 * value in memory no longer matches what was written) and the credential
 * goes round again. */
#include <stdio.h>

#include "common/log.h"
#include "common/util.h"
#include "credential.h"
#include "store-migrate.h"

#define ERR_STORE "io.tokend.manager.StoreFailed"
#define ROUNDS_MAX 3U

typedef struct MigrateItem {
        char *credential;
        char *secrets[_SECRET_KIND_MAX]; /* as written to the target (erase_and_free) */
        unsigned written;                /* bits (1 << SecretKind) */
        unsigned verifying;              /* bits being read back */
        int error;
        bool done;
} MigrateItem;

struct MigrateOperation {
        Manager *manager;
        VarlinkCall *call;
        Store *target; /* owned by the router */
        char *to;
        MigrateItem *items;
        size_t n_items;
        unsigned outstanding; /* read-backs in flight */
        unsigned round;
        unsigned moved;
        char *failure; /* the first failure, for humans */
        bool committing;
};

static void item_clear_secrets(MigrateItem *it) {
        for (int k = 0; k < _SECRET_KIND_MAX; k++)
                it->secrets[k] = erase_and_free(it->secrets[k]);
        it->written = 0;
}

static MigrateOperation *migrate_free(MigrateOperation *op) {
        if (!op)
                return NULL;
        if (op->manager->migration == op)
                op->manager->migration = NULL;
        for (size_t i = 0; i < op->n_items; i++) {
                item_clear_secrets(&op->items[i]);
                free(op->items[i].credential);
        }
        free(op->items);
        free(op->to);
        free(op->failure);
        if (op->call)
                varlink_call_set_cancel(op->call, NULL, NULL);
        free(op);
        return NULL;
}

void store_migrate_free(Manager *m) {
        migrate_free(m->migration);
}

static void migrate_on_cancel(VarlinkCall *call, void *userdata) {
        MigrateOperation *op = userdata;
        (void) call;
        /* The caller went away; the migration runs to its end all the same. */
        op->call = NULL;
}

static const char *migrate_error_text(MigrateOperation *op, int error) {
        const char *reason = NULL;
        switch (error) {
        case -EACCES:
        case -EHOSTDOWN:
                (void) store_state(op->target, &reason, NULL);
                return reason ?: (error == -EACCES ? "the store is locked" : "the store is unavailable");
        case -EBADMSG:
                return "the copy read back differs";
        case -ENOENT:
                return "the copy written is not there";
        case -ESTALE:
                return "its secrets kept changing";
        default:
                return strerror(-error);
        }
}

static void migrate_fail_item(MigrateOperation *op, MigrateItem *it, int error) {
        if (it->error)
                return;
        it->error = error;
        if (!op->failure && asprintf(&op->failure, "%s: %s", it->credential, migrate_error_text(op, error)) < 0)
                op->failure = NULL;
        log_warning("Moving credential %s to the %s store failed: %s", it->credential, op->to,
                    migrate_error_text(op, error));
}

static MigrateItem *migrate_find_item(MigrateOperation *op, const char *credential) {
        for (size_t i = 0; i < op->n_items; i++)
                if (streq(op->items[i].credential, credential))
                        return &op->items[i];
        return NULL;
}

/* The secret the credential holds in memory, NULL when it has none. */
static const char *credential_secret(Credential *c, SecretKind k) {
        if (k == SECRET_CLIENT_SECRET)
                return c->client_secret;
        /* "-" stands for a refresh token missing from the store. */
        if (c->state == CREDENTIAL_REAUTH_REQUIRED && streq_ptr(c->refresh_token, "-"))
                return NULL;
        return c->refresh_token;
}

static void migrate_commit(MigrateOperation *op);

static void migrate_on_verified(Store *s, const char *credential, SecretKind kind, int r, char *secret,
                                void *userdata) {
        MigrateOperation *op = userdata;
        MigrateItem *it = migrate_find_item(op, credential);
        (void) s;

        if (it && (it->verifying & (1U << kind))) {
                it->verifying &= ~(1U << kind);
                op->outstanding--;
                if (r < 0)
                        migrate_fail_item(op, it, r);
                else if (!secret_equal(secret, it->secrets[kind]))
                        migrate_fail_item(op, it, -EBADMSG);
        }
        erase_and_free(secret);
        if (op->outstanding == 0 && !op->committing)
                migrate_commit(op);
}

/* Writes the credential's secrets to the target and starts reading them back. */
static void migrate_write_item(MigrateOperation *op, MigrateItem *it) {
        Credential *c = manager_find_credential(op->manager, it->credential);
        int r;

        item_clear_secrets(it);
        if (!c) {
                it->done = true; /* removed meanwhile */
                return;
        }
        for (SecretKind k = 0; k < _SECRET_KIND_MAX && !it->error; k++) {
                const char *v = credential_secret(c, k);
                if (!v)
                        continue;
                if (!(it->secrets[k] = secret_strdup(v))) {
                        migrate_fail_item(op, it, -ENOMEM);
                        break;
                }
                r = store_save(op->target, it->credential, k, v);
                if (r < 0) {
                        migrate_fail_item(op, it, r);
                        break;
                }
                it->written |= 1U << k;
        }
        for (SecretKind k = 0; k < _SECRET_KIND_MAX && !it->error; k++) {
                if (!(it->written & (1U << k)))
                        continue;
                r = store_load_async(op->target, it->credential, k, true, migrate_on_verified, op);
                if (r >= 0) {
                        it->verifying |= 1U << k;
                        op->outstanding++;
                        continue;
                }
                if (r != -EOPNOTSUPP) {
                        migrate_fail_item(op, it, r);
                        break;
                }
                /* A backend without asynchronous loads answers at once (the keyring). */
                _cleanup_erase_ char *back = NULL;
                r = store_load(op->target, it->credential, k, &back);
                if (r < 0)
                        migrate_fail_item(op, it, r);
                else if (!secret_equal(back, it->secrets[k]))
                        migrate_fail_item(op, it, -EBADMSG);
        }
}

static void migrate_remove_copies(Store *s, const char *credential) {
        for (SecretKind k = 0; k < _SECRET_KIND_MAX; k++) {
                int r = store_remove(s, credential, k);
                if (r < 0)
                        log_warning_errno(r, "Credential %s: cannot remove its %s from the %s store, ignoring: %m",
                                          credential, secret_kind_to_string(k), store_name(s));
        }
}

/* True when the credential still holds exactly what was written. */
static bool migrate_item_current(MigrateItem *it, Credential *c) {
        for (SecretKind k = 0; k < _SECRET_KIND_MAX; k++) {
                const char *v = credential_secret(c, k);
                if (!v != !(it->written & (1U << k)))
                        return false;
                if (v && !secret_equal(v, it->secrets[k]))
                        return false;
        }
        return true;
}

static void migrate_finish(MigrateOperation *op) {
        Manager *m = op->manager;
        size_t failed = 0;

        for (size_t i = 0; i < op->n_items; i++)
                failed += op->items[i].error != 0;
        if (failed == 0 && store_router_set_default(m->store, op->to) >= 0)
                log_info("Moved %u credentials to the %s store; new credentials go there too", op->moved, op->to);
        manager_update_status(m);

        VarlinkCall *call = TAKE_PTR(op->call);
        if (call) {
                varlink_call_set_cancel(call, NULL, NULL);
                json_object *p = json_object_new_object();
                if (failed == 0) {
                        if (p)
                                json_object_object_add(p, "moved", json_object_new_int64(op->moved));
                        varlink_call_reply(call, p);
                } else {
                        char *reason = NULL;
                        if (asprintf(&reason, "moved %u of %zu credentials; %s", op->moved, op->n_items,
                                     strna(op->failure)) < 0)
                                reason = NULL;
                        if (p)
                                json_object_object_add(p, "reason",
                                                       json_object_new_string(reason ?: "migration failed"));
                        free(reason);
                        varlink_call_error(call, ERR_STORE, p);
                }
        }
        migrate_free(op);
}

/* Every read-back has answered: switch the credentials that verified. */
static void migrate_commit(MigrateOperation *op) {
        Manager *m = op->manager;
        Store *from[op->n_items ?: 1];
        bool placed[op->n_items ?: 1], again = false;
        size_t n_placed = 0;

        op->committing = true;
        for (size_t i = 0; i < op->n_items; i++) {
                MigrateItem *it = &op->items[i];
                placed[i] = false;
                if (it->done || it->error)
                        continue;
                Credential *c = manager_find_credential(m, it->credential);
                if (!c) {
                        migrate_remove_copies(op->target, it->credential);
                        it->done = true;
                        continue;
                }
                if (c->secrets_deferred || !migrate_item_current(it, c)) {
                        /* Rotated (or replaced) while we were copying: go round again. */
                        if (op->round + 1 < ROUNDS_MAX)
                                again = true;
                        else
                                migrate_fail_item(op, it, -ESTALE);
                        continue;
                }
                from[i] = store_router_get(m->store, store_where(m->store, it->credential));
                if (!from[i] || store_router_place(m->store, it->credential, op->to) < 0) {
                        migrate_fail_item(op, it, -ENOMEM);
                        continue;
                }
                placed[i] = true;
                n_placed++;
        }

        if (n_placed > 0) {
                int r = manager_save_state(m);
                for (size_t i = 0; i < op->n_items; i++) {
                        MigrateItem *it = &op->items[i];
                        if (!placed[i])
                                continue;
                        if (r < 0) {
                                /* The state file still names the old store: stay there. */
                                (void) store_router_place(m->store, it->credential, store_name(from[i]));
                                migrate_fail_item(op, it, r);
                                continue;
                        }
                        migrate_remove_copies(from[i], it->credential);
                        log_info("Credential %s moved from the %s store to the %s store", it->credential,
                                 store_name(from[i]), op->to);
                        it->done = true;
                        op->moved++;
                }
        }

        /* What failed leaves no copy behind in the target. */
        for (size_t i = 0; i < op->n_items; i++) {
                MigrateItem *it = &op->items[i];
                if (it->error && it->written) {
                        migrate_remove_copies(op->target, it->credential);
                        item_clear_secrets(it);
                }
        }

        if (again) {
                op->round++;
                for (size_t i = 0; i < op->n_items; i++)
                        if (!op->items[i].done && !op->items[i].error)
                                migrate_write_item(op, &op->items[i]);
                op->committing = false;
                if (op->outstanding == 0)
                        migrate_commit(op);
                return;
        }
        migrate_finish(op);
}

int store_migrate_start(Manager *m, VarlinkCall *call, const char *to) {
        Store *target = NULL;
        int r;

        if (!streq(to, STORE_KEYRING) && !streq(to, STORE_SECRET_SERVICE))
                return varlink_call_error_invalid_parameter(call, "to");

        json_object *p = json_object_new_object();
        char *reason = NULL;
        if (m->migration)
                reason = strdup("a migration is in progress already");
        for (Credential *c = m->credentials; c && !reason; c = c->next)
                if (c->secrets_deferred &&
                    asprintf(&reason, "credential %s: its secrets are not loaded yet (%s)", c->name,
                             strna(c->last_error)) < 0)
                        reason = NULL;
        if (!reason) {
                r = manager_open_store(m, to, &target);
                if (r < 0 && asprintf(&reason, "cannot open the %s store: %s", to, strerror(-r)) < 0)
                        reason = NULL;
        }
        if (reason || !target) {
                if (p)
                        json_object_object_add(p, "reason", json_object_new_string(reason ?: "out of memory"));
                free(reason);
                return varlink_call_error(call, ERR_STORE, p);
        }
        json_object_put(p);

        MigrateOperation *op = calloc(1, sizeof *op);
        if (!op)
                return -ENOMEM;
        op->manager = m;
        op->target = target;
        if (!(op->to = strdup(to)) || !(op->items = calloc(m->n_credentials ?: 1, sizeof *op->items))) {
                migrate_free(op);
                return -ENOMEM;
        }
        for (Credential *c = m->credentials; c; c = c->next) {
                if (streq(store_where(m->store, c->name), to))
                        continue;
                if (!(op->items[op->n_items].credential = strdup(c->name))) {
                        migrate_free(op);
                        return -ENOMEM;
                }
                op->n_items++;
        }
        m->migration = op;
        op->call = call;
        varlink_call_set_cancel(call, migrate_on_cancel, op);
        log_info("Moving %zu credentials to the %s store", op->n_items, to);

        op->committing = true;
        for (size_t i = 0; i < op->n_items; i++)
                migrate_write_item(op, &op->items[i]);
        op->committing = false;
        if (op->outstanding == 0)
                migrate_commit(op);
        return 0;
}
