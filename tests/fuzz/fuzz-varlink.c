/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-varlink.c: Varlink framing and dispatch, end to end: the
 * bytes go over a real Unix socket into a real VarlinkServer connection on
 * its own sd-event loop, and what the server answers is read back with the
 * client half of the stream code.
 *
 * Input: one flags byte, then the bytes the peer sends.
 *   bit 0: the connect callback refuses the peer (-EPERM: one call answered
 *          PermissionDenied, then the connection closes)
 *   bit 1: tight caps: 512-byte messages, nesting depth 4
 *   bit 2: send in chunks of 1 + 4 * (bits 4-7) bytes, running the loop in
 *          between, so frames arrive split
 *   bit 3: hang up both directions when everything is sent, without reading
 *          the answers, so calls are cancelled and writes fail
 *
 * The server offers org.varlink.service, io.tokend.agent with the daemon's
 * own IDL and GetToken parameter parser (api_parse_get_token()), a manager
 * interface whose authorization refuses everyone, and io.tokend.fuzz whose
 * methods reach every path of the library: a typed field table, streamed
 * replies, an answer from the event loop later (and its cancellation), a
 * handler failing without answering, an unimplemented method, call tags.
 *
 * Invariants checked: every answer the server sends is one JSON object with
 * the reply members of the protocol; the server finishes with the peer
 * (closes the connection) once the peer is done, without timers. */
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/util.h"
#include "consent.h"
#include "fuzz.h"
#include "scopes.h"
#include "varlink-idl.h"
#include "varlink.h"

#define FLAG_DENY (1U << 0)
#define FLAG_TIGHT (1U << 1)
#define FLAG_CHUNKED (1U << 2)
#define FLAG_HANG_UP (1U << 3)

/* Loop iterations without any progress after which the server is stuck. */
#define STALL_MAX 64

typedef struct Run {
        sd_event *event;
        VarlinkServer *server;
        bool deny;
        VarlinkCall *later;          /* the call Later answers from the loop */
        sd_event_source *later_source;
        unsigned disconnects;
} Run;

static const char fuzz_idl[] =
        "# Methods that reach every path of the Varlink server library.\n"
        "interface io.tokend.fuzz\n"
        "\n"
        "# Returns its parameters.\n"
        "method Echo() -> ()\n"
        "\n"
        "# Parses typed parameters with a field table and returns them.\n"
        "method Check(text: ?string, required: string, number: ?int, flag: ?bool, list: ?[]string) -> ()\n"
        "\n"
        "# Answers count times with continues, then once more; needs more.\n"
        "method Stream(count: ?int) -> (i: int)\n"
        "\n"
        "# Answers from the event loop, after the handler returned.\n"
        "method Later() -> ()\n"
        "\n"
        "# Fails without answering.\n"
        "method Fail() -> ()\n"
        "\n"
        "# Declared, not implemented.\n"
        "method Unimplemented() -> ()\n"
        "\n"
        "# Tags the call and returns the tag.\n"
        "method Tag(tag: ?string) -> (tag: ?string)\n";

/* ---- io.tokend.fuzz ---- */

static int method_echo(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        json_object *copy = NULL;
        /* Borrowed parameters; the reply wipes what it is given: a copy. */
        if (json_object_deep_copy(parameters, &copy, NULL) < 0)
                return -ENOMEM;
        return varlink_call_reply(call, copy);
}

typedef struct CheckParams {
        const char *text, *required;
        int64_t number;
        bool has_number, flag;
        json_object *list;
} CheckParams;

static int method_check(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = {
                { "text", VARLINK_FIELD_STRING, offsetof(CheckParams, text), VARLINK_FIELD_NONEMPTY, 64,
                  VARLINK_NO_PRESENT },
                { "required", VARLINK_FIELD_STRING, offsetof(CheckParams, required), VARLINK_FIELD_REQUIRED, 0,
                  VARLINK_NO_PRESENT },
                { "number", VARLINK_FIELD_INT, offsetof(CheckParams, number), 0, 0,
                  offsetof(CheckParams, has_number) },
                { "flag", VARLINK_FIELD_BOOL, offsetof(CheckParams, flag), 0, 0, VARLINK_NO_PRESENT },
                { "list", VARLINK_FIELD_STRV, offsetof(CheckParams, list), VARLINK_FIELD_NONEMPTY, 8,
                  VARLINK_NO_PRESENT },
                {},
        };
        CheckParams p = {};
        const char *bad = NULL;

        if (varlink_parse_parameters(parameters, fields, &p, &bad) < 0) {
                ASSERT_TRUE(bad);
                return varlink_call_error_invalid_parameter(call, bad);
        }
        /* What the table promises its handlers. */
        ASSERT_TRUE(p.required);
        ASSERT_TRUE(!p.text || (*p.text && strlen(p.text) <= 64));
        ASSERT_TRUE(!p.has_number || p.number != INT64_MIN);
        size_t n = p.list ? json_object_array_length(p.list) : 0;
        ASSERT_TRUE(!p.list || (n >= 1 && n <= 8));

        json_object *r = varlink_params_kv("required", p.required, "text", p.text), *list = json_object_new_array();
        if (!r || !list) {
                json_object_put(r);
                json_object_put(list);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(p.list, i));
                ASSERT_TRUE(s && *s && strlen(s) <= 256);
                json_object_array_add(list, json_object_new_string(s));
        }
        json_object_object_add(r, "list", list);
        if (p.has_number)
                json_object_object_add(r, "number", json_object_new_int64(p.number));
        json_object_object_add(r, "flag", json_object_new_boolean(p.flag));
        return varlink_call_reply(call, r);
}

static int method_stream(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = {
                { "count", VARLINK_FIELD_INT, 0, 0, 0, VARLINK_NO_PRESENT },
                {},
        };
        int64_t count = 1;
        const char *bad = NULL;

        ASSERT_TRUE(flags & VARLINK_CALL_MORE); /* VARLINK_METHOD_REQUIRES_MORE */
        if (varlink_parse_parameters(parameters, fields, &count, &bad) < 0 || count < 0 || count > 3)
                return varlink_call_error_invalid_parameter(call, bad ?: "count");
        for (int64_t i = 0; i < count; i++) {
                int r = varlink_call_reply_more(call, NULL);
                if (r < 0)
                        return r;
        }
        return varlink_call_reply(call, NULL);
}

static int later_answer(sd_event_source *s, void *userdata) {
        Run *run = userdata;
        VarlinkCall *call = TAKE_PTR(run->later);

        run->later_source = sd_event_source_disable_unref(run->later_source);
        varlink_call_set_cancel(call, NULL, NULL);
        (void) varlink_call_reply(call, NULL);
        return 0;
}

static void later_cancel(VarlinkCall *call, void *userdata) {
        Run *run = userdata;

        ASSERT_TRUE(run->later == call);
        run->later = NULL;
        run->later_source = sd_event_source_disable_unref(run->later_source);
}

static int method_later(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Run *run = userdata;

        /* One call at a time per connection, and there is one connection. */
        ASSERT_TRUE(!run->later);
        int r = sd_event_add_defer(run->event, &run->later_source, later_answer, run);
        if (r < 0)
                return r;
        run->later = call;
        varlink_call_set_cancel(call, later_cancel, run);
        return 0;
}

static int method_fail(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        return -EIO; /* the library answers io.tokend.InternalError */
}

static int method_tag(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = {
                { "tag", VARLINK_FIELD_STRING, 0, 0, 64, VARLINK_NO_PRESENT },
                {},
        };
        const char *tag = NULL, *bad = NULL;

        if (varlink_parse_parameters(parameters, fields, &tag, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        int r = varlink_call_set_tag(call, tag);
        if (r < 0)
                return r;
        ASSERT_TRUE(streq_ptr(varlink_call_get_tag(call), tag));
        return varlink_call_reply(call, varlink_params_kv("tag", varlink_call_get_tag(call), NULL, NULL));
}

static const VarlinkMethod fuzz_methods[] = {
        { "Echo", method_echo, 0 },
        { "Check", method_check, 0 },
        { "Stream", method_stream, VARLINK_METHOD_REQUIRES_MORE },
        { "Later", method_later, 0 },
        { "Fail", method_fail, 0 },
        { "Unimplemented", NULL, 0 },
        { "Tag", method_tag, 0 },
        {},
};

static const VarlinkInterface fuzz_interface = {
        .name = "io.tokend.fuzz",
        .description = fuzz_idl,
        .methods = fuzz_methods,
};

/* ---- io.tokend.agent, as far as it goes without a daemon ---- */

static int agent_get_token(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        TokenRequest t;

        int r = api_parse_get_token(call, parameters, true, &t);
        if (r <= 0)
                return r; /* answered InvalidParameter */
        ASSERT_TRUE(t.credential && *t.credential);
        ASSERT_TRUE(t.min_ttl >= -1);
        json_object *o = varlink_params_kv("credential", t.credential, "resource", t.resource);
        if (o)
                json_object_object_add(o, "scopes", scope_set_to_json(&t.scopes));
        scope_set_done(&t.scopes);
        return o ? varlink_call_reply(call, o) : -ENOMEM;
}

static int agent_who_am_i(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = { {} };
        const char *bad = NULL;

        if (varlink_parse_parameters(parameters, fields, NULL, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        return varlink_call_reply(call, NULL);
}

static const VarlinkMethod agent_methods[] = {
        { "GetToken", agent_get_token, 0 },
        { "WhoAmI", agent_who_am_i, 0 },
        {},
};

static const VarlinkInterface agent_interface_fuzz = {
        .name = "io.tokend.agent",
        .description = varlink_idl_io_tokend_agent,
        .methods = agent_methods,
};

static bool refuse_everyone(VarlinkCall *call, void *userdata) {
        return false;
}

static const VarlinkMethod no_methods[] = { {} };

static const VarlinkInterface manager_interface_fuzz = {
        .name = "io.tokend.manager",
        .description = varlink_idl_io_tokend_manager,
        .methods = no_methods,
        .authorize = refuse_everyone,
};

/* ---- the connection ---- */

static int on_connect(VarlinkServer *s, VarlinkConnection *c, void *userdata) {
        Run *run = userdata;
        return run->deny ? -EPERM : 0;
}

static void on_disconnect(VarlinkServer *s, VarlinkConnection *c, void *userdata) {
        Run *run = userdata;
        run->disconnects++;
}

/* Reads what the server answered so far; every complete frame must be a reply. */
static void check_replies(VarlinkStream *cs) {
        json_object *m = NULL, *v;
        int r;

        while ((r = varlink_stream_next(cs, &m)) > 0) {
                ASSERT_TRUE(json_object_is_type(m, json_type_object));
                if (json_object_object_get_ex(m, "error", &v))
                        ASSERT_TRUE(json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0);
                if (json_object_object_get_ex(m, "parameters", &v))
                        ASSERT_TRUE(json_object_is_type(v, json_type_object));
                if (json_object_object_get_ex(m, "continues", &v))
                        ASSERT_TRUE(json_object_is_type(v, json_type_boolean));
                ASSERT_FALSE(json_object_object_get_ex(m, "method", NULL));
                json_object_put(m);
        }
        if (r < 0)
                TEST_FAIL("the server sent a frame that is not a reply: %s", strerror(-r));
}

/* A listening socket on an abstract address the kernel picks (autobind),
 * and a client connected to it. */
static int socket_pair_listening(int *ret_listen, int *ret_client) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t len = sizeof(sa_family_t);
        _cleanup_close_ int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        _cleanup_close_ int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (l < 0 || c < 0 || bind(l, (struct sockaddr *) &sa, len) < 0 || listen(l, 1) < 0)
                return -errno;
        len = sizeof sa;
        if (getsockname(l, (struct sockaddr *) &sa, &len) < 0 || connect(c, (struct sockaddr *) &sa, len) < 0)
                return -errno;
        *ret_listen = TAKE_FD(l);
        *ret_client = TAKE_FD(c);
        return 0;
}

static void run_done(Run *run) {
        /* Frees the connection, which cancels a pending Later call. */
        run->server = varlink_server_free(run->server);
        ASSERT_TRUE(!run->later && !run->later_source);
        run->event = sd_event_unref(run->event);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > FUZZ_INPUT_MAX)
                return 0;
        unsigned flags = data[0];
        data++;
        size--;

        Run run = { .deny = flags & FLAG_DENY };
        VarlinkStream cs;
        int lfd = -1, cfd = -1;

        ASSERT_OK(sd_event_new(&run.event));
        ASSERT_OK(varlink_server_new(run.event, &run.server));
        ASSERT_OK(varlink_server_set_info(run.server, "tokend", "fuzz", "0", "https://example.com"));
        if (flags & FLAG_TIGHT)
                varlink_server_set_limits(run.server, 512, 4, 0);
        varlink_server_set_callbacks(run.server, on_connect, on_disconnect, &run);
        ASSERT_OK(varlink_server_add_interface(run.server, &fuzz_interface));
        ASSERT_OK(varlink_server_add_interface(run.server, &agent_interface_fuzz));
        ASSERT_OK(varlink_server_add_interface(run.server, &manager_interface_fuzz));
        ASSERT_OK(socket_pair_listening(&lfd, &cfd));
        ASSERT_OK(varlink_server_listen_fd(run.server, lfd)); /* now the server's */
        /* The client's end: answers are read with the same framing code, with
         * room for the server's largest answer. */
        varlink_stream_init(&cs, cfd, VARLINK_OUTPUT_MAX, 64);

        size_t pos = 0, chunk = flags & FLAG_CHUNKED ? 1 + 4 * (flags >> 4) : size;
        bool shut = false, eof = false, hang_up = flags & FLAG_HANG_UP;
        unsigned stalled = 0;
        for (;;) {
                bool progress = false;

                if (pos < size) {
                        size_t n = chunk < size - pos ? chunk : size - pos;
                        ssize_t k = send(cs.fd, data + pos, n, MSG_DONTWAIT | MSG_NOSIGNAL);
                        if (k > 0) {
                                pos += (size_t) k;
                                progress = true;
                        } else if (k < 0 && errno != EAGAIN)
                                pos = size; /* the server closed the connection: the rest goes nowhere */
                }
                if (pos == size && !shut) {
                        (void) shutdown(cs.fd, hang_up ? SHUT_RDWR : SHUT_WR);
                        shut = progress = true;
                }
                while (!hang_up && !eof) {
                        size_t before = cs.rlen;
                        int r = varlink_stream_fill(&cs);
                        if (r == -ECONNRESET || (r < 0 && r != -ENOBUFS))
                                eof = true;
                        else if (r < 0 || cs.rlen == before)
                                break;
                        progress = true;
                        check_replies(&cs);
                }
                int r = sd_event_run(run.event, 0);
                ASSERT_OK(r);
                progress |= r > 0;

                /* One connection: once it is gone (disconnected), the run is over. */
                if (shut && run.disconnects > 0 && (hang_up || eof))
                        break;
                stalled = progress ? 0 : stalled + 1;
                if (stalled > STALL_MAX)
                        TEST_FAIL("the server stalled with %u connection(s) after %zu of %zu bytes",
                                  varlink_server_connection_count(run.server), pos, size);
        }
        ASSERT_EQ(run.disconnects, 1);
        varlink_stream_done(&cs);
        run_done(&run);
        return 0;
}
