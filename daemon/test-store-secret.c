/* SPDX-License-Identifier: MIT */
/* daemon/test-store-secret.c: the Secret Service store against a real
 * gnome-keyring on a private session bus. Run it under
 * tests/store/run-with-keyring.sh, with the path of tests/store/keyring.sh
 * as argument (meson does both); without them it is skipped (77). */
#include <keyutils.h>
#include <libsecret/secret.h>
#include <stdio.h>
#include <time.h>

#include "common/test.h"
#include "common/util.h"
#include "store.h"

#define TIMEOUT_USEC (1 * USEC_PER_SEC) /* per Secret Service call */
#define RETRY_USEC (200 * USEC_PER_MSEC)
#define WAIT_USEC (10 * USEC_PER_SEC)

static const char *keyring_sh;
static char instance[40];
static sd_event *event;
static unsigned ticks;

/* What the store writes, for checking behind its back. */
static const SecretSchema schema = {
        .name = "io.tokend.Secret",
        .flags = SECRET_SCHEMA_NONE,
        .attributes = {
                { "instance", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "credential", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "kind", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { "generation", SECRET_SCHEMA_ATTRIBUTE_STRING },
                { NULL, 0 },
        },
};

static void keyring(const char *verb) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' %s >/dev/null", keyring_sh, verb);
        if (system(cmd) != 0)
                TEST_FAIL("keyring.sh %s failed", verb);
}

/* Unlocks the login collection without a prompt, through gnome-keyring's
 * internal interface (as its own tests do): a "plain" session carries the
 * password. */
static void keyring_unlock(void) {
        char path[512], password[128] = "";
        GError *e = NULL;
        snprintf(path, sizeof path, "%s/password", getenv("TOKEND_TEST_KEYRING_DIR"));
        FILE *f = fopen(path, "re");
        ASSERT_TRUE(f);
        ASSERT_TRUE(fgets(password, sizeof password, f));
        fclose(f);

        GDBusConnection *bus = g_bus_get_sync(G_BUS_TYPE_SESSION, NULL, &e);
        ASSERT_TRUE(bus);
        GVariant *r = g_dbus_connection_call_sync(bus, "org.freedesktop.secrets", "/org/freedesktop/secrets",
                                                  "org.freedesktop.Secret.Service", "OpenSession",
                                                  g_variant_new("(sv)", "plain", g_variant_new_string("")), NULL,
                                                  G_DBUS_CALL_FLAGS_NONE, 5000, NULL, &e);
        ASSERT_TRUE(r);
        GVariant *out;
        const char *session;
        g_variant_get(r, "(v&o)", &out, &session);
        GVariant *secret = g_variant_new("(o@ay@ays)", session,
                                         g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, "", 0, 1),
                                         g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, password, strlen(password), 1),
                                         "text/plain");
        GVariant *u = g_dbus_connection_call_sync(
                bus, "org.freedesktop.secrets", "/org/freedesktop/secrets",
                "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface", "UnlockWithMasterPassword",
                g_variant_new("(o@(oayays))", "/org/freedesktop/secrets/collection/login", secret), NULL,
                G_DBUS_CALL_FLAGS_NONE, 5000, NULL, &e);
        if (!u)
                TEST_FAIL("unlock: %s", e->message);
        g_variant_unref(u);
        g_variant_unref(out);
        g_variant_unref(r);
        g_object_unref(bus);
}

/* Items of this test's instance, looked up with libsecret directly. Returns
 * their number; *ret_secret gets the newest one's value when unlocked. */
static unsigned items(const char *credential, SecretKind kind, char **ret_secret) {
        GError *e = NULL;
        SecretService *svc =
                secret_service_open_sync(SECRET_TYPE_SERVICE, NULL, SECRET_SERVICE_OPEN_SESSION, NULL, &e);
        if (!svc)
                TEST_FAIL("open: %s", e->message);
        GHashTable *a = secret_attributes_build(&schema, "instance", instance, "credential", credential, "kind",
                                                secret_kind_to_string(kind), NULL);
        GList *l = secret_service_search_sync(svc, &schema, a, SECRET_SEARCH_ALL | SECRET_SEARCH_LOAD_SECRETS, NULL,
                                              &e);
        if (e)
                TEST_FAIL("search: %s", e->message);
        unsigned n = 0;
        uint64_t best = 0;
        for (GList *i = l; i; i = i->next, n++) {
                GHashTable *at = secret_item_get_attributes(i->data);
                uint64_t g = strtoull(g_hash_table_lookup(at, "generation"), NULL, 10);
                ASSERT_TRUE(g > 0);
                char *label = secret_item_get_label(i->data);
                ASSERT_TRUE(strstr(label, "tokend: ") == label && strstr(label, credential));
                g_free(label);
                SecretValue *v = secret_item_get_secret(i->data);
                if (ret_secret && v && g > best) {
                        free(*ret_secret);
                        *ret_secret = strdup(secret_value_get_text(v));
                        best = g;
                }
                if (v)
                        secret_value_unref(v);
                g_hash_table_unref(at);
        }
        g_list_free_full(l, g_object_unref);
        g_hash_table_unref(a);
        g_object_unref(svc);
        return n;
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) userdata;
        ticks++;
        ASSERT_OK(sd_event_source_set_time(s, usec + 100 * USEC_PER_MSEC));
        return 0;
}

typedef bool (*Predicate)(Store *s, const void *arg);

/* Runs the event loop until pred holds; fails after `timeout`. Returns the time taken. */
static uint64_t run_until(Store *s, Predicate pred, const void *arg, uint64_t timeout, const char *what) {
        uint64_t start = now_monotonic_usec();
        while (!pred(s, arg)) {
                if (now_monotonic_usec() - start > timeout)
                        TEST_FAIL("timed out waiting for %s", what);
                ASSERT_OK(sd_event_run(event, 50 * USEC_PER_MSEC));
        }
        return now_monotonic_usec() - start;
}

static bool state_is(Store *s, const void *arg) {
        return streq(store_state(s, NULL, NULL), arg);
}

static bool settled(Store *s, const void *arg) {
        unsigned pending;
        (void) arg;
        return streq(store_state(s, NULL, &pending), STORE_STATE_OK) && pending == 0;
}

static unsigned pending_of(Store *s) {
        unsigned pending;
        (void) store_state(s, NULL, &pending);
        return pending;
}

typedef struct Loaded {
        bool done;
        int r;
        char *secret;
} Loaded;

static void on_loaded(Store *s, const char *credential, SecretKind kind, int r, char *secret, void *userdata) {
        Loaded *l = userdata;
        (void) s;
        (void) credential;
        (void) kind;
        l->done = true;
        l->r = r;
        l->secret = secret;
}

static bool loaded(Store *s, const void *arg) {
        (void) s;
        return ((const Loaded *) arg)->done;
}

/* The durable copy, through the store: after the writes queued before it. */
static int load_durable(Store *s, const char *credential, SecretKind kind, char **ret) {
        Loaded l = {};
        int r = store_load_async(s, credential, kind, true, on_loaded, &l);
        if (r < 0)
                return r;
        ASSERT_FALSE(l.done); /* never called back from within */
        run_until(s, loaded, &l, WAIT_USEC, "a durable load");
        if (l.r >= 0)
                *ret = l.secret;
        return l.r;
}

static Store *open_store(void) {
        SecretStoreOptions o = { .timeout_usec = TIMEOUT_USEC, .retry_usec = RETRY_USEC };
        Store *s = NULL;
        ASSERT_OK(store_secret_open(event, instance, &o, &s));
        ASSERT_STREQ(store_name(s), STORE_SECRET_SERVICE);
        store_secret_wait_ready(s, 0, false);
        return s;
}

static Store *open_wal(void) {
        Store *w = NULL;
        ASSERT_OK(store_keyring_open_suffixed(instance, ":wal", &w));
        return w;
}

static void assert_load(Store *s, const char *credential, SecretKind kind, const char *expected) {
        char *v = NULL;
        ASSERT_OK(store_load(s, credential, kind, &v));
        ASSERT_STREQ(v, expected);
        erase_and_free(v);
}

static void assert_durable(Store *s, const char *credential, SecretKind kind, const char *expected) {
        char *v = NULL;
        ASSERT_OK(load_durable(s, credential, kind, &v));
        ASSERT_STREQ(v, expected);
        erase_and_free(v);
}

static uint64_t wal_generation(Store *wal, const char *credential, SecretKind kind) {
        char *v = NULL;
        ASSERT_OK(store_load(wal, credential, kind, &v));
        uint64_t g = strtoull(v, NULL, 10);
        erase_and_free(v);
        return g;
}

TEST(save_load_replace_remove) {
        Store *s = open_store(), *wal = open_wal();
        char *v = NULL;

        ASSERT_STREQ(store_state(s, NULL, NULL), STORE_STATE_OK);
        ASSERT_EQ(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        ASSERT_OK(store_save(s, "gh", SECRET_REFRESH_TOKEN, "rt-1"));
        /* The keyring copy is there at once, with its generation. */
        ASSERT_TRUE(wal_generation(wal, "gh", SECRET_REFRESH_TOKEN) > 0);
        assert_load(s, "gh", SECRET_REFRESH_TOKEN, "rt-1");
        run_until(s, settled, NULL, WAIT_USEC, "the write");
        ASSERT_EQ(items("gh", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "rt-1");
        v = mfree(v);

        /* Replace: a newer generation, and the older item is gone. */
        uint64_t g1 = wal_generation(wal, "gh", SECRET_REFRESH_TOKEN);
        ASSERT_OK(store_save(s, "gh", SECRET_REFRESH_TOKEN, "rt-2-rotated"));
        ASSERT_TRUE(wal_generation(wal, "gh", SECRET_REFRESH_TOKEN) > g1);
        assert_durable(s, "gh", SECRET_REFRESH_TOKEN, "rt-2-rotated");
        ASSERT_EQ(items("gh", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "rt-2-rotated");
        v = mfree(v);

        /* Kinds are separate items. */
        ASSERT_EQ(store_load(s, "gh", SECRET_CLIENT_SECRET, &v), -ENOENT);
        ASSERT_OK(store_save(s, "gh", SECRET_CLIENT_SECRET, "cs"));
        ASSERT_OK(store_remove(s, "gh", SECRET_REFRESH_TOKEN));
        ASSERT_EQ(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        ASSERT_EQ(items("gh", SECRET_REFRESH_TOKEN, NULL), 0);
        ASSERT_EQ(store_load(wal, "gh", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        assert_load(s, "gh", SECRET_CLIENT_SECRET, "cs");
        ASSERT_OK(store_remove(s, "gh", SECRET_REFRESH_TOKEN)); /* absent: fine */
        run_until(s, settled, NULL, WAIT_USEC, "the second removal");
        store_free(s);

        /* A new handle (a restarted daemon) sees it, also without the keyring copy (a reboot). */
        ASSERT_OK(store_remove(wal, "gh", SECRET_CLIENT_SECRET));
        s = open_store();
        assert_load(s, "gh", SECRET_CLIENT_SECRET, "cs");
        /* ... and puts the keyring copy back. */
        ASSERT_TRUE(wal_generation(wal, "gh", SECRET_CLIENT_SECRET) > 0);
        ASSERT_OK(store_remove(s, "gh", SECRET_CLIENT_SECRET));
        run_until(s, settled, NULL, WAIT_USEC, "the last removal");
        ASSERT_EQ(items("gh", SECRET_CLIENT_SECRET, NULL), 0);
        store_free(s);
        store_free(wal);
}

TEST(keyring_newer_wins_and_is_written_again) {
        Store *s = open_store(), *wal = open_wal();
        char buf[128], *v = NULL;

        ASSERT_OK(store_save(s, "gen", SECRET_REFRESH_TOKEN, "old"));
        run_until(s, settled, NULL, WAIT_USEC, "the write");
        uint64_t g = wal_generation(wal, "gen", SECRET_REFRESH_TOKEN);
        store_free(s);

        /* The daemon saved a rotation to the keyring and died before the
         * Secret Service answered. */
        snprintf(buf, sizeof buf, "%" PRIu64 ":new", g + 1);
        ASSERT_OK(store_save(wal, "gen", SECRET_REFRESH_TOKEN, buf));

        s = open_store();
        assert_load(s, "gen", SECRET_REFRESH_TOKEN, "new");
        ASSERT_EQ(pending_of(s), 1);
        run_until(s, settled, NULL, WAIT_USEC, "the write again");
        ASSERT_EQ(items("gen", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "new");
        v = mfree(v);

        /* The next save outranks both. */
        ASSERT_OK(store_save(s, "gen", SECRET_REFRESH_TOKEN, "newer"));
        ASSERT_TRUE(wal_generation(wal, "gen", SECRET_REFRESH_TOKEN) > g + 1);
        assert_durable(s, "gen", SECRET_REFRESH_TOKEN, "newer");
        ASSERT_OK(store_remove(s, "gen", SECRET_REFRESH_TOKEN));
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        store_free(s);
        store_free(wal);
}

TEST(secret_service_newer_wins) {
        Store *s = open_store(), *wal = open_wal();
        char buf[128];

        ASSERT_OK(store_save(s, "ss", SECRET_REFRESH_TOKEN, "from-ss"));
        run_until(s, settled, NULL, WAIT_USEC, "the write");
        uint64_t g = wal_generation(wal, "ss", SECRET_REFRESH_TOKEN);
        store_free(s);

        /* A stale keyring copy (say, of a daemon with an old keyring). */
        snprintf(buf, sizeof buf, "%" PRIu64 ":stale", g - 1);
        ASSERT_OK(store_save(wal, "ss", SECRET_REFRESH_TOKEN, buf));

        s = open_store();
        assert_load(s, "ss", SECRET_REFRESH_TOKEN, "from-ss");
        ASSERT_EQ(pending_of(s), 0);
        /* The keyring copy follows the Secret Service's again. */
        ASSERT_EQ(wal_generation(wal, "ss", SECRET_REFRESH_TOKEN), g);
        ASSERT_OK(store_remove(s, "ss", SECRET_REFRESH_TOKEN));
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        store_free(s);
        store_free(wal);
}

TEST(locked) {
        Store *s = open_store(), *wal = open_wal();
        const char *reason = NULL;
        char *v = NULL;

        ASSERT_OK(store_save(s, "lk", SECRET_REFRESH_TOKEN, "before-lock"));
        run_until(s, settled, NULL, WAIT_USEC, "the write");

        keyring("lock");
        run_until(s, state_is, STORE_STATE_LOCKED, WAIT_USEC, "state locked");
        ASSERT_STREQ(store_state(s, &reason, NULL), STORE_STATE_LOCKED);
        ASSERT_TRUE(reason && strstr(reason, "login"));

        /* Locked is not "not found": with no keyring copy (after a reboot) the
         * item is there, but cannot be read. */
        ASSERT_OK(store_remove(wal, "lk", SECRET_REFRESH_TOKEN));
        ASSERT_EQ(store_load(s, "lk", SECRET_REFRESH_TOKEN, &v), -EACCES);
        ASSERT_EQ(store_load(s, "absent", SECRET_REFRESH_TOKEN, &v), -EACCES);
        ASSERT_EQ(load_durable(s, "lk", SECRET_REFRESH_TOKEN, &v), -EACCES);

        /* A save still succeeds (the keyring has it) and waits. */
        ASSERT_OK(store_save(s, "lk", SECRET_REFRESH_TOKEN, "while-locked"));
        assert_load(s, "lk", SECRET_REFRESH_TOKEN, "while-locked");
        ASSERT_EQ(pending_of(s), 1);
        ASSERT_STREQ(store_state(s, NULL, NULL), STORE_STATE_LOCKED);

        /* Unlocked: the write goes out at once. */
        keyring_unlock();
        run_until(s, settled, NULL, WAIT_USEC, "the pending write after unlocking");
        ASSERT_EQ(items("lk", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "while-locked");
        v = mfree(v);
        ASSERT_OK(store_remove(s, "lk", SECRET_REFRESH_TOKEN));
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        store_free(s);
        store_free(wal);
}

TEST(vanished_and_back) {
        Store *s = open_store(), *wal = open_wal();
        const char *reason = NULL;
        char *v = NULL;

        ASSERT_OK(store_save(s, "vn", SECRET_REFRESH_TOKEN, "v1"));
        run_until(s, settled, NULL, WAIT_USEC, "the write");

        keyring("kill");
        unsigned t0 = ticks;
        uint64_t took = run_until(s, state_is, STORE_STATE_UNAVAILABLE, TIMEOUT_USEC + 2 * USEC_PER_SEC,
                                  "state unavailable");
        ASSERT_TRUE(ticks - t0 >= took / (200 * USEC_PER_MSEC)); /* the loop kept running */
        (void) store_state(s, &reason, NULL);
        ASSERT_TRUE(reason != NULL);

        /* Saves still succeed and wait; loads answer from the keyring copy. */
        ASSERT_OK(store_save(s, "vn", SECRET_REFRESH_TOKEN, "v2"));
        ASSERT_EQ(pending_of(s), 1);
        assert_load(s, "vn", SECRET_REFRESH_TOKEN, "v2");
        ASSERT_EQ(store_load(s, "nothing", SECRET_REFRESH_TOKEN, &v), -EHOSTDOWN);
        ASSERT_EQ(load_durable(s, "vn", SECRET_REFRESH_TOKEN, &v), -EHOSTDOWN);

        /* Back: the pending write is flushed. */
        t0 = ticks;
        keyring("start");
        run_until(s, settled, NULL, WAIT_USEC, "the pending write after the restart");
        ASSERT_EQ(items("vn", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "v2");
        v = mfree(v);
        ASSERT_OK(store_remove(s, "vn", SECRET_REFRESH_TOKEN));
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        store_free(s);
        store_free(wal);
}

TEST(hanging) {
        Store *s = open_store();
        char *v = NULL;

        ASSERT_OK(store_save(s, "hg", SECRET_REFRESH_TOKEN, "h1"));
        run_until(s, settled, NULL, WAIT_USEC, "the write");

        /* It keeps its bus name but answers nothing. */
        keyring("pause");
        unsigned t0 = ticks;
        uint64_t start = now_monotonic_usec();
        ASSERT_OK(store_save(s, "hg", SECRET_REFRESH_TOKEN, "h2")); /* does not wait for it */
        ASSERT_TRUE(now_monotonic_usec() - start < TIMEOUT_USEC / 2);
        uint64_t took = run_until(s, state_is, STORE_STATE_UNAVAILABLE, TIMEOUT_USEC + 2 * USEC_PER_SEC,
                                  "state unavailable");
        ASSERT_TRUE(took >= TIMEOUT_USEC / 2);
        ASSERT_TRUE(ticks - t0 >= 5); /* the 100 ms timer fired all along */
        const char *reason = NULL;
        (void) store_state(s, &reason, NULL);
        ASSERT_TRUE(reason && strstr(reason, "did not answer"));
        ASSERT_EQ(pending_of(s), 1);

        /* While it hangs, loads do not wait for it again. */
        start = now_monotonic_usec();
        assert_load(s, "hg", SECRET_REFRESH_TOKEN, "h2");
        ASSERT_TRUE(now_monotonic_usec() - start < TIMEOUT_USEC / 2);

        keyring("resume");
        run_until(s, settled, NULL, WAIT_USEC, "the pending write after resuming");
        ASSERT_EQ(items("hg", SECRET_REFRESH_TOKEN, &v), 1);
        ASSERT_STREQ(v, "h2");
        v = mfree(v);
        ASSERT_OK(store_remove(s, "hg", SECRET_REFRESH_TOKEN));
        run_until(s, settled, NULL, WAIT_USEC, "the removal");
        store_free(s);
}

/* Drops the instance keyring the store created (it holds the keyring copies). */
static void drop_instance(void) {
        char name[64];
        long persistent = keyctl_get_persistent(-1, KEY_SPEC_PROCESS_KEYRING);
        ASSERT_TRUE(persistent >= 0);
        snprintf(name, sizeof name, "tokend:%s", instance);
        long kr = keyctl_search((key_serial_t) persistent, "keyring", name, 0);
        if (kr >= 0)
                ASSERT_OK(keyctl_invalidate((key_serial_t) kr) < 0 ? -errno : 0);
}

int main(int argc, char *argv[]) {
        if (argc < 2 || !getenv("TOKEND_TEST_KEYRING_DIR")) {
                fprintf(stderr, "Run under tests/store/run-with-keyring.sh with the path of keyring.sh; skipping.\n");
                return 77;
        }
        keyring_sh = argv[1];
        uint64_t r;
        ASSERT_OK(random_bytes(&r, sizeof r));
        snprintf(instance, sizeof instance, "test%016llx", (unsigned long long) r);
        ASSERT_OK(sd_event_default(&event));
        sd_event_source *tick = NULL;
        ASSERT_OK(sd_event_add_time_relative(event, &tick, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC, 0, on_tick, NULL));
        ASSERT_OK(sd_event_source_set_enabled(tick, SD_EVENT_ON));

        RUN(save_load_replace_remove);
        RUN(keyring_newer_wins_and_is_written_again);
        RUN(secret_service_newer_wins);
        RUN(locked);
        RUN(vanished_and_back);
        RUN(hanging);

        drop_instance();
        sd_event_source_disable_unref(tick);
        sd_event_unref(event);
        return 0;
}
