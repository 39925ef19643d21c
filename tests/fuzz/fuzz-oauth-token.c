/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-oauth-token.c: token endpoint responses
 * (oauth_parse_token_response(), RFC 6749 5.1 and 5.2, and GitHub's errors
 * with status 200). The input is "STATUS\nBODY", or a body alone for a 200
 * (see fuzz_http_status()); the body is handed over NUL-terminated with its
 * length, as http.c does. A token that parses has its scope read as the
 * engine reads it.
 *
 * Invariants checked: an accepted token is visible ASCII and its lifetime is
 * within range; every error code and description is printable ASCII, so that
 * nothing the provider sent can put control characters in a log or reply. */
#include "common/util.h"
#include "fuzz.h"
#include "oauth.h"
#include "scopes.h"

static bool printable_ascii(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7e)
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_INPUT_MAX)
                return 0;
        long status = fuzz_http_status(&data, &size);
        _cleanup_erase_ char *body = fuzz_strndup(data, size);
        if (!body)
                return 0;

        TokenResponse t = {};
        OAuthError e = {};
        OAuthOutcome o = oauth_parse_token_response(status, body, size, &t, &e);
        switch (o) {
        case OAUTH_OK:
                ASSERT_TRUE(status == 200);
                ASSERT_TRUE(t.access_token && *t.access_token && printable_ascii(t.access_token));
                ASSERT_TRUE(strlen(t.access_token) <= OAUTH_ACCESS_TOKEN_MAX);
                ASSERT_TRUE(!t.refresh_token || (*t.refresh_token && printable_ascii(t.refresh_token)));
                ASSERT_TRUE(t.token_type && *t.token_type);
                ASSERT_TRUE(t.expires_in > 0 && t.expires_in <= 366LL * 24 * 3600);
                if (t.scope) {
                        ScopeSet granted = {};
                        (void) scope_set_from_string(t.scope, &granted);
                        scope_set_done(&granted);
                }
                token_response_done(&t);
                ASSERT_TRUE(!t.access_token && !t.refresh_token && !t.token_type && !t.scope);
                break;
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
        case OAUTH_INVALID_SCOPE:
        case OAUTH_REFUSED:
        case OAUTH_TRANSIENT:
                ASSERT_TRUE(memchr(e.code, 0, sizeof e.code) && memchr(e.description, 0, sizeof e.description));
                ASSERT_TRUE(e.code[0] && printable_ascii(e.code) && printable_ascii(e.description));
                ASSERT_TRUE(!t.access_token);
                break;
        }
        return 0;
}
