/* SPDX-License-Identifier: MIT */
/* daemon/test-oauth.c: token responses, refresh bodies, discovery, URL rules. */
#include "common/test.h"
#include "common/util.h"
#include "oauth.h"

TEST(token_response_outcomes) {
        static const struct {
                long status;
                const char *body;
                OAuthOutcome outcome;
                const char *code;
        } cases[] = {
                { 200, "{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":10}", OAUTH_OK, NULL },
                { 200, "{\"access_token\":\"at\",\"expires_in\":\"3600\"}", OAUTH_OK, NULL },
                { 200, "{\"access_token\":\"at\"}", OAUTH_OK, NULL },
                { 200, "{\"token_type\":\"Bearer\"}", OAUTH_TRANSIENT, "malformed_response" },
                { 200, "{\"access_token\":\"a\\u0001t\"}", OAUTH_TRANSIENT, "malformed_response" },
                { 200, "{\"access_token\":\"at\",\"expires_in\":-5}", OAUTH_TRANSIENT, "malformed_response" },
                { 200, "{\"access_token\":\"at\",\"expires_in\":\"12x\"}", OAUTH_TRANSIENT, "malformed_response" },
                { 200, "not json", OAUTH_TRANSIENT, "malformed_response" },
                { 200, "[1,2]", OAUTH_TRANSIENT, "malformed_response" },
                { 400, "{\"error\":\"invalid_grant\",\"error_description\":\"grant request is invalid\"}", OAUTH_INVALID_GRANT, "invalid_grant" },
                { 401, "{\"error\":\"invalid_client\"}", OAUTH_INVALID_CLIENT, "invalid_client" },
                { 400, "{\"error\":\"unauthorized_client\"}", OAUTH_INVALID_CLIENT, "unauthorized_client" },
                { 400, "{\"error\":\"invalid_scope\"}", OAUTH_INVALID_SCOPE, "invalid_scope" },
                { 400, "{\"error\":\"unsupported_grant_type\"}", OAUTH_REFUSED, "unsupported_grant_type" },
                { 400, "{\"error\":\"temporarily_unavailable\"}", OAUTH_TRANSIENT, "temporarily_unavailable" },
                { 403, "<html>proxy</html>", OAUTH_REFUSED, "http_403" },
                { 429, "", OAUTH_TRANSIENT, "http_429" },
                { 503, "{\"error\":\"invalid_grant\"}", OAUTH_TRANSIENT, "http_503" },
                { 0, NULL, OAUTH_TRANSIENT, "network_error" },
                /* GitHub: errors with status 200 */
                { 200, "{\"error\":\"authorization_pending\"}", OAUTH_REFUSED, "authorization_pending" },
                { 200, "{\"error\":\"bad_refresh_token\",\"error_description\":\"x\"}", OAUTH_INVALID_GRANT, "bad_refresh_token" },
                { 200, "{\"error\":\"incorrect_client_credentials\"}", OAUTH_INVALID_CLIENT, "incorrect_client_credentials" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TokenResponse t = {};
                OAuthError e = {};
                const char *b = cases[i].body;
                OAuthOutcome o = oauth_parse_token_response(cases[i].status, b, b ? strlen(b) : 0, &t, &e);
                if (o != cases[i].outcome)
                        TEST_FAIL("case %zu: outcome %d, expected %d", i, o, cases[i].outcome);
                if (cases[i].code)
                        ASSERT_STREQ(e.code, cases[i].code);
                token_response_done(&t);
        }
}

TEST(token_response_fields) {
        const char *b = "{\"access_token\":\"AT\",\"refresh_token\":\"RT2\",\"token_type\":\"bearer\","
                        "\"expires_in\":42,\"scope\":\"read write\"}";
        TokenResponse t = {};
        OAuthError e = {};
        ASSERT_EQ(oauth_parse_token_response(200, b, strlen(b), &t, &e), OAUTH_OK);
        ASSERT_STREQ(t.access_token, "AT");
        ASSERT_STREQ(t.refresh_token, "RT2");
        ASSERT_STREQ(t.token_type, "bearer");
        ASSERT_STREQ(t.scope, "read write");
        ASSERT_EQ(t.expires_in, 42);
        token_response_done(&t);

        b = "{\"access_token\":\"AT\"}";
        ASSERT_EQ(oauth_parse_token_response(200, b, strlen(b), &t, &e), OAUTH_OK);
        ASSERT_TRUE(t.refresh_token == NULL);
        ASSERT_TRUE(t.scope == NULL);
        ASSERT_EQ(t.expires_in, OAUTH_DEFAULT_LIFETIME_SEC);
        ASSERT_STREQ(t.token_type, "Bearer");
        token_response_done(&t);
}

TEST(error_description_sanitized) {
        const char *b = "{\"error\":\"invalid_grant\",\"error_description\":\"bad\\n\\u001b[31mred\"}";
        TokenResponse t = {};
        OAuthError e = {};
        ASSERT_EQ(oauth_parse_token_response(400, b, strlen(b), &t, &e), OAUTH_INVALID_GRANT);
        for (const char *p = e.description; *p; p++)
                ASSERT_TRUE(*p >= 0x20 && *p < 0x7f);
}

TEST(refresh_body) {
        char *b = oauth_refresh_body("r t/+=", "read write", NULL, OAUTH_AUTH_CLIENT_SECRET_BASIC, "cid", "sec");
        ASSERT_STREQ(b, "grant_type=refresh_token&refresh_token=r+t%2F%2B%3D&scope=read+write");
        erase_and_free(b);
        b = oauth_refresh_body("rt", NULL, "https://api.example/", OAUTH_AUTH_CLIENT_SECRET_POST, "c id", "s&c");
        ASSERT_STREQ(b, "grant_type=refresh_token&refresh_token=rt&resource=https%3A%2F%2Fapi.example%2F"
                        "&client_id=c+id&client_secret=s%26c");
        erase_and_free(b);
        b = oauth_refresh_body("rt", NULL, NULL, OAUTH_AUTH_NONE, "pub", NULL);
        ASSERT_STREQ(b, "grant_type=refresh_token&refresh_token=rt&client_id=pub");
        erase_and_free(b);
}

TEST(basic_authorization) {
        /* RFC 6749 2.3.1: form-encode id and secret, then base64("id:secret"). */
        char *a = oauth_basic_authorization("tokend-test", "test-secret");
        ASSERT_STREQ(a, "Basic dG9rZW5kLXRlc3Q6dGVzdC1zZWNyZXQ=");
        erase_and_free(a);
        a = oauth_basic_authorization("a:b", "c d");
        ASSERT_STREQ(a, "Basic YSUzQWI6Yytk"); /* base64("a%3Ab:c+d") */
        erase_and_free(a);
}

TEST(discovery) {
        const char *doc = "{\"issuer\":\"https://idp.example\",\"token_endpoint\":\"https://idp.example/token\","
                          "\"revocation_endpoint\":\"https://idp.example/revoke\"}";
        DiscoveryDocument d = {};
        const char *reason = NULL;
        ASSERT_OK(oauth_parse_discovery(doc, strlen(doc), "https://idp.example", &d, &reason));
        ASSERT_STREQ(d.token_endpoint, "https://idp.example/token");
        ASSERT_STREQ(d.revocation_endpoint, "https://idp.example/revoke");
        ASSERT_TRUE(d.device_authorization_endpoint == NULL);
        discovery_document_done(&d);
        ASSERT_EQ(oauth_parse_discovery(doc, strlen(doc), "https://evil.example", &d, &reason), -EBADMSG);
        const char *no_te = "{\"issuer\":\"https://idp.example\"}";
        ASSERT_EQ(oauth_parse_discovery(no_te, strlen(no_te), "https://idp.example", &d, &reason), -EBADMSG);

        char *a, *b;
        ASSERT_OK(oauth_discovery_urls("https://idp.example", &a, &b));
        ASSERT_STREQ(a, "https://idp.example/.well-known/openid-configuration");
        ASSERT_STREQ(b, "https://idp.example/.well-known/oauth-authorization-server");
        free(a);
        free(b);
        ASSERT_OK(oauth_discovery_urls("https://idp.example/tenant/v2/", &a, &b));
        ASSERT_STREQ(a, "https://idp.example/tenant/v2/.well-known/openid-configuration");
        ASSERT_STREQ(b, "https://idp.example/.well-known/oauth-authorization-server/tenant/v2");
        free(a);
        free(b);
}

TEST(url_rules) {
        static const struct {
                const char *url;
                bool insecure;
                int r;
        } cases[] = {
                { "https://idp.example/token", false, 0 },
                { "https://idp.example:8443/token", false, 0 },
                { "http://idp.example/token", true, -EINVAL },
                { "http://127.0.0.1:8080/token", false, -EINVAL },
                { "http://127.0.0.1:8080/token", true, 0 },
                { "http://127.1.2.3/token", true, 0 },
                { "http://localhost/token", true, 0 },
                { "http://[::1]:80/token", true, 0 },
                { "http://127.0.0.1.evil.example/token", true, -EINVAL },
                { "http://127.0.0.1@evil.example/token", true, -EINVAL },
                { "https://user:pw@idp.example/", false, -EINVAL },
                { "ftp://idp.example/", false, -EINVAL },
                { "https://idp.example/to ken", false, -EINVAL },
                { "https://idp.example/#frag", false, -EINVAL },
                { "https:///path", false, -EINVAL },
                { "", false, -EINVAL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *reason = NULL;
                int r = oauth_check_url(cases[i].url, cases[i].insecure, &reason);
                if (r != cases[i].r)
                        TEST_FAIL("case %zu (%s): %d, expected %d", i, cases[i].url, r, cases[i].r);
                ASSERT_TRUE(r == 0 || reason);
        }
}

TEST(auth_method_strings) {
        for (int i = 0; i < _OAUTH_AUTH_MAX; i++)
                ASSERT_EQ(oauth_auth_method_from_string(oauth_auth_method_to_string((OAuthAuthMethod) i)), i);
        ASSERT_EQ(oauth_auth_method_from_string("private_key_jwt"), _OAUTH_AUTH_INVALID);
}

int main(void) {
        RUN(token_response_outcomes);
        RUN(token_response_fields);
        RUN(error_description_sanitized);
        RUN(refresh_body);
        RUN(basic_authorization);
        RUN(discovery);
        RUN(url_rules);
        RUN(auth_method_strings);
        return 0;
}
