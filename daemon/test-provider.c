/* SPDX-License-Identifier: MIT */
/* daemon/test-provider.c: provider presets: the shipped files load, broken
 * ones fail naming the file and the field, placeholders and lookup order.
 * argv[1] is the source tree's providers/ directory. */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/fileio.h"
#include "common/test.h"
#include "common/util.h"
#include "provider.h"

static const char *providers_dir;

#define ASSERT_CONTAINS(haystack, needle)                                                         \
        do {                                                                                      \
                const char *_h = (haystack), *_n = (needle);                                      \
                if (!_h || !strstr(_h, _n))                                                       \
                        TEST_FAIL("\"%s\" does not contain \"%s\"", _h ?: "(null)", _n);          \
        } while (0)

static ProviderPreset *load_from(const char *dir, const char *name, bool insecure) {
        const char *dirs[] = { dir, NULL };
        ProviderPreset *p = NULL;
        _cleanup_free_ char *err = NULL;
        int r = provider_preset_load(name, dirs, insecure, &p, &err);
        if (r < 0)
                TEST_FAIL("%s: %s", name, err ?: strerror(-r));
        return p;
}

static bool is_https(const char *url) {
        return url && startswith(url, "https://");
}

/* Every *.json in providers/ loads, validates, and can be made complete. */
TEST(shipped_presets_load) {
        DIR *d = opendir(providers_dir);
        ASSERT_TRUE(d);
        size_t count = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n <= 5 || !streq(de->d_name + n - 5, ".json"))
                        continue;
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int) (n - 5), de->d_name);
                _cleanup_provider_preset_ ProviderPreset *p = load_from(providers_dir, name, false);
                ASSERT_STREQ(p->name, name);
                ASSERT_TRUE(p->description);
                ASSERT_TRUE(p->flows != 0);
                ASSERT_TRUE(p->n_docs > 0);
                for (size_t i = 0; i < p->n_docs; i++)
                        ASSERT_TRUE(is_https(p->docs[i]));
                /* Fill in what the user would give, then it must be complete. */
                _cleanup_free_ char *err = NULL;
                ASSERT_OK(provider_preset_expand_tenant(p, NULL, &err));
                if (p->discovery && !p->issuer)
                        ASSERT_OK(provider_preset_set_issuer(p, "https://idp.example.com", false, &err));
                else
                        ASSERT_OK(provider_preset_set_issuer(p, NULL, false, &err));
                if (provider_preset_check_complete(p, &err) < 0)
                        TEST_FAIL("%s: %s", name, err);
                const char *const urls[] = { p->authorization_endpoint, p->token_endpoint,
                                             p->device_authorization_endpoint, p->revocation_endpoint, p->issuer };
                for (size_t i = 0; i < ELEMENTSOF(urls); i++)
                        ASSERT_TRUE(!urls[i] || is_https(urls[i]));
                count++;
        }
        closedir(d);
        ASSERT_EQ(count, 5);
}

/* What each shipped preset says, where the code relies on it. */
TEST(shipped_preset_facts) {
        _cleanup_free_ char *err = NULL;
        char *e2 = NULL;

        _cleanup_provider_preset_ ProviderPreset *gh = load_from(providers_dir, "github", false);
        ASSERT_FALSE(gh->discovery);
        ASSERT_TRUE(gh->issuer == NULL);
        ASSERT_STREQ(gh->token_endpoint, "https://github.com/login/oauth/access_token");
        ASSERT_STREQ(gh->device_authorization_endpoint, "https://github.com/login/device/code");
        ASSERT_EQ(gh->flows, PROVIDER_FLOW_DEVICE | PROVIDER_FLOW_AUTH_CODE);
        ASSERT_TRUE(gh->revocation_endpoint == NULL);
        ASSERT_CONTAINS(gh->notes, "expiring user access tokens");
        /* Fixed endpoints: no issuer can be given. */
        ASSERT_EQ(provider_preset_set_issuer(gh, "https://ghe.example.com", false, &e2), -EINVAL);
        ASSERT_CONTAINS(e2, "github.json: issuer: ");
        free(e2);

        _cleanup_provider_preset_ ProviderPreset *g = load_from(providers_dir, "google", false);
        ASSERT_TRUE(g->discovery);
        ASSERT_STREQ(g->issuer, "https://accounts.google.com");
        ASSERT_TRUE(g->prompt_consent);
        ASSERT_FALSE(g->offline_access_scope);
        ASSERT_EQ(g->n_extra_authorization_params, 1);
        ASSERT_STREQ(g->extra_authorization_params[0].key, "access_type");
        ASSERT_STREQ(g->extra_authorization_params[0].value, "offline");

        _cleanup_provider_preset_ ProviderPreset *ms = load_from(providers_dir, "microsoft", false);
        ASSERT_TRUE(ms->tenant);
        ASSERT_STREQ(ms->default_tenant, "common");
        ASSERT_FALSE(ms->discovery);
        ASSERT_TRUE(ms->offline_access_scope);
        ASSERT_EQ(ms->auth_method, OAUTH_AUTH_NONE);
        ASSERT_EQ(provider_preset_check_complete(ms, &e2), -EINVAL);
        ASSERT_CONTAINS(e2, "microsoft.json: tenant: not expanded");
        free(e2);
        ASSERT_OK(provider_preset_expand_tenant(ms, "contoso.onmicrosoft.com", &err));
        ASSERT_STREQ(ms->token_endpoint, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        ASSERT_STREQ(ms->issuer, "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0");
        ASSERT_OK(provider_preset_check_complete(ms, &err));

        _cleanup_provider_preset_ ProviderPreset *gl = load_from(providers_dir, "gitlab", false);
        ASSERT_TRUE(gl->discovery);
        ASSERT_STREQ(gl->device_authorization_endpoint, "{issuer}/oauth/authorize_device");
        ASSERT_OK(provider_preset_set_issuer(gl, NULL, false, &err));
        ASSERT_STREQ(gl->device_authorization_endpoint, "https://gitlab.com/oauth/authorize_device");
        _cleanup_provider_preset_ ProviderPreset *gl2 = load_from(providers_dir, "gitlab", false);
        ASSERT_OK(provider_preset_set_issuer(gl2, "https://gitlab.example.com/", false, &err));
        ASSERT_STREQ(gl2->issuer, "https://gitlab.example.com/");
        ASSERT_STREQ(gl2->token_endpoint, "https://gitlab.example.com/oauth/token");
        ASSERT_STREQ(gl2->revocation_endpoint, "https://gitlab.example.com/oauth/revoke");

        _cleanup_provider_preset_ ProviderPreset *o = load_from(providers_dir, "oidc", false);
        ASSERT_TRUE(o->issuer == NULL);
        ASSERT_TRUE(o->discovery);
        ASSERT_TRUE(o->prompt_consent);
        ASSERT_TRUE(o->offline_access_scope);
        ASSERT_EQ(provider_preset_check_complete(o, &e2), -EINVAL);
        ASSERT_CONTAINS(e2, "oidc.json: issuer: required");
        free(e2);
        /* The test server is plain http on loopback: only with the opt-in. */
        ASSERT_EQ(provider_preset_set_issuer(o, "http://127.0.0.1:8080", false, &e2), -EINVAL);
        ASSERT_CONTAINS(e2, "oidc.json: issuer: ");
        free(e2);
        ASSERT_OK(provider_preset_set_issuer(o, "http://127.0.0.1:8080", true, &err));
        ASSERT_STREQ(o->issuer, "http://127.0.0.1:8080");
        ASSERT_OK(provider_preset_check_complete(o, &err));
}

/* A valid preset that the broken cases extend; `%s` takes ",member..." or "". */
#define BASE                                                                                       \
        "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"   \
        "\"token_endpoint\":\"https://t.example/token\","                                        \
        "\"device_authorization_endpoint\":\"https://t.example/device\"%s}"

static const struct {
        const char *extra; /* appended to BASE; NULL: `full` is the whole file */
        const char *full;
        bool insecure;
        int error; /* 0: must parse */
        const char *message;
} parse_cases[] = {
        /* Valid. */
        { "", NULL, false, 0, NULL },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"token_endpoint\":\"http://127.0.0.1:1234/token\","
                "\"device_authorization_endpoint\":\"http://[::1]:9/device\"}", true, 0, NULL },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"]}", false, 0, NULL },
        { ",\"pkce\":false,\"notes\":\"Ünïcode is fine\",\"docs\":[\"https://example.com/doc\"]", NULL, false, 0, NULL },
        /* Unknown fields, typos and duplicates. */
        { ",\"tokn_endpoint\":\"https://t.example/x\"", NULL, false, -EINVAL, "broken.json: tokn_endpoint: unknown field" },
        { ",\"Name\":\"x\"", NULL, false, -EINVAL, "Name: unknown field" },
        { ",\"token_endpoint\":\"https://t.example/other\"", NULL, false, -EINVAL, "token_endpoint: appears twice" },
        { ",\"tok\\u0065n_endpoint\":\"https://t.example/other\"", NULL, false, -EINVAL, "uses an escape" },
        { ",\"flows\":[\"auth-code\"],\"extra_authorization_params\":{\"a\":\"1\",\"a\":\"2\"}", NULL, false, -EINVAL,
          "flows: appears twice" },
        { ",\"prompt_consent\":false,\"extra_authorization_params\":{\"a\":\"1\",\"a\":\"2\"}", NULL, false, -EINVAL,
          "extra_authorization_params: \"a\" appears twice" },
        /* URLs. */
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"token_endpoint\":\"http://t.example/token\",\"device_authorization_endpoint\":\"https://t.example/d\"}",
          false, -EINVAL, "broken.json: token_endpoint: must be an https URL" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"token_endpoint\":\"http://127.0.0.1/token\",\"device_authorization_endpoint\":\"https://t.example/d\"}",
          false, -EINVAL, "token_endpoint: must be an https URL" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"token_endpoint\":\"http://t.example/token\",\"device_authorization_endpoint\":\"https://t.example/d\"}",
          true, -EINVAL, "token_endpoint: plain http is only allowed to a loopback host" },
        { ",\"revocation_endpoint\":\"ftp://t.example/r\"", NULL, false, -EINVAL, "revocation_endpoint: URL must start with https://" },
        { ",\"revocation_endpoint\":\"https://u:p@t.example/r\"", NULL, false, -EINVAL, "revocation_endpoint: URL must not contain user information" },
        { ",\"revocation_endpoint\":\"https://t.example/r#x\"", NULL, false, -EINVAL, "revocation_endpoint: URL must not contain a fragment" },
        { ",\"issuer\":\"https://t.example/?x=1\"", NULL, false, -EINVAL, "issuer: must not contain a query" },
        { ",\"docs\":[\"http://example.com/doc\"]", NULL, false, -EINVAL, "docs: element 0: must be an https URL" },
        /* Placeholders. */
        { ",\"revocation_endpoint\":\"https://t.example/{tenant}/r\"", NULL, false, -EINVAL,
          "revocation_endpoint: contains {tenant}, but \"tenant\" is not true" },
        { ",\"tenant\":true", NULL, false, -EINVAL, "tenant: is true, but no URL contains {tenant}" },
        { ",\"default_tenant\":\"common\"", NULL, false, -EINVAL, "default_tenant: only with \"tenant\": true" },
        { ",\"revocation_endpoint\":\"https://t.example/{tenant}\",\"tenant\":true,\"default_tenant\":\"../x\"", NULL,
          false, -EINVAL, "default_tenant: \"../x\" is not a valid tenant" },
        { ",\"revocation_endpoint\":\"https://t.example/{region}/r\"", NULL, false, -EINVAL,
          "revocation_endpoint: unknown placeholder" },
        { ",\"revocation_endpoint\":\"https://t.example/}\"", NULL, false, -EINVAL, "revocation_endpoint: stray '}'" },
        { ",\"revocation_endpoint\":\"https://t.example/{issuer}/r\"", NULL, false, -EINVAL,
          "revocation_endpoint: {issuer} may only begin an endpoint" },
        { ",\"issuer\":\"{issuer}/x\"", NULL, false, -EINVAL, "issuer: {issuer} may only begin an endpoint" },
        { ",\"revocation_endpoint\":\"{issuer}\"", NULL, false, -EINVAL, "revocation_endpoint: {issuer} may only begin" },
        /* Required fields and the rules across them. */
        { NULL, "{\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL, "broken.json: name: required" },
        { NULL, "{\"name\":\"broken\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL, "description: required" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"flows\":[\"device\"]}", false, -EINVAL, "discovery: required" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true}", false, -EINVAL, "flows: required" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"device_authorization_endpoint\":\"https://t.example/d\"}",
          false, -EINVAL, "broken.json: token_endpoint: required when discovery is false" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                "\"token_endpoint\":\"https://t.example/t\"}",
          false, -EINVAL, "device_authorization_endpoint: required for the device flow when discovery is false" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"auth-code\"],"
                "\"token_endpoint\":\"https://t.example/t\"}",
          false, -EINVAL, "authorization_endpoint: required for the auth-code flow when discovery is false" },
        { ",\"prompt_consent\":true", NULL, false, -EINVAL, "prompt_consent: only applies to the auth-code flow" },
        { ",\"extra_authorization_params\":{\"access_type\":\"offline\"}", NULL, false, -EINVAL,
          "extra_authorization_params: only apply to the auth-code flow" },
        /* Flows. */
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"implicit\"]}", false, -EINVAL,
          "broken.json: flows: unknown flow \"implicit\"" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[]}", false, -EINVAL,
          "flows: must name at least one flow" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\",\"device\"]}", false,
          -EINVAL, "flows: \"device\" is listed twice" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":\"device\"}", false, -EINVAL,
          "flows: must be an array" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[1]}", false, -EINVAL,
          "flows: element 0 is not a string" },
        /* Wrong types. */
        { NULL, "{\"name\":42,\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL,
          "broken.json: name: must be a string" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":\"yes\",\"flows\":[\"device\"]}", false, -EINVAL,
          "discovery: must be true or false" },
        { ",\"pkce\":1", NULL, false, -EINVAL, "pkce: must be true or false" },
        { ",\"default_scopes\":\"openid\"", NULL, false, -EINVAL, "default_scopes: must be an array" },
        { ",\"default_scopes\":[true]", NULL, false, -EINVAL, "default_scopes: element 0 is not a string" },
        { ",\"extra_authorization_params\":[]", NULL, false, -EINVAL, "extra_authorization_params: must be an object" },
        { ",\"revocation_endpoint\":null", NULL, false, -EINVAL, "revocation_endpoint: must be a string" },
        { ",\"notes\":[\"x\"]", NULL, false, -EINVAL, "notes: must be a string" },
        { ",\"docs\":\"https://example.com\"", NULL, false, -EINVAL, "docs: must be an array" },
        /* Values. */
        { NULL, "{\"name\":\"GitHub\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL,
          "name: \"GitHub\" is not a valid name" },
        { NULL, "{\"name\":\"../x\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL,
          "name: \"../x\" is not a valid name" },
        { NULL, "{\"name\":\"\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}", false, -EINVAL,
          "name: must not be empty" },
        { NULL, "{\"name\":\"broken\",\"description\":\"a\\u0007b\",\"discovery\":true,\"flows\":[\"device\"]}", false,
          -EINVAL, "description: contains a control character" },
        { NULL, "{\"name\":\"broken\",\"description\":\"a\\u0000b\",\"discovery\":true,\"flows\":[\"device\"]}", false,
          -EINVAL, "description: contains a NUL character" },
        { ",\"default_scopes\":[\"a b\"]", NULL, false, -EINVAL, "default_scopes: \"a b\" is not a valid scope" },
        { ",\"default_scopes\":[\"\"]", NULL, false, -EINVAL, "default_scopes: \"\" is not a valid scope" },
        { ",\"default_scopes\":[\"read\",\"read\"]", NULL, false, -EINVAL, "default_scopes: \"read\" is listed twice" },
        { ",\"auth_method\":\"private_key_jwt\"", NULL, false, -EINVAL, "auth_method: unknown method \"private_key_jwt\"" },
        /* Extra authorization parameters (need the auth-code flow). */
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                "\"extra_authorization_params\":{\"redirect_uri\":\"x\"}}",
          false, -EINVAL, "extra_authorization_params: \"redirect_uri\" is set by tokend itself" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                "\"extra_authorization_params\":{\"prompt\":\"consent\"}}",
          false, -EINVAL, "use \"prompt_consent\"" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                "\"extra_authorization_params\":{\"access_type\":1}}",
          false, -EINVAL, "extra_authorization_params: access_type: must be a string" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                "\"extra_authorization_params\":{\"a b\":\"1\"}}",
          false, -EINVAL, "extra_authorization_params: \"a b\" is not a valid parameter name" },
        { NULL, "{\"name\":\"broken\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                "\"extra_authorization_params\":{\"a\":\"x\\ny\"}}",
          false, -EINVAL, "extra_authorization_params: a: must be 1-256 characters of printable ASCII" },
        /* Not JSON, or not an object. */
        { NULL, "{\"name\":\"broken\",}", false, -EINVAL, "broken.json: line 1: invalid JSON" },
        { NULL, "{\n\"name\": \"broken\"\n// comment\n}", false, -EINVAL, "broken.json: line 3: invalid JSON" },
        { NULL, "{\"name\":\"broken\"", false, -EINVAL, "invalid JSON: unexpected end of file" },
        { NULL, "{\"name\":\"br\xff\"}", false, -EINVAL, "invalid JSON" },
        { NULL, "{} {}", false, -EINVAL, "line 1: invalid JSON" },
        { NULL, "{}\n\n  x", false, -EINVAL, "line 3: invalid JSON" },
        { NULL, "[1]", false, -EINVAL, "broken.json: must be a JSON object" },
        { NULL, "\"x\"", false, -EINVAL, "must be a JSON object" },
        { NULL, "", false, -EINVAL, "broken.json: empty file" },
        { ",\"notes\":[[[[[[[[[[\"deep\"]]]]]]]]]]", NULL, false, -EINVAL, "invalid JSON" },
};

TEST(parse_cases) {
        for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
                _cleanup_free_ char *text = NULL, *err = NULL;
                _cleanup_provider_preset_ ProviderPreset *p = NULL;
                if (parse_cases[i].extra)
                        ASSERT_TRUE(asprintf(&text, BASE, parse_cases[i].extra) > 0);
                else
                        ASSERT_TRUE((text = strdup(parse_cases[i].full)));
                int r = provider_preset_parse("providers/broken.json", text, strlen(text), parse_cases[i].insecure, &p,
                                              &err);
                if (r != parse_cases[i].error)
                        TEST_FAIL("case %zu: got %d (%s), expected %d\n  %s", i, r, strna(err), parse_cases[i].error,
                                  text);
                if (r == 0) {
                        ASSERT_TRUE(p && err == NULL);
                        continue;
                }
                ASSERT_TRUE(p == NULL);
                fprintf(stderr, "   %2zu: %s\n", i, strna(err));
                /* Every message starts with the file. */
                if (!err || !startswith(err, "providers/broken.json: "))
                        TEST_FAIL("case %zu: message without the file: %s", i, strna(err));
                if (!strstr(err, parse_cases[i].message))
                        TEST_FAIL("case %zu: \"%s\" does not contain \"%s\"", i, err, parse_cases[i].message);
        }
}

/* Messages never carry control characters from the file. */
TEST(messages_printable) {
        const char *text = "{\"name\":\"broken\",\"descr\xc3\xa9ption\\n\":1}";
        _cleanup_free_ char *err = NULL;
        ProviderPreset *p = NULL;
        ASSERT_EQ(provider_preset_parse("providers/broken.json", text, strlen(text), false, &p, &err), -EINVAL);
        ASSERT_TRUE(err);
        for (const char *q = err; *q; q++)
                ASSERT_TRUE(*q >= 0x20 && *q < 0x7f);
}

TEST(limits) {
        _cleanup_free_ char *err = NULL, *big = NULL, *text = NULL;
        ProviderPreset *p = NULL;

        /* One byte over the file cap: refused before parsing. */
        size_t n = PROVIDER_FILE_MAX + 1;
        ASSERT_TRUE((big = malloc(n + 1)));
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        big[n] = 0;
        ASSERT_EQ(provider_preset_parse("providers/big.json", big, n, false, &p, &err), -EFBIG);
        ASSERT_CONTAINS(err, "providers/big.json: ");
        ASSERT_CONTAINS(err, "over the limit of 65536");
        err = mfree(err);

        /* Exactly at the cap, padded with spaces: fine. */
        const char *valid = "{\"name\":\"big\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"]}";
        memset(big, ' ', PROVIDER_FILE_MAX);
        memcpy(big, valid, strlen(valid));
        _cleanup_provider_preset_ ProviderPreset *ok = NULL;
        ASSERT_OK(provider_preset_parse("providers/big.json", big, PROVIDER_FILE_MAX, false, &ok, &err));

        /* NUL byte inside the file. */
        ASSERT_EQ(provider_preset_parse("providers/nul.json", "{\"a\":1}\0x", 9, false, &p, &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/nul.json: contains a NUL byte");
        err = mfree(err);

        /* 65 scopes, 17 parameters, 17 docs, a 257-byte description. */
        char scopes[65 * 8] = "", params[17 * 16] = "", docs[17 * 32] = "", desc[300];
        for (int i = 0; i < 65; i++)
                snprintf(scopes + strlen(scopes), sizeof scopes - strlen(scopes), "%s\"s%d\"", i ? "," : "", i);
        for (int i = 0; i < 17; i++)
                snprintf(params + strlen(params), sizeof params - strlen(params), "%s\"p%d\":\"v\"", i ? "," : "", i);
        for (int i = 0; i < 17; i++)
                snprintf(docs + strlen(docs), sizeof docs - strlen(docs), "%s\"https://d.example/%d\"", i ? "," : "", i);
        memset(desc, 'x', 257);
        desc[257] = 0;
        const struct {
                const char *head, *arg, *tail, *message;
        } cases[] = {
                { "{\"name\":\"l\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"],\"default_scopes\":[",
                  scopes, "]}", "default_scopes: more than 64 scopes" },
                { "{\"name\":\"l\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"auth-code\"],"
                  "\"extra_authorization_params\":{",
                  params, "}}", "extra_authorization_params: more than 16 parameters" },
                { "{\"name\":\"l\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"],\"docs\":[", docs,
                  "]}", "docs: more than 16 URLs" },
                { "{\"name\":\"l\",\"description\":\"", desc, "\",\"discovery\":true,\"flows\":[\"device\"]}",
                  "description: longer than 256 bytes" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                text = mfree(text);
                ASSERT_TRUE(asprintf(&text, "%s%s%s", cases[i].head, cases[i].arg, cases[i].tail) > 0);
                ASSERT_EQ(provider_preset_parse("providers/l.json", text, strlen(text), false, &p, &err), -EINVAL);
                ASSERT_CONTAINS(err, "providers/l.json: ");
                ASSERT_CONTAINS(err, cases[i].message);
                err = mfree(err);
        }
}

/* A {tenant} preset built for the tests, with or without a default. */
static ProviderPreset *tenant_preset(bool with_default) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"name\":\"t\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],\"tenant\":true,%s"
                 "\"issuer\":\"https://login.example/{tenant}/v2.0\","
                 "\"token_endpoint\":\"https://login.example/{tenant}/token\","
                 "\"device_authorization_endpoint\":\"https://login.example/{tenant}/{tenant}/device\"}",
                 with_default ? "\"default_tenant\":\"organizations\"," : "");
        ProviderPreset *p = NULL;
        _cleanup_free_ char *err = NULL;
        if (provider_preset_parse("providers/t.json", text, strlen(text), false, &p, &err) < 0)
                TEST_FAIL("%s", err);
        return p;
}

TEST(expand_tenant) {
        _cleanup_free_ char *err = NULL;

        _cleanup_provider_preset_ ProviderPreset *d = tenant_preset(true);
        ASSERT_OK(provider_preset_expand_tenant(d, NULL, &err));
        ASSERT_STREQ(d->issuer, "https://login.example/organizations/v2.0");
        ASSERT_STREQ(d->device_authorization_endpoint, "https://login.example/organizations/organizations/device");
        ASSERT_FALSE(d->tenant);
        ASSERT_OK(provider_preset_check_complete(d, &err));
        /* Expanded once: a second tenant is refused. */
        ASSERT_EQ(provider_preset_expand_tenant(d, "other", &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/t.json: tenant: ");
        err = mfree(err);

        _cleanup_provider_preset_ ProviderPreset *n = tenant_preset(false);
        ASSERT_EQ(provider_preset_expand_tenant(n, NULL, &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/t.json: tenant: the URLs contain {tenant}");
        ASSERT_CONTAINS(err, "a tenant must be given");
        err = mfree(err);
        ASSERT_EQ(provider_preset_check_complete(n, &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/t.json: tenant: not expanded");
        err = mfree(err);

        static const char *const bad[] = {
                "", ".", "..", "../etc", "a/b", "a?b", "a#b", "a@b", "a:b", "a b", "a%2fb", "{tenant}",
                "0123456789012345678901234567890123456789012345678901234567890123x",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ASSERT_FALSE(provider_tenant_valid(bad[i]));
                ASSERT_EQ(provider_preset_expand_tenant(n, bad[i], &err), -EINVAL);
                ASSERT_CONTAINS(err, "providers/t.json: tenant: ");
                err = mfree(err);
                /* Nothing changed. */
                ASSERT_STREQ(n->token_endpoint, "https://login.example/{tenant}/token");
                ASSERT_TRUE(n->tenant);
        }
        ASSERT_TRUE(provider_tenant_valid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        ASSERT_TRUE(provider_tenant_valid("contoso.onmicrosoft.com"));
        ASSERT_OK(provider_preset_expand_tenant(n, "72f988bf-86f1-41af-91ab-2d7cd011db47", &err));
        ASSERT_STREQ(n->token_endpoint, "https://login.example/72f988bf-86f1-41af-91ab-2d7cd011db47/token");

        /* A preset without {tenant}: a tenant is an error, none is fine. */
        _cleanup_provider_preset_ ProviderPreset *gh = load_from(providers_dir, "github", false);
        ASSERT_OK(provider_preset_expand_tenant(gh, NULL, &err));
        ASSERT_EQ(provider_preset_expand_tenant(gh, "common", &err), -EINVAL);
        ASSERT_CONTAINS(err, "github.json: tenant: github has no tenant in its URLs");
}

TEST(set_issuer) {
        _cleanup_free_ char *err = NULL;
        const char *text = "{\"name\":\"s\",\"description\":\"d\",\"discovery\":false,\"flows\":[\"device\"],"
                           "\"token_endpoint\":\"{issuer}/token\",\"device_authorization_endpoint\":\"{issuer}/device\"}";
        _cleanup_provider_preset_ ProviderPreset *p = NULL;
        ASSERT_OK(provider_preset_parse("providers/s.json", text, strlen(text), false, &p, &err));
        ASSERT_EQ(provider_preset_check_complete(p, &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/s.json: issuer: required");
        err = mfree(err);
        ASSERT_EQ(provider_preset_set_issuer(p, NULL, false, &err), -EINVAL);
        ASSERT_CONTAINS(err, "providers/s.json: issuer: required: the endpoints start with {issuer}");
        err = mfree(err);

        static const char *const bad[] = {
                "ftp://x.example", "https://x.example/?q", "https://x.example/{tenant}", "https://x.example/#f",
                "http://x.example", "https://u@x.example",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ASSERT_EQ(provider_preset_set_issuer(p, bad[i], true, &err), -EINVAL);
                ASSERT_CONTAINS(err, "providers/s.json: issuer: ");
                err = mfree(err);
                ASSERT_STREQ(p->token_endpoint, "{issuer}/token");
        }
        ASSERT_OK(provider_preset_set_issuer(p, "https://idp.example/realms/x//", false, &err));
        ASSERT_STREQ(p->token_endpoint, "https://idp.example/realms/x/token");
        ASSERT_STREQ(p->device_authorization_endpoint, "https://idp.example/realms/x/device");
        ASSERT_OK(provider_preset_check_complete(p, &err));
}

/* ---- loading from directories ---- */

static void write_file(const char *dir, const char *name, const char *text) {
        ASSERT_OK(write_file_atomic(dir, name, text, strlen(text), 0644));
}

#define MINIMAL(name, desc) \
        "{\"name\":\"" name "\",\"description\":\"" desc "\",\"discovery\":true,\"flows\":[\"device\"]}"

TEST(load_lookup) {
        char tmp[] = "/tmp/test-provider-XXXXXX";
        ASSERT_TRUE(mkdtemp(tmp));
        char user[sizeof tmp + 16], sys[sizeof tmp + 16], missing[sizeof tmp + 16];
        snprintf(user, sizeof user, "%s/user", tmp);
        snprintf(sys, sizeof sys, "%s/sys", tmp);
        snprintf(missing, sizeof missing, "%s/missing", tmp);
        ASSERT_TRUE(mkdir(user, 0700) == 0 && mkdir(sys, 0700) == 0);

        write_file(sys, "github.json", MINIMAL("github", "system"));
        write_file(sys, "only-sys.json", MINIMAL("only-sys", "system"));
        write_file(user, "github.json", MINIMAL("github", "user"));
        write_file(user, "wrong.json", MINIMAL("right", "user"));
        write_file(user, "broken.json", "{\"name\":\"broken\",");
        write_file(sys, "broken.json", MINIMAL("broken", "system"));
        write_file(sys, "loop.json",
                   "{\"name\":\"loop\",\"description\":\"d\",\"discovery\":true,\"flows\":[\"device\"],"
                   "\"issuer\":\"http://127.0.0.1:9\"}");
        char dirname[sizeof tmp + 32];
        snprintf(dirname, sizeof dirname, "%s/dir.json", user);
        ASSERT_TRUE(mkdir(dirname, 0700) == 0);
        _cleanup_free_ char *big = malloc(PROVIDER_FILE_MAX + 2);
        ASSERT_TRUE(big);
        memset(big, ' ', PROVIDER_FILE_MAX + 1);
        big[PROVIDER_FILE_MAX + 1] = 0;
        write_file(user, "big.json", big);

        const char *dirs[] = { missing, user, sys, NULL };
        _cleanup_free_ char *err = NULL;

        /* First hit wins; a missing directory is skipped. */
        _cleanup_provider_preset_ ProviderPreset *a = NULL, *b = NULL, *c = NULL;
        ASSERT_OK(provider_preset_load("github", dirs, false, &a, &err));
        ASSERT_STREQ(a->description, "user");
        ASSERT_CONTAINS(a->path, "/user/github.json");
        ASSERT_OK(provider_preset_load("only-sys", dirs, false, &b, &err));
        ASSERT_STREQ(b->description, "system");
        /* http issuer on loopback: only with the opt-in. */
        ASSERT_OK(provider_preset_load("loop", dirs, true, &c, &err));

        const struct {
                const char *name;
                bool insecure;
                int error;
                const char *message;
        } cases[] = {
                /* A broken file in the first directory is an error, not skipped. */
                { "broken", false, -EINVAL, "/user/broken.json: line 1: invalid JSON" },
                { "wrong", false, -EINVAL, "/user/wrong.json: name: is \"right\", but the file is wrong.json" },
                { "dir", false, -EINVAL, "/user/dir.json: not a regular file" },
                { "big", false, -EFBIG, "/user/big.json: over the limit of 65536 bytes" },
                { "loop", false, -EINVAL, "/sys/loop.json: issuer: must be an https URL" },
                { "absent", false, -ENOENT, "no preset \"absent\"" },
                { "../sys/github", false, -EINVAL, "not a valid preset name" },
                { "/etc/passwd", false, -EINVAL, "not a valid preset name" },
                { "GitHub", false, -EINVAL, "not a valid preset name" },
                { "", false, -EINVAL, "not a valid preset name" },
                { "-x", false, -EINVAL, "not a valid preset name" },
                { "a.json", false, -EINVAL, "not a valid preset name" },
                { "abcdefghijklmnopqrstuvwxyz0123456", false, -EINVAL, "not a valid preset name" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ProviderPreset *p = NULL;
                int r = provider_preset_load(cases[i].name, dirs, cases[i].insecure, &p, &err);
                if (r != cases[i].error)
                        TEST_FAIL("%s: got %d (%s), expected %d", cases[i].name, r, strna(err), cases[i].error);
                ASSERT_TRUE(p == NULL);
                ASSERT_CONTAINS(err, cases[i].message);
                err = mfree(err);
        }
        ASSERT_TRUE(provider_name_valid("abcdefghijklmnopqrstuvwxyz012345"));

        /* Not found: the message lists where it looked. */
        ProviderPreset *p = NULL;
        ASSERT_EQ(provider_preset_load("absent", dirs, false, &p, &err), -ENOENT);
        ASSERT_CONTAINS(err, user);
        ASSERT_CONTAINS(err, sys);
        err = mfree(err);
        ASSERT_EQ(provider_preset_load("github", NULL, false, &p, &err), -ENOENT);

        /* Cleanup. */
        static const char *const files[] = { "user/github.json", "user/wrong.json", "user/broken.json", "user/big.json",
                                             "sys/github.json", "sys/only-sys.json", "sys/broken.json", "sys/loop.json" };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                char f[sizeof tmp + 32];
                snprintf(f, sizeof f, "%s/%s", tmp, files[i]);
                ASSERT_TRUE(unlink(f) == 0);
        }
        ASSERT_TRUE(rmdir(dirname) == 0 && rmdir(user) == 0 && rmdir(sys) == 0 && rmdir(tmp) == 0);
}

TEST(default_dirs) {
        char **dirs = NULL;

        ASSERT_OK(setenv("XDG_CONFIG_HOME", "/cfg", 1));
        ASSERT_OK(setenv("HOME", "/home/u", 1));
        ASSERT_OK(provider_default_dirs("/usr/share/tokend/providers", &dirs));
        ASSERT_STREQ(dirs[0], "/cfg/tokend/providers");
        ASSERT_STREQ(dirs[1], "/usr/share/tokend/providers");
        ASSERT_TRUE(dirs[2] == NULL);
        dirs = provider_dirs_free(dirs);

        /* A relative XDG_CONFIG_HOME is ignored (XDG Base Directory spec). */
        ASSERT_OK(setenv("XDG_CONFIG_HOME", "cfg", 1));
        ASSERT_OK(provider_default_dirs(PROVIDERS_DIR, &dirs));
        ASSERT_STREQ(dirs[0], "/home/u/.config/tokend/providers");
        ASSERT_STREQ(dirs[1], PROVIDERS_DIR);
        dirs = provider_dirs_free(dirs);

        ASSERT_OK(unsetenv("XDG_CONFIG_HOME"));
        ASSERT_OK(unsetenv("HOME"));
        ASSERT_OK(provider_default_dirs("/sys-dir", &dirs));
        ASSERT_STREQ(dirs[0], "/sys-dir");
        ASSERT_TRUE(dirs[1] == NULL);
        dirs = provider_dirs_free(dirs);
}

int main(int argc, char *argv[]) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s PROVIDERS-DIR\n", argv[0]);
                return 2;
        }
        providers_dir = argv[1];
        RUN(shipped_presets_load);
        RUN(shipped_preset_facts);
        RUN(parse_cases);
        RUN(messages_printable);
        RUN(limits);
        RUN(expand_tenant);
        RUN(set_issuer);
        RUN(load_lookup);
        RUN(default_dirs);
        return 0;
}
