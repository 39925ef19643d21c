/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-tokenctl-args.c: tokenctl's command line, as far as it goes
 * without a daemon: global options, the verb table, every verb's getopt loop
 * and argument checks (durations, scopes, ids, credential names, --since,
 * --min-ttl), up to the point where a verb connects to tokend, which fails at
 * once: $TOKEND_SOCKET names a path that does not exist.
 *
 * Input: the arguments after "tokenctl", separated by NUL bytes. Each
 * argument is also given directly to duration_parse(), tokenctl_escape(),
 * tokenctl_id_valid() and tokenctl_add_scopes().
 *
 * tokenctl.c is compiled into this file (its main() renamed), as
 * wireguard-tools' fuzzers include the file under test, so that its static
 * state (--socket, --json, getopt's position) is reset before every run.
 * Inputs are skipped when they could leave the sandbox of a run: an argument
 * with a '/' (a file or socket outside the working directory, /dev/tty), and
 * the verb "watch", which installs signal handlers. "audit" runs with the
 * journal unavailable (its loader is replaced, see below) and
 * $XDG_STATE_HOME pointing nowhere. Standard input is /dev/null; what
 * tokenctl prints goes to /dev/null too.
 *
 * Invariants checked: exit codes are the documented ones; a parsed duration
 * is within 1s-30d and survives formatting and parsing again; escaping gives
 * no control characters and is idempotent; an id that passes is 1-64
 * visible ASCII characters; --scope splits into 1-64 non-empty scopes. */
#include <fcntl.h>

#include "fuzz.h"
#include "tokenctl-audit.h"

int tokenctl_main(int argc, char *argv[]);
#define main tokenctl_main
#include "tokenctl.c"
#undef main

#include "duration.h"

#define ARGS_MAX 64

/* No journal: "tokenctl audit" must not read the host's. This replaces
 * the weak one in tokenctl-audit.c, which names journalctl. */
const char *tokenctl_audit_journalctl(void) {
        return NULL;
}

static FILE *devnull;

/* Runs expr with what tokenctl prints going to /dev/null; assertion messages
 * (outside) still reach the log. */
#define QUIET(expr)                                         \
        ({                                                  \
                FILE *_out = stdout, *_err = stderr;        \
                stdout = stderr = devnull;                  \
                __typeof__(expr) _r = (expr);               \
                stdout = _out;                              \
                stderr = _err;                              \
                _r;                                         \
        })

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
                abort();
        if (fd != STDIN_FILENO)
                close(fd);
        devnull = fopen("/dev/null", "we");
        if (!devnull)
                abort();
        setenv("TOKEND_SOCKET", "/nonexistent/tokend-fuzz/socket", 1);
        setenv("XDG_STATE_HOME", "/nonexistent/tokend-fuzz", 1);
        unsetenv("DISPLAY");
        unsetenv("WAYLAND_DISPLAY");
        return 0;
}

static void check_duration(const char *s) {
        uint64_t sec = 0, again = 0, third = 0;
        char a[DURATION_FORMAT_MAX], b[DURATION_FORMAT_MAX];

        int r = duration_parse(s, &sec);
        if (r < 0) {
                ASSERT_TRUE(r == -EINVAL || r == -ERANGE);
                return;
        }
        ASSERT_TRUE(sec >= 1 && sec <= DURATION_MAX_SEC);
        /* Formatting rounds down to two units; that much parses back, and is stable. */
        ASSERT_OK(duration_parse(duration_format(sec, a, sizeof a), &again));
        ASSERT_TRUE(again >= 1 && again <= sec);
        ASSERT_OK(duration_parse(duration_format(again, b, sizeof b), &third));
        ASSERT_STREQ(a, b);
        ASSERT_EQ(third, again);
}

static void check_escape(const char *s) {
        _cleanup_free_ char *e = tokenctl_escape(s);
        ASSERT_TRUE(e);
        for (const char *p = e; *p; p++)
                ASSERT_TRUE((unsigned char) *p >= 0x20 && *p != 0x7f);
        _cleanup_free_ char *e2 = tokenctl_escape(e);
        ASSERT_STREQ(e2, e);
}

static void check_id(const char *s) {
        if (!QUIET(tokenctl_id_valid("fuzz", s)))
                return;
        size_t n = strlen(s);
        ASSERT_TRUE(n >= 1 && n <= ID_MAX);
        for (size_t i = 0; i < n; i++)
                ASSERT_TRUE((unsigned char) s[i] > ' ' && (unsigned char) s[i] < 0x7f);
}

static void check_scopes(const char *s) {
        _cleanup_free_ char *copy = strdup(s); /* split in place */
        _cleanup_(json_object_putp) json_object *a = json_object_new_array();
        if (!copy || !a)
                return;
        int r = QUIET(tokenctl_add_scopes(a, copy));
        ASSERT_TRUE(r == 0 || r == -E2BIG);
        size_t n = json_object_array_length(a);
        ASSERT_TRUE(n <= SCOPES_MAX);
        for (size_t i = 0; i < n; i++) {
                const char *v = json_object_get_string(json_object_array_get_idx(a, i));
                ASSERT_TRUE(v && *v && strlen(v) <= SCOPE_LEN_MAX && !strpbrk(v, " ,"));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *argv[ARGS_MAX + 2] = { (char *) "tokenctl" };
        int argc = 1;

        if (size > FUZZ_INPUT_MAX)
                return 0;
        /* Mutable copies: getopt permutes argv, and --scope is split in place. */
        _cleanup_free_ char *buf = fuzz_strndup(data, size);
        if (!buf)
                return 0;
        for (size_t pos = 0; pos < size;) {
                char *arg = buf + pos;
                if (argc > ARGS_MAX || strchr(arg, '/') || streq(arg, "watch"))
                        return 0;
                argv[argc++] = arg;
                pos += strlen(arg) + 1;
        }
        argv[argc] = NULL;

        for (int i = 1; i < argc; i++) {
                check_duration(argv[i]);
                check_escape(argv[i]);
                check_id(argv[i]);
                check_scopes(argv[i]);
        }

        /* What main() would find in a fresh process. */
        arg_socket = NULL;
        arg_json = false;
        optind = 0;
        int r = QUIET(tokenctl_main(argc, argv));
        /* 126, 127: "exec" was given a command it cannot run, or none it finds. */
        if ((r < EXIT_OK || r > EXIT_DENIED) && r != EXIT_EXEC_CANNOT_RUN && r != EXIT_EXEC_NOT_FOUND)
                TEST_FAIL("tokenctl exited %d", r);
        return 0;
}
