/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-json-plain.c: varlink_json_parse_plain(), the fast parse of
 * a Varlink frame, against json-c's tokener as varlink_stream_next() used it
 * before (strict, UTF-8 validated, the same depth cap, an object with only
 * whitespace after it).
 *
 * Input: one byte for the depth cap (1 + byte % 40), then the frame.
 *
 * Invariants checked: whenever the plain parse answers (1), json-c accepts
 * the frame too and makes an equal tree of it (json_object_equal(): the same
 * members, types and values); the plain parse never fails otherwise than
 * with 0 (not plain: json-c decides, so a frame json-c refuses stays refused
 * with the same error) or -ENOMEM. */
#include <errno.h>
#include <json-c/json.h>

#include "fuzz.h"
#include "varlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > FUZZ_INPUT_MAX)
                return 0;
        int depth = 1 + data[0] % 40;
        const char *p = (const char *) data + 1;
        size_t len = size - 1;

        json_object *plain = NULL;
        int r = varlink_json_parse_plain(p, len, depth, &plain);
        ASSERT_TRUE(r == 0 || r == 1 || r == -ENOMEM);
        if (r != 1)
                return 0;

        json_tokener *tok = json_tokener_new_ex(depth);
        ASSERT_TRUE(tok);
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *o = json_tokener_parse_ex(tok, p, (int) len);
        bool ok = o && json_tokener_get_error(tok) == json_tokener_success && json_object_is_type(o, json_type_object);
        for (size_t i = json_tokener_get_parse_end(tok); ok && i < len; i++)
                if (!strchr(" \t\r\n", p[i]))
                        ok = false;
        json_tokener_free(tok);
        if (!ok)
                TEST_FAIL("plain parse accepted what json-c refuses: %.*s", (int) (len > 200 ? 200 : len), p);
        if (!json_object_equal(plain, o))
                TEST_FAIL("plain parse differs from json-c: %s vs %s", json_object_to_json_string(plain),
                          json_object_to_json_string(o));
        json_object_put(o);
        json_object_put(plain);
        return 0;
}
