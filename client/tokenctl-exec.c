/* SPDX-License-Identifier: MIT */
/* client/tokenctl-exec.c: see tokenctl-exec.h. The token goes into the
 * environment that execve() gives CMD, built here in one buffer that is wiped
 * if CMD cannot be run; tokend's reply is wiped before the exec. The token is
 * not renewed in CMD: it is good until VAR_EXPIRES_AT, and for at least
 * --min-ttl seconds from the start. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/util.h"
#include "tokenctl-exec.h"
#include "tokenctl-token.h"
#include "tokenctl.h"
#include "varlink.h"

#define EXPIRES_SUFFIX "_EXPIRES_AT"

static int usage(void) {
        fprintf(stderr, "tokenctl exec: usage: tokenctl exec NAME [--env VAR] [--scope S]... [--resource URI]\n"
                "       [--min-ttl SECONDS] -- CMD [ARG]...\n");
        return EXIT_USAGE;
}

/* A name a shell could export: a letter or '_', then letters, digits and '_'.
 * Not PATH (CMD is looked up in it), nor LD_* (the dynamic loader reads those,
 * and its error messages would print the token). */
static bool env_name_valid(const char *s) {
        size_t l = strlen(s);
        if (l == 0 || l > EXEC_ENV_NAME_MAX) {
                fprintf(stderr, "tokenctl exec: --env takes a name of 1 to %u characters.\n", EXEC_ENV_NAME_MAX);
                return false;
        }
        for (size_t i = 0; i < l; i++) {
                char c = s[i];
                bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
                if (!alpha && (i == 0 || !(c >= '0' && c <= '9'))) {
                        fprintf(stderr, "tokenctl exec: --env takes a variable name: a letter or '_', then letters, "
                                "digits and '_'.\n");
                        return false;
                }
        }
        if (streq(s, "PATH") || startswith(s, "LD_")) {
                fprintf(stderr, "tokenctl exec: --env %s is refused: the token would be read as a %s.\n", s,
                        streq(s, "PATH") ? "search path" : "dynamic loader setting");
                return false;
        }
        return true;
}

/* Whether path names an executable regular file: 0, or a negative errno
 * (-EACCES also for a directory, as execve() says). */
static int executable_at(const char *path) {
        struct stat st;
        if (stat(path, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
                return -EACCES;
        return 0;
}

/* Whether execvp() would find cmd: 0; -ENOENT when it finds nothing, -EACCES
 * when it finds only files it cannot run. Checked before asking tokend, so
 * that a mistyped command costs no token and no consent prompt. */
static int command_check(const char *cmd) {
        if (isempty(cmd))
                return -ENOENT;
        if (strchr(cmd, '/'))
                return executable_at(cmd);
        /* glibc's execvp() searches this when PATH is unset. */
        const char *path = getenv("PATH") ?: "/bin:/usr/bin";
        bool found_other = false;
        for (const char *p = path;; p++) {
                const char *end = strchrnul(p, ':');
                char file[PATH_MAX];
                int n = end == p ? snprintf(file, sizeof file, "%s", cmd)
                                 : snprintf(file, sizeof file, "%.*s/%s", (int) (end - p), p, cmd);
                if (n > 0 && (size_t) n < sizeof file) {
                        int r = executable_at(file);
                        if (r == 0)
                                return 0;
                        if (r != -ENOENT && r != -ENOTDIR)
                                found_other = true;
                }
                if (!*end)
                        break;
                p = end;
        }
        return found_other ? -EACCES : -ENOENT;
}

static bool env_entry_is(const char *entry, const char *name, const char *suffix) {
        size_t l = strlen(name), ls = strlen(suffix);
        return strncmp(entry, name, l) == 0 && strncmp(entry + l, suffix, ls) == 0 && entry[l + ls] == '=';
}

/* The environment for CMD: tokenctl's own, without any earlier VAR or
 * VAR_EXPIRES_AT, plus the two assignments given. The array is the caller's
 * to free; the strings are borrowed. */
static char **env_for_command(const char *var, char *assign_token, char *assign_expiry) {
        extern char **environ;
        size_t n = 0, k = 0;
        for (char **e = environ; e && *e; e++)
                n++;
        char **envp = calloc(n + 3, sizeof(char *));
        if (!envp)
                return NULL;
        for (char **e = environ; e && *e; e++)
                if (!env_entry_is(*e, var, "") && !env_entry_is(*e, var, EXPIRES_SUFFIX))
                        envp[k++] = *e;
        envp[k++] = assign_token;
        envp[k++] = assign_expiry;
        envp[k] = NULL;
        return envp;
}

static int report_cannot_run(const char *cmd, int err) {
        _cleanup_free_ char *e = tokenctl_escape(cmd);
        if (err == ENOENT || err == ENOTDIR) {
                fprintf(stderr, "tokenctl exec: %s: command not found.\n", strna(e));
                return EXIT_EXEC_NOT_FOUND;
        }
        fprintf(stderr, "tokenctl exec: cannot run %s: %s.\n", strna(e), strerror(err));
        return EXIT_EXEC_CANNOT_RUN;
}

int tokenctl_exec(int argc, char *argv[]) {
        enum { ARG_ENV = 0x100 };
        static const struct option options[] = {
                { "env", required_argument, NULL, ARG_ENV },
                TOKEN_REQUEST_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) json_object *scopes = json_object_new_array();
        TokenRequestOptions o = { .scopes = scopes, .min_ttl = TOKEN_HELPER_MIN_TTL_DEFAULT };
        const char *var = EXEC_ENV_DEFAULT;
        int c, dashes;

        /* tokenctl's options end at the first "--"; the command follows it.
         * getopt only sees what is before, so CMD's own options stay CMD's. */
        for (dashes = 1; dashes < argc && !streq(argv[dashes], "--"); dashes++)
                ;
        if (dashes >= argc - 1)
                return usage();

        optind = 0;
        while ((c = getopt_long(dashes, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ENV:
                        if (!env_name_valid(optarg))
                                return EXIT_USAGE;
                        var = optarg;
                        break;
                default:
                        if (tokenctl_token_request_option("exec", c, optarg, &o) <= 0)
                                return EXIT_USAGE;
                }
        }
        if (optind != dashes - 1)
                return usage();
        const char *name = argv[optind];
        char **cmd = argv + dashes + 1;
        if (!tokenctl_credential_name_valid("exec", name))
                return EXIT_USAGE;

        int r = command_check(cmd[0]);
        if (r < 0)
                return report_cannot_run(cmd[0], -r);

        _cleanup_(json_object_put_erasep) json_object *reply = NULL;
        r = tokenctl_fetch_token(name, o.scopes, o.resource, o.min_ttl, &reply);
        if (r != EXIT_OK)
                return r;
        const char *token;
        int64_t expires_at;
        r = tokenctl_token_usable(reply, &token, &expires_at);
        if (r != EXIT_OK)
                return r;

        _cleanup_erase_ char *assign_token = NULL;
        _cleanup_free_ char *assign_expiry = NULL, **envp = NULL;
        size_t lv = strlen(var), lt = strlen(token);
        assign_token = malloc(lv + 1 + lt + 1);
        if (!assign_token || asprintf(&assign_expiry, "%s" EXPIRES_SUFFIX "=%" PRId64, var, expires_at) < 0) {
                assign_expiry = NULL;
                fprintf(stderr, "tokenctl: out of memory.\n");
                return EXIT_FAILURE_;
        }
        memcpy(assign_token, var, lv);
        assign_token[lv] = '=';
        memcpy(assign_token + lv + 1, token, lt + 1);
        json_object_put_erase(TAKE_PTR(reply));
        token = NULL;

        envp = env_for_command(var, assign_token, assign_expiry);
        if (!envp) {
                fprintf(stderr, "tokenctl: out of memory.\n");
                return EXIT_FAILURE_;
        }
        (void) fflush(NULL);
        execvpe(cmd[0], cmd, envp);
        return report_cannot_run(cmd[0], errno);
}
