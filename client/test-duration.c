/* SPDX-License-Identifier: MIT */
/* client/test-duration.c: the duration syntax of "tokenctl approve --for". */
#include <errno.h>

#include "common/test.h"
#include "common/util.h"
#include "duration.h"

TEST(parse) {
        static const struct {
                const char *in;
                int r;
                uint64_t sec;
        } cases[] = {
                { "90s", 0, 90 },
                { "15m", 0, 900 },
                { "2h", 0, 7200 },
                { "1h30m", 0, 5400 },
                { "2d", 0, 172800 },
                { "1d1h1m1s", 0, 90061 },
                { "1s", 0, 1 },
                { "30d", 0, 2592000 },
                { "29d23h59m60s", 0, 2592000 },
                { "0h5m", 0, 300 },
                { "007m", 0, 420 },
                { "30d1s", -ERANGE, 0 },
                { "31d", -ERANGE, 0 },
                { "2592001s", -ERANGE, 0 },
                { "99999999999999999999999s", -ERANGE, 0 },
                { "", -EINVAL, 0 },
                { "0s", -EINVAL, 0 },
                { "0d0h", -EINVAL, 0 },
                { "90", -EINVAL, 0 },       /* a bare number: which unit? */
                { "1h30", -EINVAL, 0 },     /* a trailing bare number */
                { "h", -EINVAL, 0 },
                { "1w", -EINVAL, 0 },
                { "1H", -EINVAL, 0 },
                { "1 h", -EINVAL, 0 },
                { " 1h", -EINVAL, 0 },
                { "1h ", -EINVAL, 0 },
                { "-1h", -EINVAL, 0 },
                { "+1h", -EINVAL, 0 },
                { "1.5h", -EINVAL, 0 },
                { "1hh", -EINVAL, 0 },
                { "1ms", -EINVAL, 0 },
                { "0x10s", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t sec = 4242;
                int r = duration_parse(cases[i].in, &sec);
                if (r != cases[i].r)
                        TEST_FAIL("\"%s\": got %d, want %d", cases[i].in, r, cases[i].r);
                ASSERT_EQ(sec, r == 0 ? cases[i].sec : 4242); /* untouched on failure */
        }
        uint64_t sec = 4242;
        ASSERT_EQ(duration_parse(NULL, &sec), -EINVAL);
        ASSERT_EQ(sec, 4242);
}

TEST(format) {
        static const struct {
                uint64_t sec;
                const char *out;
        } cases[] = {
                { 0, "0s" },
                { 1, "1s" },
                { 59, "59s" },
                { 60, "1m" },
                { 90, "1m30s" },
                { 3599, "59m59s" },
                { 3600, "1h" },
                { 3660, "1h1m" },
                { 3661, "1h1m" },
                { 28799, "7h59m" },
                { 86400, "1d" },
                { 86400 + 300, "1d" },
                { 2 * 86400 + 3 * 3600 + 59, "2d3h" },
                { 2592000, "30d" },
                { UINT64_MAX, "213503982334601d7h" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[DURATION_FORMAT_MAX];
                ASSERT_STREQ(duration_format(cases[i].sec, buf, sizeof buf), cases[i].out);
        }
        /* Round trip: what is printed parses back to at most the value. */
        for (uint64_t s = 1; s <= DURATION_MAX_SEC; s = s * 3 + 1) {
                char buf[DURATION_FORMAT_MAX];
                uint64_t back = 0;
                ASSERT_OK(duration_parse(duration_format(s, buf, sizeof buf), &back));
                ASSERT_TRUE(back <= s);
        }
        /* A short buffer is truncated, never overrun. */
        char small[4];
        ASSERT_STREQ(duration_format(28799, small, sizeof small), "7h5");
}

int main(void) {
        RUN(parse);
        RUN(format);
        return 0;
}
