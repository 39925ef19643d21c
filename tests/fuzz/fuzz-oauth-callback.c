/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-oauth-callback.c: the query string of the redirect to the
 * loopback listener (oauth_parse_callback_query(), RFC 6749 4.1.2), which
 * any local process can send. The input is the query, without the '?'.
 * The input is also encoded with oauth_form_encode() and sent back as a code
 * and a state, as a provider would.
 *
 * Invariants checked: decoded values hold no control characters; encoding
 * and decoding give back what was encoded, unless it holds control
 * characters, which are refused. */
#include "common/util.h"
#include "fuzz.h"
#include "oauth.h"

static bool no_controls(const char *s) {
        for (; s && *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static void round_trip(const char *value) {
        _cleanup_erase_ char *enc = oauth_form_encode(value);
        _cleanup_erase_ char *query = NULL;
        CallbackParams p = {};

        if (!enc || asprintf(&query, "code=%s&state=%s&iss=x", enc, enc) < 0)
                return;
        int r = oauth_parse_callback_query(query, &p);
        if (strlen(query) > 8192) {
                ASSERT_EQ(r, -E2BIG);
                return;
        }
        if (!no_controls(value)) {
                ASSERT_EQ(r, -EBADMSG);
                return;
        }
        ASSERT_EQ(r, 0);
        ASSERT_STREQ(p.code, value);
        ASSERT_STREQ(p.state, value);
        ASSERT_TRUE(!p.error && !p.error_description);
        callback_params_done(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_INPUT_MAX)
                return 0;
        /* The listener drops requests with a NUL byte; a string stops there anyway. */
        _cleanup_erase_ char *query = fuzz_strndup(data, size);
        if (!query)
                return 0;

        CallbackParams p = {};
        int r = oauth_parse_callback_query(query, &p);
        if (r < 0)
                ASSERT_TRUE(r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
        else {
                ASSERT_TRUE(no_controls(p.code) && no_controls(p.state) && no_controls(p.error) &&
                            no_controls(p.error_description));
                callback_params_done(&p);
                ASSERT_TRUE(!p.code && !p.state && !p.error && !p.error_description);
        }
        round_trip(query);
        return 0;
}
