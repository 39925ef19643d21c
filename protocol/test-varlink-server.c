/* SPDX-License-Identifier: MIT */
/* protocol/test-varlink-server.c: the server on a real sd-event loop, driven
 * with raw frames over a Unix socket; parameter parsing; the blocking client
 * against the server running in a thread. */
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/test.h"
#include "common/util.h"
#include "varlink.h"

#define TEST_INTERFACE "io.tokend.test"
#define RECV_TIMEOUT_USEC (5 * USEC_PER_SEC)

static const char test_idl[] =
        "# Methods that exercise the server library.\n"
        "interface io.tokend.test\n"
        "\n"
        "# Returns its parameters.\n"
        "method Echo() -> ()\n";

typedef struct Ctx {
        sd_event *event;
        VarlinkServer *server;
        char dir[64];
        char path[128];
        int connect_result; /* what the connect callback returns */
        unsigned connects, disconnects;
        unsigned later_started, cancelled, recorded;
        VarlinkPeer last_peer;
} Ctx;

/* ---- the test interface ---- */

static int method_echo(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        json_object *copy = NULL;
        /* The parameters are borrowed and the reply wipes what it is given: copy. */
        if (json_object_deep_copy(parameters, &copy, NULL) < 0)
                return -ENOMEM;
        return varlink_call_reply(call, copy);
}

static json_object *params_int(const char *key, int64_t v) {
        json_object *o = json_object_new_object();
        ASSERT_TRUE(o);
        json_object_object_add(o, key, json_object_new_int64(v));
        return o;
}

static int method_stream(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        json_object *v;
        ASSERT_TRUE(flags & VARLINK_CALL_MORE);
        if (!json_object_object_get_ex(parameters, "count", &v) || !json_object_is_type(v, json_type_int))
                return varlink_call_error_invalid_parameter(call, "count");
        int64_t n = json_object_get_int64(v);
        for (int64_t i = 1; i < n; i++)
                ASSERT_OK(varlink_call_reply_more(call, params_int("i", i)));
        return varlink_call_reply(call, params_int("i", n));
}

typedef struct TypedParams {
        const char *name;
        int64_t count;
        bool flag;
        json_object *tags;
        bool count_present;
} TypedParams;

static const VarlinkField typed_fields[] = {
        { "name", VARLINK_FIELD_STRING, offsetof(TypedParams, name), VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY,
          16, VARLINK_NO_PRESENT },
        { "count", VARLINK_FIELD_INT, offsetof(TypedParams, count), 0, 0, offsetof(TypedParams, count_present) },
        { "flag", VARLINK_FIELD_BOOL, offsetof(TypedParams, flag), 0, 0, VARLINK_NO_PRESENT },
        { "tags", VARLINK_FIELD_STRV, offsetof(TypedParams, tags), 0, 4, VARLINK_NO_PRESENT },
        {},
};

static int method_typed(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        TypedParams p = { .count = -1 };
        const char *bad = NULL;

        if (varlink_parse_parameters(parameters, typed_fields, &p, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        json_object *r = json_object_new_object();
        ASSERT_TRUE(r);
        json_object_object_add(r, "name", json_object_new_string(p.name));
        json_object_object_add(r, "count", json_object_new_int64(p.count));
        json_object_object_add(r, "count_present", json_object_new_boolean(p.count_present));
        json_object_object_add(r, "flag", json_object_new_boolean(p.flag));
        json_object_object_add(r, "tags", json_object_new_int64(p.tags ? (int64_t) json_object_array_length(p.tags) : -1));
        return varlink_call_reply(call, r);
}

/* Answers from a timer, later: the call outlives its handler. */
typedef struct Later {
        Ctx *ctx;
        VarlinkCall *call;
        sd_event_source *timer;
        int64_t value;
} Later;

static void later_free(Later *l) {
        sd_event_source_disable_unref(l->timer);
        free(l);
}

static int later_on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Later *l = userdata;
        VarlinkCall *call = l->call;
        int64_t value = l->value;

        later_free(l);
        ASSERT_OK(varlink_call_reply(call, params_int("value", value)));
        return 0;
}

static void later_on_cancel(VarlinkCall *call, void *userdata) {
        Later *l = userdata;
        ASSERT_TRUE(l->call == call);
        l->ctx->cancelled++;
        later_free(l);
}

static int method_later(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Ctx *ctx = userdata;
        json_object *d, *v;

        if (!json_object_object_get_ex(parameters, "delay_ms", &d) || !json_object_object_get_ex(parameters, "value", &v))
                return varlink_call_error_invalid_parameter(call, "delay_ms");
        Later *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        *l = (Later) { .ctx = ctx, .call = call, .value = json_object_get_int64(v) };
        int r = sd_event_add_time_relative(ctx->event, &l->timer, CLOCK_MONOTONIC,
                                           (uint64_t) json_object_get_int64(d) * USEC_PER_MSEC, 0, later_on_timer, l);
        if (r < 0) {
                free(l);
                return r;
        }
        varlink_call_set_cancel(call, later_on_cancel, l);
        ctx->later_started++;
        return 0;
}

static int method_fail(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        return -ENOENT; /* without replying: the library answers InternalError */
}

static int method_reply_then_fail(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags,
                                  void *userdata) {
        ASSERT_OK(varlink_call_reply(call, NULL));
        return -EIO; /* already answered: must not produce a second reply */
}

static int method_record(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Ctx *ctx = userdata;
        ctx->recorded++;
        return varlink_call_reply(call, params_int("recorded", ctx->recorded));
}

static int method_more_wrong(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        /* "continues" without the caller asking for "more" is refused and the call stays open. */
        int r = varlink_call_reply_more(call, params_int("i", 1));
        return varlink_call_reply(call, params_int("rc", r));
}

static int method_info(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        /* The call's own view of itself. */
        json_object *r = json_object_new_object();
        ASSERT_TRUE(r);
        json_object_object_add(r, "method", json_object_new_string(varlink_call_method(call)));
        json_object_object_add(r, "flags", json_object_new_int((int) varlink_call_flags(call)));
        ASSERT_TRUE(varlink_call_connection(call));
        return varlink_call_reply(call, r);
}

static const VarlinkMethod test_methods[] = {
        { "Echo", method_echo, 0 },
        { "Stream", method_stream, VARLINK_METHOD_REQUIRES_MORE },
        { "NotImpl", NULL, 0 },
        { "Typed", method_typed, 0 },
        { "Later", method_later, 0 },
        { "Fail", method_fail, 0 },
        { "ReplyThenFail", method_reply_then_fail, 0 },
        { "Record", method_record, 0 },
        { "MoreWrong", method_more_wrong, 0 },
        { "Info", method_info, 0 },
        {},
};

static const VarlinkInterface test_interface = {
        .name = TEST_INTERFACE,
        .description = test_idl,
        .methods = test_methods,
};

/* ---- server fixture ---- */

static int on_connect(VarlinkServer *s, VarlinkConnection *c, void *userdata) {
        Ctx *ctx = userdata;
        ASSERT_TRUE(varlink_server_get_userdata(s) == ctx);
        ctx->connects++;
        ctx->last_peer = *varlink_connection_peer(c);
        varlink_connection_set_userdata(c, ctx);
        return ctx->connect_result;
}

static void on_disconnect(VarlinkServer *s, VarlinkConnection *c, void *userdata) {
        Ctx *ctx = userdata;
        ctx->disconnects++;
}

static void ctx_init(Ctx *ctx, size_t message_max, unsigned connections_max) {
        *ctx = (Ctx) {};
        strcpy(ctx->dir, "/tmp/test-varlink-server-XXXXXX");
        ASSERT_TRUE(mkdtemp(ctx->dir));
        snprintf(ctx->path, sizeof ctx->path, "%s/sock", ctx->dir);

        ASSERT_OK(sd_event_new(&ctx->event));
        ASSERT_OK(varlink_server_new(ctx->event, &ctx->server));
        ASSERT_OK(varlink_server_set_info(ctx->server, "tokend-test", "test", "1", "https://example.invalid"));
        varlink_server_set_limits(ctx->server, message_max, 0, connections_max);
        varlink_server_set_callbacks(ctx->server, on_connect, on_disconnect, ctx);
        ASSERT_OK(varlink_server_add_interface(ctx->server, &test_interface));
        ASSERT_OK(varlink_server_listen_path(ctx->server, ctx->path, 0600));
}

static void ctx_done(Ctx *ctx) {
        ctx->server = varlink_server_free(ctx->server);
        ctx->event = sd_event_unref(ctx->event);
        (void) unlink(ctx->path);
        ASSERT_OK(rmdir(ctx->dir));
}

static void ctx_step(Ctx *ctx) {
        ASSERT_OK(sd_event_run(ctx->event, 10 * USEC_PER_MSEC));
}

/* Runs the loop until *counter reaches want. */
static void ctx_wait_counter(Ctx *ctx, const unsigned *counter, unsigned want) {
        uint64_t deadline = now_monotonic_usec() + RECV_TIMEOUT_USEC;
        while (*counter < want) {
                ASSERT_TRUE(now_monotonic_usec() < deadline);
                ctx_step(ctx);
        }
        ASSERT_EQ(*counter, want);
}

/* ---- raw peer: the test's side of a connection, frames by hand ---- */

typedef struct Peer {
        VarlinkStream s;
} Peer;

static void peer_connect(Ctx *ctx, Peer *p) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(fd >= 0);
        strcpy(sa.sun_path, ctx->path);
        ASSERT_OK(connect(fd, (struct sockaddr *) &sa, sizeof sa));
        varlink_stream_init(&p->s, fd, 1024 * 1024, 0);
}

static void peer_close(Peer *p) {
        varlink_stream_done(&p->s);
}

static void peer_send_raw(Ctx *ctx, Peer *p, const char *data, size_t len) {
        uint64_t deadline = now_monotonic_usec() + RECV_TIMEOUT_USEC;
        while (len > 0) {
                ssize_t n = send(p->s.fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        ASSERT_TRUE(errno == EAGAIN);
                        ASSERT_TRUE(now_monotonic_usec() < deadline);
                        ctx_step(ctx); /* let the server drain its side */
                        continue;
                }
                data += n;
                len -= (size_t) n;
        }
}

/* Sends one frame: the text and its NUL terminator. */
static void peer_send(Ctx *ctx, Peer *p, const char *text) {
        peer_send_raw(ctx, p, text, strlen(text) + 1);
}

/* Returns 1 and a message, or 0 on EOF/reset; fails the test on timeout. */
static int peer_recv_or_eof(Ctx *ctx, Peer *p, uint64_t timeout_usec, json_object **ret) {
        uint64_t deadline = now_monotonic_usec() + timeout_usec;
        for (;;) {
                int r = varlink_stream_next(&p->s, ret);
                ASSERT_TRUE(r >= 0);
                if (r > 0)
                        return 1;
                size_t before = p->s.rlen;
                r = varlink_stream_fill(&p->s);
                if (r == -ECONNRESET) /* orderly EOF, or a reset when the server left input unread */
                        return 0;
                ASSERT_OK(r);
                if (p->s.rlen == before) {
                        if (now_monotonic_usec() >= deadline)
                                return -ETIMEDOUT;
                        ctx_step(ctx);
                }
        }
}

static json_object *peer_recv(Ctx *ctx, Peer *p) {
        json_object *m = NULL;
        int r = peer_recv_or_eof(ctx, p, RECV_TIMEOUT_USEC, &m);
        if (r != 1)
                TEST_FAIL("no reply: %s", r == 0 ? "connection closed" : "timeout");
        return m;
}

static void peer_expect_eof(Ctx *ctx, Peer *p) {
        json_object *m = NULL;
        int r = peer_recv_or_eof(ctx, p, RECV_TIMEOUT_USEC, &m);
        if (r == 1)
                TEST_FAIL("unexpected message: %s", json_object_to_json_string(m));
        ASSERT_EQ(r, 0);
}

/* Runs the loop for a while and checks that nothing arrives. */
static void peer_expect_silence(Ctx *ctx, Peer *p) {
        json_object *m = NULL;
        int r = peer_recv_or_eof(ctx, p, 100 * USEC_PER_MSEC, &m);
        if (r == 1)
                TEST_FAIL("unexpected message: %s", json_object_to_json_string(m));
        ASSERT_EQ(r, -ETIMEDOUT);
}

static json_object *parse(const char *text) {
        json_object *o = json_tokener_parse(text);
        if (!o)
                TEST_FAIL("bad JSON in test: %s", text);
        return o;
}

/* Checks a reply: error name (NULL for none), parameters (JSON text, NULL to
 * skip), and whether "continues" is set. Drops the reply. */
static void assert_reply(json_object *m, const char *error, const char *parameters, bool continues) {
        json_object *v;
        const char *got_error = NULL;
        bool got_continues = false;

        if (json_object_object_get_ex(m, "error", &v))
                got_error = json_object_get_string(v);
        if (json_object_object_get_ex(m, "continues", &v))
                got_continues = json_object_get_boolean(v);
        if (!streq_ptr(got_error, error) || got_continues != continues)
                TEST_FAIL("reply %s: want error %s, continues %d", json_object_to_json_string(m), strna(error),
                          continues);
        ASSERT_TRUE(json_object_object_get_ex(m, "parameters", &v));
        ASSERT_TRUE(json_object_is_type(v, json_type_object));
        if (parameters) {
                json_object *want = parse(parameters);
                if (!json_object_equal(v, want))
                        TEST_FAIL("reply %s: want parameters %s", json_object_to_json_string(m), parameters);
                json_object_put(want);
        }
        /* Only the keys the protocol defines. */
        json_object_object_foreach(m, key, val) {
                (void) val;
                ASSERT_TRUE(streq(key, "parameters") || streq(key, "error") || streq(key, "continues"));
        }
        json_object_put(m);
}

static void call_expect(Ctx *ctx, Peer *p, const char *call, const char *error, const char *parameters) {
        peer_send(ctx, p, call);
        assert_reply(peer_recv(ctx, p), error, parameters, false);
}

/* ---- tests ---- */

TEST(get_info) {
        static const char *calls[] = {
                "{\"method\":\"org.varlink.service.GetInfo\"}",
                "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}",
                "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{}}",
                "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{},\"more\":false,\"oneway\":false}",
        };
        static const char info[] =
                "{\"vendor\":\"tokend-test\",\"product\":\"test\",\"version\":\"1\","
                "\"url\":\"https://example.invalid\",\"interfaces\":[\"org.varlink.service\",\"io.tokend.test\"]}";
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                fprintf(stderr, "   %s\n", calls[i]);
                call_expect(&ctx, &p, calls[i], NULL, info);
        }
        call_expect(&ctx, &p, "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{\"x\":1}}",
                    VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"x\"}");

        /* The peer as the kernel saw it. */
        ASSERT_EQ(ctx.connects, 1);
        ASSERT_EQ(ctx.last_peer.uid, getuid());
        ASSERT_EQ(ctx.last_peer.gid, getgid());
        ASSERT_EQ(ctx.last_peer.pid, getpid());
        ASSERT_EQ(varlink_server_connection_count(ctx.server), 1);

        peer_close(&p);
        ctx_wait_counter(&ctx, &ctx.disconnects, 1);
        ASSERT_EQ(varlink_server_connection_count(ctx.server), 0);
        ctx_done(&ctx);
}

TEST(get_interface_description) {
        Ctx ctx;
        Peer p;
        json_object *m, *v;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);

        peer_send(&ctx, &p, "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                            "\"parameters\":{\"interface\":\"io.tokend.test\"}}");
        m = peer_recv(&ctx, &p);
        ASSERT_TRUE(json_object_object_get_ex(m, "parameters", &v));
        ASSERT_TRUE(json_object_object_get_ex(v, "description", &v));
        ASSERT_STREQ(json_object_get_string(v), test_idl);
        assert_reply(m, NULL, NULL, false);

        peer_send(&ctx, &p, "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                            "\"parameters\":{\"interface\":\"org.varlink.service\"}}");
        m = peer_recv(&ctx, &p);
        ASSERT_TRUE(json_object_object_get_ex(m, "parameters", &v));
        ASSERT_TRUE(json_object_object_get_ex(v, "description", &v));
        ASSERT_TRUE(strstr(json_object_get_string(v), "\ninterface org.varlink.service\n"));
        ASSERT_TRUE(strstr(json_object_get_string(v), "method GetInfo()"));
        assert_reply(m, NULL, NULL, false);

        static const struct {
                const char *parameters;
                const char *error;
                const char *reply;
        } cases[] = {
                { "{\"interface\":\"io.nope\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND, "{\"interface\":\"io.nope\"}" },
                { "{\"interface\":\"io.tokend\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND, "{\"interface\":\"io.tokend\"}" },
                { "{}", VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"interface\"}" },
                { "null", VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"interface\"}" },
                { "{\"interface\":null}", VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"interface\"}" },
                { "{\"interface\":7}", VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"interface\"}" },
                { "{\"interface\":\"io.tokend.test\",\"x\":1}", VARLINK_ERROR_INVALID_PARAMETER,
                  "{\"parameter\":\"x\"}" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char call[256];
                snprintf(call, sizeof call,
                         "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":%s}",
                         cases[i].parameters);
                fprintf(stderr, "   %s\n", call);
                call_expect(&ctx, &p, call, cases[i].error, cases[i].reply);
        }

        peer_close(&p);
        ctx_done(&ctx);
}

TEST(errors_and_replies) {
        /* One connection; each call is answered and the connection stays up. */
        static const struct {
                const char *call;
                const char *error;
                const char *reply;
        } cases[] = {
                { "{\"method\":\"io.nope.Foo\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND, "{\"interface\":\"io.nope\"}" },
                { "{\"method\":\"io.tokend.Echo\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND,
                  "{\"interface\":\"io.tokend\"}" },
                { "{\"method\":\"NoDot\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND, "{\"interface\":\"NoDot\"}" },
                { "{\"method\":\"io.tokend.test.\"}", VARLINK_ERROR_INTERFACE_NOT_FOUND,
                  "{\"interface\":\"io.tokend.test.\"}" },
                { "{\"method\":\"io.tokend.test.Nope\"}", VARLINK_ERROR_METHOD_NOT_FOUND,
                  "{\"method\":\"io.tokend.test.Nope\"}" },
                { "{\"method\":\"io.tokend.test.echo\"}", VARLINK_ERROR_METHOD_NOT_FOUND,
                  "{\"method\":\"io.tokend.test.echo\"}" },
                { "{\"method\":\"org.varlink.service.Nope\"}", VARLINK_ERROR_METHOD_NOT_FOUND,
                  "{\"method\":\"org.varlink.service.Nope\"}" },
                { "{\"method\":\"io.tokend.test.NotImpl\"}", VARLINK_ERROR_METHOD_NOT_IMPLEMENTED,
                  "{\"method\":\"io.tokend.test.NotImpl\"}" },
                /* varlink_parse_parameters: unknown field, wrong type, missing required */
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"n\",\"bogus\":1}}",
                  VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"bogus\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":5}}", VARLINK_ERROR_INVALID_PARAMETER,
                  "{\"parameter\":\"name\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"n\",\"count\":\"1\"}}",
                  VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"count\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"n\",\"tags\":[\"a\",1]}}",
                  VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"tags\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{}}", VARLINK_ERROR_INVALID_PARAMETER,
                  "{\"parameter\":\"name\"}" },
                { "{\"method\":\"io.tokend.test.Typed\"}", VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"name\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":null}}",
                  VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"name\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"\"}}",
                  VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"name\"}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"n\",\"count\":3,\"flag\":true,"
                  "\"tags\":[\"a\",\"b\"]}}",
                  NULL, "{\"name\":\"n\",\"count\":3,\"count_present\":true,\"flag\":true,\"tags\":2}" },
                { "{\"method\":\"io.tokend.test.Typed\",\"parameters\":{\"name\":\"n\",\"count\":null}}", NULL,
                  "{\"name\":\"n\",\"count\":-1,\"count_present\":false,\"flag\":false,\"tags\":-1}" },
                /* parameters of the wrong kind */
                { "{\"method\":\"io.tokend.test.Echo\",\"parameters\":[]}", VARLINK_ERROR_INVALID_PARAMETER,
                  "{\"parameter\":\"parameters\"}" },
                { "{\"method\":\"io.tokend.test.Echo\",\"parameters\":\"x\"}", VARLINK_ERROR_INVALID_PARAMETER,
                  "{\"parameter\":\"parameters\"}" },
                /* REQUIRES_MORE called without more */
                { "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{\"count\":1}}", VARLINK_ERROR_EXPECTED_MORE,
                  "{}" },
                { "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{\"count\":1},\"more\":false}",
                  VARLINK_ERROR_EXPECTED_MORE, "{}" },
                /* a handler failing without a reply, and one failing after it */
                { "{\"method\":\"io.tokend.test.Fail\"}", VARLINK_ERROR_INTERNAL, "{\"errno\":2}" },
                { "{\"method\":\"io.tokend.test.ReplyThenFail\"}", NULL, "{}" },
                { "{\"method\":\"io.tokend.test.MoreWrong\"}", NULL, "{\"rc\":-22}" },
                /* a good call, with unknown top-level keys ignored */
                { "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"a\":[1,{\"b\":null}],\"s\":\"x\"},\"x\":1}",
                  NULL, "{\"a\":[1,{\"b\":null}],\"s\":\"x\"}" },
                { "{\"method\":\"io.tokend.test.Info\"}", NULL, "{\"method\":\"io.tokend.test.Info\",\"flags\":0}" },
                { "{\"method\":\"io.tokend.test.Info\",\"more\":true}", NULL,
                  "{\"method\":\"io.tokend.test.Info\",\"flags\":1}" },
        };
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                fprintf(stderr, "   %s\n", cases[i].call);
                call_expect(&ctx, &p, cases[i].call, cases[i].error, cases[i].reply);
        }
        peer_expect_silence(&ctx, &p); /* in particular no second reply from ReplyThenFail */
        ASSERT_EQ(ctx.disconnects, 0);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(permission_denied) {
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);

        /* -EPERM: every call gets PermissionDenied, then the connection closes.
         * Two pipelined calls: only the first is answered. */
        ctx.connect_result = -EPERM;
        peer_connect(&ctx, &p);
        static const char two[] = "{\"method\":\"io.tokend.test.Echo\"}\0{\"method\":\"io.tokend.test.Echo\"}";
        peer_send_raw(&ctx, &p, two, sizeof two);
        assert_reply(peer_recv(&ctx, &p), VARLINK_ERROR_PERMISSION_DENIED, "{}", false);
        peer_expect_eof(&ctx, &p);
        peer_close(&p);
        ctx_wait_counter(&ctx, &ctx.disconnects, 1);

        /* Even a method that does not exist: the caller learns nothing. */
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.nope.Foo\"}");
        assert_reply(peer_recv(&ctx, &p), VARLINK_ERROR_PERMISSION_DENIED, "{}", false);
        peer_expect_eof(&ctx, &p);
        peer_close(&p);
        ctx_wait_counter(&ctx, &ctx.disconnects, 2);

        /* A oneway call gets no reply, and the connection still closes. */
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Record\",\"oneway\":true}");
        peer_expect_eof(&ctx, &p);
        peer_close(&p);
        ASSERT_EQ(ctx.recorded, 0);
        ctx_wait_counter(&ctx, &ctx.disconnects, 3);

        /* Any other error: closed at once, nothing sent. */
        ctx.connect_result = -ECONNREFUSED;
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Echo\"}");
        peer_expect_eof(&ctx, &p);
        peer_close(&p);
        ASSERT_EQ(varlink_server_connection_count(ctx.server), 0);

        /* Accepted again. */
        ctx.connect_result = 0;
        peer_connect(&ctx, &p);
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"ok\":true}}", NULL,
                    "{\"ok\":true}");
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(more) {
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);

        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{\"count\":4},\"more\":true}");
        for (int i = 1; i <= 4; i++) {
                char want[32];
                snprintf(want, sizeof want, "{\"i\":%d}", i);
                assert_reply(peer_recv(&ctx, &p), NULL, want, i < 4);
        }

        /* A single reply to a "more" call is a final one. */
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{\"count\":1},\"more\":true}", NULL,
                    "{\"i\":1}");
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{},\"more\":true}", NULL, "{}");
        /* An error ends a "more" call too. */
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{},\"more\":true}",
                    VARLINK_ERROR_INVALID_PARAMETER, "{\"parameter\":\"count\"}");
        peer_expect_silence(&ctx, &p);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(oneway) {
        static const char *oneways[] = {
                "{\"method\":\"io.tokend.test.Record\",\"oneway\":true}",
                "{\"method\":\"io.tokend.test.Nope\",\"oneway\":true}",
                "{\"method\":\"io.tokend.test.Fail\",\"oneway\":true}",
                "{\"method\":\"io.tokend.test.Stream\",\"oneway\":true}", /* ExpectedMore, not sent */
                "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":10,\"value\":1},\"oneway\":true}",
        };
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        for (size_t i = 0; i < ELEMENTSOF(oneways); i++) {
                fprintf(stderr, "   %s\n", oneways[i]);
                peer_send(&ctx, &p, oneways[i]);
                peer_expect_silence(&ctx, &p);
        }
        ASSERT_EQ(ctx.recorded, 1);
        ASSERT_EQ(ctx.later_started, 1);
        /* The connection is still served, and the next reply is this call's. */
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Record\"}", NULL, "{\"recorded\":2}");

        /* "more" and "oneway" together is a protocol violation. */
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Echo\",\"oneway\":true,\"more\":true}");
        peer_expect_eof(&ctx, &p);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(pipelined) {
        /* One write carrying several calls, one of them answered later from a
         * timer: the replies come in call order. */
        static const char calls[] =
                "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"n\":1}}\0"
                "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":50,\"value\":2}}\0"
                "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"n\":3}}\0"
                "{\"method\":\"io.tokend.test.Stream\",\"parameters\":{\"count\":2},\"more\":true}\0"
                "{\"method\":\"io.tokend.test.Record\",\"oneway\":true}\0"
                "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":0,\"value\":5}}\0"
                "{\"method\":\"io.tokend.test.Nope\"}\0"
                "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"n\":7}}";
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        uint64_t start = now_monotonic_usec();
        peer_send_raw(&ctx, &p, calls, sizeof calls);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"n\":1}", false);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"value\":2}", false);
        ASSERT_TRUE(now_monotonic_usec() - start >= 50 * USEC_PER_MSEC);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"n\":3}", false);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"i\":1}", true);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"i\":2}", false);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"value\":5}", false);
        assert_reply(peer_recv(&ctx, &p), VARLINK_ERROR_METHOD_NOT_FOUND, NULL, false);
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"n\":7}", false);
        peer_expect_silence(&ctx, &p);
        ASSERT_EQ(ctx.recorded, 1);
        ASSERT_EQ(ctx.later_started, 2);
        ASSERT_EQ(ctx.cancelled, 0);

        /* Many calls in one write, more than fit in the input buffer at once. */
        size_t n = 2000, len = 0;
        char *buf = malloc(n * 64);
        ASSERT_TRUE(buf);
        for (size_t i = 0; i < n; i++)
                len += (size_t) sprintf(buf + len, "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"n\":%zu}}",
                                        i) + 1;
        ASSERT_TRUE(len > VARLINK_MESSAGE_MAX_DEFAULT / 2);
        peer_send_raw(&ctx, &p, buf, len);
        for (size_t i = 0; i < n; i++) {
                char want[32];
                snprintf(want, sizeof want, "{\"n\":%zu}", i);
                assert_reply(peer_recv(&ctx, &p), NULL, want, false);
        }
        free(buf);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(large_replies) {
        /* Replies larger than the socket buffer, to a peer that is slow to
         * read: the server finishes them from EPOLLOUT, in order. */
        const size_t n = 4, len = 120 * 1024;
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        char *payload = malloc(len + 1);
        ASSERT_TRUE(payload);
        for (size_t i = 0; i < n; i++) {
                memset(payload, 'a' + (int) i, len);
                payload[len] = 0;
                json_object *m = json_object_new_object();
                json_object_object_add(m, "method", json_object_new_string("io.tokend.test.Echo"));
                json_object *params = json_object_new_object();
                json_object_object_add(params, "s", json_object_new_string(payload));
                json_object_object_add(m, "parameters", params);
                const char *text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
                ASSERT_TRUE(strlen(text) < VARLINK_MESSAGE_MAX_DEFAULT);
                peer_send(&ctx, &p, text);
                json_object_put(m);
        }
        /* Let the server run without reading anything: its output backs up. */
        for (int i = 0; i < 20; i++)
                ctx_step(&ctx);
        for (size_t i = 0; i < n; i++) {
                json_object *m = peer_recv(&ctx, &p), *v;
                ASSERT_TRUE(json_object_object_get_ex(m, "parameters", &v));
                ASSERT_TRUE(json_object_object_get_ex(v, "s", &v));
                memset(payload, 'a' + (int) i, len);
                ASSERT_STREQ(json_object_get_string(v), payload);
                json_object_put(m);
        }
        peer_expect_silence(&ctx, &p);
        free(payload);
        peer_close(&p);
        ctx_done(&ctx);
}

static char *big_call(size_t len) {
        /* A syntactically fine call `len` bytes long. */
        static const char head[] = "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"s\":\"", tail[] = "\"}}";
        char *b = malloc(len + 1);
        ASSERT_TRUE(b && len > strlen(head) + strlen(tail));
        memcpy(b, head, strlen(head));
        memset(b + strlen(head), 'x', len - strlen(head) - strlen(tail));
        memcpy(b + len - strlen(tail), tail, strlen(tail));
        b[len] = 0;
        return b;
}

TEST(protocol_violations_close_one_connection) {
        static const size_t message_max = 1024;
        char deep[256];
        size_t n = 0;

        n += (size_t) sprintf(deep, "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"a\":");
        for (int i = 0; i < VARLINK_DEPTH_MAX_DEFAULT; i++)
                deep[n++] = '[';
        for (int i = 0; i < VARLINK_DEPTH_MAX_DEFAULT; i++)
                deep[n++] = ']';
        strcpy(deep + n, "}}");

        _cleanup_free_ char *at_cap = big_call(message_max);
        _cleanup_free_ char *over_cap = big_call(message_max + 1);
        _cleanup_free_ char *huge = big_call(8 * message_max);
        static const char echo[] = "{\"method\":\"io.tokend.test.Echo\",\"parameters\":{\"still\":\"here\"}}";
        const struct {
                const char *what;
                const char *data;
                size_t len;
        } cases[] = {
                { "frame over the cap", over_cap, strlen(over_cap) + 1 },
                { "far over the cap", huge, strlen(huge) + 1 },
                { "over the cap, no NUL yet", huge, strlen(huge) },
                { "not JSON", "garbage", sizeof "garbage" },
                { "not an object", "[]", sizeof "[]" },
                { "trailing garbage", "{\"method\":\"io.tokend.test.Echo\"} x", sizeof "{\"method\":\"io.tokend.test.Echo\"} x" },
                { "too deep", deep, strlen(deep) + 1 },
                { "no method", "{\"parameters\":{}}", sizeof "{\"parameters\":{}}" },
                { "method not a string", "{\"method\":1}", sizeof "{\"method\":1}" },
                { "more not a boolean", "{\"method\":\"io.tokend.test.Echo\",\"more\":\"yes\"}",
                  sizeof "{\"method\":\"io.tokend.test.Echo\",\"more\":\"yes\"}" },
        };
        Ctx ctx;
        Peer good, bad;

        ctx_init(&ctx, message_max, 0);
        peer_connect(&ctx, &good);
        /* Exactly at the cap is fine. */
        peer_send(&ctx, &good, at_cap);
        assert_reply(peer_recv(&ctx, &good), NULL, NULL, false);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                fprintf(stderr, "   %s\n", cases[i].what);
                unsigned disconnects = ctx.disconnects;
                peer_connect(&ctx, &bad);
                call_expect(&ctx, &bad, echo, NULL, "{\"still\":\"here\"}");
                ASSERT_EQ(varlink_server_connection_count(ctx.server), 2);
                peer_send_raw(&ctx, &bad, cases[i].data, cases[i].len);
                peer_expect_eof(&ctx, &bad);
                peer_close(&bad);
                ctx_wait_counter(&ctx, &ctx.disconnects, disconnects + 1);
                ASSERT_EQ(varlink_server_connection_count(ctx.server), 1);
                /* The other connection is not disturbed. */
                call_expect(&ctx, &good, echo, NULL, "{\"still\":\"here\"}");
        }
        peer_close(&good);
        ctx_done(&ctx);
}

TEST(connection_cap) {
        Ctx ctx;
        Peer a, b, c;

        ctx_init(&ctx, 0, 2);
        peer_connect(&ctx, &a);
        peer_connect(&ctx, &b);
        call_expect(&ctx, &a, "{\"method\":\"io.tokend.test.Echo\"}", NULL, "{}");
        call_expect(&ctx, &b, "{\"method\":\"io.tokend.test.Echo\"}", NULL, "{}");
        ASSERT_EQ(varlink_server_connection_count(ctx.server), 2);

        peer_connect(&ctx, &c); /* over the cap: refused */
        peer_expect_eof(&ctx, &c);
        peer_close(&c);
        call_expect(&ctx, &a, "{\"method\":\"io.tokend.test.Echo\"}", NULL, "{}");

        peer_close(&b); /* room again */
        ctx_wait_counter(&ctx, &ctx.disconnects, 1);
        peer_connect(&ctx, &c);
        call_expect(&ctx, &c, "{\"method\":\"io.tokend.test.Echo\"}", NULL, "{}");
        peer_close(&a);
        peer_close(&c);
        ctx_done(&ctx);
}

TEST(cancel_on_disconnect) {
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);

        /* The caller goes away while its call is pending. */
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":60000,\"value\":1}}");
        ctx_wait_counter(&ctx, &ctx.later_started, 1);
        ASSERT_EQ(ctx.cancelled, 0);
        peer_close(&p);
        ctx_wait_counter(&ctx, &ctx.cancelled, 1);
        ctx_wait_counter(&ctx, &ctx.disconnects, 1);
        ASSERT_EQ(varlink_server_connection_count(ctx.server), 0);

        /* Calls pipelined behind the pending one never run. */
        peer_connect(&ctx, &p);
        static const char two[] =
                "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":60000,\"value\":1}}\0"
                "{\"method\":\"io.tokend.test.Record\"}";
        peer_send_raw(&ctx, &p, two, sizeof two);
        ctx_wait_counter(&ctx, &ctx.later_started, 2);
        peer_close(&p);
        ctx_wait_counter(&ctx, &ctx.cancelled, 2);
        ASSERT_EQ(ctx.recorded, 0);

        /* Freeing the server cancels what is still pending. */
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":60000,\"value\":1}}");
        ctx_wait_counter(&ctx, &ctx.later_started, 3);
        ctx.server = varlink_server_free(ctx.server);
        ASSERT_EQ(ctx.cancelled, 3);
        ASSERT_EQ(ctx.disconnects, 3);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(half_close_still_answered) {
        /* A caller may send its call and shut down its write side: that is not
         * a hang-up, and the call is answered. */
        Ctx ctx;
        Peer p;

        ctx_init(&ctx, 0, 0);
        peer_connect(&ctx, &p);
        peer_send(&ctx, &p, "{\"method\":\"io.tokend.test.Later\",\"parameters\":{\"delay_ms\":20,\"value\":4}}");
        ASSERT_OK(shutdown(p.s.fd, SHUT_WR));
        assert_reply(peer_recv(&ctx, &p), NULL, "{\"value\":4}", false);
        peer_expect_eof(&ctx, &p);
        ASSERT_EQ(ctx.cancelled, 0);
        peer_close(&p);
        ctx_done(&ctx);
}

TEST(listen_path) {
        Ctx ctx;
        struct stat st;
        VarlinkServer *s;

        ctx_init(&ctx, 0, 0);
        ASSERT_OK(stat(ctx.path, &st));
        ASSERT_TRUE(S_ISSOCK(st.st_mode));
        ASSERT_EQ(st.st_mode & 0777, 0600);

        ASSERT_OK(varlink_server_new(ctx.event, &s));
        /* A live socket is not taken over. */
        ASSERT_EQ(varlink_server_listen_path(s, ctx.path, 0600), -EADDRINUSE);
        /* Neither is something that is not a socket. */
        char file[160];
        snprintf(file, sizeof file, "%s/file", ctx.dir);
        int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        ASSERT_TRUE(fd >= 0);
        safe_close(fd);
        ASSERT_EQ(varlink_server_listen_path(s, file, 0600), -EEXIST);
        ASSERT_OK(unlink(file));
        /* The same interface twice, or the service interface, is refused. */
        ASSERT_OK(varlink_server_add_interface(s, &test_interface));
        ASSERT_EQ(varlink_server_add_interface(s, &test_interface), -EEXIST);
        static const VarlinkInterface service = { .name = "org.varlink.service", .description = "", .methods = NULL };
        ASSERT_EQ(varlink_server_add_interface(s, &service), -EEXIST);

        /* A stale socket (nobody listening) is replaced. */
        ctx.server = varlink_server_free(ctx.server);
        ASSERT_OK(stat(ctx.path, &st));
        ASSERT_OK(varlink_server_listen_path(s, ctx.path, 0666));
        ASSERT_OK(stat(ctx.path, &st));
        ASSERT_EQ(st.st_mode & 0777, 0666);
        ctx.server = s;

        Peer p;
        peer_connect(&ctx, &p);
        call_expect(&ctx, &p, "{\"method\":\"io.tokend.test.Echo\"}", NULL, "{}");
        peer_close(&p);
        ctx_done(&ctx);
}

/* ---- parameter parsing ---- */

typedef struct P {
        const char *name;
        int64_t count;
        bool flag;
        json_object *tags;
        const char *opt;
        json_object *any;
        bool name_present, count_present, flag_present, tags_present;
} P;

static const VarlinkField p_fields[] = {
        { "name", VARLINK_FIELD_STRING, offsetof(P, name), VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY, 8,
          offsetof(P, name_present) },
        { "count", VARLINK_FIELD_INT, offsetof(P, count), 0, 0, offsetof(P, count_present) },
        { "flag", VARLINK_FIELD_BOOL, offsetof(P, flag), 0, 0, offsetof(P, flag_present) },
        { "tags", VARLINK_FIELD_STRV, offsetof(P, tags), VARLINK_FIELD_NONEMPTY, 3, offsetof(P, tags_present) },
        { "opt", VARLINK_FIELD_STRING, offsetof(P, opt), 0, 0, VARLINK_NO_PRESENT },
        { "any", VARLINK_FIELD_STRV, offsetof(P, any), 0, 0, VARLINK_NO_PRESENT },
        {},
};

#define UNTOUCHED_COUNT INT64_C(-7)

TEST(parse_parameters) {
        char s256[300], s257[300], long_opt[5000];
        memset(s256, 'e', 256);
        s256[256] = 0;
        memset(s257, 'e', 257);
        s257[257] = 0;
        memset(long_opt, 'o', sizeof long_opt - 1);
        long_opt[sizeof long_opt - 1] = 0;

        char tags256[400], tags257[400], any257[400], opt_long[5100], any_many[3000];
        snprintf(tags256, sizeof tags256, "{\"name\":\"n\",\"tags\":[\"%s\"]}", s256);
        snprintf(tags257, sizeof tags257, "{\"name\":\"n\",\"tags\":[\"%s\"]}", s257);
        snprintf(any257, sizeof any257, "{\"name\":\"n\",\"any\":[\"%s\"]}", s257);
        snprintf(opt_long, sizeof opt_long, "{\"name\":\"n\",\"opt\":\"%s\"}", long_opt);
        size_t k = (size_t) sprintf(any_many, "{\"name\":\"n\",\"any\":[");
        for (int i = 0; i < 300; i++)
                k += (size_t) sprintf(any_many + k, "%s\"%d\"", i ? "," : "", i % 10);
        strcpy(any_many + k, "]}");

        const struct {
                const char *json;
                const char *bad; /* NULL: parses */
                int64_t count;   /* expected when parsed */
                bool count_present;
                int tags;        /* expected element count, -1: not given */
        } cases[] = {
                { "{\"name\":\"abc\"}", NULL, UNTOUCHED_COUNT, false, -1 },
                { "{\"name\":\"12345678\"}", NULL, UNTOUCHED_COUNT, false, -1 }, /* at the cap */
                /* strings */
                { "{\"name\":\"123456789\"}", "name" }, /* over the cap */
                { "{\"name\":\"\"}", "name" },          /* NONEMPTY */
                { "{\"name\":\"a\\u0000b\"}", "name" }, /* embedded NUL */
                { "{\"name\":null}", "name" },          /* required */
                { "{}", "name" },
                { "{\"name\":7}", "name" },
                { "{\"name\":[\"a\"]}", "name" },
                { "{\"name\":{}}", "name" },
                { opt_long, NULL, UNTOUCHED_COUNT, false, -1 }, /* max 0: no cap */
                { "{\"name\":\"n\",\"opt\":\"\"}", NULL, UNTOUCHED_COUNT, false, -1 }, /* empty allowed without NONEMPTY */
                /* integers */
                { "{\"name\":\"n\",\"count\":0}", NULL, 0, true, -1 },
                { "{\"name\":\"n\",\"count\":-5}", NULL, -5, true, -1 },
                { "{\"name\":\"n\",\"count\":9223372036854775807}", NULL, INT64_MAX, true, -1 },
                { "{\"name\":\"n\",\"count\":-9223372036854775807}", NULL, -INT64_MAX, true, -1 },
                { "{\"name\":\"n\",\"count\":9223372036854775808}", "count" },
                { "{\"name\":\"n\",\"count\":18446744073709551615}", "count" },
                { "{\"name\":\"n\",\"count\":99999999999999999999}", "count" },
                { "{\"name\":\"n\",\"count\":-99999999999999999999}", "count" },
                /* json-c clamps negative overflow to INT64_MIN without a trace, so
                 * INT64_MIN itself cannot be told apart from it and is refused. */
                { "{\"name\":\"n\",\"count\":-9223372036854775808}", "count" },
                { "{\"name\":\"n\",\"count\":1.0}", "count" },
                { "{\"name\":\"n\",\"count\":1.5}", "count" },
                { "{\"name\":\"n\",\"count\":1e3}", "count" },
                { "{\"name\":\"n\",\"count\":\"1\"}", "count" },
                { "{\"name\":\"n\",\"count\":true}", "count" },
                { "{\"name\":\"n\",\"count\":null}", NULL, UNTOUCHED_COUNT, false, -1 },
                /* booleans */
                { "{\"name\":\"n\",\"flag\":\"true\"}", "flag" },
                { "{\"name\":\"n\",\"flag\":1}", "flag" },
                /* string arrays */
                { "{\"name\":\"n\",\"tags\":[\"a\",\"b\",\"c\"]}", NULL, UNTOUCHED_COUNT, false, 3 },
                { "{\"name\":\"n\",\"tags\":[\"a\",\"b\",\"c\",\"d\"]}", "tags" }, /* over max elements */
                { "{\"name\":\"n\",\"tags\":[]}", "tags" },                       /* NONEMPTY */
                { "{\"name\":\"n\",\"tags\":[\"a\",1]}", "tags" },
                { "{\"name\":\"n\",\"tags\":[\"a\",null]}", "tags" },
                { "{\"name\":\"n\",\"tags\":[[\"a\"]]}", "tags" },
                { "{\"name\":\"n\",\"tags\":[{}]}", "tags" },
                { "{\"name\":\"n\",\"tags\":[true]}", "tags" },
                { "{\"name\":\"n\",\"tags\":\"a\"}", "tags" },
                { "{\"name\":\"n\",\"tags\":{\"a\":\"b\"}}", "tags" },
                { "{\"name\":\"n\",\"tags\":[\"\"]}", "tags" },         /* empty element */
                { "{\"name\":\"n\",\"tags\":[\"a\\u0000b\"]}", "tags" }, /* embedded NUL */
                { tags256, NULL, UNTOUCHED_COUNT, false, 1 },
                { tags257, "tags" },
                { "{\"name\":\"n\",\"tags\":null}", NULL, UNTOUCHED_COUNT, false, -1 },
                { "{\"name\":\"n\",\"any\":[]}", NULL, UNTOUCHED_COUNT, false, -1 },
                { any_many, NULL, UNTOUCHED_COUNT, false, -1 }, /* max 0: no element count cap */
                { any257, "any" },                              /* the element cap holds regardless */
                /* unknown fields, even null ones */
                { "{\"name\":\"n\",\"zzz\":1}", "zzz" },
                { "{\"name\":\"n\",\"zzz\":null}", "zzz" },
                { "{\"zzz\":1}", "zzz" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = parse(cases[i].json);
                P p = { .count = UNTOUCHED_COUNT };
                const char *bad = NULL;

                fprintf(stderr, "   %.100s\n", cases[i].json);
                int r = varlink_parse_parameters(o, p_fields, &p, &bad);
                if (cases[i].bad) {
                        ASSERT_EQ(r, -EINVAL);
                        ASSERT_STREQ(bad, cases[i].bad);
                } else {
                        ASSERT_OK(r);
                        ASSERT_TRUE(bad == NULL);
                        ASSERT_TRUE(p.name_present);
                        json_object *v;
                        ASSERT_TRUE(json_object_object_get_ex(o, "name", &v));
                        ASSERT_TRUE(p.name == json_object_get_string(v)); /* borrowed */
                        ASSERT_EQ(p.count, cases[i].count);
                        ASSERT_EQ(p.count_present, cases[i].count_present);
                        ASSERT_EQ(p.tags_present, cases[i].tags >= 0);
                        if (cases[i].tags >= 0)
                                ASSERT_EQ(json_object_array_length(p.tags), cases[i].tags);
                        else
                                ASSERT_TRUE(p.tags == NULL);
                }
                json_object_put(o);
        }

        /* Booleans and the present flags, including false given explicitly. */
        static const struct {
                const char *json;
                bool flag, flag_present;
        } bools[] = {
                { "{\"name\":\"n\"}", true, false }, /* untouched */
                { "{\"name\":\"n\",\"flag\":null}", true, false },
                { "{\"name\":\"n\",\"flag\":false}", false, true },
                { "{\"name\":\"n\",\"flag\":true}", true, true },
        };
        for (size_t i = 0; i < ELEMENTSOF(bools); i++) {
                json_object *o = parse(bools[i].json);
                P p = { .flag = true };
                const char *bad = NULL;
                ASSERT_OK(varlink_parse_parameters(o, p_fields, &p, &bad));
                ASSERT_EQ(p.flag, bools[i].flag);
                ASSERT_EQ(p.flag_present, bools[i].flag_present);
                json_object_put(o);
        }
}

/* ---- blocking client against the server in a thread ---- */

typedef struct ServerThread {
        Ctx ctx;
        int stop[2];
        pthread_t thread;
} ServerThread;

static int on_stop(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        ServerThread *t = userdata;
        return sd_event_exit(t->ctx.event, 0);
}

static void *server_thread(void *userdata) {
        ServerThread *t = userdata;
        /* From here until the join, only this thread touches the loop and the server. */
        int r = sd_event_loop(t->ctx.event);
        return (void *) (intptr_t) r;
}

static void server_thread_start(ServerThread *t) {
        ctx_init(&t->ctx, 0, 0);
        ASSERT_OK(pipe2(t->stop, O_CLOEXEC));
        ASSERT_OK(sd_event_add_io(t->ctx.event, NULL, t->stop[0], EPOLLIN, on_stop, t));
        ASSERT_EQ(pthread_create(&t->thread, NULL, server_thread, t), 0);
}

static void server_thread_stop(ServerThread *t) {
        void *ret;
        ASSERT_EQ(write(t->stop[1], "x", 1), 1);
        ASSERT_EQ(pthread_join(t->thread, &ret), 0);
        ASSERT_EQ((intptr_t) ret, 0);
        ctx_done(&t->ctx);
        safe_close(t->stop[0]);
        safe_close(t->stop[1]);
}

TEST(blocking_client) {
        static const uint64_t timeout = 5 * USEC_PER_SEC;
        ServerThread t;
        VarlinkClient *c = NULL;
        json_object *params = NULL, *v;
        const char *error = NULL;
        bool continues = true;

        server_thread_start(&t);
        ASSERT_EQ(varlink_client_connect("/nonexistent/socket", &c), -ENOENT);
        ASSERT_OK(varlink_client_connect(t.ctx.path, &c));
        ASSERT_TRUE(varlink_client_fd(c) >= 0);

        ASSERT_OK(varlink_client_call(c, "org.varlink.service.GetInfo", NULL, 0, timeout, &params, &error, &continues));
        ASSERT_TRUE(error == NULL);
        ASSERT_FALSE(continues);
        ASSERT_TRUE(json_object_object_get_ex(params, "interfaces", &v));
        ASSERT_EQ(json_object_array_length(v), 2);
        ASSERT_STREQ(json_object_get_string(json_object_array_get_idx(v, 1)), TEST_INTERFACE);
        json_object_put(params);

        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Echo", parse("{\"s\":\"secret\",\"n\":[1,2]}"), 0, timeout,
                                      &params, &error, NULL));
        ASSERT_TRUE(error == NULL);
        json_object *want = parse("{\"s\":\"secret\",\"n\":[1,2]}");
        ASSERT_TRUE(json_object_equal(params, want));
        json_object_put(want);
        json_object_put(params);

        /* Error replies are not transport failures. */
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Nope", NULL, 0, timeout, &params, &error, NULL));
        ASSERT_STREQ(error, VARLINK_ERROR_METHOD_NOT_FOUND);
        ASSERT_TRUE(json_object_object_get_ex(params, "method", &v));
        ASSERT_STREQ(json_object_get_string(v), "io.tokend.test.Nope");
        json_object_put(params);
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Fail", NULL, 0, timeout, NULL, &error, NULL));
        ASSERT_STREQ(error, VARLINK_ERROR_INTERNAL);

        /* Streaming. */
        ASSERT_EQ(varlink_client_next(c, timeout, &params, &error, &continues), -ENOMSG);
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Stream", parse("{\"count\":3}"), VARLINK_CALL_MORE, timeout,
                                      &params, &error, &continues));
        ASSERT_TRUE(error == NULL);
        ASSERT_TRUE(continues);
        ASSERT_TRUE(json_object_object_get_ex(params, "i", &v));
        ASSERT_EQ(json_object_get_int(v), 1);
        json_object_put(params);
        /* No new call while one is streaming. */
        ASSERT_EQ(varlink_client_call(c, "io.tokend.test.Echo", parse("{}"), 0, timeout, NULL, NULL, NULL), -EBUSY);
        for (int i = 2; i <= 3; i++) {
                ASSERT_OK(varlink_client_next(c, timeout, &params, &error, &continues));
                ASSERT_TRUE(error == NULL);
                ASSERT_EQ(continues, i < 3);
                ASSERT_TRUE(json_object_object_get_ex(params, "i", &v));
                ASSERT_EQ(json_object_get_int(v), i);
                json_object_put(params);
        }
        ASSERT_EQ(varlink_client_next(c, timeout, &params, &error, &continues), -ENOMSG);
        /* An error ends a stream. */
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Stream", NULL, VARLINK_CALL_MORE, timeout, NULL, &error,
                                      &continues));
        ASSERT_STREQ(error, VARLINK_ERROR_INVALID_PARAMETER);
        ASSERT_FALSE(continues);
        ASSERT_EQ(varlink_client_next(c, timeout, NULL, &error, &continues), -ENOMSG);

        /* Oneway: no reply to wait for, and the next call gets its own reply. */
        params = (json_object *) 0x1;
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Record", NULL, VARLINK_CALL_ONEWAY, timeout, &params, &error,
                                      &continues));
        ASSERT_TRUE(params == NULL);
        ASSERT_TRUE(error == NULL);
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Record", NULL, 0, timeout, &params, &error, NULL));
        ASSERT_TRUE(error == NULL);
        ASSERT_TRUE(json_object_object_get_ex(params, "recorded", &v));
        ASSERT_EQ(json_object_get_int(v), 2);
        json_object_put(params);

        /* A reply that comes later than the caller waits. */
        ASSERT_EQ(varlink_client_call(c, "io.tokend.test.Later", parse("{\"delay_ms\":2000,\"value\":1}"), 0,
                                      100 * USEC_PER_MSEC, &params, &error, NULL),
                  -ETIMEDOUT);
        c = varlink_client_free(c);
        ASSERT_TRUE(varlink_client_free(NULL) == NULL);

        /* The server goes away under a waiting client. */
        ASSERT_OK(varlink_client_connect(t.ctx.path, &c));
        ASSERT_OK(varlink_client_call(c, "io.tokend.test.Echo", NULL, 0, timeout, NULL, &error, NULL));
        server_thread_stop(&t);
        int r = varlink_client_call(c, "io.tokend.test.Echo", NULL, 0, timeout, NULL, &error, NULL);
        ASSERT_TRUE(r == -ECONNRESET || r == -EPIPE);
        c = varlink_client_free(c);

        /* After the join the counters can be read. */
        ASSERT_EQ(t.ctx.recorded, 2);
        ASSERT_EQ(t.ctx.cancelled, 1); /* the Later call whose client timed out and left */
}

int main(void) {
        RUN(get_info);
        RUN(get_interface_description);
        RUN(errors_and_replies);
        RUN(permission_denied);
        RUN(more);
        RUN(oneway);
        RUN(pipelined);
        RUN(large_replies);
        RUN(protocol_violations_close_one_connection);
        RUN(connection_cap);
        RUN(cancel_on_disconnect);
        RUN(half_close_still_answered);
        RUN(listen_path);
        RUN(parse_parameters);
        RUN(blocking_client);
        return 0;
}
