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

/* The byte-at-a-time escaping json_escape() must equal, whatever the word
 * fast path does: every byte value at every offset of runs around 8 bytes. */
static size_t escape_bytewise(char *out, const unsigned char *s, size_t len) {
        char *o = out;
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = s[i];
                if (ch == '"' || ch == '\\')
                        o += sprintf(o, "\\%c", ch);
                else if (ch == '\n')
                        o += sprintf(o, "\\n");
                else if (ch == '\t')
                        o += sprintf(o, "\\t");
                else if (ch == '\r')
                        o += sprintf(o, "\\r");
                else if (ch < 0x20)
                        o += sprintf(o, "\\u%04x", ch);
                else
                        *o++ = (char) ch;
        }
        return (size_t) (o - out);
}

TEST(json_escape_matches_bytewise) {
        unsigned char in[40];
        char want[6 * sizeof in + 1], got[6 * sizeof in + 1];
        for (size_t len = 0; len <= sizeof in; len++)
                for (unsigned v = 0; v < 256; v++)
                        for (size_t at = 0; at < (len ? len : 1); at++) {
                                memset(in, 'a' + (int) (len % 26), sizeof in);
                                if (len)
                                        in[at] = (unsigned char) v;
                                if (len > 9)
                                        in[(at + 9) % len] = 0xe2; /* a high byte elsewhere in the run */
                                size_t nw = escape_bytewise(want, in, len);
                                size_t ng = json_escape(got, (const char *) in, len);
                                ASSERT_EQ(ng, nw);
                                ASSERT_TRUE(memcmp(got, want, nw) == 0);
                                /* Plain exactly when escaping changes nothing. */
                                ASSERT_EQ(json_plain((const char *) in, len), nw == len && memcmp(want, in, len) == 0);
                        }
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
        RUN(json_escape_matches_bytewise); /* and json_plain() */
        RUN(erase_and_free_wipes_whole_allocation);
        RUN(secret_equal);
        RUN(secret_strdup);
        RUN(random_below);
        RUN(startswith);
        return 0;
}
