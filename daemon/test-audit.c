/* SPDX-License-Identifier: MIT */
/* daemon/test-audit.c: the fallback file's records, written without json-c,
 * must parse back (with json-c) to exactly the values given, whatever bytes
 * those hold; and a record never carries the token itself. */
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "audit.h"
#include "common/fileio.h"
#include "common/test.h"
#include "common/util.h"
#include "manager.h"
#include "peer.h"
#include "scopes.h"

static char state_dir[] = "/tmp/test-audit.XXXXXX";

/* The last line of the fallback file, parsed. */
static json_object *last_record(void) {
        char path[128];
        _cleanup_free_ char *text = NULL;
        snprintf(path, sizeof path, "%s/%s", state_dir, AUDIT_FILE);
        ASSERT_OK(read_file_full(path, 16 * 1024 * 1024, &text, NULL));
        size_t len = strlen(text);
        ASSERT_TRUE(len > 0 && text[len - 1] == '\n');
        text[len - 1] = 0;
        char *line = strrchr(text, '\n');
        line = line ? line + 1 : text;
        json_tokener *tok = json_tokener_new();
        ASSERT_TRUE(tok);
        json_object *o = json_tokener_parse_ex(tok, line, (int) strlen(line));
        if (!o || json_tokener_get_parse_end(tok) != strlen(line))
                TEST_FAIL("not one JSON object: %s", line);
        json_tokener_free(tok);
        return o;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v))
                return NULL;
        ASSERT_TRUE(json_object_is_type(v, json_type_string));
        return json_object_get_string(v);
}

static int64_t get_int(json_object *o, const char *key) {
        json_object *v;
        ASSERT_TRUE(json_object_object_get_ex(o, key, &v));
        ASSERT_TRUE(json_object_is_type(v, json_type_int));
        return json_object_get_int64(v);
}

static Manager m;

TEST(plain_fields) {
        const char *token = "an-access-token-value";
        char fp[13];
        ASSERT_OK(audit_fingerprint(token, fp));
        char *items[] = { "read", "write" };
        ScopeSet scopes = { .items = items, .n = 2 };
        PeerIdentity agent = { .uid = 1234, .gid = 5, .pid = 4242, .pidfd = -1, .exe = "/usr/bin/agent",
                               .unit = "agent.service" };

        audit_log(&m, &(AuditRecord) { .event = AUDIT_ISSUE, .credential = "github", .scopes = &scopes,
                                       .resource = "https://api.example", .agent = &agent, .agent_name = "coder",
                                       .token = token, .grant = "g-1" });
        _cleanup_(json_object_putp) json_object *o = last_record();
        ASSERT_STREQ(get_str(o, "message_id"), AUDIT_MESSAGE_ID);
        ASSERT_EQ(get_int(o, "priority"), 6);
        ASSERT_TRUE(get_int(o, "timestamp") > 1600000000LL * 1000000);
        ASSERT_STREQ(get_str(o, "event"), "issue");
        ASSERT_STREQ(get_str(o, "credential"), "github");
        ASSERT_STREQ(get_str(o, "scopes"), "read write");
        ASSERT_STREQ(get_str(o, "resource"), "https://api.example");
        ASSERT_STREQ(get_str(o, "grant"), "g-1");
        ASSERT_STREQ(get_str(o, "token_fp"), fp);
        ASSERT_STREQ(get_str(o, "agent_name"), "coder");
        ASSERT_STREQ(get_str(o, "agent_exe"), "/usr/bin/agent");
        ASSERT_STREQ(get_str(o, "agent_unit"), "agent.service");
        ASSERT_EQ(get_int(o, "agent_uid"), 1234);
        ASSERT_EQ(get_int(o, "agent_pid"), 4242);
        ASSERT_EQ(get_int(o, "owner_uid"), 1000);
        char want[256];
        snprintf(want, sizeof want, "tokend issue: credential github, agent /usr/bin/agent, token %s", fp);
        ASSERT_STREQ(get_str(o, "message"), want);
        ASSERT_TRUE(!strstr(json_object_to_json_string(o), token));
}

/* A fingerprint given by the caller is used as it is; with none and no
 * token, there is no token_fp field. */
TEST(fingerprint_given) {
        audit_log(&m, &(AuditRecord) { .event = AUDIT_ISSUE, .credential = "c", .token_fp = "0123456789ab",
                                       .scope_string = "a b" });
        _cleanup_(json_object_putp) json_object *o = last_record();
        ASSERT_STREQ(get_str(o, "token_fp"), "0123456789ab");
        ASSERT_STREQ(get_str(o, "scopes"), "a b");
        ASSERT_STREQ(get_str(o, "message"), "tokend issue: credential c, token 0123456789ab");

        audit_log(&m, &(AuditRecord) { .event = AUDIT_DENY, .credential = "c", .reason = "io.tokend.agent.X" });
        _cleanup_(json_object_putp) json_object *d = last_record();
        ASSERT_TRUE(!get_str(d, "token_fp"));
        ASSERT_TRUE(!get_str(d, "scopes"));
        ASSERT_TRUE(!get_str(d, "agent_exe"));
        ASSERT_EQ(get_int(d, "priority"), 5);
        ASSERT_STREQ(get_str(d, "reason"), "io.tokend.agent.X");
}

/* Every byte from 1 to 255 in a caller-controlled value (an executable's
 * path may hold any of them but NUL and '/') comes back as it went in. */
TEST(every_byte) {
        char exe[512], *p = exe;
        *p++ = '/';
        for (int ch = 1; ch < 256; ch++)
                if (ch != '/')
                        *p++ = (char) ch;
        *p = 0;
        PeerIdentity agent = { .uid = 1, .pid = 2, .pidfd = -1, .exe = exe };
        const char *nasty = "a\"b\\c\nd\te\rf\x01g\x1fh\x7fi/j\xc3\xa9k";

        audit_log(&m, &(AuditRecord) { .event = AUDIT_DENY, .credential = nasty, .agent = &agent,
                                       .agent_name = nasty, .reason = nasty, .resource = nasty });
        _cleanup_(json_object_putp) json_object *o = last_record();
        ASSERT_STREQ(get_str(o, "agent_exe"), exe);
        ASSERT_STREQ(get_str(o, "credential"), nasty);
        ASSERT_STREQ(get_str(o, "agent_name"), nasty);
        ASSERT_STREQ(get_str(o, "reason"), nasty);
        ASSERT_STREQ(get_str(o, "resource"), nasty);
        char want[1024];
        snprintf(want, sizeof want, "tokend deny: credential %s, agent %s: %s", nasty, exe, nasty);
        ASSERT_STREQ(get_str(o, "message"), want);
}

/* A record far larger than the kept buffer, then a small one: both whole. */
TEST(large_then_small) {
        size_t n = 200 * 1024;
        _cleanup_free_ char *big = malloc(n + 1);
        ASSERT_TRUE(big);
        for (size_t i = 0; i < n; i++)
                big[i] = (char) ('a' + i % 26);
        big[n] = 0;
        audit_log(&m, &(AuditRecord) { .event = AUDIT_DENY, .credential = "c", .reason = big });
        _cleanup_(json_object_putp) json_object *o = last_record();
        ASSERT_STREQ(get_str(o, "reason"), big);

        audit_log(&m, &(AuditRecord) { .event = AUDIT_REVOKE, .credential = "small" });
        _cleanup_(json_object_putp) json_object *s = last_record();
        ASSERT_STREQ(get_str(s, "credential"), "small");
        ASSERT_STREQ(get_str(s, "event"), "revoke");
}

int main(void) {
        ASSERT_TRUE(mkdtemp(state_dir));
        ASSERT_OK(setenv(AUDIT_JOURNAL_ENV, "0", 1));
        ASSERT_OK(audit_new(1000, state_dir, &m.audit));

        RUN(plain_fields);
        RUN(fingerprint_given);
        RUN(every_byte);
        RUN(large_then_small);

        m.audit = audit_free(m.audit);
        char path[128];
        snprintf(path, sizeof path, "%s/%s", state_dir, AUDIT_FILE);
        /* The file may have been made append-only (as root): lift it to remove it. */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                int flags = 0;
                if (ioctl(fd, FS_IOC_GETFLAGS, &flags) >= 0 && (flags & FS_APPEND_FL)) {
                        flags &= ~FS_APPEND_FL;
                        (void) ioctl(fd, FS_IOC_SETFLAGS, &flags);
                }
                close(fd);
        }
        ASSERT_OK(unlink(path));
        ASSERT_OK(rmdir(state_dir));
        return 0;
}
