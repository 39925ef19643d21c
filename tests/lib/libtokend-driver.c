/* SPDX-License-Identifier: MIT */
/* tests/lib/libtokend-driver.c: drives libtokend through its public API only,
 * for tests/integration/test_libtokend.py, which runs it under valgrind step
 * by step. Every result is one JSON line on stdout:
 *   {"code":0,"token":"...","token_type":"Bearer","expires_at":N,"scopes":[...]}
 *   {"code":-25,"strerror":"...","name":"io.tokend.agent.PolicyDenied","reason":"...",
 *    "retry_after":-1,"parameters":{...}}
 * and, for subscriptions, one line per event with "event" added. The token
 * goes to the pipe the test reads (it checks it at the OAuth server), never
 * to a log. Everything is freed before exit, so valgrind's leak check means
 * something. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tokend.h"

#define SCOPES_ARG_MAX 80

static const char *arg_socket;
static const char *arg_scopes[SCOPES_ARG_MAX + 1];
static size_t arg_n_scopes;
static bool arg_scopes_given;
static const char *arg_resource;
static int64_t arg_min_ttl = TOKEND_MIN_TTL_DEFAULT;
static bool arg_manager;
static int64_t arg_timeout_ms = -1;
static int64_t arg_reconnect_ms = -1;
static const char *arg_mode = "next";
static long arg_max_events = -1;

static void print_string(const char *s) {
        if (!s) {
                fputs("null", stdout);
                return;
        }
        putchar('"');
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        printf("\\%c", *p);
                else if (*p < 0x20)
                        printf("\\u%04x", *p);
                else
                        putchar(*p);
        }
        putchar('"');
}

static void print_token(const tokend_token *t) {
        fputs("\"code\":0,\"token\":", stdout);
        print_string(tokend_token_value(t));
        fputs(",\"token_type\":", stdout);
        print_string(tokend_token_type(t));
        printf(",\"expires_at\":%" PRId64 ",\"scopes\":[", tokend_token_expires_at(t));
        const char *const *s = tokend_token_scopes(t);
        for (size_t i = 0; s[i]; i++) {
                if (i > 0)
                        putchar(',');
                print_string(s[i]);
        }
        putchar(']');
}

static void print_error(int code, const tokend_error *e) {
        printf("\"code\":%d,\"strerror\":", code);
        print_string(tokend_strerror(code));
        fputs(",\"error_code\":", stdout);
        printf("%d", tokend_error_code(e));
        fputs(",\"name\":", stdout);
        print_string(tokend_error_name(e));
        fputs(",\"reason\":", stdout);
        print_string(tokend_error_reason(e));
        printf(",\"retry_after\":%" PRId64 ",\"credential\":", tokend_error_retry_after(e));
        print_string(tokend_error_parameter(e, "credential"));
        printf(",\"parameters\":%s", tokend_error_parameters_json(e));
}

static void end_line(void) {
        fputs("}\n", stdout);
        fflush(stdout);
}

static const char *const *scopes_arg(void) {
        return arg_scopes_given ? arg_scopes : NULL;
}

static int client_new(tokend_client **ret) {
        tokend_client *c = NULL;
        int r = tokend_client_new(arg_socket, &c);
        if (r < 0) {
                fputs("{", stdout);
                print_error(r, NULL);
                end_line();
                return r;
        }
        if (arg_timeout_ms > 0)
                (void) tokend_client_set_timeout(c, (uint64_t) arg_timeout_ms * 1000);
        if (arg_reconnect_ms >= 0)
                (void) tokend_client_set_reconnect(c, (uint64_t) arg_reconnect_ms * 1000);
        *ret = c;
        return 0;
}

static int get_once(tokend_client *c, const char *credential) {
        tokend_token *t = NULL;
        int r = tokend_get_token(c, credential, scopes_arg(), arg_resource, arg_min_ttl,
                                 arg_manager ? TOKEND_FLAG_MANAGER : 0, &t);
        fputs("{", stdout);
        if (r < 0)
                print_error(r, tokend_client_error(c));
        else
                print_token(t);
        end_line();
        tokend_token_free(t);
        return r;
}

/* get CRED [--count N]: N GetToken calls on one client (the connection is kept). */
static int verb_get(const char *credential, long count) {
        tokend_client *c = NULL;
        if (client_new(&c) < 0)
                return 0;
        for (long i = 0; i < count; i++)
                (void) get_once(c, credential);
        tokend_client_free(c);
        return 0;
}

/* Waits for a line on stdin ("go") or EOF. */
static void wait_stdin(void) {
        char buf[64];
        (void) !read(STDIN_FILENO, buf, sizeof buf);
}

/* get-twice CRED: one GetToken, then waits for a line on stdin (the test
 * restarts the daemon meanwhile), then another on the same client: the kept
 * connection is broken and the library reconnects. */
static int verb_get_twice(const char *credential) {
        tokend_client *c = NULL;
        if (client_new(&c) < 0)
                return 0;
        (void) get_once(c, credential);
        wait_stdin();
        (void) get_once(c, credential);
        tokend_client_free(c);
        return 0;
}

/* caller-gone CRED: process A connects (a GetToken for a credential that does
 * not exist: any answer will do), forks B and exits;
 * once A is reaped, B calls on A's connection: the daemon must answer
 * CallerGone (the process that opened the connection is gone). B prints the
 * result; this process (a subreaper, so B is its child) waits for both. */
static int verb_caller_gone(const char *credential) {
        int go[2];

        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 || pipe(go) < 0)
                return perror("caller-gone"), 1;
        fflush(stdout);
        pid_t a = fork();
        if (a < 0)
                return perror("fork"), 1;
        if (a == 0) {
                tokend_client *c = NULL;
                close(go[1]);
                if (client_new(&c) < 0)
                        _exit(1);
                /* Any answer will do: it opens the connection B inherits. */
                (void) get_once(c, "no-such-credential");
                pid_t b = fork();
                if (b < 0)
                        _exit(1);
                if (b == 0) {
                        char x;
                        /* B: wait until A is gone, then call on A's connection. */
                        (void) !read(go[0], &x, 1);
                        close(go[0]);
                        (void) get_once(c, credential);
                        tokend_client_free(c);
                        exit(0);
                }
                close(go[0]);
                tokend_client_free(c); /* closes A's copy of the socket only */
                exit(0);
        }
        close(go[0]);
        int status;
        if (waitpid(a, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                close(go[1]);
                fprintf(stderr, "caller-gone: process A failed\n");
                return 1;
        }
        (void) !write(go[1], "x", 1);
        close(go[1]);
        /* B is ours now (subreaper); wait for every remaining child. */
        int rc = 0;
        while (wait(&status) > 0)
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        rc = 1;
        return rc;
}

static const char *event_name(tokend_event e) {
        switch (e) {
        case TOKEND_EVENT_NONE:
                return "none";
        case TOKEND_EVENT_TOKEN:
                return "token";
        case TOKEND_EVENT_DISCONNECTED:
                return "disconnected";
        case TOKEND_EVENT_ENDED:
                return "ended";
        }
        return "?";
}

static void print_event(tokend_subscription *s, tokend_event event, int code) {
        printf("{\"event\":\"%s\",\"reconnects\":%u,", event_name(event), tokend_subscription_reconnects(s));
        if (event == TOKEND_EVENT_TOKEN)
                print_token(tokend_subscription_token(s));
        else
                print_error(code, tokend_subscription_error(s));
        end_line();
}

typedef struct Counter {
        long events;
} Counter;

static void on_event(tokend_subscription *s, tokend_event event, int code, void *userdata) {
        Counter *n = userdata;
        print_event(s, event, code);
        if (arg_max_events > 0 && ++n->events >= arg_max_events)
                tokend_subscription_stop(s);
}

/* True when stdin has been closed (the test's way of ending a subscription). */
static bool stdin_closed(int timeout_ms) {
        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
        if (poll(&p, 1, timeout_ms) <= 0)
                return false;
        char buf[64];
        return read(STDIN_FILENO, buf, sizeof buf) <= 0;
}

/* subscribe CRED [--mode next|process|run] [--max-events N]: prints every
 * event until the stream ends, N events were seen, or stdin is closed.
 * next: tokend_subscription_next() with a timeout; process: poll() on
 * tokend_subscription_fd() and stdin, then tokend_subscription_process();
 * run: tokend_subscription_run() with a callback that stops after N events. */
static int verb_subscribe(const char *credential) {
        tokend_client *c = NULL;
        tokend_subscription *s = NULL;
        Counter n = {};
        bool use_callback = strcmp(arg_mode, "next") != 0;

        if (client_new(&c) < 0)
                return 0;
        int r = tokend_subscribe(c, credential, scopes_arg(), arg_resource, arg_min_ttl, 0,
                                 use_callback ? on_event : NULL, &n, &s);
        if (r < 0) {
                fputs("{\"event\":\"subscribe-failed\",", stdout);
                print_error(r, tokend_client_error(c));
                end_line();
                tokend_client_free(c);
                return 0;
        }
        /* The subscription does not depend on the client. */
        c = tokend_client_free(c);
        printf("{\"event\":\"subscribed\",\"fd\":%d}\n", tokend_subscription_fd(s));
        fflush(stdout);

        if (strcmp(arg_mode, "run") == 0) {
                r = tokend_subscription_run(s);
                printf("{\"event\":\"run-returned\",\"code\":%d}\n", r);
                fflush(stdout);
        } else if (strcmp(arg_mode, "process") == 0) {
                int fd = tokend_subscription_fd(s);
                for (;;) {
                        struct pollfd p[2] = {
                                { .fd = fd, .events = POLLIN },
                                { .fd = STDIN_FILENO, .events = POLLIN },
                        };
                        if (poll(p, 2, -1) < 0 && errno != EINTR)
                                break;
                        if (p[1].revents && stdin_closed(0))
                                break;
                        if (p[0].revents) {
                                r = tokend_subscription_process(s);
                                if (r < 0 || (arg_max_events > 0 && n.events >= arg_max_events))
                                        break;
                        }
                }
                if (r < 0 && tokend_subscription_fd(s) != -1) {
                        fprintf(stderr, "subscription ended but its fd is still handed out\n");
                        r = 1;
                }
        } else {
                for (;;) {
                        r = tokend_subscription_next(s, 200 * 1000);
                        if (r < 0) {
                                print_event(s, TOKEND_EVENT_ENDED, r);
                                /* Later calls keep returning the end code. */
                                if (tokend_subscription_next(s, 0) != r)
                                        fprintf(stderr, "next() after the end returned another value\n");
                                break;
                        }
                        if (r > 0) {
                                print_event(s, (tokend_event) r,
                                            r == TOKEND_EVENT_TOKEN ? TOKEND_OK : TOKEND_ERR_DISCONNECTED);
                                if (arg_max_events > 0 && ++n.events >= arg_max_events)
                                        break;
                        } else if (stdin_closed(0))
                                break;
                }
        }
        printf("{\"event\":\"exit\"}\n");
        fflush(stdout);
        tokend_subscription_free(s);
        return 0;
}

/* pause: prints a line and waits for stdin to close (the test reads /proc/PID/exe meanwhile). */
static int verb_pause(void) {
        printf("{\"pid\":%d}\n", (int) getpid());
        fflush(stdout);
        while (!stdin_closed(-1))
                ;
        return 0;
}

static int verb_sanitized(void) {
#if defined(__SANITIZE_ADDRESS__)
        return 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
        return 0;
#endif
#endif
        return 1;
}

static void reset_args(void) {
        arg_socket = NULL;
        memset(arg_scopes, 0, sizeof arg_scopes);
        arg_n_scopes = 0;
        arg_scopes_given = false;
        arg_resource = NULL;
        arg_min_ttl = TOKEND_MIN_TTL_DEFAULT;
        arg_manager = false;
        arg_timeout_ms = -1;
        arg_reconnect_ms = -1;
        arg_mode = "next";
        arg_max_events = -1;
}

static int dispatch(int argc, char *argv[], bool scripted);

/* Decodes %XX in place (so that a script line can carry a blank or a byte
 * like %ff into an argument). */
static void percent_decode(char *s) {
        char *w = s;
        for (char *p = s; *p; p++) {
                unsigned v;
                if (p[0] == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1) {
                        *w++ = (char) v;
                        p += 2;
                } else
                        *w++ = *p;
        }
        *w = '\0';
}

/* script: runs one command a line from stdin (blank-separated arguments,
 * %XX-decoded), e.g. "get cred --scope read", so that one valgrind start
 * covers many calls. */
static int verb_script(void) {
        char *line = NULL;
        size_t size = 0;
        int rc = 0;

        while (getline(&line, &size, stdin) > 0) {
                char *argv[SCOPES_ARG_MAX * 2 + 16] = { (char *) "libtokend-driver" };
                int argc = 1;
                char *save = NULL;
                for (char *tok = strtok_r(line, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
                        if (argc >= (int) (sizeof argv / sizeof argv[0]) - 1) {
                                fprintf(stderr, "script: too many arguments\n");
                                free(line);
                                return 2;
                        }
                        percent_decode(tok);
                        argv[argc++] = tok;
                }
                if (argc == 1)
                        continue;
                int r = dispatch(argc, argv, true);
                if (r != 0)
                        rc = r;
        }
        free(line);
        return rc;
}

static int dispatch(int argc, char *argv[], bool scripted) {
        enum { ARG_SOCKET = 0x100, ARG_SCOPE, ARG_NO_SCOPES, ARG_RESOURCE, ARG_MIN_TTL, ARG_MANAGER, ARG_TIMEOUT_MS,
               ARG_RECONNECT_MS, ARG_MODE, ARG_MAX_EVENTS, ARG_COUNT };
        static const struct option options[] = {
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "scope", required_argument, NULL, ARG_SCOPE },
                { "no-scopes", no_argument, NULL, ARG_NO_SCOPES },
                { "resource", required_argument, NULL, ARG_RESOURCE },
                { "min-ttl", required_argument, NULL, ARG_MIN_TTL },
                { "manager", no_argument, NULL, ARG_MANAGER },
                { "timeout-ms", required_argument, NULL, ARG_TIMEOUT_MS },
                { "reconnect-ms", required_argument, NULL, ARG_RECONNECT_MS },
                { "mode", required_argument, NULL, ARG_MODE },
                { "max-events", required_argument, NULL, ARG_MAX_EVENTS },
                { "count", required_argument, NULL, ARG_COUNT },
                {}
        };
        long count = 1;
        int c;

        reset_args();
        optind = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_SCOPE:
                        if (arg_n_scopes >= SCOPES_ARG_MAX)
                                return 2;
                        arg_scopes[arg_n_scopes++] = optarg;
                        arg_scopes_given = true;
                        break;
                case ARG_NO_SCOPES: /* an empty list: the same as none */
                        arg_scopes_given = true;
                        break;
                case ARG_RESOURCE:
                        arg_resource = optarg;
                        break;
                case ARG_MIN_TTL:
                        arg_min_ttl = strtoll(optarg, NULL, 10);
                        break;
                case ARG_MANAGER:
                        arg_manager = true;
                        break;
                case ARG_TIMEOUT_MS:
                        arg_timeout_ms = strtoll(optarg, NULL, 10);
                        break;
                case ARG_RECONNECT_MS:
                        arg_reconnect_ms = strtoll(optarg, NULL, 10);
                        break;
                case ARG_MODE:
                        arg_mode = optarg;
                        break;
                case ARG_MAX_EVENTS:
                        arg_max_events = strtol(optarg, NULL, 10);
                        break;
                case ARG_COUNT:
                        count = strtol(optarg, NULL, 10);
                        break;
                default:
                        return 2;
                }
        if (optind >= argc)
                return 2;
        const char *verb = argv[optind];
        const char *cred = optind + 1 < argc ? argv[optind + 1] : NULL;
        if (strcmp(verb, "sanitized") == 0)
                return verb_sanitized();
        if (strcmp(verb, "pause") == 0)
                return verb_pause();
        if (strcmp(verb, "script") == 0 && !scripted)
                return verb_script();
        if (!cred)
                return 2;
        if (strcmp(verb, "get") == 0)
                return verb_get(cred, count);
        if (strcmp(verb, "get-twice") == 0 && !scripted)
                return verb_get_twice(cred);
        if (strcmp(verb, "caller-gone") == 0 && !scripted)
                return verb_caller_gone(cred);
        if (strcmp(verb, "subscribe") == 0 && !scripted)
                return verb_subscribe(cred);
        fprintf(stderr, "unknown verb %s\n", verb);
        return 2;
}

int main(int argc, char *argv[]) {
        signal(SIGPIPE, SIG_IGN);
        return dispatch(argc, argv, false);
}
