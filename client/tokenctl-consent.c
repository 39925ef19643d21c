/* SPDX-License-Identifier: MIT */
/* client/tokenctl-consent.c: see tokenctl-consent.h. Everything shown to a
 * human about a caller (its executable, unit, cgroup, comm) was chosen by
 * that caller, so it is escaped before it reaches the terminal: a path with
 * escape sequences must not be able to redraw a consent prompt. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

#include "common/util.h"
#include "duration.h"
#include "tokenctl-consent.h"
#include "tokenctl.h"

/* Longest --for argument: "29d23h59m59s" has 12 characters. */
#define DURATION_ARG_MAX 32U

static json_object *json_obj(json_object *o, const char *key) {
        json_object *v;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_object))
                return v;
        return NULL;
}

/* The strings of an array joined by sep, unescaped; "" for none. NULL when out of memory. */
static char *strv_join(json_object *a, const char *sep) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        for (size_t i = 0; a && i < json_object_array_length(a); i++)
                fprintf(f, "%s%s", i ? sep : "", strempty(json_object_get_string(json_object_array_get_idx(a, i))));
        if (fclose(f) != 0)
                return mfree(buf);
        return buf;
}

/* An empty scope list in a request or grant means all the policy allows. */
static char *scopes_text(json_object *a) {
        if (!a || json_object_array_length(a) == 0)
                return strdup("(all allowed)");
        return strv_join(a, " ");
}

/* The same in a sentence: " (repo read:org)" or " (all scopes allowed)". */
static void print_scopes_paren(FILE *f, json_object *a) {
        if (!a || json_object_array_length(a) == 0) {
                fputs(" (all scopes allowed)", f);
                return;
        }
        fputs(" (", f);
        tokenctl_print_scopes(f, a);
        fputc(')', f);
}

/* "YYYY-MM-DD HH:MM" in local time. */
static void format_when(int64_t t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;
        if (!localtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
                snprintf(buf, size, "@%" PRId64, t);
}

static uint64_t nonneg(int64_t v) {
        return v > 0 ? (uint64_t) v : 0;
}

static uint64_t seconds_until(int64_t t) {
        int64_t now = (int64_t) time(NULL);
        return t > now ? (uint64_t) (t - now) : 0;
}

static int flush_stdout(void) {
        if (fflush(stdout) != 0) {
                fprintf(stderr, "tokenctl: cannot write the output: %m.\n");
                return EXIT_FAILURE_;
        }
        return EXIT_OK;
}

/* Parses the options of a verb that takes no option but --json (which it
 * also accepts before the verb). Returns the index of the first positional
 * argument, or -1 after a usage error. */
static int parse_json_only(int argc, char *argv[]) {
        enum { ARG_JSON = 0x100 };
        static const struct option options[] = {
                { "json", no_argument, NULL, ARG_JSON },
                {},
        };
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                if (c != ARG_JSON)
                        return -1;
                arg_json = true;
        }
        return optind;
}

/* ---- a table for humans ---- */

typedef struct Table {
        size_t n_columns, n_cells, allocated;
        char **cells; /* escaped, row by row */
        bool oom;
} Table;

static Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

static void table_freep(Table **t) {
        table_free(*t);
}

static Table *table_new(size_t n_columns) {
        Table *t = calloc(1, sizeof *t);
        if (t)
                t->n_columns = n_columns;
        return t;
}

/* Adds the next cell, escaped; NULL shows as "-". Out of memory is
 * remembered and reported by table_print(). */
static void table_add(Table *t, const char *s) {
        if (t->oom)
                return;
        if (t->n_cells == t->allocated) {
                size_t n = t->allocated ? t->allocated * 2 : 64;
                char **c = reallocarray(t->cells, n, sizeof *c);
                if (!c) {
                        t->oom = true;
                        return;
                }
                t->cells = c;
                t->allocated = n;
        }
        char *e = tokenctl_escape(s ?: "-");
        if (!e) {
                t->oom = true;
                return;
        }
        t->cells[t->n_cells++] = e;
}

_printf_(2, 3) static void table_addf(Table *t, const char *format, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        va_start(ap, format);
        int r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0) {
                s = NULL;
                t->oom = true;
                return;
        }
        table_add(t, s);
}

/* Characters, not bytes: cells are valid UTF-8 once escaped. */
static size_t utf8_width(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                n += ((unsigned char) *s & 0xc0) != 0x80;
        return n;
}

static int table_print(const Table *t, FILE *f) {
        if (t->oom) {
                fprintf(stderr, "tokenctl: out of memory.\n");
                return EXIT_FAILURE_;
        }
        _cleanup_free_ size_t *width = calloc(t->n_columns, sizeof *width);
        if (!width) {
                fprintf(stderr, "tokenctl: out of memory.\n");
                return EXIT_FAILURE_;
        }
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t w = utf8_width(t->cells[i]);
                if (w > width[i % t->n_columns])
                        width[i % t->n_columns] = w;
        }
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                fputs(t->cells[i], f);
                if (col + 1 == t->n_columns || i + 1 == t->n_cells)
                        fputc('\n', f);
                else
                        fprintf(f, "%*s", (int) (width[col] - utf8_width(t->cells[i]) + 2), "");
        }
        return EXIT_OK;
}

/* ---- describing callers, requests and grants ---- */

/* "agent claude-code (pid 4242, /usr/bin/node, claude.service)", or for an
 * unknown caller "unknown caller (uid 1000, pid 4242, /usr/bin/foo, foo.service)". */
static void print_who(FILE *f, const char *agent, json_object *caller) {
        if (agent)
                tokenctl_print_escaped(f, "agent ", agent);
        else
                fprintf(f, "unknown caller");
        if (!caller)
                return;
        fputs(" (", f);
        if (!agent)
                fprintf(f, "uid %" PRId64 ", ", json_int(caller, "uid", -1));
        fprintf(f, "pid %" PRId64, json_int(caller, "pid", -1));
        const char *exe = json_str(caller, "exe");
        if (exe)
                tokenctl_print_escaped(f, ", ", exe);
        else
                tokenctl_print_escaped(f, ", comm ", json_str(caller, "comm"));
        tokenctl_print_escaped(f, ", ", json_str(caller, "unit"));
        fputc(')', f);
}

/* "ID: WHO wants CREDENTIAL (SCOPES) for RESOURCE". */
static void print_request(FILE *f, json_object *req) {
        tokenctl_print_escaped(f, "", strna(json_str(req, "id")));
        fputs(": ", f);
        print_who(f, json_str(req, "agent"), json_obj(req, "caller"));
        tokenctl_print_escaped(f, " wants ", strna(json_str(req, "credential")));
        print_scopes_paren(f, json_array(req, "scopes"));
        tokenctl_print_escaped(f, " for ", json_str(req, "resource"));
}

/* Whom a grant is for: its agent, or what an unknown caller is recognised by. */
static char *grant_who(json_object *g) {
        const char *agent = json_str(g, "agent");
        json_object *m = json_obj(g, "match");
        char *s = NULL;
        if (agent)
                return strdup(agent);
        if (!m)
                return strdup("unknown caller");
        const char *exe = json_str(m, "exe"), *unit = json_str(m, "unit");
        if (asprintf(&s, "uid=%" PRId64 "%s%s%s%s", json_int(m, "uid", -1), exe ? " exe=" : "", strempty(exe),
                     unit ? " unit=" : "", strempty(unit)) < 0)
                return NULL;
        return s;
}

/* ---- verbs ---- */

int tokenctl_pending(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        _cleanup_(table_freep) Table *t = NULL;

        if (parse_json_only(argc, argv) != argc) {
                fprintf(stderr, "tokenctl pending: usage: tokenctl pending [--json]\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_call("io.tokend.manager.ListPending", NULL, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        if (arg_json) {
                tokenctl_print_json(reply, true);
                return flush_stdout();
        }
        json_object *a = json_array(reply, "requests");
        size_t n = a ? json_object_array_length(a) : 0;
        if (n == 0) {
                printf("No requests waiting.\n");
                return flush_stdout();
        }
        t = table_new(9);
        if (!t)
                return EXIT_FAILURE_;
        static const char *const header[] = { "ID", "AGENT", "PID", "EXE", "UNIT", "CREDENTIAL", "SCOPES",
                                              "RESOURCE", "LEFT" };
        for (size_t i = 0; i < ELEMENTSOF(header); i++)
                table_add(t, header[i]);
        for (size_t i = 0; i < n; i++) {
                json_object *req = json_object_array_get_idx(a, i), *caller = json_obj(req, "caller");
                _cleanup_free_ char *scopes = scopes_text(json_array(req, "scopes"));
                char left[DURATION_FORMAT_MAX];
                table_add(t, json_str(req, "id"));
                table_add(t, json_str(req, "agent") ?: "unknown");
                table_addf(t, "%" PRId64, json_int(caller, "pid", -1));
                table_add(t, json_str(caller, "exe"));
                table_add(t, json_str(caller, "unit"));
                table_add(t, json_str(req, "credential"));
                table_add(t, scopes);
                table_add(t, json_str(req, "resource"));
                table_add(t, duration_format(seconds_until(json_int(req, "deadline", 0)), left, sizeof left));
        }
        r = table_print(t, stdout);
        if (r != EXIT_OK)
                return r;
        fprintf(stderr, "\nApprove with 'tokenctl approve ID', refuse with 'tokenctl deny ID'.\n");
        return flush_stdout();
}

static void on_watch_signal(int sig) {
        (void) sig;
        /* A line reaches stdout in one write(2), by the fflush() after it
         * (lines are far shorter than stdio's buffer), so exiting here drops
         * at most a line not yet written, and never cuts one. The signals are
         * not blocked while writing: a reader that stopped reading must not
         * make tokenctl unkillable. Closing the connection ends the watch in
         * tokend. */
        _exit(EXIT_OK);
}

static int print_event(json_object *reply) {
        if (arg_json) {
                tokenctl_print_json(reply, false);
                return flush_stdout();
        }
        const char *event = strna(json_str(reply, "event"));
        json_object *req = json_obj(reply, "request");
        time_t now = time(NULL);
        struct tm tm;
        char when[16];
        if (!localtime_r(&now, &tm) || strftime(when, sizeof when, "%H:%M:%S", &tm) == 0)
                snprintf(when, sizeof when, "?");
        _cleanup_free_ char *e = tokenctl_escape(event);
        printf("%s %-8s ", when, strna(e));
        print_request(stdout, req);
        if (streq(event, "pending")) {
                char left[DURATION_FORMAT_MAX];
                printf("; %s left", duration_format(seconds_until(json_int(req, "deadline", 0)), left, sizeof left));
        }
        tokenctl_print_escaped(stdout, "; grant ", json_str(reply, "grant"));
        putchar('\n');
        return flush_stdout();
}

int tokenctl_watch(int argc, char *argv[]) {
        _cleanup_(varlink_client_freep) VarlinkClient *client = NULL;
        struct sigaction sa = { .sa_handler = on_watch_signal };
        const char *error = NULL;
        bool continues = false;

        if (parse_json_only(argc, argv) != argc) {
                fprintf(stderr, "tokenctl watch: usage: tokenctl watch [--json]\n");
                return EXIT_USAGE;
        }
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);
        int r = tokenctl_connect(&client);
        if (r < 0)
                return -r;
        if (!arg_json && isatty(STDOUT_FILENO))
                fprintf(stderr, "Watching for token requests (Ctrl-C stops)...\n");

        /* No timeout: the first reply comes with the first request. */
        json_object *reply = NULL;
        r = varlink_client_call(client, "io.tokend.manager.Watch", NULL, VARLINK_CALL_MORE, 0, &reply, &error,
                                &continues);
        for (;;) {
                if (r == -ECONNRESET) {
                        fprintf(stderr, "tokenctl: tokend closed the connection (stopped or restarted).\n");
                        return EXIT_NO_DAEMON;
                }
                if (r < 0) {
                        fprintf(stderr, "tokenctl: talking to tokend failed: %s.\n", strerror(-r));
                        return EXIT_FAILURE_;
                }
                if (error) {
                        r = tokenctl_report_error("io.tokend.manager.Watch", error, reply, NULL);
                        json_object_put(reply);
                        return r;
                }
                r = print_event(reply);
                json_object_put(reply);
                reply = NULL;
                if (r != EXIT_OK)
                        return r;
                if (!continues)
                        return EXIT_OK; /* tokend ended the stream */
                r = varlink_client_next(client, 0, &reply, &error, &continues);
        }
}

static void print_grant_summary(FILE *f, json_object *g) {
        _cleanup_free_ char *who = grant_who(g);
        const char *kind = strempty(json_str(g, "kind"));
        char when[64], left[DURATION_FORMAT_MAX];

        tokenctl_print_escaped(f, "Approved: grant ", strna(json_str(g, "id")));
        fprintf(f, " lets %s", json_str(g, "agent") ? "agent " : "the unknown caller with ");
        tokenctl_print_escaped(f, "", strna(who));
        fprintf(f, streq(kind, "once") ? " get one " : " get ");
        tokenctl_print_escaped(f, "", strna(json_str(g, "credential")));
        fprintf(f, streq(kind, "once") ? " token" : " tokens");
        print_scopes_paren(f, json_array(g, "scopes"));
        tokenctl_print_escaped(f, " for ", json_str(g, "resource"));
        if (streq(kind, "process"))
                fprintf(f, " while pid %" PRId64 " runs, and at most", json_int(g, "pid", -1));
        format_when(json_int(g, "expires", 0), when, sizeof when);
        fprintf(f, " until %s (%s).\n", when,
                duration_format(nonneg(json_int(g, "expires_in", 0)), left, sizeof left));
}

int tokenctl_approve(int argc, char *argv[]) {
        enum { ARG_FOR = 0x100, ARG_ONCE, ARG_PROCESS, ARG_SCOPE, ARG_JSON };
        static const struct option options[] = {
                { "for", required_argument, NULL, ARG_FOR },
                { "once", no_argument, NULL, ARG_ONCE },
                { "process", no_argument, NULL, ARG_PROCESS },
                { "scope", required_argument, NULL, ARG_SCOPE },
                { "json", no_argument, NULL, ARG_JSON },
                {},
        };
        static const char usage[] =
                "tokenctl approve: usage: tokenctl approve ID [--for DURATION] [--once | --process] [--scope S]...\n";
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array(), *reply = NULL;
        uint64_t duration = 0;
        bool once = false, process = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_FOR:
                        r = strlen(optarg) > DURATION_ARG_MAX ? -EINVAL : duration_parse(optarg, &duration);
                        if (r == -ERANGE) {
                                fprintf(stderr, "tokenctl approve: --for is at most 30d.\n");
                                return EXIT_USAGE;
                        }
                        if (r < 0 && optarg[strspn(optarg, "0123456789")] == 0 && *optarg) {
                                fprintf(stderr, "tokenctl approve: --for %s needs a unit: s, m, h or d (e.g. %ss or "
                                        "%sm).\n", optarg, optarg, optarg);
                                return EXIT_USAGE;
                        }
                        if (r < 0) {
                                fprintf(stderr, "tokenctl approve: --for takes a duration from 1s to 30d: numbers "
                                        "with a unit s, m, h or d,\ne.g. 90s, 15m, 8h, 1h30m or 2d.\n");
                                return EXIT_USAGE;
                        }
                        break;
                case ARG_ONCE:
                        once = true;
                        break;
                case ARG_PROCESS:
                        process = true;
                        break;
                case ARG_SCOPE:
                        if (tokenctl_add_scopes(scopes, optarg) < 0)
                                return EXIT_USAGE;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                default:
                        fputs(usage, stderr);
                        return EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fputs(usage, stderr);
                return EXIT_USAGE;
        }
        if (once && process) {
                fprintf(stderr, "tokenctl approve: --once and --process exclude each other: a --once grant ends with "
                        "its one token,\na --process grant when the process exits.\n");
                return EXIT_USAGE;
        }
        if (once && duration > 0) {
                /* The waiting request takes the one token at once: a duration
                 * would only keep an unusable grant around. */
                fprintf(stderr, "tokenctl approve: --once answers the waiting request with its one token at once; "
                        "--for does not apply.\n");
                return EXIT_USAGE;
        }
        const char *id = argv[optind];
        if (!tokenctl_id_valid("approve", id))
                return EXIT_USAGE;

        json_object *p = json_object_new_object();
        if (!p || !scopes) {
                json_object_put(p);
                return EXIT_FAILURE_;
        }
        json_object_object_add(p, "id", json_object_new_string(id));
        if (duration > 0)
                json_object_object_add(p, "duration", json_object_new_int64((int64_t) duration));
        if (once)
                json_object_object_add(p, "once", json_object_new_boolean(true));
        if (process)
                json_object_object_add(p, "process", json_object_new_boolean(true));
        if (json_object_array_length(scopes) > 0)
                json_object_object_add(p, "scopes", json_object_get(scopes));

        r = tokenctl_call("io.tokend.manager.Approve", p, &reply, id);
        if (r != EXIT_OK)
                return r;
        if (arg_json) {
                tokenctl_print_json(reply, true);
                return flush_stdout();
        }
        json_object *g = json_obj(reply, "grant");
        /* The grant id alone on stdout, for scripts; the rest is for humans. */
        _cleanup_free_ char *gid = tokenctl_escape(strna(json_str(g, "id")));
        printf("%s\n", strna(gid));
        print_grant_summary(stderr, g);
        return flush_stdout();
}

int tokenctl_deny(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;

        if (argc != 2) {
                fprintf(stderr, "tokenctl deny: usage: tokenctl deny ID\n");
                return EXIT_USAGE;
        }
        const char *id = argv[1];
        if (!tokenctl_id_valid("deny", id))
                return EXIT_USAGE;
        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "id", json_object_new_string(id));
        int r = tokenctl_call("io.tokend.manager.Deny", p, &reply, id);
        if (r == EXIT_OK)
                fprintf(stderr, "Denied request %s: its caller gets ConsentDenied.\n", id);
        return r;
}

static int grants_revoke(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;

        if (argc != 2) {
                fprintf(stderr, "tokenctl grants revoke: usage: tokenctl grants revoke ID\n");
                return EXIT_USAGE;
        }
        const char *id = argv[1];
        if (!tokenctl_id_valid("grants revoke", id))
                return EXIT_USAGE;
        json_object *p = json_object_new_object();
        if (!p)
                return EXIT_FAILURE_;
        json_object_object_add(p, "id", json_object_new_string(id));
        int r = tokenctl_call("io.tokend.manager.RevokeGrant", p, &reply, id);
        if (r == EXIT_OK)
                fprintf(stderr, "Revoked grant %s. Tokens it already let out stay valid until they expire;\n"
                        "'tokenctl revoke CREDENTIAL' ends those too.\n", id);
        return r;
}

int tokenctl_grants(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        _cleanup_(table_freep) Table *t = NULL;

        if (argc >= 2 && streq(argv[1], "revoke"))
                return grants_revoke(argc - 1, argv + 1);
        if (parse_json_only(argc, argv) != argc) {
                fprintf(stderr, "tokenctl grants: usage: tokenctl grants [--json] | tokenctl grants revoke ID\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_call("io.tokend.manager.ListGrants", NULL, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        if (arg_json) {
                tokenctl_print_json(reply, true);
                return flush_stdout();
        }
        json_object *a = json_array(reply, "grants");
        size_t n = a ? json_object_array_length(a) : 0;
        if (n == 0) {
                printf("No grants in force.\n");
                return flush_stdout();
        }
        t = table_new(7);
        if (!t)
                return EXIT_FAILURE_;
        static const char *const header[] = { "ID", "AGENT", "CREDENTIAL", "SCOPES", "RESOURCE", "KIND", "LEFT" };
        for (size_t i = 0; i < ELEMENTSOF(header); i++)
                table_add(t, header[i]);
        for (size_t i = 0; i < n; i++) {
                json_object *g = json_object_array_get_idx(a, i);
                _cleanup_free_ char *who = grant_who(g), *scopes = scopes_text(json_array(g, "scopes"));
                const char *kind = strna(json_str(g, "kind"));
                char left[DURATION_FORMAT_MAX];
                table_add(t, json_str(g, "id"));
                table_add(t, strna(who));
                table_add(t, json_str(g, "credential"));
                table_add(t, strna(scopes));
                table_add(t, json_str(g, "resource"));
                if (streq(kind, "process"))
                        table_addf(t, "process:%" PRId64, json_int(g, "pid", -1));
                else
                        table_add(t, kind);
                table_add(t, duration_format(nonneg(json_int(g, "expires_in", 0)), left, sizeof left));
        }
        r = table_print(t, stdout);
        return r != EXIT_OK ? r : flush_stdout();
}

int tokenctl_reload(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;

        if (parse_json_only(argc, argv) != argc) {
                fprintf(stderr, "tokenctl reload: usage: tokenctl reload [--json]\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_call("io.tokend.manager.Reload", NULL, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        if (arg_json) {
                tokenctl_print_json(reply, true);
                return flush_stdout();
        }
        int64_t agents = json_int(reply, "agents", 0);
        fprintf(stderr, "Policy reloaded: %" PRId64 " agent%s from ", agents, agents == 1 ? "" : "s");
        tokenctl_print_escaped(stderr, "", strna(json_str(reply, "directory")));
        fputc('\n', stderr);
        return EXIT_OK;
}

/* A member of WhoAmI's reply as "key: value". */
static void print_member(const char *key, json_object *v) {
        _cleanup_free_ char *k = tokenctl_escape(key);
        printf("%s: ", strna(k));
        if (!v)
                printf("-");
        else if (json_object_is_type(v, json_type_string))
                tokenctl_print_escaped(stdout, "", json_object_get_string(v));
        else if (json_object_is_type(v, json_type_boolean))
                printf("%s", json_object_get_boolean(v) ? "yes" : "no");
        else /* numbers as they are, anything else as JSON (which escapes its strings) */
                printf("%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        putchar('\n');
}

/* The selectors in WhoAmI's "policy", written as in a policy file. */
static const struct {
        const char *key, *setting;
} selectors[] = {
        { "unit", "Unit=" },
        { "exe", "Exe=" },
        { "uid", "Uid=" },
        { "cgroup", "Cgroup=" },
};

static void print_policy(json_object *policy) {
        if (!policy) {
                printf("agent: -\n");
                return;
        }
        json_object *name = NULL;
        if (json_object_object_get_ex(policy, "name", &name))
                print_member("agent", name);
        else
                printf("agent: none (an unknown caller: each request waits for the owner)\n");
        json_object_object_foreach(policy, key, v) {
                if (streq(key, "name") || streq(key, "line"))
                        continue;
                if (streq(key, "mode"))
                        print_member(key, v);
                else if (streq(key, "file")) {
                        tokenctl_print_escaped(stdout, "defined: ", strna(json_object_get_string(v)));
                        printf(":%" PRId64 "\n", json_int(policy, "line", 0));
                } else if ((streq(key, "consent_duration") || streq(key, "max_lifetime")) &&
                           json_object_is_type(v, json_type_int)) {
                        char d[DURATION_FORMAT_MAX];
                        printf("%s: %s\n", key, duration_format(nonneg(json_object_get_int64(v)), d, sizeof d));
                } else if (streq(key, "credentials") && json_object_is_type(v, json_type_array)) {
                        for (size_t i = 0; i < json_object_array_length(v); i++) {
                                json_object *c = json_object_array_get_idx(v, i), *res = json_array(c, "resources");
                                _cleanup_free_ char *scopes = strv_join(json_array(c, "scopes"), " "),
                                                    *resources = strv_join(res, " ");
                                tokenctl_print_escaped(stdout, "credential: ", strna(json_str(c, "name")));
                                tokenctl_print_escaped(stdout, " scopes: ", strna(scopes));
                                if (res && json_object_array_length(res) > 0)
                                        tokenctl_print_escaped(stdout, "; resources: ", strna(resources));
                                putchar('\n');
                        }
                } else {
                        const char *setting = NULL;
                        for (size_t i = 0; i < ELEMENTSOF(selectors); i++)
                                if (streq(key, selectors[i].key))
                                        setting = selectors[i].setting;
                        if (setting) {
                                printf("selector: %s", setting);
                                if (json_object_is_type(v, json_type_string))
                                        tokenctl_print_escaped(stdout, "", json_object_get_string(v));
                                else
                                        printf("%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
                                putchar('\n');
                                continue;
                        }
                        /* Not a member this tokenctl knows: shown apart from the caller's own. */
                        _cleanup_free_ char *k = NULL;
                        if (asprintf(&k, "policy.%s", key) >= 0)
                                print_member(k, v);
                }
        }
}

int tokenctl_whoami(int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *reply = NULL;

        if (parse_json_only(argc, argv) != argc) {
                fprintf(stderr, "tokenctl whoami: usage: tokenctl whoami [--json]\n");
                return EXIT_USAGE;
        }
        int r = tokenctl_call("io.tokend.agent.WhoAmI", NULL, &reply, NULL);
        if (r != EXIT_OK)
                return r;
        if (arg_json) {
                tokenctl_print_json(reply, true);
                return flush_stdout();
        }
        json_object_object_foreach(reply, key, v) {
                if (streq(key, "policy") || streq(key, "manager"))
                        continue;
                print_member(key, v);
        }
        print_policy(json_obj(reply, "policy"));
        json_object *manager = NULL;
        if (json_object_object_get_ex(reply, "manager", &manager)) {
                print_member("manager", manager);
                if (!json_object_get_boolean(manager))
                        fprintf(stderr, "tokend refuses this process its manager interface (approving, adding "
                                "credentials, ...):\nonly the owner's processes that no agent matches may use it.\n");
        }
        return flush_stdout();
}
