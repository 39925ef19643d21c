/* SPDX-License-Identifier: MIT */
/* daemon/policy.c: see policy.h; the format is in docs/policy.md. */
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/util.h"
#include "credential.h"
#include "oauth.h"
#include "policy.h"

#define SECONDS_PER_DAY UINT64_C(86400)
/* Longest glob a selector may hold; unit names are at most 255 bytes. */
#define POLICY_UNIT_GLOB_MAX 256U
/* How much of a value a message quotes. */
#define SHOWN_MAX 64U
/* The name of [Credential *]: every credential without a section of its own. */
#define CREDENTIAL_ANY "*"

typedef struct PolicyCredential {
        char *name;         /* or CREDENTIAL_ANY */
        unsigned line;      /* of the [Credential NAME] header */
        bool scopes_set;    /* a Scopes= line was seen */
        bool scopes_all;    /* Scopes=*: all the credential holds */
        ScopeSet scopes;
        bool resources_all; /* Resources=*: any resource */
        char **resources;
        size_t n_resources;
} PolicyCredential;

struct PolicyAgent {
        char *name;
        char *file;
        unsigned line; /* of the [Agent] header */
        /* Selectors: NULL (or !has_uid) when not given; all given must match. */
        char *unit;   /* glob */
        char *exe;    /* exact */
        bool has_uid;
        uid_t uid;
        char *cgroup; /* glob */
        PolicyMode mode;
        uint64_t consent_usec;
        uint64_t max_lifetime_usec; /* 0: the provider's */
        PolicyCredential *credentials;
        size_t n_credentials;
};

struct Policy {
        PolicyAgent **agents; /* in file order, then section order */
        size_t n_agents;
        bool failsafe;
};

static const char *const policy_mode_table[_POLICY_MODE_MAX] = {
        [POLICY_ALLOW] = "allow",
        [POLICY_ASK] = "ask",
        [POLICY_DENY] = "deny",
};

const char *policy_mode_to_string(PolicyMode m) {
        if (m < 0 || m >= _POLICY_MODE_MAX)
                return NULL;
        return policy_mode_table[m];
}

PolicyMode policy_mode_from_string(const char *s) {
        for (int i = 0; i < _POLICY_MODE_MAX; i++)
                if (s && streq(s, policy_mode_table[i]))
                        return (PolicyMode) i;
        return _POLICY_MODE_INVALID;
}

/* ---- messages ---- */

/* Copies s into buf for a message: control characters and DEL become '?',
 * and more than SHOWN_MAX bytes are cut short with "...". */
static const char *show(const char *s, char buf[static SHOWN_MAX + 4]) {
        size_t j = 0;
        for (; s && *s && j < SHOWN_MAX; s++) {
                unsigned char c = (unsigned char) *s;
                buf[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char) c;
        }
        if (s && *s) {
                memcpy(buf + j, "...", 3);
                j += 3;
        }
        buf[j] = 0;
        return buf;
}

/* Sets *ret_error (when not NULL) to "PATH:LINE: message", or "PATH: message"
 * when line is 0, and returns r. Control characters in the path become '?'. */
_printf_(5, 0) static int vfail(char **ret_error, int r, const char *path, unsigned line, const char *fmt,
                                va_list ap) {
        if (!ret_error)
                return r;
        *ret_error = NULL;
        _cleanup_free_ char *msg = NULL, *p = strdup(path);
        if (vasprintf(&msg, fmt, ap) < 0 || !p)
                return r;
        for (char *q = p; *q; q++)
                if ((unsigned char) *q < 0x20 || *q == 0x7f)
                        *q = '?';
        char at[16] = "";
        if (line > 0)
                snprintf(at, sizeof at, ":%u", line);
        if (asprintf(ret_error, "%s%s: %s", p, at, msg) < 0)
                *ret_error = NULL;
        return r;
}

_printf_(5, 6) static int fail(char **ret_error, int r, const char *path, unsigned line, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = vfail(ret_error, r, path, line, fmt, ap);
        va_end(ap);
        return r;
}

/* Sets *ret_why (when not NULL) and returns -EPERM. */
_printf_(2, 3) static int refuse(char **ret_why, const char *fmt, ...) {
        if (!ret_why)
                return -EPERM;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(ret_why, fmt, ap);
        va_end(ap);
        if (n < 0) {
                *ret_why = NULL;
                return -ENOMEM;
        }
        return -EPERM;
}

/* ---- objects ---- */

static void policy_credential_done(PolicyCredential *c) {
        free(c->name);
        scope_set_done(&c->scopes);
        for (size_t i = 0; i < c->n_resources; i++)
                free(c->resources[i]);
        free(c->resources);
}

static PolicyAgent *policy_agent_free(PolicyAgent *a) {
        if (!a)
                return NULL;
        free(a->name);
        free(a->file);
        free(a->unit);
        free(a->exe);
        free(a->cgroup);
        for (size_t i = 0; i < a->n_credentials; i++)
                policy_credential_done(&a->credentials[i]);
        free(a->credentials);
        return mfree(a);
}

Policy *policy_new_default(void) {
        return calloc(1, sizeof(Policy));
}

Policy *policy_new_failsafe(void) {
        Policy *p = policy_new_default();
        if (p)
                p->failsafe = true;
        return p;
}

Policy *policy_free(Policy *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_agents; i++)
                policy_agent_free(p->agents[i]);
        free(p->agents);
        return mfree(p);
}

bool policy_is_failsafe(const Policy *p) {
        return p && p->failsafe;
}

size_t policy_n_agents(const Policy *p) {
        return p ? p->n_agents : 0;
}

/* ---- validators ---- */

static bool agent_name_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > POLICY_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

/* An absolute path as the kernel shows /proc/PID/exe: no empty, "." or ".."
 * components and no trailing slash, else it could never match. */
static bool exe_path_valid(const char *s) {
        size_t n = strlen(s);
        if (n < 2 || n >= PATH_MAX || s[0] != '/' || s[n - 1] == '/')
                return false;
        for (const char *c = s; c; c = strchr(c + 1, '/')) {
                const char *next = c + 1;
                size_t l = strcspn(next, "/");
                if (l == 0 || (l == 1 && next[0] == '.') || (l == 2 && next[0] == '.' && next[1] == '.'))
                        return false;
        }
        return true;
}

/* A value with a '#' at its start or after a blank was almost certainly
 * meant to end in a comment, which this format (like systemd's) does not
 * have: "Scopes=repo # not admin" would otherwise allow "not" and "admin". */
static bool looks_like_inline_comment(const char *v) {
        for (const char *q = v; *q; q++)
                if (*q == '#' && (q == v || q[-1] == ' ' || q[-1] == '\t'))
                        return true;
        return false;
}

/* "30s", "8h", "1h30m", "2d": one or more NUMBER UNIT pairs, units s, m, h
 * and d; at most POLICY_DURATION_MAX_USEC. -EINVAL for bad syntax, -ERANGE
 * over the maximum. */
static int parse_duration(const char *s, uint64_t *ret) {
        const uint64_t max = POLICY_DURATION_MAX_USEC / USEC_PER_SEC;
        uint64_t total = 0;

        if (!*s)
                return -EINVAL;
        while (*s) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                uint64_t n = 0;
                for (; *s >= '0' && *s <= '9'; s++) {
                        n = n * 10 + (uint64_t) (*s - '0');
                        if (n > max)
                                return -ERANGE;
                }
                uint64_t unit;
                switch (*s) {
                case 's':
                        unit = 1;
                        break;
                case 'm':
                        unit = 60;
                        break;
                case 'h':
                        unit = 3600;
                        break;
                case 'd':
                        unit = SECONDS_PER_DAY;
                        break;
                default:
                        return -EINVAL;
                }
                s++;
                total += n * unit; /* n <= max and unit <= 86400: no overflow */
                if (total > max)
                        return -ERANGE;
        }
        *ret = total * USEC_PER_SEC;
        return 0;
}

/* ---- the parser ---- */

typedef enum Section {
        SECTION_NONE,
        SECTION_AGENT,
        SECTION_CREDENTIAL,
} Section;

typedef struct Parser Parser;
typedef int (*KeyParser)(Parser *ps, const char *key, char *value);

typedef struct KeyDef {
        Section section;
        const char *name;
        KeyParser parse;
        bool multi; /* may be repeated to append */
} KeyDef;

#define N_KEYS 10

struct Parser {
        const Policy *policy; /* the agents of earlier files */
        const char *path;
        char **ret_error;
        unsigned line;
        Section section;
        unsigned seen[N_KEYS]; /* line each key was set on in the current section; 0: not yet */
        PolicyAgent **agents;  /* this file's, in order; the last is the current one */
        size_t n_agents;
};

_printf_(3, 4) static int perr(Parser *ps, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = vfail(ps->ret_error, r, ps->path, ps->line, fmt, ap);
        va_end(ap);
        return r;
}

_printf_(4, 5) static int perr_at(Parser *ps, unsigned line, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = vfail(ps->ret_error, r, ps->path, line, fmt, ap);
        va_end(ap);
        return r;
}

static PolicyAgent *current_agent(Parser *ps) {
        return ps->agents[ps->n_agents - 1];
}

static PolicyCredential *current_credential(Parser *ps) {
        PolicyAgent *a = current_agent(ps);
        return &a->credentials[a->n_credentials - 1];
}

static int set_string(Parser *ps, char **dst, const char *s) {
        char *d = strdup(s);
        if (!d)
                return perr(ps, -ENOMEM, "out of memory");
        free(*dst);
        *dst = d;
        return 0;
}

static const PolicyAgent *find_agent(Parser *ps, const char *name) {
        for (size_t i = 0; ps->policy && i < ps->policy->n_agents; i++)
                if (streq_ptr(ps->policy->agents[i]->name, name))
                        return ps->policy->agents[i];
        for (size_t i = 0; i < ps->n_agents; i++)
                if (streq_ptr(ps->agents[i]->name, name))
                        return ps->agents[i];
        return NULL;
}

static int parse_name(Parser *ps, const char *key, char *v) {
        char b[SHOWN_MAX + 4];
        if (!agent_name_valid(v))
                return perr(ps, -EINVAL,
                            "%s: \"%s\" is not a valid name (1-%u characters of A-Z, a-z, 0-9, '.', '_', '-')", key,
                            show(v, b), POLICY_NAME_MAX);
        const PolicyAgent *other = find_agent(ps, v);
        if (other)
                return perr(ps, -EINVAL, "%s: \"%s\" is already the name of the agent at %s:%u", key, v, other->file,
                            other->line);
        return set_string(ps, &current_agent(ps)->name, v);
}

static int parse_unit(Parser *ps, const char *key, char *v) {
        size_t n = strlen(v);
        bool ok = n <= POLICY_UNIT_GLOB_MAX;
        for (const char *q = v; ok && *q; q++)
                ok = (unsigned char) *q > 0x20 && (unsigned char) *q < 0x7f;
        if (!ok)
                return perr(ps, -EINVAL, "%s: must be a unit name or glob of at most %u printable ASCII characters",
                            key, POLICY_UNIT_GLOB_MAX);
        return set_string(ps, &current_agent(ps)->unit, v);
}

static int parse_exe(Parser *ps, const char *key, char *v) {
        char b[SHOWN_MAX + 4];
        if (!exe_path_valid(v))
                return perr(ps, -EINVAL,
                            "%s: \"%s\" is not an absolute, normalized path such as /usr/bin/node (no globs, no "
                            "\".\", \"..\", \"//\" or trailing '/')",
                            key, show(v, b));
        return set_string(ps, &current_agent(ps)->exe, v);
}

static int parse_uid(Parser *ps, const char *key, char *v) {
        char b[SHOWN_MAX + 4];
        size_t n = strlen(v);
        unsigned long long u = 0;
        bool ok = n > 0 && n <= 10 && strspn(v, "0123456789") == n;
        if (ok) {
                u = strtoull(v, NULL, 10);
                /* (uid_t) -1 means "no user" to the kernel's interfaces. */
                ok = u < (unsigned long long) (uid_t) -1;
        }
        if (!ok)
                return perr(ps, -EINVAL, "%s: \"%s\" is not a numeric uid (0-%u)", key, show(v, b),
                            (unsigned) (uid_t) -1 - 1);
        PolicyAgent *a = current_agent(ps);
        a->has_uid = true;
        a->uid = (uid_t) u;
        return 0;
}

static int parse_cgroup(Parser *ps, const char *key, char *v) {
        char b[SHOWN_MAX + 4];
        if (v[0] != '/')
                return perr(ps, -EINVAL, "%s: \"%s\" is not an absolute cgroup path or glob (it starts with '/')", key,
                            show(v, b));
        return set_string(ps, &current_agent(ps)->cgroup, v);
}

static int parse_mode(Parser *ps, const char *key, char *v) {
        char b[SHOWN_MAX + 4];
        PolicyMode m = policy_mode_from_string(v);
        if (m == _POLICY_MODE_INVALID)
                return perr(ps, -EINVAL, "%s: \"%s\" is not a mode (there are allow, ask and deny)", key, show(v, b));
        current_agent(ps)->mode = m;
        return 0;
}

static int parse_duration_field(Parser *ps, const char *key, const char *v, uint64_t *dst) {
        char b[SHOWN_MAX + 4];
        uint64_t usec;
        int r = parse_duration(v, &usec);
        if (r == -ERANGE)
                return perr(ps, -EINVAL, "%s: \"%s\" is longer than the maximum of 30d", key, show(v, b));
        if (r < 0)
                return perr(ps, -EINVAL,
                            "%s: \"%s\" is not a duration (numbers with a unit s, m, h or d, e.g. 90s, 8h or 1h30m)",
                            key, show(v, b));
        if (usec == 0)
                return perr(ps, -EINVAL, "%s: must be at least 1s", key);
        *dst = usec;
        return 0;
}

static int parse_consent_duration(Parser *ps, const char *key, char *v) {
        return parse_duration_field(ps, key, v, &current_agent(ps)->consent_usec);
}

static int parse_max_lifetime(Parser *ps, const char *key, char *v) {
        return parse_duration_field(ps, key, v, &current_agent(ps)->max_lifetime_usec);
}

static int parse_scopes(Parser *ps, const char *key, char *v) {
        PolicyCredential *c = current_credential(ps);
        char b[SHOWN_MAX + 4], *save = NULL;

        c->scopes_set = true;
        for (char *tok = strtok_r(v, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
                if (c->scopes_all || (streq(tok, "*") && c->scopes.n > 0))
                        return perr(ps, -EINVAL, "%s: \"*\" (all the credential holds) stands alone", key);
                if (streq(tok, "*")) {
                        c->scopes_all = true;
                        continue;
                }
                if (!scope_token_valid(tok))
                        return perr(ps, -EINVAL,
                                    "%s: \"%s\" is not a valid scope (RFC 6749 scope-token, at most 256 characters)",
                                    key, show(tok, b));
                if (scope_set_contains(&c->scopes, tok))
                        return perr(ps, -EINVAL, "%s: \"%s\" is listed twice", key, tok);
                if (c->scopes.n >= SCOPES_MAX)
                        return perr(ps, -E2BIG, "%s: more than %u scopes", key, SCOPES_MAX);
                int r = scope_set_add(&c->scopes, tok);
                if (r < 0)
                        return perr(ps, r, "%s: cannot add \"%s\": %s", key, tok, strerror(-r));
        }
        return 0;
}

static int parse_resources(Parser *ps, const char *key, char *v) {
        PolicyCredential *c = current_credential(ps);
        char b[SHOWN_MAX + 4], *save = NULL;

        for (char *tok = strtok_r(v, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
                const char *reason;
                /* Like Scopes=*: alone on its line and in its section, so that "any" is never mixed
                 * up with a list that looks like a limit. */
                if (c->resources_all || (streq(tok, "*") && c->n_resources > 0))
                        return perr(ps, -EINVAL, "%s: \"*\" (any resource) stands alone", key);
                if (streq(tok, "*")) {
                        c->resources_all = true;
                        continue;
                }
                /* The same rule the agent interface applies to a requested resource. */
                if (oauth_check_url(tok, true, &reason) < 0)
                        return perr(ps, -EINVAL, "%s: \"%s\": %s", key, show(tok, b), reason);
                for (size_t i = 0; i < c->n_resources; i++)
                        if (streq(c->resources[i], tok))
                                return perr(ps, -EINVAL, "%s: \"%s\" is listed twice", key, show(tok, b));
                if (c->n_resources >= POLICY_RESOURCES_MAX)
                        return perr(ps, -E2BIG, "%s: more than %u resources", key, POLICY_RESOURCES_MAX);
                char **n = realloc(c->resources, (c->n_resources + 1) * sizeof *n);
                if (!n)
                        return perr(ps, -ENOMEM, "out of memory");
                c->resources = n;
                if (!(n[c->n_resources] = strdup(tok)))
                        return perr(ps, -ENOMEM, "out of memory");
                c->n_resources++;
        }
        return 0;
}

static const KeyDef key_table[N_KEYS] = {
        { SECTION_AGENT, "Name", parse_name, false },
        { SECTION_AGENT, "Unit", parse_unit, false },
        { SECTION_AGENT, "Exe", parse_exe, false },
        { SECTION_AGENT, "Uid", parse_uid, false },
        { SECTION_AGENT, "Cgroup", parse_cgroup, false },
        { SECTION_AGENT, "Mode", parse_mode, false },
        { SECTION_AGENT, "ConsentDuration", parse_consent_duration, false },
        { SECTION_AGENT, "MaxLifetime", parse_max_lifetime, false },
        { SECTION_CREDENTIAL, "Scopes", parse_scopes, true },
        { SECTION_CREDENTIAL, "Resources", parse_resources, true },
};

static const char *section_name(Section s) {
        switch (s) {
        case SECTION_NONE:
                return "no section";
        case SECTION_AGENT:
                return "[Agent]";
        case SECTION_CREDENTIAL:
                return "[Credential NAME]"; /* or [Credential *]; the keys are the same */
        }
        return "?";
}

/* Checks made when a section ends, at its header's line. */
static int end_section(Parser *ps) {
        switch (ps->section) {
        case SECTION_NONE:
        case SECTION_AGENT:
                return 0;
        case SECTION_CREDENTIAL: {
                const PolicyCredential *c = current_credential(ps);
                if (!c->scopes_set)
                        return perr_at(ps, c->line, -EINVAL,
                                       "[Credential %s] needs Scopes=: the widest scopes the agent may get, or * for "
                                       "all the credential holds",
                                       c->name);
                return 0;
        }
        }
        return 0;
}

/* Checks made when an agent ends: at the next [Agent] or the end of the file. */
static int end_agent(Parser *ps) {
        if (ps->n_agents == 0)
                return 0;
        const PolicyAgent *a = current_agent(ps);
        if (!a->name)
                return perr_at(ps, a->line, -EINVAL, "[Agent] needs Name=");
        if (!a->unit && !a->exe && !a->has_uid && !a->cgroup)
                return perr_at(ps, a->line, -EINVAL,
                               "[Agent] %s needs at least one selector: Unit=, Exe=, Uid= or Cgroup=", a->name);
        return 0;
}

static int begin_agent(Parser *ps) {
        if (policy_n_agents(ps->policy) + ps->n_agents >= POLICY_AGENTS_MAX)
                return perr(ps, -E2BIG, "more than %u agents", POLICY_AGENTS_MAX);
        PolicyAgent **n = realloc(ps->agents, (ps->n_agents + 1) * sizeof *n);
        if (!n)
                return perr(ps, -ENOMEM, "out of memory");
        ps->agents = n;
        PolicyAgent *a = calloc(1, sizeof *a);
        if (!a || !(a->file = strdup(ps->path))) {
                free(a);
                return perr(ps, -ENOMEM, "out of memory");
        }
        a->line = ps->line;
        a->mode = POLICY_ASK;
        a->consent_usec = POLICY_CONSENT_DEFAULT_USEC;
        n[ps->n_agents++] = a;
        return 0;
}

static int begin_credential(Parser *ps, const char *name) {
        char b[SHOWN_MAX + 4];
        if (ps->n_agents == 0)
                return perr(ps, -EINVAL, "[Credential %s] must follow the [Agent] section it belongs to",
                            show(name, b));
        if (!credential_name_valid(name) && !streq(name, CREDENTIAL_ANY))
                return perr(ps, -EINVAL,
                            "[Credential %s]: not a valid credential name (1-%u characters of A-Z, a-z, 0-9, '.', "
                            "'_', '-', starting with a letter or digit), nor * alone for every other credential",
                            show(name, b), CREDENTIAL_NAME_MAX);
        PolicyAgent *a = current_agent(ps);
        /* At most one [Credential *] too: a second one is refused like a second [Credential NAME]. */
        for (size_t i = 0; i < a->n_credentials; i++)
                if (streq(a->credentials[i].name, name))
                        return perr(ps, -EINVAL, "[Credential %s] is already given for this agent on line %u", name,
                                    a->credentials[i].line);
        if (a->n_credentials >= POLICY_CREDENTIALS_MAX)
                return perr(ps, -E2BIG, "more than %u [Credential] sections in one agent", POLICY_CREDENTIALS_MAX);
        PolicyCredential *n = realloc(a->credentials, (a->n_credentials + 1) * sizeof *n);
        if (!n)
                return perr(ps, -ENOMEM, "out of memory");
        a->credentials = n;
        n[a->n_credentials] = (PolicyCredential) { .name = strdup(name), .line = ps->line };
        if (!n[a->n_credentials].name)
                return perr(ps, -ENOMEM, "out of memory");
        a->n_credentials++;
        return 0;
}

static char *trim(char *s) {
        s += strspn(s, " \t");
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
                s[--n] = 0;
        return s;
}

/* s: the trimmed line, starting with '['. */
static int parse_section(Parser *ps, char *s) {
        char b[SHOWN_MAX + 4];
        size_t n = strlen(s);
        int r;

        if (n < 2 || s[n - 1] != ']')
                return perr(ps, -EINVAL, "a section header ends with ']' (and comments go on their own line)");
        s[n - 1] = 0;
        const char *inner = s + 1, *rest;

        r = end_section(ps);
        if (r < 0)
                return r;
        memset(ps->seen, 0, sizeof ps->seen);

        if (streq(inner, "Agent")) {
                r = end_agent(ps);
                if (r < 0)
                        return r;
                ps->section = SECTION_AGENT;
                return begin_agent(ps);
        }
        if ((rest = startswith(inner, "Credential")) && (*rest == ' ' || *rest == '\t')) {
                ps->section = SECTION_CREDENTIAL;
                return begin_credential(ps, trim(s + 1 + (rest - inner)));
        }
        if (streq(inner, "Credential"))
                return perr(ps, -EINVAL, "[Credential] needs the credential's name: [Credential NAME]");
        return perr(ps, -EINVAL, "unknown section [%s] (there are [Agent], [Credential NAME] and [Credential *])",
                    show(inner, b));
}

static int parse_assignment(Parser *ps, const char *key, char *value) {
        char b[SHOWN_MAX + 4];
        size_t k;

        if (ps->section == SECTION_NONE)
                return perr(ps, -EINVAL, "%s= comes before any section; start with [Agent]", show(key, b));
        for (k = 0; k < N_KEYS; k++)
                if (key_table[k].section == ps->section && streq(key_table[k].name, key))
                        break;
        if (k == N_KEYS) {
                for (size_t i = 0; i < N_KEYS; i++) {
                        if (strcasecmp(key_table[i].name, key) != 0)
                                continue;
                        if (key_table[i].section == ps->section)
                                return perr(ps, -EINVAL, "unknown key %s in %s (did you mean %s?)", show(key, b),
                                            section_name(ps->section), key_table[i].name);
                        return perr(ps, -EINVAL, "%s= belongs in %s, not in %s", key_table[i].name,
                                    section_name(key_table[i].section), section_name(ps->section));
                }
                return perr(ps, -EINVAL, "unknown key %s in %s", show(key, b), section_name(ps->section));
        }
        if (looks_like_inline_comment(value))
                return perr(ps, -EINVAL, "%s: '#' starts a comment only at the beginning of a line", key);
        if (!*value)
                return perr(ps, -EINVAL, "%s= needs a value", key);
        if (!key_table[k].multi && ps->seen[k] > 0)
                return perr(ps, -EINVAL, "%s= is already set on line %u", key, ps->seen[k]);
        ps->seen[k] = ps->line;
        return key_table[k].parse(ps, key, value);
}

static int parse_line(Parser *ps, char *line) {
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
                return 0;
        for (const char *q = s; *q; q++)
                if (((unsigned char) *q < 0x20 && *q != '\t') || *q == 0x7f)
                        return perr(ps, -EINVAL, "contains a control character");
        if (*s == '[')
                return parse_section(ps, s);
        char *eq = strchr(s, '=');
        if (!eq)
                return perr(ps, -EINVAL, "expected KEY=VALUE, a [section] header or a comment");
        *eq = 0;
        char *key = trim(s);
        if (!*key)
                return perr(ps, -EINVAL, "a line starts with '=': the key is missing");
        return parse_assignment(ps, key, trim(eq + 1));
}

static void parser_done(Parser *ps) {
        for (size_t i = 0; i < ps->n_agents; i++)
                policy_agent_free(ps->agents[i]);
        free(ps->agents);
        ps->agents = NULL;
        ps->n_agents = 0;
}

int policy_parse_file(Policy *p, const char *path, const char *text, size_t len, char **ret_error) {
        Parser ps = { .policy = p, .path = path, .ret_error = ret_error };
        char buf[POLICY_LINE_MAX + 1];
        int r = 0;

        if (len > POLICY_FILE_MAX)
                return fail(ret_error, -EFBIG, path, 0, "larger than %u bytes", POLICY_FILE_MAX);

        for (size_t pos = 0; pos < len;) {
                const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
                size_t n = nl ? (size_t) (nl - start) : len - pos;
                pos += n + (nl ? 1 : 0);
                ps.line++;
                if (memchr(start, 0, n)) {
                        r = perr(&ps, -EINVAL, "contains a NUL byte");
                        goto out;
                }
                if (n > 0 && start[n - 1] == '\r')
                        n--;
                if (n > POLICY_LINE_MAX) {
                        r = perr(&ps, -EINVAL, "line longer than %u bytes", POLICY_LINE_MAX);
                        goto out;
                }
                memcpy(buf, start, n);
                buf[n] = 0;
                r = parse_line(&ps, buf);
                if (r < 0)
                        goto out;
        }
        r = end_section(&ps);
        if (r >= 0)
                r = end_agent(&ps);
        if (r < 0)
                goto out;

        if (ps.n_agents > 0) {
                PolicyAgent **n = realloc(p->agents, (p->n_agents + ps.n_agents) * sizeof *n);
                if (!n) {
                        r = fail(ret_error, -ENOMEM, path, 0, "out of memory");
                        goto out;
                }
                memcpy(n + p->n_agents, ps.agents, ps.n_agents * sizeof *n);
                p->agents = n;
                p->n_agents += ps.n_agents;
                free(ps.agents);
        }
        return 0;
out:
        parser_done(&ps);
        return r;
}

/* ---- loading a directory ---- */

/* The directory and its files decide what agents get: someone other than
 * us (or root) who can write them could widen that. */
static int check_owner_and_mode(const struct stat *st, const char *path, char **ret_error) {
        if (st->st_uid != geteuid() && st->st_uid != 0)
                return fail(ret_error, -EPERM, path, 0, "owned by uid %u, neither us (uid %u) nor root",
                            (unsigned) st->st_uid, (unsigned) geteuid());
        if (st->st_mode & (S_IWGRP | S_IWOTH))
                return fail(ret_error, -EPERM, path, 0, "writable by group or others (chmod go-w)");
        return 0;
}

static int read_policy_file(int dfd, const char *name, const char *path, char **ret, size_t *ret_len,
                            char **ret_error) {
        /* O_NONBLOCK: a FIFO named *.conf must not hang the load; it is refused below. */
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return fail(ret_error, -errno, path, 0, "cannot open: %s", strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return fail(ret_error, -errno, path, 0, "cannot stat: %s", strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(ret_error, -EINVAL, path, 0, "not a regular file");
        int r = check_owner_and_mode(&st, path, ret_error);
        if (r < 0)
                return r;
        if (st.st_size > (off_t) POLICY_FILE_MAX)
                return fail(ret_error, -EFBIG, path, 0, "larger than %u bytes", POLICY_FILE_MAX);

        /* One byte more than allowed, to notice a file that grew since fstat(). */
        _cleanup_free_ char *buf = malloc(POLICY_FILE_MAX + 2);
        size_t len = 0;
        if (!buf)
                return fail(ret_error, -ENOMEM, path, 0, "out of memory");
        for (;;) {
                ssize_t n = read(fd, buf + len, POLICY_FILE_MAX + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return fail(ret_error, -errno, path, 0, "cannot read: %s", strerror(errno));
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > POLICY_FILE_MAX)
                        return fail(ret_error, -EFBIG, path, 0, "larger than %u bytes", POLICY_FILE_MAX);
        }
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool is_conf_name(const char *name) {
        size_t n = strlen(name);
        return name[0] != '.' && n > 5 && streq(name + n - 5, ".conf");
}

int policy_load_dir(const char *dir, Policy **ret, char **ret_error) {
        _cleanup_policy_ Policy *p = policy_new_default();
        _cleanup_close_ int dfd = -1;
        char **names = NULL;
        size_t n_names = 0;
        struct stat st;
        int r = 0;

        if (!p)
                return fail(ret_error, -ENOMEM, dir, 0, "out of memory");
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 && errno == ENOENT) {
                /* No policy directory: no agents, everyone unknown (ask). */
                *ret = TAKE_PTR(p);
                return 0;
        }
        if (dfd < 0)
                return fail(ret_error, -errno, dir, 0, "cannot open the directory: %s", strerror(errno));
        if (fstat(dfd, &st) < 0)
                return fail(ret_error, -errno, dir, 0, "cannot stat: %s", strerror(errno));
        r = check_owner_and_mode(&st, dir, ret_error);
        if (r < 0)
                return r;

        int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return fail(ret_error, -errno, dir, 0, "cannot read the directory: %s", strerror(errno));
        DIR *d = fdopendir(fd);
        if (!d) {
                r = fail(ret_error, -errno, dir, 0, "cannot read the directory: %s", strerror(errno));
                safe_close(fd);
                return r;
        }
        for (;;) {
                errno = 0;
                struct dirent *de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                r = fail(ret_error, -errno, dir, 0, "cannot read the directory: %s", strerror(errno));
                        break;
                }
                if (!is_conf_name(de->d_name))
                        continue;
                if (n_names >= POLICY_FILES_MAX) {
                        r = fail(ret_error, -E2BIG, dir, 0, "more than %u .conf files", POLICY_FILES_MAX);
                        break;
                }
                char **n = realloc(names, (n_names + 1) * sizeof *n);
                if (!n || !(n[n_names] = strdup(de->d_name))) {
                        if (n)
                                names = n;
                        r = fail(ret_error, -ENOMEM, dir, 0, "out of memory");
                        break;
                }
                names = n;
                n_names++;
        }
        closedir(d);
        if (r < 0)
                goto out;

        /* Lexical order of the bytes, whatever the locale. */
        if (n_names > 0)
                qsort(names, n_names, sizeof *names, compare_names);

        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/')
                dl--;
        for (size_t i = 0; i < n_names; i++) {
                _cleanup_free_ char *path = NULL, *text = NULL;
                size_t len = 0;
                if (asprintf(&path, "%.*s/%s", (int) dl, dir, names[i]) < 0) {
                        path = NULL;
                        r = fail(ret_error, -ENOMEM, dir, 0, "out of memory");
                        goto out;
                }
                r = read_policy_file(dfd, names[i], path, &text, &len, ret_error);
                if (r < 0)
                        goto out;
                r = policy_parse_file(p, path, text, len, ret_error);
                if (r < 0)
                        goto out;
        }
        *ret = TAKE_PTR(p);
        r = 0;
out:
        for (size_t i = 0; i < n_names; i++)
                free(names[i]);
        free(names);
        return r;
}

/* ---- matching ---- */

/* Globs: '*' crosses '/', and a backslash is an ordinary character, so that
 * systemd's escapes (\x2d) are written as systemctl shows them. */
static bool glob_match(const char *pattern, const char *s) {
        return s && fnmatch(pattern, s, FNM_NOESCAPE) == 0;
}

static bool agent_matches(const PolicyAgent *a, const PeerIdentity *id) {
        if (a->has_uid && id->uid != a->uid)
                return false;
        if (a->exe && !streq_ptr(id->exe, a->exe))
                return false;
        if (a->unit && !glob_match(a->unit, id->unit))
                return false;
        if (a->cgroup && !glob_match(a->cgroup, id->cgroup))
                return false;
        /* The parser refuses an agent without selectors; never let one match everyone. */
        return a->has_uid || a->exe || a->unit || a->cgroup;
}

const PolicyAgent *policy_match(const Policy *p, const PeerIdentity *id) {
        if (!p || !id || p->failsafe)
                return NULL;
        for (size_t i = 0; i < p->n_agents; i++)
                if (agent_matches(p->agents[i], id))
                        return p->agents[i];
        return NULL;
}

bool policy_is_manager_allowed(const Policy *p, const PeerIdentity *id, uid_t owner) {
        if (!p || !id || p->failsafe)
                return false;
        return id->uid == owner && !policy_match(p, id);
}

/* ---- requests ---- */

/* The agent's section for credential `name`: its [Credential NAME] wherever it
 * is written, else its [Credential *], else NULL. */
static const PolicyCredential *find_credential(const PolicyAgent *a, const char *name) {
        const PolicyCredential *any = NULL;
        for (size_t i = 0; name && i < a->n_credentials; i++) {
                if (streq(a->credentials[i].name, name))
                        return &a->credentials[i];
                if (streq(a->credentials[i].name, CREDENTIAL_ANY))
                        any = &a->credentials[i];
        }
        return any;
}

static int scope_set_intersect(const ScopeSet *a, const ScopeSet *b, ScopeSet *ret) {
        ScopeSet s = {};
        for (size_t i = 0; i < a->n; i++)
                if (scope_set_contains(b, a->items[i]) && scope_set_add(&s, a->items[i]) < 0) {
                        scope_set_done(&s);
                        return -ENOMEM;
                }
        *ret = s;
        return 0;
}

/* The items separated by spaces, or "none" for no items. */
static char *join_or_none(char *const *items, size_t n) {
        if (n == 0)
                return strdup("none");
        size_t len = 0;
        for (size_t i = 0; i < n; i++)
                len += strlen(items[i]) + 1;
        char *r = malloc(len), *p = r;
        for (size_t i = 0; r && i < n; i++) {
                if (i > 0)
                        *p++ = ' ';
                p = stpcpy(p, items[i]);
        }
        return r;
}

int policy_check_request(const PolicyAgent *a, const char *credential, const ScopeSet *requested,
                         const ScopeSet *credential_scopes, const char *resource, ScopeSet *ret_effective,
                         char **ret_why) {
        bool held_known = credential_scopes && credential_scopes->n > 0;
        bool asked = requested && requested->n > 0;
        const PolicyCredential *c = NULL;
        ScopeSet allowed = {}, missing = {};
        bool all; /* no bound at all: nothing narrower is known */
        /* Where a refusal comes from a [Credential *], it says so, for the owner who
         * looks for the section that decided. */
        const char *via = "";
        char b1[SHOWN_MAX + 4], b2[SHOWN_MAX + 4];
        int r;

        if (a) {
                if (a->mode == POLICY_DENY)
                        return refuse(ret_why, "agent %s is denied by policy (%s:%u)", a->name, a->file, a->line);
                c = find_credential(a, credential);
                if (!c)
                        return refuse(ret_why, "agent %s may not use credential %s", a->name, show(credential, b1));
                if (streq(c->name, CREDENTIAL_ANY))
                        via = " via [Credential *]";
                if (resource && !c->resources_all) {
                        bool ok = false;
                        for (size_t i = 0; !ok && i < c->n_resources; i++)
                                ok = streq(c->resources[i], resource);
                        if (!ok) {
                                _cleanup_free_ char *list = join_or_none(c->resources, c->n_resources);
                                if (!list)
                                        return -ENOMEM;
                                return refuse(ret_why,
                                              "resource %s is not allowed for agent %s with credential %s%s "
                                              "(allowed: %s)",
                                              show(resource, b1), a->name, show(credential, b2), via, list);
                        }
                }
        }

        /* The allowed set: the agent's scopes (all for Scopes=* or an unknown
         * caller), narrowed to what the credential holds when that is known. */
        all = !c || c->scopes_all;
        if (all && held_known)
                r = scope_set_copy(credential_scopes, &allowed);
        else if (!all && held_known)
                r = scope_set_intersect(&c->scopes, credential_scopes, &allowed);
        else if (!all)
                r = scope_set_copy(&c->scopes, &allowed);
        else
                r = 0;
        if (r < 0)
                return -ENOMEM;
        all = all && !held_known;

        if (all) {
                /* Nothing narrower known: the request as it is, or no scope at all. */
                if (ret_effective && asked) {
                        if (scope_set_copy(requested, ret_effective) < 0)
                                return -ENOMEM;
                } else if (ret_effective)
                        *ret_effective = (ScopeSet) {};
                return 0;
        }

        if (asked && scope_set_is_subset(requested, &allowed, NULL)) {
                scope_set_done(&allowed);
                if (ret_effective && scope_set_copy(requested, ret_effective) < 0)
                        return -ENOMEM;
                return 0;
        }
        if (!asked && allowed.n > 0) {
                if (ret_effective)
                        *ret_effective = allowed;
                else
                        scope_set_done(&allowed);
                return 0;
        }

        /* Refused: say what was allowed, in words and in *ret_effective. */
        _cleanup_free_ char *allowed_s = scope_set_join(&allowed), *what = NULL;
        r = -ENOMEM;
        if (!allowed_s)
                goto out;
        if (!asked) {
                _cleanup_free_ char *held = scope_set_join(credential_scopes), *mine = scope_set_join(&c->scopes);
                if (!held || !mine)
                        goto out;
                r = refuse(ret_why, "agent %s may use none of the scopes credential %s holds%s (agent may get: %s; "
                           "credential holds: %s)", a->name, show(credential, b2), via, mine, held);
        } else {
                /* Name first what the policy does not allow, else what the credential does not hold. */
                bool policy_wider = c && !c->scopes_all && !scope_set_is_subset(requested, &c->scopes, &missing);
                if (!policy_wider)
                        (void) scope_set_is_subset(requested, &allowed, &missing);
                if (missing.n == 0) /* only out of memory leaves it empty */
                        goto out;
                what = scope_set_join(&missing);
                if (!what)
                        goto out;
                bool plural = missing.n > 1;
                if (policy_wider)
                        r = refuse(ret_why,
                                   "scope%s %s %s wider than allowed for agent %s with credential %s%s (allowed: %s)",
                                   plural ? "s" : "", show(what, b1), plural ? "are" : "is", a->name,
                                   show(credential, b2), via, *allowed_s ? allowed_s : "none");
                else
                        r = refuse(ret_why, "scope%s %s %s not held by credential %s (allowed: %s)", plural ? "s" : "",
                                   show(what, b1), plural ? "are" : "is", show(credential, b2),
                                   *allowed_s ? allowed_s : "none");
        }
        if (r == -EPERM && ret_effective) {
                *ret_effective = allowed;
                allowed = (ScopeSet) {};
        }
out:
        scope_set_done(&allowed);
        scope_set_done(&missing);
        return r;
}

/* ---- accessors ---- */

const char *policy_agent_name(const PolicyAgent *a) {
        return a ? a->name : NULL;
}

PolicyMode policy_agent_mode(const PolicyAgent *a) {
        return a ? a->mode : POLICY_ASK;
}

const char *policy_agent_file(const PolicyAgent *a) {
        return a ? a->file : NULL;
}

unsigned policy_agent_line(const PolicyAgent *a) {
        return a ? a->line : 0;
}

uint64_t policy_agent_consent_usec(const PolicyAgent *a) {
        return a ? a->consent_usec : POLICY_CONSENT_DEFAULT_USEC;
}

uint64_t policy_agent_max_lifetime_usec(const PolicyAgent *a) {
        return a ? a->max_lifetime_usec : 0;
}

/* Add v to an object or array. They take v in every case (json-c leaves it
 * with the caller when adding fails) and are false when v is NULL (out of
 * memory) or adding failed. */
static bool obj_add(json_object *o, const char *key, json_object *v) {
        if (v && json_object_object_add(o, key, v) == 0)
                return true;
        json_object_put(v);
        return false;
}

static bool arr_add(json_object *a, json_object *v) {
        if (v && json_object_array_add(a, v) == 0)
                return true;
        json_object_put(v);
        return false;
}

static json_object *policy_credential_to_json(const PolicyCredential *c) {
        json_object *o = json_object_new_object(), *scopes = json_object_new_array(),
                    *resources = json_object_new_array();
        bool ok = o && scopes && resources;

        if (ok && c->scopes_all)
                ok = arr_add(scopes, json_object_new_string("*"));
        for (size_t i = 0; ok && !c->scopes_all && i < c->scopes.n; i++)
                ok = arr_add(scopes, json_object_new_string(c->scopes.items[i]));
        if (ok && c->resources_all)
                ok = arr_add(resources, json_object_new_string("*"));
        for (size_t i = 0; ok && i < c->n_resources; i++)
                ok = arr_add(resources, json_object_new_string(c->resources[i]));
        if (ok)
                ok = obj_add(o, "name", json_object_new_string(c->name));
        if (ok)
                ok = obj_add(o, "scopes", TAKE_PTR(scopes));
        if (ok)
                ok = obj_add(o, "resources", TAKE_PTR(resources));
        if (!ok) {
                json_object_put(o);
                json_object_put(scopes);
                json_object_put(resources);
                return NULL;
        }
        return o;
}

json_object *policy_agent_to_json(const PolicyAgent *a) {
        json_object *o = json_object_new_object(), *creds = NULL;
        bool ok = o && obj_add(o, "mode", json_object_new_string(policy_mode_to_string(policy_agent_mode(a)))) &&
                  obj_add(o, "consent_duration",
                          json_object_new_int64((int64_t) (policy_agent_consent_usec(a) / USEC_PER_SEC)));
        if (ok && a) {
                ok = obj_add(o, "name", json_object_new_string(a->name)) &&
                     obj_add(o, "file", json_object_new_string(a->file)) &&
                     obj_add(o, "line", json_object_new_int64(a->line));
                if (ok && a->max_lifetime_usec > 0)
                        ok = obj_add(o, "max_lifetime",
                                     json_object_new_int64((int64_t) (a->max_lifetime_usec / USEC_PER_SEC)));
                if (ok && a->unit)
                        ok = obj_add(o, "unit", json_object_new_string(a->unit));
                if (ok && a->exe)
                        ok = obj_add(o, "exe", json_object_new_string(a->exe));
                if (ok && a->has_uid)
                        ok = obj_add(o, "uid", json_object_new_int64(a->uid));
                if (ok && a->cgroup)
                        ok = obj_add(o, "cgroup", json_object_new_string(a->cgroup));
                if (ok)
                        ok = (creds = json_object_new_array());
                for (size_t i = 0; ok && i < a->n_credentials; i++)
                        ok = arr_add(creds, policy_credential_to_json(&a->credentials[i]));
                if (ok)
                        ok = obj_add(o, "credentials", TAKE_PTR(creds));
        }
        if (!ok) {
                json_object_put(o);
                json_object_put(creds);
                return NULL;
        }
        return o;
}
