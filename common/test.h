/* SPDX-License-Identifier: MIT */
/* common/test.h: assertion macros for unit tests, evaluated even with NDEBUG. */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FAIL(fmt, ...)                                                                      \
        do {                                                                                     \
                fprintf(stderr, "%s:%d: %s: " fmt "\n", __FILE__, __LINE__, __func__, ##__VA_ARGS__); \
                abort();                                                                         \
        } while (0)

#define ASSERT_TRUE(expr)                                   \
        do {                                                \
                if (!(expr))                                \
                        TEST_FAIL("assertion failed: %s", #expr); \
        } while (0)

#define ASSERT_FALSE(expr) ASSERT_TRUE(!(expr))

#define ASSERT_EQ(a, b)                                                                           \
        do {                                                                                      \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);                                \
                if (_a != _b)                                                                     \
                        TEST_FAIL("%s == %s: %jd != %jd", #a, #b, _a, _b);                        \
        } while (0)

#define ASSERT_OK(expr)                                                                           \
        do {                                                                                      \
                intmax_t _r = (intmax_t) (expr);                                                  \
                if (_r < 0)                                                                       \
                        TEST_FAIL("%s failed: %jd (%s)", #expr, _r, strerror((int) -_r));          \
        } while (0)

#define ASSERT_STREQ(a, b)                                                                        \
        do {                                                                                      \
                const char *_a = (a), *_b = (b);                                                  \
                if (!_a || !_b || strcmp(_a, _b) != 0)                                            \
                        TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a ?: "(null)", _b ?: "(null)"); \
        } while (0)

#define TEST(name) static void test_##name(void)
#define RUN(name)                                          \
        do {                                               \
                fprintf(stderr, "== %s\n", #name);         \
                test_##name();                             \
        } while (0)
