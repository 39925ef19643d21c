/* SPDX-License-Identifier: MIT */
/* common/test-util.c: secret memory helpers. */
#include <malloc.h>

#include "common/test.h"
#include "common/util.h"

/* erase_and_free() must wipe the whole allocation, not just the string. The
 * test binary is linked with --wrap=free, so the block can be inspected at
 * the moment it is released. */
void __real_free(void *p);
void __wrap_free(void *p);

static void *watched;
static size_t watched_size;
static int watched_nonzero = -1;

void __wrap_free(void *p) {
        if (p && p == watched) {
                const unsigned char *b = p;
                watched_nonzero = 0;
                for (size_t i = 0; i < watched_size; i++)
                        watched_nonzero += b[i] != 0;
                watched = NULL;
        }
        __real_free(p);
}

TEST(erase_and_free_wipes_whole_allocation) {
        char *p = malloc(100);
        ASSERT_TRUE(p);
        watched_size = malloc_usable_size(p);
        memset(p, 'S', watched_size);
        p[10] = 0; /* a short string: bytes past the NUL must be wiped too */
        watched = p;
        watched_nonzero = -1;
        ASSERT_TRUE(erase_and_free(p) == NULL);
        ASSERT_EQ(watched_nonzero, 0);
        ASSERT_TRUE(erase_and_free(NULL) == NULL);
}

TEST(secret_equal) {
        ASSERT_TRUE(secret_equal("abc", "abc"));
        ASSERT_FALSE(secret_equal("abc", "abd"));
        ASSERT_FALSE(secret_equal("ab", "abc"));
        ASSERT_FALSE(secret_equal("abcd", "abc"));
        ASSERT_TRUE(secret_equal("", ""));
        ASSERT_FALSE(secret_equal("", "x"));
}

TEST(secret_strdup) {
        char *s = secret_strdup("hunter2");
        ASSERT_STREQ(s, "hunter2");
        erase_and_free(s);
}

TEST(random_below) {
        for (int i = 0; i < 1000; i++)
                ASSERT_TRUE(random_below(7) < 7);
        ASSERT_EQ(random_below(1), 0);
        ASSERT_EQ(random_below(0), 0);
}

TEST(startswith) {
        ASSERT_STREQ(startswith("http://x", "http://"), "x");
        ASSERT_TRUE(startswith("https://x", "http://") == NULL);
}

int main(void) {
        RUN(erase_and_free_wipes_whole_allocation);
        RUN(secret_equal);
        RUN(secret_strdup);
        RUN(random_below);
        RUN(startswith);
        return 0;
}
