/* SPDX-License-Identifier: MIT */
/* client/tokenctl-audit.c: see tokenctl-audit.h. Records come from the
 * journal (MESSAGE_ID and SYSLOG_IDENTIFIER of tokend, TOKEND_* fields) and
 * from STATE_DIR/audit.log (one JSON object per line, the same fields
 * lowercased without the TOKEND_ prefix); both are printed the same way,
 * ordered by time. libsystemd is loaded here, for the journal, and nowhere
 * else: tokenctl does not link it, so that every other verb (above all
 * "tokenctl token", run once per tool call of an agent) starts without
 * loading it and the half dozen libraries it pulls in. */
#include <dlfcn.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-journal.h>

#include "common/util.h"
#include "tokenctl-audit.h"
#include "varlink.h"

/* Must match daemon/audit.h. */
#define AUDIT_MESSAGE_ID "dd14e6fa7b894fa2b29fa19eca600e32"
#define AUDIT_FILE "audit.log"
#define AUDIT_LINE_MAX (64U * 1024U)

/* The TOKEND_* fields, lowercased without the prefix in the output. */
static const char *const audit_fields[] = {
        "EVENT", "CREDENTIAL", "SCOPES", "RESOURCE", "GRANT", "OWNER_UID", "OWNER_USER", "AGENT_UID",
        "AGENT_PID", "AGENT_EXE", "AGENT_UNIT", "AGENT_NAME", "TOKEN_FP", "REASON",
};

static bool field_numeric(const char *lower) {
        return streq(lower, "owner_uid") || streq(lower, "agent_uid") || streq(lower, "agent_pid");
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

static void record_add(json_object *o, const char *lower, const char *value, size_t len) {
        if (field_numeric(lower)) {
                char buf[32];
                snprintf(buf, sizeof buf, "%.*s", (int) (len < sizeof buf - 1 ? len : sizeof buf - 1), value);
                json_object_object_add(o, lower, json_object_new_int64(strtoll(buf, NULL, 10)));
        } else
                json_object_object_add(o, lower, json_object_new_string_len(value, (int) len));
}

/* The sd-journal functions read_journal() calls, from libsystemd.so.0 loaded
 * at run time. The types come from the header, so a mismatch does not build. */
struct JournalApi {
        void *dl;
        typeof(sd_journal_open) *open;
        typeof(sd_journal_close) *close;
        typeof(sd_journal_set_data_threshold) *set_data_threshold;
        typeof(sd_journal_add_match) *add_match;
        typeof(sd_journal_seek_head) *seek_head;
        typeof(sd_journal_seek_realtime_usec) *seek_realtime_usec;
        typeof(sd_journal_next) *next;
        typeof(sd_journal_get_realtime_usec) *get_realtime_usec;
        typeof(sd_journal_get_data) *get_data;
};

static void journal_api_done(JournalApi *api) {
        if (api->dl)
                (void) dlclose(api->dl);
        *api = (JournalApi) {};
}

/* Weak: see tokenctl-audit.h. */
__attribute__((weak)) int tokenctl_audit_journal_load(JournalApi *ret) {
        JournalApi api = {};

        api.dl = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
        if (!api.dl) {
                const char *e = dlerror();
                fprintf(stderr, "tokenctl audit: cannot load libsystemd to read the journal: %s.\n",
                        e ?: "unknown error");
                return -EOPNOTSUPP;
        }
        const struct {
                const char *name;
                void **fn;
        } symbols[] = {
                { "sd_journal_open", (void **) &api.open },
                { "sd_journal_close", (void **) &api.close },
                { "sd_journal_set_data_threshold", (void **) &api.set_data_threshold },
                { "sd_journal_add_match", (void **) &api.add_match },
                { "sd_journal_seek_head", (void **) &api.seek_head },
                { "sd_journal_seek_realtime_usec", (void **) &api.seek_realtime_usec },
                { "sd_journal_next", (void **) &api.next },
                { "sd_journal_get_realtime_usec", (void **) &api.get_realtime_usec },
                { "sd_journal_get_data", (void **) &api.get_data },
        };
        for (size_t i = 0; i < ELEMENTSOF(symbols); i++) {
                *symbols[i].fn = dlsym(api.dl, symbols[i].name);
                if (!*symbols[i].fn) {
                        fprintf(stderr, "tokenctl audit: libsystemd.so.0 lacks %s, so the journal cannot be read.\n",
                                symbols[i].name);
                        journal_api_done(&api);
                        return -EOPNOTSUPP;
                }
        }
        *ret = api;
        return 0;
}

/* Appends the matching journal records to `out`. -errno when the journal cannot be opened. */
static int read_journal(const JournalApi *sd, const Filter *f, json_object *out) {
        sd_journal *j = NULL;
        char match[128];
        int r;

        r = sd->open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0)
                return r;
        (void) sd->set_data_threshold(j, 0);
        if ((r = sd->add_match(j, "MESSAGE_ID=" AUDIT_MESSAGE_ID, 0)) < 0 ||
            (r = sd->add_match(j, "SYSLOG_IDENTIFIER=tokend", 0)) < 0)
                goto out;
        if (f->credential) {
                _cleanup_free_ char *m = NULL;
                if (asprintf(&m, "TOKEND_CREDENTIAL=%s", f->credential) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
                if ((r = sd->add_match(j, m, 0)) < 0)
                        goto out;
        }
        /* The owner's trail: records of tokends serving this uid. */
        snprintf(match, sizeof match, "TOKEND_OWNER_UID=%u", (unsigned) getuid());
        if (getuid() != 0 && (r = sd->add_match(j, match, 0)) < 0)
                goto out;
        r = f->since > 0 ? sd->seek_realtime_usec(j, f->since) : sd->seek_head(j);
        if (r < 0)
                goto out;

        while ((r = sd->next(j)) > 0) {
                json_object *o = json_object_new_object();
                uint64_t ts = 0;
                const void *data;
                size_t len;
                if (!o) {
                        r = -ENOMEM;
                        goto out;
                }
                (void) sd->get_realtime_usec(j, &ts);
                json_object_object_add(o, "timestamp", json_object_new_int64((int64_t) ts));
                json_object_object_add(o, "source", json_object_new_string("journal"));
                if (sd->get_data(j, "MESSAGE", &data, &len) >= 0 && len >= 8)
                        json_object_object_add(o, "message", json_object_new_string_len((const char *) data + 8,
                                                                                         (int) len - 8));
                for (size_t i = 0; i < ELEMENTSOF(audit_fields); i++) {
                        char key[64], lower[32];
                        size_t k;
                        snprintf(key, sizeof key, "TOKEND_%s", audit_fields[i]);
                        if (sd->get_data(j, key, &data, &len) < 0)
                                continue;
                        size_t skip = strlen(key) + 1;
                        if (len < skip)
                                continue;
                        for (k = 0; audit_fields[i][k] && k < sizeof lower - 1; k++)
                                lower[k] = (char) (audit_fields[i][k] >= 'A' && audit_fields[i][k] <= 'Z'
                                                           ? audit_fields[i][k] - 'A' + 'a'
                                                           : audit_fields[i][k]);
                        lower[k] = 0;
                        record_add(o, lower, (const char *) data + skip, len - skip);
                }
                if (filter_match(f, o))
                        json_object_array_add(out, o);
                else
                        json_object_put(o);
        }
out:
        sd->close(j);
        return r < 0 ? r : 0;
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
                if (filter_match(f, o))
                        json_object_array_add(out, o);
                else
                        json_object_put(o);
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
        printf("%-19s  %-13s  %-16s  %-24s  %-12s  %-24s  %s\n", when, strna(obj_str(o, "event")),
               strna(obj_str(o, "credential")), agent, obj_str(o, "token_fp") ?: "-", scopes,
               obj_str(o, "reason") ?: "");
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

        _cleanup_(journal_api_done) JournalApi sd = {};
        int rj = tokenctl_audit_journal_load(&sd);
        if (rj >= 0) {
                rj = read_journal(&sd, &f, records);
                if (rj < 0)
                        fprintf(stderr, "tokenctl audit: cannot read the journal: %s.\n", strerror(-rj));
        }
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
