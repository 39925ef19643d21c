/* SPDX-License-Identifier: MIT */
/* lib/test-libtokend.c: unit tests of libtokend through its public API: codes,
 * socket path, local argument checks, and, against a fake daemon on a Unix
 * socket (a thread answering scripted replies), the mapping of every error
 * name, malformed replies, timeouts, the kept connection, and a
 * subscription's events, reconnection and end. The real daemon is
 * tests/integration/test_libtokend.py's business. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/test.h"
#include "tokend.h"

#define NOWHERE "/nonexistent/tokend-test.sock"

/* The ABI: these values never change. */
_Static_assert(TOKEND_ERR_INVALID_ARGUMENT == -1 && TOKEND_ERR_NO_MEMORY == -2 && TOKEND_ERR_NOT_REACHABLE == -3 &&
                       TOKEND_ERR_DISCONNECTED == -4 && TOKEND_ERR_TIMEOUT == -5 && TOKEND_ERR_PROTOCOL == -6,
               "local codes");
_Static_assert(TOKEND_ERR_PERMISSION_DENIED == -10 && TOKEND_ERR_INVALID_PARAMETER == -11 &&
                       TOKEND_ERR_NOT_SUPPORTED == -12 && TOKEND_ERR_DAEMON == -13,
               "Varlink codes");
_Static_assert(TOKEND_ERR_CALLER_GONE == -20 && TOKEND_ERR_NO_SUCH_CREDENTIAL == -21 &&
                       TOKEND_ERR_REAUTHENTICATION_REQUIRED == -22 && TOKEND_ERR_PROVIDER_UNAVAILABLE == -23 &&
                       TOKEND_ERR_SCOPE_NOT_ALLOWED == -24 && TOKEND_ERR_POLICY_DENIED == -25 &&
                       TOKEND_ERR_CONSENT_REQUIRED == -26 && TOKEND_ERR_CONSENT_DENIED == -27 &&
                       TOKEND_ERR_STORE_UNAVAILABLE == -28 && TOKEND_ERR_LIFETIME_TOO_SHORT == -29 &&
                       TOKEND_ERR_CONSENT_ENDED == -30 && TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS == -31,
               "io.tokend.agent codes");

static const struct {
        const char *name;
        int code;
} error_names[] = {
        { "io.tokend.agent.CallerGone", TOKEND_ERR_CALLER_GONE },
        { "io.tokend.agent.NoSuchCredential", TOKEND_ERR_NO_SUCH_CREDENTIAL },
        { "io.tokend.agent.ReauthenticationRequired", TOKEND_ERR_REAUTHENTICATION_REQUIRED },
        { "io.tokend.agent.ProviderUnavailable", TOKEND_ERR_PROVIDER_UNAVAILABLE },
        { "io.tokend.agent.ScopeNotAllowed", TOKEND_ERR_SCOPE_NOT_ALLOWED },
        { "io.tokend.agent.PolicyDenied", TOKEND_ERR_POLICY_DENIED },
        { "io.tokend.agent.ConsentRequired", TOKEND_ERR_CONSENT_REQUIRED },
        { "io.tokend.agent.ConsentDenied", TOKEND_ERR_CONSENT_DENIED },
        { "io.tokend.agent.StoreUnavailable", TOKEND_ERR_STORE_UNAVAILABLE },
        { "io.tokend.agent.LifetimeTooShort", TOKEND_ERR_LIFETIME_TOO_SHORT },
        { "io.tokend.agent.ConsentEnded", TOKEND_ERR_CONSENT_ENDED },
        { "io.tokend.agent.TooManySubscriptions", TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS },
        { "org.varlink.service.PermissionDenied", TOKEND_ERR_PERMISSION_DENIED },
        { "org.varlink.service.InvalidParameter", TOKEND_ERR_INVALID_PARAMETER },
        { "org.varlink.service.MethodNotFound", TOKEND_ERR_NOT_SUPPORTED },
        { "org.varlink.service.MethodNotImplemented", TOKEND_ERR_NOT_SUPPORTED },
        { "org.varlink.service.InterfaceNotFound", TOKEND_ERR_NOT_SUPPORTED },
        { "io.tokend.InternalError", TOKEND_ERR_DAEMON },
        { "com.example.Unheard", TOKEND_ERR_DAEMON },
};

static const char TOKEN_REPLY[] = "{\"parameters\":{\"token\":\"tok-1\",\"token_type\":\"Bearer\","
                                  "\"expires_at\":4000000000,\"scopes\":[\"read\",\"write\"]}}";

/* ---- a fake daemon ---- */

typedef struct Fake Fake;
typedef void (*FakeScript)(Fake *f);

struct Fake {
        char dir[64];
        char path[128];
        int listen_fd;
        pthread_t thread;
        FakeScript script;
        const char *arg;     /* per test */
        char *last_call;     /* the last message read, for checks */
        int go[2];           /* the test tells the script to go on */
};

static int fake_accept(Fake *f) {
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        return fd;
}

/* Reads one NUL-terminated message; false at EOF. */
static bool fake_read(Fake *f, int fd) {
        char buf[8192];
        size_t n = 0;
        for (;;) {
                ASSERT_TRUE(n < sizeof buf);
                ssize_t k = read(fd, buf + n, 1);
                if (k <= 0)
                        return false;
                if (buf[n] == '\0')
                        break;
                n++;
        }
        free(f->last_call);
        f->last_call = strdup(buf);
        ASSERT_TRUE(f->last_call);
        return true;
}

static void fake_send(int fd, const char *json) {
        size_t len = strlen(json) + 1;
        ASSERT_EQ(write(fd, json, len), (ssize_t) len);
}

static void fake_wait_go(Fake *f) {
        char x;
        ASSERT_EQ(read(f->go[0], &x, 1), 1);
}

static void test_go(Fake *f) {
        ASSERT_EQ(write(f->go[1], "x", 1), 1);
}

static void *fake_main(void *userdata) {
        Fake *f = userdata;
        f->script(f);
        return NULL;
}

static void fake_start(Fake *f, FakeScript script, const char *arg) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        *f = (Fake) { .script = script, .arg = arg };
        strcpy(f->dir, "/tmp/test-libtokend-XXXXXX");
        ASSERT_TRUE(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/sock", f->dir);
        strcpy(sa.sun_path, f->path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(f->listen_fd >= 0);
        ASSERT_OK(bind(f->listen_fd, (struct sockaddr *) &sa, sizeof sa));
        ASSERT_OK(listen(f->listen_fd, 8));
        ASSERT_OK(pipe(f->go));
        ASSERT_EQ(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(Fake *f) {
        ASSERT_EQ(pthread_join(f->thread, NULL), 0);
        close(f->listen_fd);
        close(f->go[0]);
        close(f->go[1]);
        unlink(f->path);
        rmdir(f->dir);
        free(f->last_call);
}

/* ---- without a daemon ---- */

TEST(strerror) {
        static const int codes[] = {
                TOKEND_OK, -1, -2, -3, -4, -5, -6, -10, -11, -12, -13, -20, -21, -22, -23, -24, -25, -26, -27, -28,
                -29, -30, -31,
        };
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
                const char *t = tokend_strerror(codes[i]);
                ASSERT_TRUE(t && strcmp(t, "Unknown error") != 0);
                for (size_t j = 0; j < i; j++)
                        ASSERT_TRUE(strcmp(t, tokend_strerror(codes[j])) != 0);
        }
        ASSERT_STREQ(tokend_strerror(-7), "Unknown error");
        ASSERT_STREQ(tokend_strerror(1), "Unknown error");
        ASSERT_STREQ(tokend_strerror(-1000), "Unknown error");
}

TEST(socket_path) {
        tokend_client *c = NULL;
        char longpath[200];

        ASSERT_EQ(tokend_client_new("/run/x", NULL), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(tokend_client_new("", &c), TOKEND_ERR_INVALID_ARGUMENT);
        memset(longpath, 'a', sizeof longpath - 1);
        longpath[0] = '/';
        longpath[sizeof longpath - 1] = '\0';
        ASSERT_EQ(tokend_client_new(longpath, &c), TOKEND_ERR_INVALID_ARGUMENT);

        ASSERT_OK(setenv("TOKEND_SOCKET", "/from/env", 1));
        ASSERT_OK(setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1));
        ASSERT_EQ(tokend_client_new("/explicit", &c), TOKEND_OK);
        ASSERT_STREQ(tokend_client_socket_path(c), "/explicit");
        c = tokend_client_free(c);
        ASSERT_EQ(tokend_client_new(NULL, &c), TOKEND_OK);
        ASSERT_STREQ(tokend_client_socket_path(c), "/from/env");
        c = tokend_client_free(c);
        ASSERT_OK(unsetenv("TOKEND_SOCKET"));
        ASSERT_EQ(tokend_client_new(NULL, &c), TOKEND_OK);
        ASSERT_STREQ(tokend_client_socket_path(c), "/run/user/1000/tokend/socket");
        c = tokend_client_free(c);
        ASSERT_OK(setenv("XDG_RUNTIME_DIR", "relative", 1));
        ASSERT_EQ(tokend_client_new(NULL, &c), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_OK(unsetenv("XDG_RUNTIME_DIR"));
        ASSERT_EQ(tokend_client_new(NULL, &c), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_TRUE(c == NULL);
        ASSERT_TRUE(tokend_client_free(NULL) == NULL);
}

/* GetToken against a socket that does not exist: arguments the local checks
 * refuse give INVALID_ARGUMENT, those they let through NOT_REACHABLE. */
static int get(const char *credential, const char *const *scopes, const char *resource, int64_t min_ttl,
               unsigned flags) {
        tokend_client *c = NULL;
        tokend_token *t = NULL;
        ASSERT_OK(tokend_client_new(NOWHERE, &c));
        int r = tokend_get_token(c, credential, scopes, resource, min_ttl, flags, &t);
        ASSERT_TRUE(t == NULL);
        ASSERT_EQ(tokend_error_code(tokend_client_error(c)), r);
        ASSERT_TRUE(tokend_error_name(tokend_client_error(c)) == NULL);
        ASSERT_TRUE(tokend_error_reason(tokend_client_error(c)) != NULL);
        tokend_client_free(c);
        return r;
}

TEST(argument_caps) {
        char s65[66], s64[65], s257[258], s256[257], r2049[2050], r2048[2049];
        const char *scopes65[66] = {}, *one[2] = {};

        memset(s65, 'c', 65), s65[65] = '\0';
        memset(s64, 'c', 64), s64[64] = '\0';
        memset(s257, 's', 257), s257[257] = '\0';
        memset(s256, 's', 256), s256[256] = '\0';
        memset(r2049, 'r', 2049), r2049[2049] = '\0';
        memset(r2048, 'r', 2048), r2048[2048] = '\0';
        for (size_t i = 0; i < 65; i++)
                scopes65[i] = "s";

        ASSERT_EQ(get(NULL, NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get(s65, NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get(s64, NULL, NULL, -1, 0), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("c", scopes65, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", scopes65 + 1, NULL, -1, 0), TOKEND_ERR_NOT_REACHABLE); /* 64 */
        one[0] = s257;
        ASSERT_EQ(get("c", one, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        one[0] = s256;
        ASSERT_EQ(get("c", one, NULL, -1, 0), TOKEND_ERR_NOT_REACHABLE);
        one[0] = "";
        ASSERT_EQ(get("c", one, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", one + 1, NULL, -1, 0), TOKEND_ERR_NOT_REACHABLE); /* empty list: none */
        ASSERT_EQ(get("c", NULL, r2049, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", NULL, r2048, -1, 0), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("c", NULL, "", -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", NULL, NULL, -2, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", NULL, NULL, 0, 0), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("c", NULL, NULL, TOKEND_MIN_TTL_DEFAULT, TOKEND_FLAG_MANAGER), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("c", NULL, NULL, -1, 1U << 7), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", NULL, NULL, -1, TOKEND_FLAG_AS_OWNER), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("c", NULL, NULL, -1, TOKEND_FLAG_MANAGER | TOKEND_FLAG_AS_OWNER), TOKEND_ERR_INVALID_ARGUMENT);

        /* UTF-8: valid multibyte passes; overlong, surrogate, past U+10FFFF, truncated do not. */
        ASSERT_EQ(get("caf\xc3\xa9-\xf0\x9f\x94\x91", NULL, NULL, -1, 0), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_EQ(get("\xc0\xaf", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("\xe0\x80\xaf", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("\xed\xa0\x80", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("\xf4\x90\x80\x80", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("ab\xc3", NULL, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        one[0] = "\xff";
        ASSERT_EQ(get("c", one, NULL, -1, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(get("c", NULL, "https://x/\x80", -1, 0), TOKEND_ERR_INVALID_ARGUMENT);

        /* NULL handles. */
        tokend_token *t = NULL;
        ASSERT_EQ(tokend_get_token(NULL, "c", NULL, NULL, -1, 0, &t), TOKEND_ERR_INVALID_ARGUMENT);
        tokend_client *c = NULL;
        ASSERT_OK(tokend_client_new(NOWHERE, &c));
        ASSERT_EQ(tokend_get_token(c, "c", NULL, NULL, -1, 0, NULL), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(tokend_client_set_timeout(c, 0), TOKEND_ERR_INVALID_ARGUMENT);
        tokend_subscription *s = NULL;
        ASSERT_EQ(tokend_subscribe(c, "c", NULL, NULL, -1, 1, NULL, NULL, &s), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(tokend_subscribe(c, s65, NULL, NULL, -1, 0, NULL, NULL, &s), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_EQ(tokend_subscribe(c, "c", NULL, NULL, -1, 0, NULL, NULL, &s), TOKEND_ERR_NOT_REACHABLE);
        ASSERT_TRUE(s == NULL);
        ASSERT_TRUE(strstr(tokend_error_reason(tokend_client_error(c)), NOWHERE));
        tokend_client_free(c);
        ASSERT_EQ(tokend_subscription_next(NULL, 0), TOKEND_ERR_INVALID_ARGUMENT);
        ASSERT_TRUE(tokend_subscription_free(NULL) == NULL);
        ASSERT_TRUE(tokend_token_free(NULL) == NULL);
        ASSERT_TRUE(tokend_token_scopes(NULL)[0] == NULL);
        ASSERT_STREQ(tokend_error_parameters_json(NULL), "{}");
}

/* ---- GetToken against the fake daemon ---- */

/* Answers each call on one connection with the next reply of a list, then hangs up. */
static const char *const *script_replies;

static void script_answer_all(Fake *f) {
        int fd = fake_accept(f);
        for (size_t i = 0; script_replies[i]; i++) {
                ASSERT_TRUE(fake_read(f, fd));
                fake_send(fd, script_replies[i]);
        }
        close(fd);
}

TEST(error_names) {
        static char replies[sizeof error_names / sizeof error_names[0] + 1][512];
        static const char *list[sizeof error_names / sizeof error_names[0] + 1];
        Fake f;

        for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++) {
                snprintf(replies[i], sizeof replies[i],
                         "{\"error\":\"%s\",\"parameters\":{\"credential\":\"c%zu\",\"reason\":\"because %zu\","
                         "\"retry_after\":%zu,\"scopes\":[\"a\"]}}",
                         error_names[i].name, i, i, i);
                list[i] = replies[i];
        }
        script_replies = list;
        fake_start(&f, script_answer_all, NULL);

        tokend_client *c = NULL;
        ASSERT_OK(tokend_client_new(f.path, &c));
        for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++) {
                tokend_token *t = NULL;
                char want[64];
                int r = tokend_get_token(c, "c", NULL, NULL, -1, 0, &t);
                const tokend_error *e = tokend_client_error(c);
                ASSERT_EQ(r, error_names[i].code);
                ASSERT_TRUE(t == NULL);
                ASSERT_EQ(tokend_error_code(e), r);
                ASSERT_STREQ(tokend_error_name(e), error_names[i].name);
                snprintf(want, sizeof want, "because %zu", i);
                ASSERT_STREQ(tokend_error_reason(e), want);
                snprintf(want, sizeof want, "c%zu", i);
                ASSERT_STREQ(tokend_error_parameter(e, "credential"), want);
                ASSERT_TRUE(tokend_error_parameter(e, "scopes") == NULL); /* not a string */
                ASSERT_TRUE(tokend_error_parameter(e, "absent") == NULL);
                ASSERT_EQ(tokend_error_retry_after(e), (int64_t) i);
                ASSERT_TRUE(strstr(tokend_error_parameters_json(e), "\"scopes\""));
                /* Every call went out on the one kept connection, as GetToken. */
                ASSERT_TRUE(strstr(f.last_call, "\"io.tokend.agent.GetToken\""));
        }
        tokend_client_free(c);
        fake_stop(&f);
}

TEST(success_and_malformed) {
        static const char *const replies[] = {
                TOKEN_REPLY,
                TOKEN_REPLY,
                "{\"parameters\":{\"token\":\"t\",\"token_type\":\"Bearer\",\"scopes\":[]}}", /* no expires_at */
                NULL,
        };
        static const char *const scopes[] = { "read", "write", NULL };
        Fake f;

        script_replies = replies;
        fake_start(&f, script_answer_all, NULL);
        tokend_client *c = NULL;
        tokend_token *t = NULL, *copy = NULL;
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_EQ(tokend_get_token(c, "cred", scopes, "https://api.example/", 30, TOKEND_FLAG_MANAGER, &t), TOKEND_OK);
        ASSERT_TRUE(strstr(f.last_call, "\"io.tokend.manager.GetToken\""));
        ASSERT_TRUE(strstr(f.last_call, "\"credential\":\"cred\""));
        ASSERT_TRUE(strstr(f.last_call, "\"scopes\":[\"read\",\"write\"]"));
        ASSERT_TRUE(strstr(f.last_call, "\"resource\":\"https:\\/\\/api.example\\/\"") ||
                    strstr(f.last_call, "\"resource\":\"https://api.example/\""));
        ASSERT_TRUE(strstr(f.last_call, "\"min_ttl\":30"));
        ASSERT_EQ(tokend_error_code(tokend_client_error(c)), TOKEND_OK);
        ASSERT_STREQ(tokend_token_value(t), "tok-1");
        ASSERT_STREQ(tokend_token_type(t), "Bearer");
        ASSERT_EQ(tokend_token_expires_at(t), 4000000000);
        ASSERT_STREQ(tokend_token_scopes(t)[0], "read");
        ASSERT_STREQ(tokend_token_scopes(t)[1], "write");
        ASSERT_TRUE(tokend_token_scopes(t)[2] == NULL);
        ASSERT_OK(tokend_token_dup(t, &copy));
        t = tokend_token_free(t);
        ASSERT_STREQ(tokend_token_value(copy), "tok-1");
        ASSERT_STREQ(tokend_token_scopes(copy)[1], "write");
        tokend_token_free(copy);
        ASSERT_TRUE(strstr(f.last_call, "as_owner") == NULL);

        /* TOKEND_FLAG_AS_OWNER: the agent interface, with "as_owner": true. */
        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, TOKEND_FLAG_AS_OWNER, &t), TOKEND_OK);
        ASSERT_TRUE(strstr(f.last_call, "\"io.tokend.agent.GetToken\""));
        ASSERT_TRUE(strstr(f.last_call, "\"as_owner\":true"));
        ASSERT_STREQ(tokend_token_value(t), "tok-1");
        t = tokend_token_free(t);

        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, 0, &t), TOKEND_ERR_PROTOCOL);
        ASSERT_TRUE(strstr(f.last_call, "min_ttl") == NULL && strstr(f.last_call, "scopes") == NULL);

        tokend_client_free(c);
        fake_stop(&f);
}

/* Answers a call, hangs up; answers the next call on a new connection. */
static void script_hangup_between(Fake *f) {
        int fd = fake_accept(f);
        ASSERT_TRUE(fake_read(f, fd));
        fake_send(fd, TOKEN_REPLY);
        close(fd);
        fd = fake_accept(f);
        ASSERT_TRUE(fake_read(f, fd));
        fake_send(fd, TOKEN_REPLY);
        /* A reply that never comes: the client's timeout. */
        ASSERT_TRUE(fake_read(f, fd));
        fake_wait_go(f);
        close(fd);
}

TEST(kept_connection_and_timeout) {
        Fake f;
        tokend_client *c = NULL;
        tokend_token *t = NULL;

        fake_start(&f, script_hangup_between, NULL);
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, 0, &t), TOKEND_OK);
        t = tokend_token_free(t);
        /* The kept connection was closed meanwhile: sent again on a new one. */
        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, 0, &t), TOKEND_OK);
        t = tokend_token_free(t);
        ASSERT_OK(tokend_client_set_timeout(c, 200 * 1000));
        ASSERT_EQ(tokend_get_token(c, "cred", NULL, NULL, -1, 0, &t), TOKEND_ERR_TIMEOUT);
        ASSERT_TRUE(t == NULL);
        test_go(&f);
        tokend_client_free(c);
        fake_stop(&f);
}

/* ---- subscriptions against the fake daemon ---- */

static bool fd_readable(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, timeout_ms);
        ASSERT_TRUE(r >= 0);
        return r > 0 && (p.revents & POLLIN);
}

/* Two tokens, a hang-up; after the reconnection a token, then ConsentEnded. */
static void script_stream(Fake *f) {
        int fd = fake_accept(f);
        ASSERT_TRUE(fake_read(f, fd));
        ASSERT_TRUE(strstr(f->last_call, "\"io.tokend.agent.Subscribe\"") && strstr(f->last_call, "\"more\":true"));
        /* Two replies in one write: the library reads both at once. */
        static const char two[] = "{\"parameters\":{\"token\":\"s-1\",\"token_type\":\"Bearer\",\"expires_at\":1,"
                                  "\"scopes\":[]},\"continues\":true}\0"
                                  "{\"parameters\":{\"token\":\"s-2\",\"token_type\":\"Bearer\",\"expires_at\":2,"
                                  "\"scopes\":[]},\"continues\":true}";
        ASSERT_EQ(write(fd, two, sizeof two), (ssize_t) sizeof two);
        fake_wait_go(f);
        close(fd);
        fd = fake_accept(f); /* the library reconnects */
        ASSERT_TRUE(fake_read(f, fd));
        ASSERT_TRUE(strstr(f->last_call, "\"io.tokend.agent.Subscribe\"") &&
                    strstr(f->last_call, "\"credential\":\"cred\""));
        fake_send(fd, "{\"parameters\":{\"token\":\"s-3\",\"token_type\":\"Bearer\",\"expires_at\":3,\"scopes\":[]},"
                      "\"continues\":true}");
        fake_wait_go(f);
        fake_send(fd, "{\"error\":\"io.tokend.agent.ConsentEnded\",\"parameters\":{\"credential\":\"cred\","
                      "\"grant\":\"g-1\",\"reason\":\"revoked\"}}");
        fake_wait_go(f);
        close(fd);
}

TEST(subscription_next) {
        Fake f;
        tokend_client *c = NULL;
        tokend_subscription *s = NULL;

        fake_start(&f, script_stream, NULL);
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, 5, 0, NULL, NULL, &s));
        c = tokend_client_free(c); /* the subscription does not need it */
        ASSERT_TRUE(tokend_subscription_token(s) == NULL);
        ASSERT_TRUE(tokend_subscription_fd(s) >= 0);
        ASSERT_EQ(tokend_subscription_process(s), TOKEND_ERR_INVALID_ARGUMENT); /* no callback */
        ASSERT_EQ(tokend_subscription_run(s), TOKEND_ERR_INVALID_ARGUMENT);

        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_EVENT_TOKEN);
        ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "s-1");
        /* The second reply may sit in the library's buffer already: the fd
         * still polls readable while it does. */
        ASSERT_TRUE(fd_readable(tokend_subscription_fd(s), 5000));
        ASSERT_EQ(tokend_subscription_next(s, 0), TOKEND_EVENT_TOKEN);
        ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "s-2");
        ASSERT_EQ(tokend_subscription_next(s, 0), TOKEND_EVENT_NONE);
        ASSERT_FALSE(fd_readable(tokend_subscription_fd(s), 0)); /* nothing left: not readable */
        ASSERT_EQ(tokend_subscription_next(s, 50 * 1000), TOKEND_EVENT_NONE);
        test_go(&f); /* hang up */
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_EVENT_DISCONNECTED);
        ASSERT_EQ(tokend_error_code(tokend_subscription_error(s)), TOKEND_ERR_DISCONNECTED);
        /* The last token stays available while reconnecting. */
        ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "s-2");
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_EVENT_TOKEN);
        ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "s-3");
        ASSERT_EQ(tokend_subscription_reconnects(s), 1U);
        ASSERT_EQ(tokend_error_code(tokend_subscription_error(s)), TOKEND_OK);
        test_go(&f); /* ConsentEnded */
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_ERR_CONSENT_ENDED);
        const tokend_error *e = tokend_subscription_error(s);
        ASSERT_STREQ(tokend_error_name(e), "io.tokend.agent.ConsentEnded");
        ASSERT_STREQ(tokend_error_parameter(e, "grant"), "g-1");
        ASSERT_STREQ(tokend_error_reason(e), "revoked");
        ASSERT_EQ(tokend_subscription_next(s, 0), TOKEND_ERR_CONSENT_ENDED);
        ASSERT_EQ(tokend_subscription_next(s, TOKEND_INFINITY), TOKEND_ERR_CONSENT_ENDED);
        ASSERT_EQ(tokend_subscription_fd(s), -1);
        test_go(&f);
        tokend_subscription_free(s);
        fake_stop(&f);
}

/* One token, then the daemon goes away for good. */
static void script_vanish(Fake *f) {
        int fd = fake_accept(f);
        ASSERT_TRUE(fake_read(f, fd));
        fake_send(fd, "{\"parameters\":{\"token\":\"v-1\",\"token_type\":\"Bearer\",\"expires_at\":1,"
                      "\"scopes\":[\"a\"]},\"continues\":true}");
        fake_wait_go(f);
        close(fd);
        close(f->listen_fd); /* connections are refused from now on */
        unlink(f->path);
        f->listen_fd = -1;
}

typedef struct Seen {
        int events[8];
        int codes[8];
        size_t n;
        Fake *fake;
} Seen;

static void on_event(tokend_subscription *s, tokend_event event, int code, void *userdata) {
        Seen *seen = userdata;
        ASSERT_TRUE(seen->n < 8);
        seen->events[seen->n] = event;
        seen->codes[seen->n++] = code;
        if (event == TOKEND_EVENT_TOKEN) {
                ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "v-1");
                test_go(seen->fake); /* now vanish */
        }
}

/* The callback, driven by poll() on the fd and process(); reconnection budget 0.6 s. */
TEST(subscription_process_gives_up) {
        Fake f;
        Seen seen = { .fake = &f };
        tokend_client *c = NULL;
        tokend_subscription *s = NULL;

        fake_start(&f, script_vanish, NULL);
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_client_set_reconnect(c, 600 * 1000));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, -1, 0, on_event, &seen, &s));
        tokend_client_free(c);
        int fd = tokend_subscription_fd(s), r = 0;
        for (int rounds = 0; rounds < 1000; rounds++) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ASSERT_TRUE(poll(&p, 1, 5000) > 0);
                r = tokend_subscription_process(s);
                if (r < 0)
                        break;
        }
        ASSERT_EQ(r, TOKEND_ERR_DISCONNECTED);
        ASSERT_EQ(seen.n, 3U);
        ASSERT_EQ(seen.events[0], TOKEND_EVENT_TOKEN);
        ASSERT_EQ(seen.events[1], TOKEND_EVENT_DISCONNECTED);
        ASSERT_EQ(seen.codes[1], TOKEND_ERR_DISCONNECTED);
        ASSERT_EQ(seen.events[2], TOKEND_EVENT_ENDED);
        ASSERT_EQ(seen.codes[2], TOKEND_ERR_DISCONNECTED);
        ASSERT_TRUE(strstr(tokend_error_reason(tokend_subscription_error(s)), "reconnect"));
        ASSERT_EQ(tokend_subscription_reconnects(s), 0U);
        /* Reported once; later calls only return the code. */
        ASSERT_EQ(tokend_subscription_process(s), TOKEND_ERR_DISCONNECTED);
        ASSERT_EQ(seen.n, 3U);
        tokend_subscription_free(s);
        fake_stop(&f);
}

/* A stream answered by an error at once, and with reconnection disabled. */
static void script_refuse(Fake *f) {
        int fd = fake_accept(f);
        ASSERT_TRUE(fake_read(f, fd));
        fake_send(fd, f->arg);
        fake_wait_go(f);
        close(fd);
}

TEST(subscription_refused_and_no_reconnect) {
        Fake f;
        tokend_client *c = NULL;
        tokend_subscription *s = NULL;

        fake_start(&f, script_refuse,
                   "{\"error\":\"io.tokend.agent.TooManySubscriptions\",\"parameters\":{\"max\":1024}}");
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, -1, 0, NULL, NULL, &s));
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_ERR_TOO_MANY_SUBSCRIPTIONS);
        ASSERT_TRUE(strstr(tokend_error_parameters_json(tokend_subscription_error(s)), "1024"));
        test_go(&f);
        s = tokend_subscription_free(s);
        fake_stop(&f);

        /* Budget 0: a hang-up ends the stream at once. */
        fake_start(&f, script_refuse, "{\"parameters\":{\"token\":\"n\",\"token_type\":\"Bearer\",\"expires_at\":1,"
                                      "\"scopes\":[]},\"continues\":true}");
        tokend_client_free(c);
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_client_set_reconnect(c, 0));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, -1, 0, NULL, NULL, &s));
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_EVENT_TOKEN);
        test_go(&f);
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_ERR_DISCONNECTED);
        tokend_subscription_free(s);
        tokend_client_free(c);
        fake_stop(&f);

        /* A last reply without an error: its token, then the end (PROTOCOL). */
        fake_start(&f, script_refuse, "{\"parameters\":{\"token\":\"last\",\"token_type\":\"Bearer\",\"expires_at\":1,"
                                      "\"scopes\":[]}}");
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, -1, 0, NULL, NULL, &s));
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_EVENT_TOKEN);
        ASSERT_STREQ(tokend_token_value(tokend_subscription_token(s)), "last");
        ASSERT_EQ(tokend_subscription_next(s, 0), TOKEND_ERR_PROTOCOL);
        test_go(&f);
        s = tokend_subscription_free(s);
        c = tokend_client_free(c);
        fake_stop(&f);

        /* A malformed message ends the stream with PROTOCOL. */
        fake_start(&f, script_refuse, "{\"parameters\": nope}");
        ASSERT_OK(tokend_client_new(f.path, &c));
        ASSERT_OK(tokend_subscribe(c, "cred", NULL, NULL, -1, 0, NULL, NULL, &s));
        ASSERT_EQ(tokend_subscription_next(s, 5 * 1000 * 1000), TOKEND_ERR_PROTOCOL);
        test_go(&f);
        tokend_subscription_free(s);
        tokend_client_free(c);
        fake_stop(&f);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        RUN(strerror);
        RUN(socket_path);
        RUN(argument_caps);
        RUN(error_names);
        RUN(success_and_malformed);
        RUN(kept_connection_and_timeout);
        RUN(subscription_next);
        RUN(subscription_process_gives_up);
        RUN(subscription_refused_and_no_reconnect);
        return 0;
}
