/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-oauth-device.c: device authorization responses
 * (oauth_parse_device_authorization(), RFC 8628 3.2, with Google's
 * verification_url). The input is "STATUS\nBODY", or a body alone for a 200
 * (see fuzz_http_status()).
 *
 * Invariants checked: what is shown to the user (user code, verification
 * URIs) is visible ASCII; lifetime and polling interval are within range; error
 * codes and descriptions are printable ASCII. */
#include "common/util.h"
#include "fuzz.h"
#include "oauth.h"

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

        DeviceAuthorization d = {};
        OAuthError e = {};
        OAuthOutcome o = oauth_parse_device_authorization(status, body, size, &d, &e);
        switch (o) {
        case OAUTH_OK:
                ASSERT_TRUE(status == 200);
                ASSERT_TRUE(d.device_code && *d.device_code && printable_ascii(d.device_code));
                ASSERT_TRUE(d.user_code && *d.user_code && printable_ascii(d.user_code));
                ASSERT_TRUE(d.verification_uri && *d.verification_uri && printable_ascii(d.verification_uri));
                ASSERT_TRUE(!d.verification_uri_complete || printable_ascii(d.verification_uri_complete));
                ASSERT_TRUE(d.expires_in > 0 && d.expires_in <= 24 * 3600);
                ASSERT_TRUE(d.interval > 0 && d.interval <= 3600);
                device_authorization_done(&d);
                ASSERT_TRUE(!d.device_code && !d.user_code && !d.verification_uri && !d.verification_uri_complete);
                break;
        case OAUTH_INVALID_GRANT:
        case OAUTH_INVALID_CLIENT:
        case OAUTH_INVALID_SCOPE:
        case OAUTH_REFUSED:
        case OAUTH_TRANSIENT:
                ASSERT_TRUE(memchr(e.code, 0, sizeof e.code) && memchr(e.description, 0, sizeof e.description));
                ASSERT_TRUE(e.code[0] && printable_ascii(e.code) && printable_ascii(e.description));
                ASSERT_TRUE(!d.device_code);
                break;
        }
        return 0;
}
