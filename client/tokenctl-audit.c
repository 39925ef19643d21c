/* SPDX-License-Identifier: MIT */
/* client/tokenctl-audit.c: see tokenctl-audit.h. Records come from the
 * journal (MESSAGE_ID and SYSLOG_IDENTIFIER of tokend, TOKEND_* fields) and
 * from STATE_DIR/audit.log (one JSON object per line, the same fields
 * lowercased without the TOKEND_ prefix); both are printed the same way,
 * ordered by time. The journal is read by journalctl(1) (-o json), which
 * tokenctl runs for this command only: tokenctl links no libsystemd, so that
 * every other verb (above all "tokenctl token", run once per tool call of an
 * agent) starts without loading it, and tokenctl can be linked statically. */
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <getopt.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/util.h"
#include "tokenctl-audit.h"
#include "varlink.h"

extern char **environ;

/* Must match daemon/audit.h. */
#define AUDIT_MESSAGE_ID "dd14e6fa7b894fa2b29fa19eca600e32"
#define AUDIT_FILE "audit.log"
#define AUDIT_LINE_MAX (64U * 1024U)

/* The TOKEND_* fields of the journal, and their names in the output (and
 * in the fallback file): lowercased, without the prefix. */
static const struct {
        const char *journal, *name;
} audit_fields[] = {
        { "TOKEND_EVENT", "event" },           { "TOKEND_CREDENTIAL", "credential" },
        { "TOKEND_SCOPES", "scopes" },         { "TOKEND_RESOURCE", "resource" },
        { "TOKEND_GRANT", "grant" },           { "TOKEND_OWNER_UID", "owner_uid" },
        { "TOKEND_OWNER_USER", "owner_user" }, { "TOKEND_AGENT_UID", "agent_uid" },
        { "TOKEND_AGENT_PID", "agent_pid" },   { "TOKEND_AGENT_EXE", "agent_exe" },
        { "TOKEND_AGENT_UNIT", "agent_unit" }, { "TOKEND_AGENT_NAME", "agent_name" },
        { "TOKEND_TOKEN_FP", "token_fp" },     { "TOKEND_REASON", "reason" },
        { "TOKEND_COUNT", "count" },           { "TOKEND_SINCE", "since" },
};

static bool field_numeric(const char *lower) {
        return streq(lower, "owner_uid") || streq(lower, "agent_uid") || streq(lower, "agent_pid") ||
               streq(lower, "count") || streq(lower, "since");
}

typedef struct Filter {
        uint64_t since; /* realtime usec, 0: all */
        const char *credential;
        const char *agent;
} Filter;

static const char *obj_str(json_object *o, const char *k) {
        json_object *v;
        return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                               : NULL;
}

static int64_t obj_int(json_object *o, const char *k, int64_t def) {
        json_object *v;
        return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int) ? json_object_get_int64(v)
                                                                                            : def;
}

static bool filter_match(const Filter *f, json_object *o) {
        if (f->since > 0 && (uint64_t) obj_int(o, "timestamp", 0) < f->since)
                return false;
        if (f->credential && !streq_ptr(obj_str(o, "credential"), f->credential))
                return false;
        if (f->agent) {
                const char *exe = obj_str(o, "agent_exe"), *unit = obj_str(o, "agent_unit"),
                           *name = obj_str(o, "agent_name");
                if (!(exe && fnmatch(f->agent, exe, 0) == 0) && !(unit && fnmatch(f->agent, unit, 0) == 0) &&
                    !(name && fnmatch(f->agent, name, 0) == 0))
                        return false;
        }
        return true;
}

/* Appends record o (owned) to out if it passes the filter; drops it otherwise. */
static void keep_if_match(const Filter *f, json_object *o, json_object *out) {
        if (filter_match(f, o))
                json_object_array_add(out, o);
        else
                json_object_put(o);
}

static void record_add(json_object *o, const char *lower, const char *value, size_t len) {
        if (field_numeric(lower)) {
                char buf[32];
                snprintf(buf, sizeof buf, "%.*s", (int) (len < sizeof buf - 1 ? len : sizeof buf - 1), value);
                json_object_object_add(o, lower, json_object_new_int64(strtoll(buf, NULL, 10)));
        } else
                json_object_object_add(o, lower, json_object_new_string_len(value, (int) len));
}

/* Weak: see tokenctl-audit.h. */
__attribute__((weak)) const char *tokenctl_audit_journalctl(void) {
        return JOURNALCTL;
}

/* A field's value as journalctl -o json gives it: a string; an array of
 * byte values (not valid UTF-8, or binary); or, for a field set more than
 * once, an array of those, of which the first counts. *ret_len bytes, not
 * NUL-terminated; for bytes, the caller's buffer holds them. */
static const char *journal_value(json_object *v, char *buf, size_t size, size_t *ret_len) {
        if (json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0) {
                json_object *first = json_object_array_get_idx(v, 0);
                if (!json_object_is_type(first, json_type_int))
                        return journal_value(first, buf, size, ret_len);
                size_t n = json_object_array_length(v);
                if (n > size)
                        return NULL;
                for (size_t i = 0; i < n; i++) {
                        int64_t c = json_object_get_int64(json_object_array_get_idx(v, i));
                        if (c < 0 || c > 255)
                                return NULL;
                        buf[i] = (char) c;
                }
                *ret_len = n;
                return buf;
        }
        if (!json_object_is_type(v, json_type_string))
                return NULL;
        *ret_len = (size_t) json_object_get_string_len(v);
        return json_object_get_string(v);
}

/* One line of journalctl -o json as a record; NULL if it is not one. */
static json_object *journal_record(const char *line) {
        _cleanup_(json_object_putp) json_object *e = json_tokener_parse(line);
        json_object *v, *o;
        static char buf[AUDIT_LINE_MAX];
        const char *val;
        size_t len;

        if (!e || !json_object_is_type(e, json_type_object) ||
            !json_object_object_get_ex(e, "__REALTIME_TIMESTAMP", &v) ||
            !(val = journal_value(v, buf, sizeof buf - 1, &len)))
                return NULL;
        char ts[24];
        snprintf(ts, sizeof ts, "%.*s", (int) (len < sizeof ts - 1 ? len : sizeof ts - 1), val);
        if (!(o = json_object_new_object()))
                return NULL;
        json_object_object_add(o, "timestamp", json_object_new_int64(strtoll(ts, NULL, 10)));
        json_object_object_add(o, "source", json_object_new_string("journal"));
        if (json_object_object_get_ex(e, "MESSAGE", &v) && (val = journal_value(v, buf, sizeof buf, &len)))
                json_object_object_add(o, "message", json_object_new_string_len(val, (int) len));
        for (size_t i = 0; i < ELEMENTSOF(audit_fields); i++)
                if (json_object_object_get_ex(e, audit_fields[i].journal, &v) &&
                    (val = journal_value(v, buf, sizeof buf, &len)))
                        record_add(o, audit_fields[i].name, val, len);
        return o;
}

/* Appends the matching journal records to `out`, as journalctl -o json
 * prints them (its matches: fields of one name OR, of different names
 * AND, as sd_journal_add_match()). -errno when journalctl cannot be run or
 * fails; it says why on stderr itself. 0 without a journal (see
 * tokenctl_audit_journalctl()). */
static int read_journal(const Filter *f, json_object *out) {
        const char *journalctl = tokenctl_audit_journalctl();
        if (!journalctl)
                return 0;

        char since[48], owner[48], fields[512] = "--output-fields=MESSAGE";
        _cleanup_free_ char *credential = NULL;
        const char *argv[16];
        size_t n = 0;
        for (size_t i = 0; i < ELEMENTSOF(audit_fields); i++) {
                size_t l = strlen(fields);
                snprintf(fields + l, sizeof fields - l, ",%s", audit_fields[i].journal);
        }
        argv[n++] = journalctl;
        argv[n++] = "--no-pager";
        argv[n++] = "--quiet";
        argv[n++] = "--output=json";
        argv[n++] = fields;
        if (f->since > 0) {
                /* Whole seconds: filter_match() applies the exact time. */
                snprintf(since, sizeof since, "--since=@%" PRIu64, f->since / USEC_PER_SEC);
                argv[n++] = since;
        }
        argv[n++] = "MESSAGE_ID=" AUDIT_MESSAGE_ID;
        argv[n++] = "SYSLOG_IDENTIFIER=tokend";
        if (f->credential) {
                if (asprintf(&credential, "TOKEND_CREDENTIAL=%s", f->credential) < 0)
                        return -ENOMEM;
                argv[n++] = credential;
        }
        /* The owner's trail: records of tokends serving this uid. */
        if (getuid() != 0) {
                snprintf(owner, sizeof owner, "TOKEND_OWNER_UID=%u", (unsigned) getuid());
                argv[n++] = owner;
        }
        argv[n] = NULL;

        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int r = posix_spawn_file_actions_init(&fa);
        if (r == 0) {
                if ((r = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0)) == 0 &&
                    (r = posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO)) == 0)
                        r = posix_spawnp(&pid, journalctl, &fa, NULL, (char *const *) argv, environ);
                posix_spawn_file_actions_destroy(&fa);
        }
        close(p[1]);
        if (r != 0) {
                close(p[0]);
                fprintf(stderr, "tokenctl audit: cannot run %s: %s.\n", journalctl, strerror(r));
                return -r;
        }

        FILE *fp = fdopen(p[0], "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        ssize_t len;
        r = 0;
        if (!fp) {
                r = -errno;
                close(p[0]);
        } else {
                while ((len = getline(&line, &size, fp)) >= 0) {
                        if ((size_t) len > AUDIT_LINE_MAX)
                                continue;
                        json_object *o = journal_record(line);
                        if (o)
                                keep_if_match(f, o, out);
                }
                fclose(fp);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return r < 0 ? r : -errno;
        if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                r = -EIO;
        return r;
}

static int audit_file_path(const char *state_dir, char **ret) {
        if (state_dir)
                return asprintf(ret, "%s/%s", state_dir, AUDIT_FILE) < 0 ? -ENOMEM : 0;
        const char *e = getenv("XDG_STATE_HOME");
        if (e && e[0] == '/')
                return asprintf(ret, "%s/tokend/%s", e, AUDIT_FILE) < 0 ? -ENOMEM : 0;
        const char *home = getenv("HOME");
        if (!home || home[0] != '/')
                return -ENXIO;
        return asprintf(ret, "%s/.local/state/tokend/%s", home, AUDIT_FILE) < 0 ? -ENOMEM : 0;
}

/* Appends the matching records of the fallback file. 0 when it does not exist. */
static int read_file(const char *path, const Filter *f, json_object *out) {
        FILE *fp = fopen(path, "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        ssize_t n;
        unsigned lineno = 0;

        if (!fp)
                return errno == ENOENT ? 0 : -errno;
        while ((n = getline(&line, &size, fp)) >= 0) {
                lineno++;
                if (n == 0 || line[0] == '\n')
                        continue;
                json_object *o = (size_t) n <= AUDIT_LINE_MAX ? json_tokener_parse(line) : NULL;
                if (!o || !json_object_is_type(o, json_type_object) ||
                    !streq_ptr(obj_str(o, "message_id"), AUDIT_MESSAGE_ID)) {
                        fprintf(stderr, "tokenctl audit: %s:%u: not an audit record, skipping.\n", path, lineno);
                        json_object_put(o);
                        continue;
                }
                json_object_object_del(o, "message_id");
                json_object_object_del(o, "priority");
                json_object_object_add(o, "source", json_object_new_string("file"));
                keep_if_match(f, o, out);
        }
        fclose(fp);
        return 0;
}

/* "@EPOCH", "N[smhd]" or "-N[smhd]" (ago), "YYYY-MM-DD[ HH:MM[:SS]]" (local time). */
static int parse_since(const char *s, uint64_t *ret) {
        char *end;
        if (s[0] == '@') {
                errno = 0;
                long long v = strtoll(s + 1, &end, 10);
                if (errno || *end || end == s + 1 || v < 0)
                        return -EINVAL;
                *ret = (uint64_t) v * USEC_PER_SEC;
                return 0;
        }
        const char *num = s[0] == '-' ? s + 1 : s;
        if (num[0] >= '0' && num[0] <= '9' && !strchr(num, ':') && !strchr(num + 1, '-')) {
                errno = 0;
                unsigned long long v = strtoull(num, &end, 10);
                uint64_t unit = streq(end, "s") || streq(end, "") ? 1 : streq(end, "m") || streq(end, "min") ? 60
                              : streq(end, "h") ? 3600 : streq(end, "d") ? 86400 : 0;
                if (errno || !unit || v > UINT32_MAX)
                        return -EINVAL;
                uint64_t now = now_realtime_usec(), d = (uint64_t) v * unit * USEC_PER_SEC;
                *ret = d < now ? now - d : 1;
                return 0;
        }
        static const char *const formats[] = { "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                                                "%Y-%m-%d" };
        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                struct tm tm = { .tm_isdst = -1 };
                end = strptime(s, formats[i], &tm);
                if (!end || *end)
                        continue;
                time_t t = mktime(&tm);
                if (t < 0)
                        return -EINVAL;
                *ret = (uint64_t) t * USEC_PER_SEC;
                return 0;
        }
        return -EINVAL;
}

static int by_time(const void *a, const void *b) {
        int64_t x = obj_int(*(json_object *const *) a, "timestamp", 0);
        int64_t y = obj_int(*(json_object *const *) b, "timestamp", 0);
        return x < y ? -1 : x > y;
}

static void print_table_row(json_object *o) {
        char when[32] = "-", agent[96] = "-", scopes[48];
        int64_t ts = obj_int(o, "timestamp", 0);
        time_t t = (time_t) (ts / (int64_t) USEC_PER_SEC);
        struct tm tm;
        if (ts > 0 && localtime_r(&t, &tm))
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        const char *exe = obj_str(o, "agent_exe"), *unit = obj_str(o, "agent_unit"),
                   *name = obj_str(o, "agent_name");
        int64_t pid = obj_int(o, "agent_pid", -1);
        if (pid >= 0) {
                const char *who = name ?: unit ?: exe ?: "?";
                const char *slash = name || unit ? NULL : strrchr(who, '/');
                snprintf(agent, sizeof agent, "%s[%" PRId64 "]", slash ? slash + 1 : who, pid);
        }
        snprintf(scopes, sizeof scopes, "%s", obj_str(o, "scopes") ?: "-");
        /* A count of repeated issues (see the README's Audit section). */
        char again[64] = "";
        int64_t count = obj_int(o, "count", 0), since = obj_int(o, "since", 0);
        if (count > 0) {
                char from[16] = "?";
                time_t st = (time_t) (since / (int64_t) USEC_PER_SEC);
                if (since > 0 && localtime_r(&st, &tm))
                        strftime(from, sizeof from, "%H:%M:%S", &tm);
                snprintf(again, sizeof again, "%" PRId64 " time%s again since %s", count, count == 1 ? "" : "s", from);
        }
        printf("%-19s  %-13s  %-16s  %-24s  %-12s  %-24s  %s\n", when, strna(obj_str(o, "event")),
               strna(obj_str(o, "credential")), agent, obj_str(o, "token_fp") ?: "-", scopes,
               obj_str(o, "reason") ?: again);
}

int tokenctl_audit(int argc, char *argv[], bool json) {
        enum { ARG_SINCE = 0x100, ARG_CREDENTIAL, ARG_AGENT, ARG_JSON, ARG_STATE_DIR };
        static const struct option options[] = {
                { "since", required_argument, NULL, ARG_SINCE },
                { "credential", required_argument, NULL, ARG_CREDENTIAL },
                { "agent", required_argument, NULL, ARG_AGENT },
                { "json", no_argument, NULL, ARG_JSON },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                {},
        };
        _cleanup_(json_object_putp) json_object *records = json_object_new_array();
        _cleanup_free_ char *path = NULL;
        const char *state_dir = NULL;
        Filter f = {};
        int c, r;

        if (!records)
                return 1;
        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_SINCE:
                        if (parse_since(optarg, &f.since) < 0) {
                                fprintf(stderr, "tokenctl audit: cannot parse --since '%s' (use @EPOCH, 10m, 2h, 1d, "
                                                "or YYYY-MM-DD [HH:MM[:SS]]).\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_CREDENTIAL:
                        f.credential = optarg;
                        break;
                case ARG_AGENT:
                        f.agent = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_STATE_DIR:
                        state_dir = optarg;
                        break;
                default:
                        return 2;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "tokenctl audit: unexpected argument '%s'.\n", argv[optind]);
                return 2;
        }

        int rj = read_journal(&f, records);
        if (rj == -EIO)
                fprintf(stderr, "tokenctl audit: journalctl failed (see above), so the journal was not read.\n");
        else if (rj < 0)
                fprintf(stderr, "tokenctl audit: cannot read the journal: %s.\n", strerror(-rj));
        int rf = audit_file_path(state_dir, &path);
        if (rf >= 0)
                rf = read_file(path, &f, records);
        if (rf < 0)
                fprintf(stderr, "tokenctl audit: cannot read %s: %s.\n", strna(path), strerror(-rf));
        if (rj < 0 && rf < 0)
                return 1;

        json_object_array_sort(records, by_time);
        size_t n = json_object_array_length(records);
        if (!json && n > 0)
                printf("%-19s  %-13s  %-16s  %-24s  %-12s  %-24s  %s\n", "TIME", "EVENT", "CREDENTIAL", "AGENT",
                       "TOKEN", "SCOPES", "REASON");
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_array_get_idx(records, i);
                if (json)
                        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                else
                        print_table_row(o);
        }
        r = fflush(stdout) == 0 ? 0 : 1;
        return r;
}
