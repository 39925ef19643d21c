/* SPDX-License-Identifier: MIT */
/* daemon/test-store-keyring.c: the kernel keyring store, on the real keyring. */
#include <keyutils.h>
#include <stdio.h>

#include "common/test.h"
#include "common/util.h"
#include "store.h"

static char instance_a[40], instance_b[40];

static void make_instance(char *buf) {
        uint64_t r;
        ASSERT_OK(random_bytes(&r, sizeof r));
        snprintf(buf, 40, "test%016llx", (unsigned long long) r);
}

/* Invalidates the instance keyring the store created. */
static void drop_instance(const char *instance) {
        char name[64];
        long persistent = keyctl_get_persistent(-1, KEY_SPEC_PROCESS_KEYRING);
        ASSERT_TRUE(persistent >= 0);
        snprintf(name, sizeof name, "tokend:%s", instance);
        long kr = keyctl_search((key_serial_t) persistent, "keyring", name, 0);
        if (kr >= 0)
                ASSERT_OK(keyctl_invalidate((key_serial_t) kr) < 0 ? -errno : 0);
}

TEST(save_load_replace_remove) {
        Store *s = NULL;
        char *v = NULL;
        ASSERT_OK(store_keyring_open(instance_a, &s));
        ASSERT_STREQ(store_name(s), "keyring");
        ASSERT_EQ(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        ASSERT_OK(store_save(s, "gh", SECRET_REFRESH_TOKEN, "rt-1"));
        ASSERT_OK(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, "rt-1");
        v = erase_and_free(v);
        ASSERT_OK(store_save(s, "gh", SECRET_REFRESH_TOKEN, "rt-2-rotated"));
        ASSERT_OK(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, "rt-2-rotated");
        v = erase_and_free(v);
        /* Kinds are separate keys. */
        ASSERT_EQ(store_load(s, "gh", SECRET_CLIENT_SECRET, &v), -ENOENT);
        ASSERT_OK(store_save(s, "gh", SECRET_CLIENT_SECRET, "cs"));
        ASSERT_OK(store_remove(s, "gh", SECRET_REFRESH_TOKEN));
        ASSERT_EQ(store_load(s, "gh", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        ASSERT_OK(store_load(s, "gh", SECRET_CLIENT_SECRET, &v));
        ASSERT_STREQ(v, "cs");
        v = erase_and_free(v);
        ASSERT_OK(store_remove(s, "gh", SECRET_REFRESH_TOKEN)); /* absent: fine */
        store_free(s);

        /* A new handle (a restarted daemon) sees what was saved. */
        ASSERT_OK(store_keyring_open(instance_a, &s));
        ASSERT_OK(store_load(s, "gh", SECRET_CLIENT_SECRET, &v));
        ASSERT_STREQ(v, "cs");
        v = erase_and_free(v);
        store_free(s);
}

TEST(instances_are_isolated) {
        Store *a = NULL, *b = NULL;
        char *v = NULL;
        ASSERT_OK(store_keyring_open(instance_a, &a));
        ASSERT_OK(store_keyring_open(instance_b, &b));
        ASSERT_OK(store_save(a, "same", SECRET_REFRESH_TOKEN, "from-a"));
        ASSERT_EQ(store_load(b, "same", SECRET_REFRESH_TOKEN, &v), -ENOENT);
        ASSERT_OK(store_save(b, "same", SECRET_REFRESH_TOKEN, "from-b"));
        ASSERT_OK(store_load(a, "same", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, "from-a");
        v = erase_and_free(v);
        ASSERT_OK(store_remove(b, "same", SECRET_REFRESH_TOKEN));
        ASSERT_OK(store_load(a, "same", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, "from-a");
        v = erase_and_free(v);
        store_free(a);
        store_free(b);
}

TEST(large_secret) {
        Store *s = NULL;
        char *v = NULL;
        char *big = malloc(8193);
        ASSERT_TRUE(big);
        memset(big, 'x', 8192);
        big[8192] = 0;
        ASSERT_OK(store_keyring_open(instance_a, &s));
        ASSERT_OK(store_save(s, "big", SECRET_REFRESH_TOKEN, big));
        ASSERT_OK(store_load(s, "big", SECRET_REFRESH_TOKEN, &v));
        ASSERT_STREQ(v, big);
        erase_and_free(v);
        free(big);
        store_free(s);
}

int main(void) {
        make_instance(instance_a);
        make_instance(instance_b);
        RUN(save_load_replace_remove);
        RUN(instances_are_isolated);
        RUN(large_secret);
        drop_instance(instance_a);
        drop_instance(instance_b);
        return 0;
}
