/* SPDX-License-Identifier: MIT */
/* daemon/test-policy.c: the policy format (every key, every error naming
 * PATH:LINE), loading a directory in lexical order, matching and its
 * precedence, request checks (with [Credential *] and Resources=*) and the
 * manager rule. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/test.h"
#include "common/util.h"
#include "policy.h"

#define ASSERT_CONTAINS(haystack, needle)                                                         \
        do {                                                                                      \
                const char *_h = (haystack), *_n = (needle);                                      \
                if (!_h || !strstr(_h, _n))                                                       \
                        TEST_FAIL("\"%s\" does not contain \"%s\"", _h ?: "(null)", _n);          \
        } while (0)

#define HOUR_USEC (3600 * USEC_PER_SEC)

static Policy *parse_ok(const char *text) {
        Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL;
        ASSERT_TRUE(p);
        int r = policy_parse_file(p, "t.conf", text, strlen(text), &err);
        if (r < 0)
                TEST_FAIL("unexpected error %d: %s\n--- text:\n%s", r, err ?: "(none)", text);
        return p;
}

static ScopeSet scopes(const char *s) {
        ScopeSet set = {};
        ASSERT_OK(scope_set_from_string(s, &set));
        return set;
}

static char *joined(const ScopeSet *s) {
        char *j = scope_set_join(s);
        ASSERT_TRUE(j);
        return j;
}

static PeerIdentity peer(uid_t uid, const char *exe, const char *unit, const char *cgroup) {
        return (PeerIdentity) {
                .uid = uid,
                .pid = 1234,
                .pidfd = -1,
                .exe = (char *) exe,
                .unit = (char *) unit,
                .cgroup = (char *) cgroup,
        };
}

TEST(mode_strings) {
        static const struct {
                PolicyMode m;
                const char *s;
        } cases[] = {
                { POLICY_ALLOW, "allow" },
                { POLICY_ASK, "ask" },
                { POLICY_DENY, "deny" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ASSERT_STREQ(policy_mode_to_string(cases[i].m), cases[i].s);
                ASSERT_EQ(policy_mode_from_string(cases[i].s), cases[i].m);
        }
        ASSERT_EQ(policy_mode_from_string("Allow"), _POLICY_MODE_INVALID);
        ASSERT_EQ(policy_mode_from_string(""), _POLICY_MODE_INVALID);
        ASSERT_EQ(policy_mode_from_string(NULL), _POLICY_MODE_INVALID);
        ASSERT_TRUE(policy_mode_to_string(_POLICY_MODE_MAX) == NULL);
        ASSERT_TRUE(policy_mode_to_string(_POLICY_MODE_INVALID) == NULL);
}

TEST(every_key) {
        _cleanup_policy_ Policy *p = parse_ok(
                "# a comment\n"
                "; another comment\n"
                "\n"
                "[Agent]\n"
                "Name=claude-code\n"
                "Unit=claude-*.service\n"
                "Exe=/usr/bin/node\n"
                "Uid=1000\n"
                "Cgroup=/user.slice/*/app.slice/claude-*.service\n"
                "Mode=allow\n"
                "ConsentDuration=1h30m\n"
                "MaxLifetime=15m\n"
                "\n"
                "[Credential github]\n"
                "Scopes=repo read:org\n"
                "Scopes=\tgist  \n"
                "Resources=https://api.github.com\n"
                "Resources=https://uploads.github.com http://127.0.0.1:8080/x\n"
                "[Credential google.work]\n"
                "Scopes=*\n");
        ASSERT_EQ(policy_n_agents(p), 1);
        PeerIdentity id = peer(1000, "/usr/bin/node", "claude-1.service",
                               "/user.slice/user-1000.slice/user@1000.service/app.slice/claude-1.service");
        const PolicyAgent *a = policy_match(p, &id);
        ASSERT_TRUE(a);
        ASSERT_STREQ(policy_agent_name(a), "claude-code");
        ASSERT_STREQ(policy_agent_file(a), "t.conf");
        ASSERT_EQ(policy_agent_line(a), 4);
        ASSERT_EQ(policy_agent_mode(a), POLICY_ALLOW);
        ASSERT_EQ(policy_agent_consent_usec(a), 90 * 60 * USEC_PER_SEC);
        ASSERT_EQ(policy_agent_max_lifetime_usec(a), 15 * 60 * USEC_PER_SEC);

        json_object *j = policy_agent_to_json(a);
        ASSERT_TRUE(j);
        ASSERT_STREQ(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                     "{\"mode\":\"allow\",\"consent_duration\":5400,\"name\":\"claude-code\",\"file\":\"t.conf\","
                     "\"line\":4,\"max_lifetime\":900,\"unit\":\"claude-*.service\",\"exe\":\"/usr/bin/node\","
                     "\"uid\":1000,\"cgroup\":\"/user.slice/*/app.slice/claude-*.service\",\"credentials\":["
                     "{\"name\":\"github\",\"scopes\":[\"gist\",\"read:org\",\"repo\"],\"resources\":["
                     "\"https://api.github.com\",\"https://uploads.github.com\",\"http://127.0.0.1:8080/x\"]},"
                     "{\"name\":\"google.work\",\"scopes\":[\"*\"],\"resources\":[]}]}");
        json_object_put(j);
}

TEST(defaults_and_syntax) {
        /* Blanks around '=' and the line, CRLF, no final newline, tabs. */
        _cleanup_policy_ Policy *p = parse_ok("\r\n  [Agent]  \r\n\tName = a \r\n Uid=0\r\n"
                                              "[Credential c]\r\nScopes = x");
        PeerIdentity root = peer(0, NULL, NULL, NULL);
        const PolicyAgent *a = policy_match(p, &root);
        ASSERT_STREQ(policy_agent_name(a), "a");
        ASSERT_EQ(policy_agent_mode(a), POLICY_ASK);
        ASSERT_EQ(policy_agent_consent_usec(a), 8 * HOUR_USEC);
        ASSERT_EQ(policy_agent_max_lifetime_usec(a), 0);

        /* The unknown caller. */
        ASSERT_TRUE(policy_agent_name(NULL) == NULL);
        ASSERT_TRUE(policy_agent_file(NULL) == NULL);
        ASSERT_EQ(policy_agent_line(NULL), 0);
        ASSERT_EQ(policy_agent_mode(NULL), POLICY_ASK);
        ASSERT_EQ(policy_agent_consent_usec(NULL), 8 * HOUR_USEC);
        ASSERT_EQ(policy_agent_max_lifetime_usec(NULL), 0);
        json_object *j = policy_agent_to_json(NULL);
        ASSERT_STREQ(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                     "{\"mode\":\"ask\",\"consent_duration\":28800}");
        json_object_put(j);

        /* Empty files and comment-only files hold no agents. */
        static const char *const empty[] = { "", "\n\n", "# only\n; comments\n", "   \t\n" };
        for (size_t i = 0; i < ELEMENTSOF(empty); i++) {
                _cleanup_policy_ Policy *e = parse_ok(empty[i]);
                ASSERT_EQ(policy_n_agents(e), 0);
        }
}

TEST(durations) {
        static const struct {
                const char *value;
                uint64_t sec; /* 0: an error */
        } cases[] = {
                { "1s", 1 },
                { "90s", 90 },
                { "5m", 300 },
                { "8h", 8 * 3600 },
                { "2d", 2 * 86400 },
                { "1h30m", 5400 },
                { "1d2h3m4s", 86400 + 7200 + 180 + 4 },
                { "30d", 30 * 86400 },
                { "29d24h", 30 * 86400 },
                { "0030d", 30 * 86400 },
                { "30d1s", 0 },
                { "31d", 0 },
                { "99999999999999999999s", 0 },
                { "0s", 0 },
                { "0h0m", 0 },
                { "8", 0 },
                { "h", 0 },
                { "8x", 0 },
                { "8H", 0 },
                { "1h 30m", 0 },
                { "-1h", 0 },
                { "+1h", 0 },
                { "1.5h", 0 },
                { "8hours", 0 },
                { "1w", 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                for (int key = 0; key < 2; key++) {
                        _cleanup_free_ char *text = NULL, *err = NULL;
                        _cleanup_policy_ Policy *p = policy_new_default();
                        const char *k = key ? "MaxLifetime" : "ConsentDuration";
                        ASSERT_TRUE(asprintf(&text, "[Agent]\nName=a\nUid=1\n%s=%s\n", k, cases[i].value) > 0);
                        int r = policy_parse_file(p, "d.conf", text, strlen(text), &err);
                        if (cases[i].sec == 0) {
                                ASSERT_EQ(r, -EINVAL);
                                ASSERT_CONTAINS(err, "d.conf:4: ");
                                ASSERT_CONTAINS(err, k);
                                continue;
                        }
                        if (r < 0)
                                TEST_FAIL("%s=%s: %s", k, cases[i].value, err);
                        PeerIdentity id = peer(1, NULL, NULL, NULL);
                        const PolicyAgent *a = policy_match(p, &id);
                        ASSERT_EQ(key ? policy_agent_max_lifetime_usec(a) : policy_agent_consent_usec(a),
                                  cases[i].sec * USEC_PER_SEC);
                }
}

/* Every error names the file and the line, and says why. */
TEST(parse_errors) {
        static const struct {
                const char *text, *error;
                int r;
        } cases[] = {
                /* Structure. */
                { "Name=a\n", "t.conf:1: Name= comes before any section; start with [Agent]", -EINVAL },
                { "\n[Credential gh]\nScopes=x\n", "t.conf:2: [Credential gh] must follow the [Agent] section",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Policy]\n", "t.conf:4: unknown section [Policy]", -EINVAL },
                { "[agent]\n", "t.conf:1: unknown section [agent]", -EINVAL },
                { "[ Agent ]\n", "t.conf:1: unknown section [ Agent ]", -EINVAL },
                { "[Agent\n", "t.conf:1: a section header ends with ']'", -EINVAL },
                { "[Agent] # mine\n", "t.conf:1: a section header ends with ']'", -EINVAL },
                { "[]\n", "t.conf:1: unknown section []", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential]\n", "t.conf:4: [Credential] needs the credential's name",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential a/b]\nScopes=x\n",
                  "t.conf:4: [Credential a/b]: not a valid credential name", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential\tgh  ]\nScopes=x\n[Credential gh]\n",
                  "t.conf:6: [Credential gh] is already given for this agent on line 4", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential -x]\nScopes=x\n",
                  "t.conf:4: [Credential -x]: not a valid credential name", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential gh]\nScopes=x\n[Credential gh]\nScopes=y\n",
                  "t.conf:6: [Credential gh] is already given for this agent on line 4", -EINVAL },
                { "[Agent]\nName=a\nUid=1\njunk\n", "t.conf:4: expected KEY=VALUE, a [section] header or a comment",
                  -EINVAL },
                { "[Agent]\n=a\n", "t.conf:2: a line starts with '=': the key is missing", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nName\\\n", "t.conf:4: expected KEY=VALUE", -EINVAL },

                /* Keys. */
                { "[Agent]\nName=a\nUid=1\nColour=red\n", "t.conf:4: unknown key Colour in [Agent]", -EINVAL },
                { "[Agent]\nname=a\n", "t.conf:2: unknown key name in [Agent] (did you mean Name?)", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nScopes=x\n",
                  "t.conf:4: Scopes= belongs in [Credential NAME], not in [Agent]",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nMode=allow\n",
                  "t.conf:5: Mode= belongs in [Agent], not in [Credential NAME]", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScope=x\n",
                  "t.conf:5: unknown key Scope in [Credential NAME]", -EINVAL },
                { "[Agent]\nName=a\nName=b\n", "t.conf:3: Name= is already set on line 2", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nUid=2\n", "t.conf:4: Uid= is already set on line 3", -EINVAL },
                { "[Agent]\nName=a\nUnit=x\nUnit=y\n", "t.conf:4: Unit= is already set", -EINVAL },
                { "[Agent]\nName=a\nExe=/x\nExe=/y\n", "t.conf:4: Exe= is already set", -EINVAL },
                { "[Agent]\nName=a\nCgroup=/x\nCgroup=/y\n", "t.conf:4: Cgroup= is already set", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nMode=ask\nMode=deny\n", "t.conf:5: Mode= is already set on line 4",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\nConsentDuration=1h\nConsentDuration=2h\n",
                  "t.conf:5: ConsentDuration= is already set", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nMaxLifetime=1h\nMaxLifetime=2h\n", "t.conf:5: MaxLifetime= is already set",
                  -EINVAL },
                { "[Agent]\nName=\n", "t.conf:2: Name= needs a value", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=\n", "t.conf:5: Scopes= needs a value", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=x\nResources= \n",
                  "t.conf:6: Resources= needs a value",
                  -EINVAL },
                /* A trailing comment is refused, never read as part of the value. */
                { "[Agent]\nName=a # mine\n", "t.conf:2: Name: '#' starts a comment only at the beginning of a line",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=repo # not admin\n",
                  "t.conf:5: Scopes: '#' starts a comment", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=#x\n", "t.conf:5: Scopes: '#' starts a comment",
                  -EINVAL },

                /* Values. */
                { "[Agent]\nName=a b\n", "t.conf:2: Name: \"a b\" is not a valid name", -EINVAL },
                { "[Agent]\nName=a/b\n", "t.conf:2: Name: \"a/b\" is not a valid name", -EINVAL },
                { "[Agent]\nName=0123456789012345678901234567890123456789012345678901234567890123X\n",
                  "t.conf:2: Name: ", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Agent]\nName=a\nUid=2\n",
                  "t.conf:5: Name: \"a\" is already the name of the agent at t.conf:1", -EINVAL },
                { "[Agent]\nName=a\nUnit=a b.service\n", "t.conf:3: Unit: must be a unit name or glob", -EINVAL },
                { "[Agent]\nName=a\nUnit=caf\xc3\xa9.service\n", "t.conf:3: Unit: must be a unit name or glob",
                  -EINVAL },
                { "[Agent]\nName=a\nExe=node\n", "t.conf:3: Exe: \"node\" is not an absolute, normalized path",
                  -EINVAL },
                { "[Agent]\nName=a\nExe=/usr/bin/\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nExe=/usr//bin/node\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nExe=/usr/./bin/node\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nExe=/usr/lib/../bin/node\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nExe=/usr/bin/..\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nExe=/\n", "t.conf:3: Exe: ", -EINVAL },
                { "[Agent]\nName=a\nUid=alice\n", "t.conf:3: Uid: \"alice\" is not a numeric uid", -EINVAL },
                { "[Agent]\nName=a\nUid=-1\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nUid=+1\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nUid=4294967295\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nUid=4294967296\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nUid=99999999999\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nUid=0x10\n", "t.conf:3: Uid: ", -EINVAL },
                { "[Agent]\nName=a\nCgroup=user.slice/*\n", "t.conf:3: Cgroup: \"user.slice/*\" is not an absolute",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\nMode=sometimes\n", "t.conf:4: Mode: \"sometimes\" is not a mode", -EINVAL },
                { "[Agent]\nName=a\nUid=1\nMode=Allow\n", "t.conf:4: Mode: ", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=ok bad\"quote\n",
                  "t.conf:5: Scopes: \"bad\"quote\" is not a valid scope", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=x y\nScopes=y\n",
                  "t.conf:6: Scopes: \"y\" is listed twice", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=* x\n",
                  "t.conf:5: Scopes: \"*\" (all the credential holds) stands alone",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=x\nScopes=*\n", "t.conf:6: Scopes: \"*\"", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nScopes=*\n", "t.conf:6: Scopes: \"*\"", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=http://example.com\n",
                  "t.conf:6: Resources: \"http://example.com\": plain http is only allowed to a loopback host",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=api.github.com\n",
                  "t.conf:6: Resources: \"api.github.com\": URL must start with https://", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=https://a https://a\n",
                  "t.conf:6: Resources: \"https://a\" is listed twice", -EINVAL },

                /* Wildcards: [Credential *] once per agent, Resources=* alone in its section. */
                { "[Agent]\nName=a\nUid=1\n[Credential *]\nScopes=x\n[Credential c]\nScopes=y\n"
                  "[Credential *]\nScopes=z\n",
                  "t.conf:8: [Credential *] is already given for this agent on line 4", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential *]\nScopes=x\n[Credential  *\t]\nScopes=x\n",
                  "t.conf:6: [Credential *] is already given for this agent on line 4", -EINVAL },
                { "\n[Credential *]\nScopes=x\n", "t.conf:2: [Credential *] must follow the [Agent] section",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential *]\n", "t.conf:4: [Credential *] needs Scopes=", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential **]\nScopes=x\n",
                  "t.conf:4: [Credential **]: not a valid credential name (1-64 characters of A-Z, a-z, 0-9, '.', "
                  "'_', '-', starting with a letter or digit), nor * alone for every other credential",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential gh*]\nScopes=x\n", "t.conf:4: [Credential gh*]: not a valid",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential * gh]\nScopes=x\n",
                  "t.conf:4: [Credential * gh]: not a valid", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=* https://a\n",
                  "t.conf:6: Resources: \"*\" (any resource) stands alone", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=https://a *\n",
                  "t.conf:6: Resources: \"*\" (any resource) stands alone", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=https://a\nResources=*\n",
                  "t.conf:7: Resources: \"*\" (any resource) stands alone", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential *]\nScopes=*\nResources=*\nResources=https://a\n",
                  "t.conf:7: Resources: \"*\" (any resource) stands alone", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=*\nResources=*\n",
                  "t.conf:7: Resources: \"*\" (any resource) stands alone", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=*\nResources=**\n",
                  "t.conf:6: Resources: \"**\": URL must start with https://", -EINVAL },

                /* Checks at the end of a section, at its header's line. */
                { "[Agent]\nUid=1\n", "t.conf:1: [Agent] needs Name=", -EINVAL },
                { "[Agent]\nName=a\n\n[Agent]\nName=b\nUid=1\n",
                  "t.conf:1: [Agent] a needs at least one selector: Unit=, Exe=, Uid= or Cgroup=", -EINVAL },
                { "[Agent]\nName=a\nMode=allow\n[Credential c]\nScopes=*\n",
                  "t.conf:1: [Agent] a needs at least one selector",
                  -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\nResources=https://a\n[Credential d]\nScopes=x\n",
                  "t.conf:4: [Credential c] needs Scopes=", -EINVAL },
                { "[Agent]\nName=a\nUid=1\n[Credential c]\n", "t.conf:4: [Credential c] needs Scopes=", -EINVAL },

                /* Bytes. */
                { "[Agent]\nName=a\x01\n", "t.conf:2: contains a control character", -EINVAL },
                { "[Agent]\nName=a\rb\n", "t.conf:2: contains a control character", -EINVAL },
                { "[Agent]\nName=a\x7f\n", "t.conf:2: contains a control character", -EINVAL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_policy_ Policy *p = policy_new_default();
                _cleanup_free_ char *err = NULL;
                int r = policy_parse_file(p, "t.conf", cases[i].text, strlen(cases[i].text), &err);
                if (r != cases[i].r || !err || !strstr(err, cases[i].error))
                        TEST_FAIL("case %zu: got %d \"%s\", want %d \"%s\"", i, r, err ?: "(null)", cases[i].r,
                                  cases[i].error);
                /* Nothing of a broken file is kept. */
                ASSERT_EQ(policy_n_agents(p), 0);
                /* Without a place for the message, the same answer. */
                ASSERT_EQ(policy_parse_file(p, "t.conf", cases[i].text, strlen(cases[i].text), NULL), cases[i].r);
        }
}

TEST(bytes_and_limits) {
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL;

        /* A NUL byte, named with its line. */
        static const char nul[] = "[Agent]\nName=a\nUid=1\0\n";
        ASSERT_EQ(policy_parse_file(p, "n.conf", nul, sizeof nul - 1, &err), -EINVAL);
        ASSERT_CONTAINS(err, "n.conf:3: contains a NUL byte");
        err = mfree(err);

        /* A line of exactly 4096 bytes is fine, one more is not. */
        char *text = malloc(POLICY_FILE_MAX + 2);
        ASSERT_TRUE(text);
        size_t n = (size_t) sprintf(text, "[Agent]\nName=a\nUid=1\n# ");
        memset(text + n, 'x', POLICY_LINE_MAX - 2);
        n += POLICY_LINE_MAX - 2;
        memcpy(text + n, "\r\n", 2); /* the line ending does not count */
        ASSERT_OK(policy_parse_file(p, "l.conf", text, n + 2, &err));
        ASSERT_EQ(policy_n_agents(p), 1);
        policy_free(p);
        p = policy_new_default();
        text[n] = 'x';
        ASSERT_EQ(policy_parse_file(p, "l.conf", text, n + 1, &err), -EINVAL);
        ASSERT_CONTAINS(err, "l.conf:4: line longer than 4096 bytes");
        err = mfree(err);

        /* 64 KiB of comments is fine, one byte more is not. */
        memset(text, '\n', POLICY_FILE_MAX + 1);
        ASSERT_OK(policy_parse_file(p, "big.conf", text, POLICY_FILE_MAX, &err));
        ASSERT_EQ(policy_parse_file(p, "big.conf", text, POLICY_FILE_MAX + 1, &err), -EFBIG);
        ASSERT_STREQ(err, "big.conf: larger than 65536 bytes");
        err = mfree(err);
        free(text);
}

TEST(count_limits) {
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL, *text = NULL;
        size_t size = 64 * 1024, n = 0;
        ASSERT_TRUE((text = malloc(size)));

        /* 256 agents across files, the 257th fails in the file and line that adds it. */
        for (unsigned f = 0; f < 2; f++) {
                n = 0;
                for (unsigned i = 0; i < POLICY_AGENTS_MAX / 2; i++)
                        n += (size_t) snprintf(text + n, size - n, "[Agent]\nName=a%u-%u\nUid=%u\n", f, i, i);
                ASSERT_OK(policy_parse_file(p, "many.conf", text, n, &err));
        }
        ASSERT_EQ(policy_n_agents(p), POLICY_AGENTS_MAX);
        static const char one_more[] = "# the last straw\n[Agent]\nName=z\nUid=1\n";
        ASSERT_EQ(policy_parse_file(p, "more.conf", one_more, strlen(one_more), &err), -E2BIG);
        ASSERT_STREQ(err, "more.conf:2: more than 256 agents");
        err = mfree(err);
        ASSERT_EQ(policy_n_agents(p), POLICY_AGENTS_MAX);

        /* 64 credentials in one agent, then one more. */
        _cleanup_policy_ Policy *q = policy_new_default();
        n = (size_t) snprintf(text, size, "[Agent]\nName=a\nUid=1\n");
        for (unsigned i = 0; i < POLICY_CREDENTIALS_MAX; i++)
                n += (size_t) snprintf(text + n, size - n, "[Credential c%u]\nScopes=x\n", i);
        ASSERT_OK(policy_parse_file(q, "c.conf", text, n, &err));
        n += (size_t) snprintf(text + n, size - n, "[Credential last]\nScopes=x\n");
        ASSERT_EQ(policy_parse_file(q, "d.conf", text, n, &err), -EINVAL); /* the name "a" is taken */
        ASSERT_CONTAINS(err, "d.conf:2: Name: \"a\" is already the name of the agent at c.conf:1");
        err = mfree(err);
        text[13] = 'b'; /* Name=b */
        ASSERT_EQ(policy_parse_file(q, "d.conf", text, n, &err), -E2BIG);
        ASSERT_STREQ(err, "d.conf:132: more than 64 [Credential] sections in one agent");
        err = mfree(err);

        /* 64 scopes, then one more; 16 resources, then one more. */
        _cleanup_policy_ Policy *r = policy_new_default();
        n = (size_t) snprintf(text, size, "[Agent]\nName=a\nUid=1\n[Credential c]\nScopes=");
        for (unsigned i = 0; i < SCOPES_MAX; i++)
                n += (size_t) snprintf(text + n, size - n, " s%u", i);
        n += (size_t) snprintf(text + n, size - n, "\nResources=");
        for (unsigned i = 0; i < POLICY_RESOURCES_MAX; i++)
                n += (size_t) snprintf(text + n, size - n, " https://r%u.example", i);
        ASSERT_OK(policy_parse_file(r, "s.conf", text, n, &err));
        size_t base = n;
        n += (size_t) snprintf(text + n, size - n, "\nScopes=one-more\n");
        text[13] = 'b';
        ASSERT_EQ(policy_parse_file(r, "s.conf", text, n, &err), -E2BIG);
        ASSERT_STREQ(err, "s.conf:7: Scopes: more than 64 scopes");
        err = mfree(err);
        n = base + (size_t) snprintf(text + base, size - base, "\nResources=https://one.more\n");
        ASSERT_EQ(policy_parse_file(r, "s.conf", text, n, &err), -E2BIG);
        ASSERT_STREQ(err, "s.conf:7: Resources: more than 16 resources");
}

TEST(names_unique_across_files) {
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL;
        static const char a[] = "[Agent]\nName=one\nUid=1\n",
                          b[] = "\n\n[Agent]\nName=two\nUid=2\n[Agent]\nName=one\nUid=3\n";
        ASSERT_OK(policy_parse_file(p, "/etc/a.conf", a, strlen(a), &err));
        ASSERT_EQ(policy_parse_file(p, "/etc/b.conf", b, strlen(b), &err), -EINVAL);
        ASSERT_STREQ(err, "/etc/b.conf:7: Name: \"one\" is already the name of the agent at /etc/a.conf:1");
        /* b.conf is all or nothing: "two" was not added either. */
        ASSERT_EQ(policy_n_agents(p), 1);
}

#define CG "/user.slice/user-1000.slice/user@1000.service"

TEST(selectors) {
        _cleanup_policy_ Policy *p = parse_ok(
                "[Agent]\nName=by-unit\nUnit=claude-*.service\n"
                "[Agent]\nName=by-escaped-unit\nUnit=app-my\\x2dagent@*.service\n"
                "[Agent]\nName=by-exe\nExe=/usr/bin/node\n"
                "[Agent]\nName=by-uid\nUid=2000\n"
                "[Agent]\nName=by-cgroup\nCgroup=/user.slice/*/app.slice/agent-*.scope\n"
                "[Agent]\nName=by-all\nUid=1000\nExe=/opt/tool\nUnit=tool.service\nCgroup=/x/tool.service\n");
        static const struct {
                uid_t uid;
                const char *exe, *unit, *cgroup, *agent; /* agent NULL: unknown */
        } cases[] = {
                { 1000, "/usr/bin/python3", "claude-1.service", NULL, "by-unit" },
                { 1000, "/usr/bin/python3", "claude-.service", NULL, "by-unit" },
                { 1000, "/usr/bin/python3", "claude-1.service.d", NULL, NULL },
                { 1000, "/usr/bin/python3", "xclaude-1.service", NULL, NULL },
                { 1000, "/usr/bin/python3", "Claude-1.service", NULL, NULL },
                { 1000, NULL, "app-my\\x2dagent@1.service", NULL, "by-escaped-unit" },
                { 1000, NULL, "app-my-agent@1.service", NULL, NULL },
                { 1000, "/usr/bin/node", NULL, NULL, "by-exe" },
                { 1000, "/usr/bin/node (deleted)", NULL, NULL, NULL },
                { 1000, "/usr/bin/nodejs", NULL, NULL, NULL },
                { 1000, "/usr/bin/nod", NULL, NULL, NULL },
                { 2000, NULL, NULL, NULL, "by-uid" },
                { 20000, NULL, NULL, NULL, NULL },
                { 1000, NULL, NULL, CG "/app.slice/agent-7.scope", "by-cgroup" },
                { 1000, NULL, NULL, CG "/app.slice/agent-7.scope/sub", NULL },
                { 1000, NULL, NULL, "/system.slice/app.slice/agent-7.scope", NULL },
                /* All four must match. */
                { 1000, "/opt/tool", "tool.service", "/x/tool.service", "by-all" },
                { 1001, "/opt/tool", "tool.service", "/x/tool.service", NULL },
                { 1000, "/opt/tool2", "tool.service", "/x/tool.service", NULL },
                { 1000, "/opt/tool", "tool2.service", "/x/tool.service", NULL },
                { 1000, "/opt/tool", "tool.service", "/x/tool2.service", NULL },
                /* A selector on a field the kernel did not give does not match. */
                { 1000, NULL, "tool.service", "/x/tool.service", NULL },
                { 1000, "/opt/tool", NULL, "/x/tool.service", NULL },
                { 1000, "/opt/tool", "tool.service", NULL, NULL },
                { 1000, NULL, NULL, NULL, NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                PeerIdentity id = peer(cases[i].uid, cases[i].exe, cases[i].unit, cases[i].cgroup);
                const PolicyAgent *a = policy_match(p, &id);
                if (!streq_ptr(policy_agent_name(a), cases[i].agent))
                        TEST_FAIL("case %zu: matched %s, want %s", i, strna(policy_agent_name(a)),
                                  strna(cases[i].agent));
        }
}

TEST(glob_edges) {
        _cleanup_policy_ Policy *p = parse_ok("[Agent]\nName=star\nUnit=a[*]b.service\n"
                                              "[Agent]\nName=any-unit\nUnit=*\n");
        static const struct {
                const char *unit, *agent;
        } cases[] = {
                { "a*b.service", "star" },
                { "axb.service", "any-unit" },
                { "", "any-unit" },
                { NULL, NULL }, /* no unit: even Unit=* does not match */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                PeerIdentity id = peer(1000, "/bin/sh", cases[i].unit, "/");
                ASSERT_TRUE(streq_ptr(policy_agent_name(policy_match(p, &id)), cases[i].agent));
        }
}

TEST(precedence) {
        /* The first agent in file order, then section order, wins. */
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_free_ char *err = NULL;
        static const char first[] = "[Agent]\nName=narrow\nUid=1000\nExe=/usr/bin/node\nMode=deny\n"
                                    "[Agent]\nName=wide\nUid=1000\nMode=allow\n",
                          second[] = "[Agent]\nName=later\nExe=/usr/bin/node\nMode=allow\n";
        ASSERT_OK(policy_parse_file(p, "10-first.conf", first, strlen(first), &err));
        ASSERT_OK(policy_parse_file(p, "20-second.conf", second, strlen(second), &err));

        PeerIdentity node = peer(1000, "/usr/bin/node", NULL, NULL), other = peer(1000, "/bin/sh", NULL, NULL),
                     stranger = peer(1001, "/usr/bin/node", NULL, NULL);
        const PolicyAgent *a = policy_match(p, &node);
        ASSERT_STREQ(policy_agent_name(a), "narrow");
        ASSERT_EQ(policy_agent_mode(a), POLICY_DENY);
        ASSERT_STREQ(policy_agent_file(a), "10-first.conf");
        ASSERT_STREQ(policy_agent_name(policy_match(p, &other)), "wide");
        a = policy_match(p, &stranger);
        ASSERT_STREQ(policy_agent_name(a), "later");
        ASSERT_STREQ(policy_agent_file(a), "20-second.conf");
        ASSERT_EQ(policy_agent_line(a), 1);
}

TEST(manager_rule) {
        _cleanup_policy_ Policy *p = parse_ok("[Agent]\nName=agent\nUnit=agent-*.scope\n"
                                              "[Agent]\nName=sandbox\nUid=2000\n");
        _cleanup_policy_ Policy *def = policy_new_default(), *safe = policy_new_failsafe();
        static const struct {
                uid_t uid;
                const char *unit;
                bool with_policy, with_default;
        } cases[] = {
                { 1000, "session-2.scope", true, true },  /* the owner's shell */
                { 1000, NULL, true, true },               /* no unit at all */
                { 1000, "agent-1.scope", false, true },   /* an agent of the owner's uid */
                { 2000, "session-2.scope", false, false }, /* the sandbox uid, an agent */
                { 3000, "session-2.scope", false, false }, /* another uid, not an agent */
                { 0, "session-2.scope", false, false },   /* not even root */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                PeerIdentity id = peer(cases[i].uid, "/usr/bin/tokenctl", cases[i].unit, NULL);
                ASSERT_EQ(policy_is_manager_allowed(p, &id, 1000), cases[i].with_policy);
                ASSERT_EQ(policy_is_manager_allowed(def, &id, 1000), cases[i].with_default);
                /* The failsafe policy and no policy let no one manage. */
                ASSERT_FALSE(policy_is_manager_allowed(safe, &id, 1000));
                ASSERT_FALSE(policy_is_manager_allowed(NULL, &id, 1000));
                /* ... and classify every caller as unknown (ask). */
                ASSERT_TRUE(policy_match(safe, &id) == NULL);
        }
        ASSERT_TRUE(policy_is_failsafe(safe));
        ASSERT_FALSE(policy_is_failsafe(def));
        ASSERT_FALSE(policy_is_failsafe(p));
}

TEST(check_request) {
        _cleanup_policy_ Policy *p = parse_ok("[Agent]\nName=claude-code\nUid=1000\nMode=allow\n"
                                              "[Credential github]\nScopes=repo read:org\n"
                                              "Resources=https://api.github.com https://uploads.github.com\n"
                                              "[Credential google]\nScopes=*\n"
                                              "[Credential odd]\nScopes=gone\n"
                                              "[Agent]\nName=blocked\nUid=1001\nMode=deny\n"
                                              "[Credential github]\nScopes=*\n");
        PeerIdentity i1 = peer(1000, NULL, NULL, NULL), i2 = peer(1001, NULL, NULL, NULL);
        const PolicyAgent *agent = policy_match(p, &i1), *blocked = policy_match(p, &i2);
        ASSERT_STREQ(policy_agent_name(agent), "claude-code");
        ASSERT_STREQ(policy_agent_name(blocked), "blocked");

        static const struct {
                int who; /* 0: claude-code, 1: blocked, 2: unknown */
                const char *credential, *requested, *held, *resource;
                int r;
                const char *effective; /* on -EPERM: the allowed set, NULL when not set */
                const char *why;
        } cases[] = {
                /* Narrower or equal: exactly what was asked. */
                { 0, "github", "repo", "repo read:org gist admin:org", NULL, 0, "repo", NULL },
                { 0, "github", "read:org repo", "repo read:org gist", "https://api.github.com", 0, "read:org repo",
                  NULL },
                /* Nothing asked: the allowed set, narrowed to what the credential holds. */
                { 0, "github", "", "repo read:org gist", NULL, 0, "read:org repo", NULL },
                { 0, "github", "", "repo gist", NULL, 0, "repo", NULL },
                { 0, "github", "", "", NULL, 0, "read:org repo", NULL }, /* held unknown */
                /* Wider: refused, and the allowed set said. */
                { 0, "github", "repo admin:org", "repo read:org admin:org", NULL, -EPERM, "read:org repo",
                  "scope admin:org is wider than allowed for agent claude-code with credential github (allowed: "
                  "read:org repo)" },
                { 0, "github", "delete_repo admin:org repo", "", NULL, -EPERM, "read:org repo",
                  "scopes admin:org delete_repo are wider than allowed" },
                /* Allowed by policy, not held by the credential. */
                { 0, "github", "read:org", "repo gist", NULL, -EPERM, "repo",
                  "scope read:org is not held by credential github (allowed: repo)" },
                /* Nothing left to ask for: never an empty request, which would mean "all". */
                { 0, "odd", "", "repo", NULL, -EPERM, "",
                  "agent claude-code may use none of the scopes credential odd holds (agent may get: gone; credential "
                  "holds: repo)" },
                { 0, "odd", "gone", "repo", NULL, -EPERM, "",
                  "scope gone is not held by credential odd (allowed: none)" },
                /* Scopes=*: all the credential holds. */
                { 0, "google", "", "email openid drive", NULL, 0, "drive email openid", NULL },
                { 0, "google", "email", "email openid drive", NULL, 0, "email", NULL },
                { 0, "google", "", "", NULL, 0, "", NULL }, /* no scope parameter: all it holds */
                { 0, "google", "anything", "", NULL, 0, "anything", NULL },
                { 0, "google", "calendar", "email openid", NULL, -EPERM, "email openid",
                  "scope calendar is not held by credential google (allowed: email openid)" },
                /* Resources: none without Resources=, else exactly one listed. */
                { 0, "github", "repo", "", "https://api.github.com", 0, "repo", NULL },
                { 0, "github", "repo", "", "https://evil.example", -EPERM, NULL,
                  "resource https://evil.example is not allowed for agent claude-code with credential github "
                  "(allowed: https://api.github.com https://uploads.github.com)" },
                { 0, "github", "repo", "", "https://api.github.com/", -EPERM, NULL,
                  "resource https://api.github.com/ is not allowed" },
                { 0, "google", "", "", "https://www.googleapis.com", -EPERM, NULL,
                  "resource https://www.googleapis.com is not allowed for agent claude-code with credential google "
                  "(allowed: none)" },
                /* Credentials not listed. */
                { 0, "slack", "", "", NULL, -EPERM, NULL, "agent claude-code may not use credential slack" },
                { 0, "GitHub", "", "", NULL, -EPERM, NULL, "agent claude-code may not use credential GitHub" },
                /* Mode deny refuses whatever the sections say. */
                { 1, "github", "", "repo", NULL, -EPERM, NULL, "agent blocked is denied by policy (t.conf:12)" },
                /* The unknown caller: bounded by the credential only (the owner's consent is its gate). */
                { 2, "anything", "", "repo gist", "https://x.example", 0, "gist repo", NULL },
                { 2, "anything", "", "", NULL, 0, "", NULL },
                { 2, "anything", "admin", "", NULL, 0, "admin", NULL },
                { 2, "anything", "admin", "repo", NULL, -EPERM, "repo",
                  "scope admin is not held by credential anything (allowed: repo)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const PolicyAgent *a = cases[i].who == 0 ? agent : cases[i].who == 1 ? blocked : NULL;
                ScopeSet req = scopes(cases[i].requested), held = scopes(cases[i].held), eff = {};
                _cleanup_free_ char *why = NULL, *got = NULL;
                int r = policy_check_request(a, cases[i].credential, &req, &held, cases[i].resource, &eff, &why);
                got = joined(&eff);
                if (r != cases[i].r)
                        TEST_FAIL("case %zu: got %d (%s), want %d", i, r, why ?: "-", cases[i].r);
                if (cases[i].effective && !streq(got, cases[i].effective))
                        TEST_FAIL("case %zu: effective \"%s\", want \"%s\"", i, got, cases[i].effective);
                if (!cases[i].effective)
                        ASSERT_EQ(eff.n, 0);
                if (cases[i].why)
                        ASSERT_CONTAINS(why, cases[i].why);
                else
                        ASSERT_TRUE(why == NULL);
                /* NULL outputs and a NULL request (same as empty, when it was empty) give the same answer. */
                ASSERT_EQ(policy_check_request(a, cases[i].credential, req.n ? &req : NULL, held.n ? &held : NULL,
                                               cases[i].resource, NULL, NULL),
                          cases[i].r);
                scope_set_done(&req);
                scope_set_done(&held);
                scope_set_done(&eff);
        }
}

/* [Credential *] and Resources=*. */
TEST(wildcards) {
        _cleanup_policy_ Policy *p = parse_ok(
                /* The wildcard first, a specific section after it. */
                "[Agent]\nName=any-first\nUid=1000\nMode=allow\n"
                "[Credential *]\nScopes=read write\n"
                "[Credential github]\nScopes=repo\nResources=https://api.github.com\n"
                /* The specific section first; blanks inside the brackets are trimmed. */
                "[Agent]\nName=any-last\nUid=1001\n"
                "[Credential github]\nScopes=repo\n"
                "[Credential  * ]\nScopes=*\nResources=*\n"
                /* Resources=* in a specific section. */
                "[Agent]\nName=any-resource\nUid=1002\n"
                "[Credential github]\nScopes=*\nResources=*\n"
                /* deny wins over the wildcard too. */
                "[Agent]\nName=blocked\nUid=1003\nMode=deny\n"
                "[Credential *]\nScopes=*\nResources=*\n");
        const char *const names[] = { "any-first", "any-last", "any-resource", "blocked" };
        const PolicyAgent *agents[ELEMENTSOF(names)];
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                PeerIdentity id = peer((uid_t) (1000 + i), NULL, NULL, NULL);
                agents[i] = policy_match(p, &id);
                ASSERT_STREQ(policy_agent_name(agents[i]), names[i]);
        }

        static const struct {
                int who; /* index into names */
                const char *credential, *requested, *held, *resource;
                int r;
                const char *effective; /* on -EPERM: the allowed set, NULL when not set */
                const char *why;
        } cases[] = {
                /* A credential without a section of its own gets [Credential *]. */
                { 0, "slack", "read", "", NULL, 0, "read", NULL },
                { 0, "slack", "", "", NULL, 0, "read write", NULL },
                { 0, "slack", "", "read admin", NULL, 0, "read", NULL },
                { 0, "google.work", "write read", "", NULL, 0, "read write", NULL },
                /* The scope checks work through it, and name the allowed set and the section. */
                { 0, "slack", "read admin", "", NULL, -EPERM, "read write",
                  "scope admin is wider than allowed for agent any-first with credential slack via [Credential *] "
                  "(allowed: read write)" },
                { 0, "slack", "write", "read admin", NULL, -EPERM, "read",
                  "scope write is not held by credential slack (allowed: read)" },
                { 0, "slack", "", "admin", NULL, -EPERM, "",
                  "agent any-first may use none of the scopes credential slack holds via [Credential *] (agent may "
                  "get: read write; credential holds: admin)" },
                /* Without Resources= in [Credential *], no resource. */
                { 0, "slack", "read", "", "https://slack.com", -EPERM, NULL,
                  "resource https://slack.com is not allowed for agent any-first with credential slack via "
                  "[Credential *] (allowed: none)" },
                /* The specific section wins, though written after [Credential *]. */
                { 0, "github", "repo", "", "https://api.github.com", 0, "repo", NULL },
                { 0, "github", "", "", NULL, 0, "repo", NULL },
                { 0, "github", "read", "", NULL, -EPERM, "repo",
                  "scope read is wider than allowed for agent any-first with credential github (allowed: repo)" },
                { 0, "github", "repo", "", "https://evil.example", -EPERM, NULL,
                  "resource https://evil.example is not allowed for agent any-first with credential github "
                  "(allowed: https://api.github.com)" },
                /* ... and though written before it: Scopes=* and Resources=* of the wildcard do not leak in. */
                { 1, "github", "repo", "", NULL, 0, "repo", NULL },
                { 1, "github", "admin:org", "", NULL, -EPERM, "repo",
                  "scope admin:org is wider than allowed for agent any-last with credential github (allowed: repo)" },
                { 1, "github", "repo", "", "https://api.github.com", -EPERM, NULL,
                  "resource https://api.github.com is not allowed for agent any-last with credential github "
                  "(allowed: none)" },
                /* [Credential *] with Scopes=* and Resources=*: anything the credential holds, any resource. */
                { 1, "slack", "", "", "https://slack.com/api", 0, "", NULL },
                { 1, "slack", "chat:write", "", "http://127.0.0.1:8080/x", 0, "chat:write", NULL },
                { 1, "slack", "", "chat:write users:read", NULL, 0, "chat:write users:read", NULL },
                { 1, "slack", "admin", "chat:write", NULL, -EPERM, "chat:write",
                  "scope admin is not held by credential slack (allowed: chat:write)" },
                /* Resources=* in a specific section; the other credentials are still not allowed. */
                { 2, "github", "repo", "", "https://api.github.com", 0, "repo", NULL },
                { 2, "github", "", "", "https://anything.example/path?q=1", 0, "", NULL },
                { 2, "slack", "", "", NULL, -EPERM, NULL, "agent any-resource may not use credential slack" },
                /* Mode deny refuses whatever the wildcard says. */
                { 3, "slack", "", "", NULL, -EPERM, NULL, "agent blocked is denied by policy (t.conf:24)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const PolicyAgent *a = agents[cases[i].who];
                ScopeSet req = scopes(cases[i].requested), held = scopes(cases[i].held), eff = {};
                _cleanup_free_ char *why = NULL, *got = NULL;
                int r = policy_check_request(a, cases[i].credential, &req, &held, cases[i].resource, &eff, &why);
                got = joined(&eff);
                if (r != cases[i].r)
                        TEST_FAIL("case %zu: got %d (%s), want %d", i, r, why ?: "-", cases[i].r);
                if (cases[i].effective && !streq(got, cases[i].effective))
                        TEST_FAIL("case %zu: effective \"%s\", want \"%s\"", i, got, cases[i].effective);
                if (!cases[i].effective)
                        ASSERT_EQ(eff.n, 0);
                if (cases[i].why)
                        ASSERT_CONTAINS(why, cases[i].why);
                else
                        ASSERT_TRUE(why == NULL);
                ASSERT_EQ(policy_check_request(a, cases[i].credential, req.n ? &req : NULL, held.n ? &held : NULL,
                                               cases[i].resource, NULL, NULL),
                          cases[i].r);
                scope_set_done(&req);
                scope_set_done(&held);
                scope_set_done(&eff);
        }

        /* A NULL credential is never covered by the wildcard. */
        _cleanup_free_ char *why = NULL;
        ASSERT_EQ(policy_check_request(agents[1], NULL, NULL, NULL, NULL, NULL, &why), -EPERM);
        ASSERT_CONTAINS(why, "agent any-last may not use credential ");

        /* WhoAmI shows the wildcards as written, in file order. */
        static const char *const want[] = {
                "{\"mode\":\"allow\",\"consent_duration\":28800,\"name\":\"any-first\",\"file\":\"t.conf\","
                "\"line\":1,\"uid\":1000,\"credentials\":["
                "{\"name\":\"*\",\"scopes\":[\"read\",\"write\"],\"resources\":[]},"
                "{\"name\":\"github\",\"scopes\":[\"repo\"],\"resources\":[\"https://api.github.com\"]}]}",
                "{\"mode\":\"ask\",\"consent_duration\":28800,\"name\":\"any-last\",\"file\":\"t.conf\","
                "\"line\":10,\"uid\":1001,\"credentials\":["
                "{\"name\":\"github\",\"scopes\":[\"repo\"],\"resources\":[]},"
                "{\"name\":\"*\",\"scopes\":[\"*\"],\"resources\":[\"*\"]}]}",
                "{\"mode\":\"ask\",\"consent_duration\":28800,\"name\":\"any-resource\",\"file\":\"t.conf\","
                "\"line\":18,\"uid\":1002,\"credentials\":["
                "{\"name\":\"github\",\"scopes\":[\"*\"],\"resources\":[\"*\"]}]}",
        };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                json_object *j = policy_agent_to_json(agents[i]);
                ASSERT_TRUE(j);
                ASSERT_STREQ(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                             want[i]);
                json_object_put(j);
        }

        /* [Credential *] counts against the 64 sections of an agent. */
        _cleanup_policy_ Policy *q = policy_new_default();
        _cleanup_free_ char *text = NULL, *err = NULL;
        size_t size = 8 * 1024, n = 0;
        ASSERT_TRUE((text = malloc(size)));
        n = (size_t) snprintf(text, size, "[Agent]\nName=a\nUid=1\n[Credential *]\nScopes=x\n");
        for (unsigned i = 1; i < POLICY_CREDENTIALS_MAX; i++)
                n += (size_t) snprintf(text + n, size - n, "[Credential c%u]\nScopes=x\n", i);
        ASSERT_OK(policy_parse_file(q, "w.conf", text, n, &err));
        text[13] = 'b'; /* Name=b */
        n += (size_t) snprintf(text + n, size - n, "[Credential last]\nScopes=x\n");
        ASSERT_EQ(policy_parse_file(q, "w.conf", text, n, &err), -E2BIG);
        ASSERT_STREQ(err, "w.conf:132: more than 64 [Credential] sections in one agent");
}

/* ---- directories ---- */

static char *make_dir(void) {
        char *d = strdup("/tmp/test-policy-XXXXXX");
        ASSERT_TRUE(d && mkdtemp(d));
        return d;
}

static void write_file(const char *dir, const char *name, const char *text, mode_t mode) {
        _cleanup_free_ char *path = NULL;
        ASSERT_TRUE(asprintf(&path, "%s/%s", dir, name) > 0);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        ASSERT_OK(fchmod(fd, mode));
        close(fd);
}

static void remove_dir(const char *dir) {
        _cleanup_free_ char *cmd = NULL;
        ASSERT_TRUE(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
        ASSERT_EQ(system(cmd), 0);
}

TEST(load_dir) {
        _cleanup_free_ char *dir = make_dir(), *err = NULL, *sub = NULL;
        Policy *p = NULL;

        /* Missing: the default policy. */
        ASSERT_TRUE(asprintf(&sub, "%s/policy.d", dir) > 0);
        ASSERT_OK(policy_load_dir(sub, &p, &err));
        ASSERT_TRUE(p && policy_n_agents(p) == 0 && !policy_is_failsafe(p));
        p = policy_free(p);

        /* Empty. */
        ASSERT_OK(mkdir(sub, 0755));
        ASSERT_OK(policy_load_dir(sub, &p, &err));
        ASSERT_EQ(policy_n_agents(p), 0);
        p = policy_free(p);

        /* Lexical (byte) order, *.conf only, no hidden files. */
        write_file(sub, "b.conf", "[Agent]\nName=b\nUid=1\n", 0644);
        write_file(sub, "a.conf", "[Agent]\nName=a\nUid=1\n[Agent]\nName=a2\nUid=2\n", 0600);
        write_file(sub, "B.conf", "[Agent]\nName=B\nUid=1\n", 0644);
        write_file(sub, "10-z.conf", "[Agent]\nName=z\nUid=3\n", 0644);
        write_file(sub, "notes.txt", "not a policy", 0644);
        write_file(sub, "c.conf~", "not a policy", 0644);
        write_file(sub, ".hidden.conf", "not a policy", 0644);
        write_file(sub, ".conf", "not a policy", 0644);
        ASSERT_OK(policy_load_dir(sub, &p, &err));
        ASSERT_EQ(policy_n_agents(p), 5);
        PeerIdentity one = peer(1, NULL, NULL, NULL), two = peer(2, NULL, NULL, NULL),
                     three = peer(3, NULL, NULL, NULL);
        /* "10-z" < "B" < "a" < "b": uid 1 matches B first. */
        ASSERT_STREQ(policy_agent_name(policy_match(p, &one)), "B");
        ASSERT_STREQ(policy_agent_name(policy_match(p, &two)), "a2");
        const PolicyAgent *z = policy_match(p, &three);
        ASSERT_STREQ(policy_agent_name(z), "z");
        _cleanup_free_ char *zpath = NULL;
        ASSERT_TRUE(asprintf(&zpath, "%s/10-z.conf", sub) > 0);
        ASSERT_STREQ(policy_agent_file(z), zpath);
        p = policy_free(p);

        /* A trailing slash in the directory does not double in the path. */
        _cleanup_free_ char *slash = NULL;
        ASSERT_TRUE(asprintf(&slash, "%s//", sub) > 0);
        ASSERT_OK(policy_load_dir(slash, &p, &err));
        ASSERT_STREQ(policy_agent_file(policy_match(p, &three)), zpath);
        p = policy_free(p);

        /* One broken file: no policy at all, and the error names it. */
        write_file(sub, "c.conf", "[Agent]\nName=c\nUid=1\nMode=maybe\n", 0644);
        p = (Policy *) 0x1; /* must stay untouched */
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EINVAL);
        ASSERT_TRUE(p == (Policy *) 0x1);
        _cleanup_free_ char *want = NULL;
        ASSERT_TRUE(asprintf(&want, "%s/c.conf:4: Mode: \"maybe\" is not a mode", sub) > 0);
        ASSERT_CONTAINS(err, want);
        err = mfree(err);

        /* A name used in an earlier file. */
        write_file(sub, "c.conf", "[Agent]\nName=a2\nUid=1\n", 0644);
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EINVAL);
        want = mfree(want);
        ASSERT_TRUE(asprintf(&want, "%s/c.conf:2: Name: \"a2\" is already the name of the agent at %s/a.conf:4", sub,
                             sub) > 0);
        ASSERT_STREQ(err, want);
        err = mfree(err);

        /* Files others may write are refused. */
        write_file(sub, "c.conf", "[Agent]\nName=c\nUid=1\n", 0664);
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EPERM);
        ASSERT_CONTAINS(err, "/c.conf: writable by group or others");
        err = mfree(err);
        write_file(sub, "c.conf", "[Agent]\nName=c\nUid=1\n", 0646);
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EPERM);
        err = mfree(err);
        write_file(sub, "c.conf", "[Agent]\nName=c\nUid=1\n", 0644);
        ASSERT_OK(policy_load_dir(sub, &p, &err));
        p = policy_free(p);
        ASSERT_OK(chmod(sub, 0777));
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EPERM);
        ASSERT_CONTAINS(err, "/policy.d: writable by group or others");
        err = mfree(err);
        ASSERT_OK(chmod(sub, 0700));

        /* Not a regular file: a directory, a FIFO (must not hang), a dangling link. */
        _cleanup_free_ char *other = NULL;
        ASSERT_TRUE(asprintf(&other, "%s/d.conf", sub) > 0);
        ASSERT_OK(mkdir(other, 0700));
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EINVAL);
        ASSERT_CONTAINS(err, "/d.conf: not a regular file");
        err = mfree(err);
        ASSERT_OK(rmdir(other));
        ASSERT_OK(mkfifo(other, 0600));
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EINVAL);
        ASSERT_CONTAINS(err, "/d.conf: not a regular file");
        err = mfree(err);
        ASSERT_OK(unlink(other));
        ASSERT_OK(symlink("/nonexistent/x.conf", other));
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -ENOENT);
        ASSERT_CONTAINS(err, "/d.conf: cannot open: ");
        err = mfree(err);
        ASSERT_OK(unlink(other));
        /* A link to a good file is followed. */
        ASSERT_OK(symlink("b.conf", other));
        write_file(sub, "b.conf", "[Agent]\nName=b\nUid=1\n", 0644);
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EINVAL); /* b is defined twice now */
        ASSERT_CONTAINS(err, "/d.conf:2: Name: \"b\" is already the name of the agent at ");
        err = mfree(err);
        ASSERT_OK(unlink(other));

        /* Too big on disk. */
        char *big = malloc(POLICY_FILE_MAX + 2);
        ASSERT_TRUE(big);
        memset(big, '\n', POLICY_FILE_MAX + 1);
        big[POLICY_FILE_MAX + 1] = 0;
        write_file(sub, "e.conf", big, 0644);
        ASSERT_EQ(policy_load_dir(sub, &p, &err), -EFBIG);
        ASSERT_CONTAINS(err, "/e.conf: larger than 65536 bytes");
        err = mfree(err);
        big[POLICY_FILE_MAX] = 0;
        write_file(sub, "e.conf", big, 0644);
        free(big);
        ASSERT_OK(policy_load_dir(sub, &p, &err));
        p = policy_free(p);

        /* Not a directory. */
        _cleanup_free_ char *file = NULL;
        ASSERT_TRUE(asprintf(&file, "%s/b.conf", sub) > 0);
        ASSERT_EQ(policy_load_dir(file, &p, &err), -ENOTDIR);
        ASSERT_CONTAINS(err, "/b.conf: cannot open the directory: ");
        err = mfree(err);

        /* Too many files. */
        _cleanup_free_ char *many = NULL;
        ASSERT_TRUE(asprintf(&many, "%s/many", dir) > 0);
        ASSERT_OK(mkdir(many, 0700));
        for (unsigned i = 0; i <= POLICY_FILES_MAX; i++) {
                char name[32];
                snprintf(name, sizeof name, "%03u.conf", i);
                write_file(many, name, "", 0600);
        }
        ASSERT_EQ(policy_load_dir(many, &p, &err), -E2BIG);
        ASSERT_CONTAINS(err, "/many: more than 256 .conf files");
        err = mfree(err);
        _cleanup_free_ char *first = NULL;
        ASSERT_TRUE(asprintf(&first, "%s/000.conf", many) > 0);
        ASSERT_OK(unlink(first));
        ASSERT_OK(policy_load_dir(many, &p, &err));
        p = policy_free(p);

        remove_dir(dir);
}

int main(void) {
        RUN(mode_strings);
        RUN(every_key);
        RUN(defaults_and_syntax);
        RUN(durations);
        RUN(parse_errors);
        RUN(bytes_and_limits);
        RUN(count_limits);
        RUN(names_unique_across_files);
        RUN(selectors);
        RUN(glob_edges);
        RUN(precedence);
        RUN(manager_rule);
        RUN(check_request);
        RUN(wildcards);
        RUN(load_dir);
        return 0;
}
