/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-provider.c: provider preset files (provider_preset_parse(),
 * providers/README.md). The input is one preset file. A preset that parses is
 * then made ready as a login does: the tenant filled in (the default, a
 * valid one, an invalid one), the issuer set (the preset's own, an https one,
 * a loopback one with the insecure opt-in), and checked for completeness.
 *
 * Invariants checked: an accepted file is JSON, as providers/README.md
 * promises: json-c's strict mode still takes single-quoted member names,
 * which would let a member appear twice or use escapes unseen; a preset that
 * parses without the insecure-loopback opt-in parses with it; a failed tenant
 * or issuer step leaves the preset as it was; once complete, every URL of the
 * preset passes oauth_check_url(). */
#include <stdio.h>

#include "common/util.h"
#include "fuzz.h"
#include "provider.h"

#define N_URLS 5

typedef struct Step {
        const char *tenant; /* NULL: the default tenant */
        const char *issuer; /* NULL: the preset's own */
        bool insecure;
} Step;

static const Step steps[] = {
        { NULL, NULL, false },
        { "contoso.onmicrosoft.com", "https://idp.example.com/realms/x", false },
        { "..", "http://127.0.0.1:8080/", true },
};

static void urls_of(ProviderPreset *p, char **ret[static N_URLS]) {
        ret[0] = &p->issuer;
        ret[1] = &p->authorization_endpoint;
        ret[2] = &p->token_endpoint;
        ret[3] = &p->device_authorization_endpoint;
        ret[4] = &p->revocation_endpoint;
}

/* A copy of the URLs, to tell whether a failed step changed them. */
static bool snapshot(ProviderPreset *p, char *ret[static N_URLS]) {
        char **urls[N_URLS];
        urls_of(p, urls);
        for (size_t i = 0; i < N_URLS; i++) {
                ret[i] = *urls[i] ? strdup(*urls[i]) : NULL;
                if (*urls[i] && !ret[i])
                        return false;
        }
        return true;
}

static void snapshot_check_and_free(ProviderPreset *p, char *snap[static N_URLS], bool unchanged) {
        char **urls[N_URLS];
        urls_of(p, urls);
        for (size_t i = 0; i < N_URLS; i++) {
                if (unchanged)
                        ASSERT_TRUE(streq_ptr(snap[i], *urls[i]));
                free(snap[i]);
        }
}

static void make_ready(ProviderPreset *p, const Step *s) {
        char *snap[N_URLS] = {};
        bool tenant_before = p->tenant;
        int r;

        if (!snapshot(p, snap)) {
                snapshot_check_and_free(p, snap, false);
                return;
        }
        _cleanup_free_ char *e1 = NULL;
        r = provider_preset_expand_tenant(p, s->tenant, &e1);
        if (r < 0) {
                ASSERT_TRUE(r == -EINVAL || r == -ENOMEM);
                ASSERT_TRUE(p->tenant == tenant_before);
        }
        snapshot_check_and_free(p, snap, r < 0);

        if (!snapshot(p, snap)) {
                snapshot_check_and_free(p, snap, false);
                return;
        }
        _cleanup_free_ char *e2 = NULL;
        r = provider_preset_set_issuer(p, s->issuer, s->insecure, &e2);
        if (r < 0)
                ASSERT_TRUE(r == -EINVAL || r == -ENOMEM);
        snapshot_check_and_free(p, snap, r < 0);

        _cleanup_free_ char *e3 = NULL;
        if (provider_preset_check_complete(p, &e3) < 0)
                return;
        char **urls[N_URLS];
        urls_of(p, urls);
        for (size_t i = 0; i < N_URLS; i++) {
                const char *reason = NULL;
                if (*urls[i] && oauth_check_url(*urls[i], s->insecure, &reason) < 0)
                        TEST_FAIL("complete preset has a bad URL %s: %s", *urls[i], reason);
        }
}

/* Whether the text has a single quote outside double-quoted strings. */
static bool has_single_quoted(const char *text, size_t len) {
        bool in_string = false;
        for (size_t i = 0; i < len; i++) {
                if (in_string && text[i] == '\\')
                        i++;
                else if (text[i] == '"')
                        in_string = !in_string;
                else if (!in_string && text[i] == '\'')
                        return true;
        }
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_INPUT_MAX)
                return 0;
        _cleanup_free_ char *text = fuzz_strndup(data, size);
        if (!text)
                return 0;

        bool parsed_strict = false;
        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                _cleanup_provider_preset_ ProviderPreset *p = NULL;
                _cleanup_free_ char *err = NULL;

                int r = provider_preset_parse("fuzz.json", text, size, steps[i].insecure, &p, &err);
                if (r < 0) {
                        ASSERT_TRUE(r == -EINVAL || r == -EFBIG || r == -ENOMEM);
                        ASSERT_TRUE(err || r == -ENOMEM);
                        ASSERT_TRUE(!steps[i].insecure || !parsed_strict);
                        continue;
                }
                parsed_strict |= !steps[i].insecure;
                if (has_single_quoted(text, size))
                        TEST_FAIL("accepted a preset with a single-quoted string, which is not JSON");
                ASSERT_TRUE(p && p->name && p->description);
                ASSERT_TRUE(provider_name_valid(p->name));
                ASSERT_TRUE(p->flows != 0);
                ASSERT_STREQ(p->path, "fuzz.json");
                make_ready(p, &steps[i]);
        }
        return 0;
}
