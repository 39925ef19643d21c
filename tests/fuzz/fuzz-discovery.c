/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-discovery.c: discovery documents (oauth_parse_discovery(),
 * OpenID Connect Discovery 1.0 and RFC 8414). The input is "ISSUER\nBODY":
 * the issuer the document must name, then the document. The issuer's
 * well-known URLs are derived, and the endpoints found are checked, as
 * discovery.c, api-manager.c and login.c do.
 *
 * Invariants checked: a document is accepted only when it names the issuer
 * asked for and has a token endpoint; the well-known URLs of an issuer that
 * passes oauth_check_url() pass it too. */
#include "common/util.h"
#include "fuzz.h"
#include "oauth.h"

static void check_well_known(const char *issuer) {
        for (int insecure = 0; insecure <= 1; insecure++) {
                const char *reason = NULL;
                if (oauth_check_url(issuer, insecure, &reason) < 0)
                        continue;
                _cleanup_free_ char *oidc = NULL, *rfc8414 = NULL;
                if (oauth_discovery_urls(issuer, &oidc, &rfc8414) < 0)
                        TEST_FAIL("no well-known URLs for the valid issuer %s", issuer);
                /* The suffix may take a URL just under the cap over it; that is all. */
                if (strlen(issuer) + strlen("/.well-known/oauth-authorization-server") > OAUTH_URL_MAX)
                        continue;
                if (oauth_check_url(oidc, insecure, &reason) < 0 || oauth_check_url(rfc8414, insecure, &reason) < 0)
                        TEST_FAIL("issuer %s gives a bad well-known URL (%s, %s): %s", issuer, oidc, rfc8414, reason);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_INPUT_MAX)
                return 0;
        _cleanup_free_ char *issuer = fuzz_first_line(&data, &size);
        _cleanup_free_ char *body = fuzz_strndup(data, size);
        if (!issuer || !body)
                return 0;

        check_well_known(issuer);

        DiscoveryDocument d = {};
        const char *reason = NULL;
        int r = oauth_parse_discovery(body, size, issuer, &d, &reason);
        if (r < 0) {
                ASSERT_TRUE(r == -EBADMSG || r == -ENOMEM);
                ASSERT_TRUE(reason && !d.issuer && !d.token_endpoint);
                return 0;
        }
        ASSERT_STREQ(d.issuer, issuer);
        ASSERT_TRUE(d.token_endpoint && strlen(d.token_endpoint) <= OAUTH_URL_MAX);
        const char *endpoints[] = { d.token_endpoint, d.revocation_endpoint, d.introspection_endpoint,
                                    d.device_authorization_endpoint, d.authorization_endpoint };
        for (size_t i = 0; i < ELEMENTSOF(endpoints); i++)
                if (endpoints[i])
                        (void) oauth_check_url(endpoints[i], i % 2, &reason);
        discovery_document_done(&d);
        ASSERT_TRUE(!d.issuer && !d.token_endpoint);
        return 0;
}
