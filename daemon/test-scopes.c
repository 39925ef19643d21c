/* SPDX-License-Identifier: MIT */
/* daemon/test-scopes.c: scope sets. */
#include "common/test.h"
#include "common/util.h"
#include "scopes.h"

TEST(from_string_sorts_and_dedups) {
        static const struct {
                const char *in, *joined;
                int r;
        } cases[] = {
                { "", "", 0 },
                { "read", "read", 0 },
                { "write read", "read write", 0 },
                { "  b  a b  ", "a b", 0 },
                { "openid offline_access read", "offline_access openid read", 0 },
                { "https://example.com/x read", "https://example.com/x read", 0 },
                { "bad\"quote", NULL, -EINVAL },
                { "back\\slash", NULL, -EINVAL },
                { "tab\there", NULL, -EINVAL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ScopeSet s = {};
                int r = scope_set_from_string(cases[i].in, &s);
                ASSERT_EQ(r, cases[i].r);
                if (r == 0) {
                        char *j = scope_set_join(&s);
                        ASSERT_STREQ(j, cases[i].joined);
                        free(j);
                }
                scope_set_done(&s);
        }
}

TEST(subset) {
        ScopeSet all = {}, some = {}, wide = {}, missing = {};
        ASSERT_OK(scope_set_from_string("openid offline_access read write", &all));
        ASSERT_OK(scope_set_from_string("read", &some));
        ASSERT_OK(scope_set_from_string("read admin root", &wide));
        ASSERT_TRUE(scope_set_is_subset(&some, &all, NULL));
        ASSERT_TRUE(scope_set_is_subset(&all, &all, NULL));
        ASSERT_FALSE(scope_set_is_subset(&wide, &all, &missing));
        char *j = scope_set_join(&missing);
        ASSERT_STREQ(j, "admin root");
        free(j);
        ScopeSet empty = {};
        ASSERT_TRUE(scope_set_is_subset(&empty, &all, NULL));
        scope_set_done(&all);
        scope_set_done(&some);
        scope_set_done(&wide);
        scope_set_done(&missing);
}

TEST(equal_and_json) {
        ScopeSet a = {}, b = {};
        ASSERT_OK(scope_set_from_string("x y z", &a));
        json_object *arr = json_tokener_parse("[\"z\",\"x\",\"y\",\"x\"]");
        ASSERT_OK(scope_set_from_json(arr, &b));
        ASSERT_TRUE(scope_set_equal(&a, &b));
        json_object_put(arr);
        arr = json_tokener_parse("[\"x\", 1]");
        ScopeSet c = {};
        ASSERT_EQ(scope_set_from_json(arr, &c), -EINVAL);
        json_object_put(arr);
        json_object *out = scope_set_to_json(&a);
        ASSERT_STREQ(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN), "[\"x\",\"y\",\"z\"]");
        json_object_put(out);
        scope_set_done(&a);
        scope_set_done(&b);
}

TEST(cap) {
        ScopeSet s = {};
        char buf[16];
        for (unsigned i = 0; i < SCOPES_MAX; i++) {
                snprintf(buf, sizeof buf, "s%u", i);
                ASSERT_OK(scope_set_add(&s, buf));
        }
        ASSERT_EQ(scope_set_add(&s, "one-more"), -E2BIG);
        ASSERT_OK(scope_set_add(&s, "s1")); /* already there: no growth */
        scope_set_done(&s);
}

int main(void) {
        RUN(from_string_sorts_and_dedups);
        RUN(subset);
        RUN(equal_and_json);
        RUN(cap);
        return 0;
}
