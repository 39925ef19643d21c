/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-policy.c: policy drop-in files (policy_parse_file(),
 * docs/policy.md). The input is one file. Besides parsing, every agent it
 * declares is matched (with an identity built from its own selectors, so
 * matching is reached), shown as for WhoAmI, and asked for each credential
 * it names, as consent.c does for a GetToken.
 *
 * Invariants checked: a failed parse leaves the policy as it was; the same
 * file parsed twice fails the second time when it declared an agent (names
 * are unique); request checks answer 0 or -EPERM and say why when refusing. */
#include <stdio.h>

#include "common/util.h"
#include "fuzz.h"
#include "policy.h"

#define IDS_MAX 16
#define CREDS_MAX 8

typedef struct Selectors {
        char *unit, *exe, *cgroup;
        uid_t uid;
} Selectors;

typedef struct Sketch {
        Selectors ids[IDS_MAX];
        size_t n_ids;
        char *creds[CREDS_MAX];
        size_t n_creds;
        char *scopes;   /* the first Scopes= value */
        char *resource; /* the first token of the first Resources= value */
} Sketch;

static void sketch_done(Sketch *s) {
        for (size_t i = 0; i < s->n_ids; i++) {
                free(s->ids[i].unit);
                free(s->ids[i].exe);
                free(s->ids[i].cgroup);
        }
        for (size_t i = 0; i < s->n_creds; i++)
                free(s->creds[i]);
        free(s->scopes);
        free(s->resource);
}

static char *strip(char *s) {
        while (*s == ' ' || *s == '\t')
                s++;
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
                s[--n] = 0;
        return s;
}

static void set(char **dst, const char *v) {
        if (!*dst)
                *dst = strdup(v);
}

/* A loose reading of the file, only to pick identities and requests that
 * reach the matching and checking code; the parser under test decides what
 * the file means. */
static void sketch_line(Sketch *s, char *line) {
        line = strip(line);
        if (streq(line, "[Agent]")) {
                if (s->n_ids < IDS_MAX)
                        s->ids[s->n_ids++] = (Selectors) { .uid = 4242 };
                return;
        }
        const char *c = startswith(line, "[Credential ");
        if (c) {
                size_t n = strlen(c);
                if (n > 1 && c[n - 1] == ']' && s->n_creds < CREDS_MAX)
                        s->creds[s->n_creds++] = strndup(c, n - 1);
                return;
        }
        char *eq = strchr(line, '=');
        if (!eq)
                return;
        *eq = 0;
        const char *key = strip(line);
        char *value = strip(eq + 1);
        Selectors *id = s->n_ids > 0 ? &s->ids[s->n_ids - 1] : NULL;

        if (id && streq(key, "Unit"))
                set(&id->unit, value);
        else if (id && streq(key, "Exe"))
                set(&id->exe, value);
        else if (id && streq(key, "Cgroup"))
                set(&id->cgroup, value);
        else if (id && streq(key, "Uid"))
                id->uid = (uid_t) strtoul(value, NULL, 10);
        else if (streq(key, "Scopes"))
                set(&s->scopes, value);
        else if (streq(key, "Resources") && !s->resource)
                s->resource = strndup(value, strcspn(value, " \t"));
}

static void sketch(Sketch *s, const char *text) {
        _cleanup_free_ char *copy = strdup(text);
        char *save = NULL;

        for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save))
                sketch_line(s, line);
}

static void check_requests(const PolicyAgent *a, const Sketch *s, const ScopeSet *scopes) {
        for (size_t i = 0; i <= s->n_creds; i++) {
                const char *cred = i < s->n_creds ? s->creds[i] : "not-in-the-file";
                for (unsigned variant = 0; variant < 3; variant++) {
                        ScopeSet eff = {};
                        _cleanup_free_ char *why = NULL;
                        /* Nothing asked; the scopes asked and held; a resource too. */
                        const ScopeSet *req = variant == 0 ? NULL : scopes;
                        const char *resource = variant == 2 ? s->resource : NULL;

                        int r = policy_check_request(a, cred, req, scopes, resource, &eff, &why);
                        ASSERT_TRUE(r == 0 || r == -EPERM);
                        if (r == -EPERM)
                                ASSERT_TRUE(why && *why);
                        scope_set_done(&eff);
                }
        }
}

static void check_identity(const Policy *p, const PeerIdentity *id, const Sketch *s, const ScopeSet *scopes) {
        const PolicyAgent *a = policy_match(p, id);

        json_object *o = policy_agent_to_json(a);
        ASSERT_TRUE(o);
        json_object_put(o);
        ASSERT_EQ(policy_mode_from_string(policy_mode_to_string(policy_agent_mode(a))), policy_agent_mode(a));
        ASSERT_TRUE(policy_agent_consent_usec(a) > 0 && policy_agent_consent_usec(a) <= POLICY_DURATION_MAX_USEC);
        ASSERT_TRUE(policy_agent_max_lifetime_usec(a) <= POLICY_DURATION_MAX_USEC);
        if (a) {
                ASSERT_TRUE(policy_agent_name(a));
                ASSERT_STREQ(policy_agent_file(a), "fuzz.conf");
                ASSERT_TRUE(policy_agent_line(a) > 0);
                /* An agent that matches is never the manager. */
                ASSERT_FALSE(policy_is_manager_allowed(p, id, id->uid));
        }
        check_requests(a, s, scopes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_INPUT_MAX)
                return 0;
        _cleanup_free_ char *text = fuzz_strndup(data, size);
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL, *err2 = NULL;
        if (!text || !p)
                return 0;

        int r = policy_parse_file(p, "fuzz.conf", text, size, &err);
        if (r < 0) {
                ASSERT_TRUE(r == -EINVAL || r == -EFBIG || r == -E2BIG || r == -ENOMEM);
                ASSERT_TRUE(err || r == -ENOMEM);
                ASSERT_EQ(policy_n_agents(p), 0);
                return 0;
        }
        size_t n = policy_n_agents(p);

        Sketch s = {};
        sketch(&s, text);
        ScopeSet scopes = {};
        if (!s.scopes || scope_set_from_string(s.scopes, &scopes) < 0)
                scopes = (ScopeSet) {};

        for (size_t i = 0; i < s.n_ids; i++) {
                PeerIdentity id = {
                        .uid = s.ids[i].uid,
                        .pid = 1,
                        .pidfd = -1,
                        .exe = s.ids[i].exe,
                        .unit = s.ids[i].unit,
                        .cgroup = s.ids[i].cgroup,
                };
                check_identity(p, &id, &s, &scopes);
        }
        /* Nothing the kernel could say is given: an unknown caller. */
        check_identity(p, &(PeerIdentity) { .uid = 4242, .pid = 1, .pidfd = -1 }, &s, &scopes);

        /* The same agent names again: refused, and the policy stays as it was. */
        r = policy_parse_file(p, "again.conf", text, size, &err2);
        if (n > 0)
                ASSERT_TRUE(r < 0);
        ASSERT_EQ(policy_n_agents(p), r < 0 ? n : 2 * n);

        scope_set_done(&scopes);
        sketch_done(&s);
        return 0;
}
