/* SPDX-License-Identifier: MIT */
/* tests/varlink/varlink-cert-server.c: the org.varlink.certification service
 * on protocol/, for upstream's conformance client (varlink-go-certification
 * --client). A client calls Start, Test01 … Test11 and End in that order,
 * passing on what each reply carried; the service checks every step against
 * a table and keeps, per client id, which method must come next. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "common/util.h"
#include "varlink-cert-idl.h"
#include "varlink.h"

#define CERT_INTERFACE "org.varlink.certification"
#define CERT_ERROR_CLIENT_ID CERT_INTERFACE ".ClientIdError"
#define CERT_ERROR_CERTIFICATION CERT_INTERFACE ".CertificationError"

/* Clients that went quiet are forgotten; at most this many are tracked. */
#define CLIENTS_MAX 100U
#define CLIENT_IDLE_USEC (60 * USEC_PER_SEC)

#define TEST10_REPLIES 10

static const char *arg_socket = NULL;

/* ---- the sequence ---- */

/* What Test09 returns and Test10 must get back. The nullable fields are left
 * out, which is how upstream's Go service sends them; null is as good. */
#define MYTYPE                                                                                       \
        "{\"object\":{\"method\":\"org.varlink.certification.Test09\","                              \
        "\"parameters\":{\"map\":{\"foo\":\"Foo\",\"bar\":\"Bar\"}}},"                               \
        "\"enum\":\"two\","                                                                          \
        "\"struct\":{\"first\":1,\"second\":\"2\"},"                                                 \
        "\"array\":[\"one\",\"two\",\"three\"],"                                                     \
        "\"dictionary\":{\"foo\":\"Foo\",\"bar\":\"Bar\"},"                                          \
        "\"stringset\":{\"one\":{},\"two\":{},\"three\":{}},"                                        \
        "\"interface\":{\"foo\":[null,{\"Foo\":\"foo\",\"Bar\":\"bar\"},null,{\"one\":\"foo\",\"two\":\"bar\"}]," \
        "\"anon\":{\"foo\":true,\"bar\":false}}}"

#define SCALARS "\"bool\":false,\"int\":2,\"float\":3.141592653589793,\"string\":\"a lot of string\""

typedef enum StepKind {
        STEP_START,  /* creates the client */
        STEP_REPLY,  /* checks the parameters, replies once */
        STEP_STREAM, /* needs "more": TEST10_REPLIES replies */
        STEP_ONEWAY, /* must be called oneway */
        STEP_END,    /* replies, then forgets the client */
} StepKind;

typedef struct CertStep {
        const char *method; /* unqualified */
        StepKind kind;
        const char *wants; /* the parameters besides client_id, as JSON */
        const char *reply; /* the reply parameters, as JSON */
} CertStep;

static const CertStep steps[] = {
        { "Start", STEP_START, "{}", NULL },
        { "Test01", STEP_REPLY, "{}", "{\"bool\":true}" },
        { "Test02", STEP_REPLY, "{\"bool\":true}", "{\"int\":1}" },
        { "Test03", STEP_REPLY, "{\"int\":1}", "{\"float\":1.0}" },
        { "Test04", STEP_REPLY, "{\"float\":1.0}", "{\"string\":\"ping\"}" },
        { "Test05", STEP_REPLY, "{\"string\":\"ping\"}", "{" SCALARS "}" },
        { "Test06", STEP_REPLY, "{" SCALARS "}", "{\"struct\":{" SCALARS "}}" },
        { "Test07", STEP_REPLY, "{\"struct\":{" SCALARS "}}", "{\"map\":{\"foo\":\"Foo\",\"bar\":\"Bar\"}}" },
        { "Test08", STEP_REPLY, "{\"map\":{\"foo\":\"Foo\",\"bar\":\"Bar\"}}",
          "{\"set\":{\"one\":{},\"two\":{},\"three\":{}}}" },
        { "Test09", STEP_REPLY, "{\"set\":{\"one\":{},\"two\":{},\"three\":{}}}", "{\"mytype\":" MYTYPE "}" },
        { "Test10", STEP_STREAM, "{\"mytype\":" MYTYPE "}", NULL },
        { "Test11", STEP_ONEWAY,
          "{\"last_more_replies\":[\"Reply number 1\",\"Reply number 2\",\"Reply number 3\",\"Reply number 4\","
          "\"Reply number 5\",\"Reply number 6\",\"Reply number 7\",\"Reply number 8\",\"Reply number 9\","
          "\"Reply number 10\"]}",
          "{}" },
        { "End", STEP_END, "{}", "{\"all_ok\":true}" },
};

/* ---- per-client state ---- */

typedef struct CertClient {
        char id[37];    /* a random UUID, as upstream hands out */
        size_t next;    /* index into steps[] of the method it must call next */
        uint64_t used;  /* monotonic time of its last call */
} CertClient;

typedef struct Cert {
        CertClient clients[CLIENTS_MAX];
        size_t n_clients;
} Cert;

static CertClient *cert_find_client(Cert *cert, const char *id) {
        for (size_t i = 0; i < cert->n_clients; i++)
                if (streq(cert->clients[i].id, id))
                        return &cert->clients[i];
        return NULL;
}

static void cert_drop_client(Cert *cert, CertClient *c) {
        *c = cert->clients[--cert->n_clients];
}

static int cert_new_client(Cert *cert, CertClient **ret) {
        uint64_t now = now_monotonic_usec();
        uint8_t b[16];
        int r;

        for (size_t i = cert->n_clients; i > 0; i--)
                if (now - cert->clients[i - 1].used > CLIENT_IDLE_USEC)
                        cert_drop_client(cert, &cert->clients[i - 1]);
        if (cert->n_clients >= CLIENTS_MAX) {
                /* Still full: the least recently used one makes room. */
                CertClient *lru = &cert->clients[0];
                for (size_t i = 1; i < cert->n_clients; i++)
                        if (cert->clients[i].used < lru->used)
                                lru = &cert->clients[i];
                cert_drop_client(cert, lru);
        }

        r = random_bytes(b, sizeof b);
        if (r < 0)
                return r;
        b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */

        CertClient *c = &cert->clients[cert->n_clients++];
        *c = (CertClient) { .next = 1, .used = now };
        snprintf(c->id, sizeof c->id,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                 b[15]);
        *ret = c;
        return 0;
}

/* ---- comparing what a client sent with what it should have ---- */

/* JSON equality as a Varlink type system sees it: object keys in any order, an
 * absent field the same as null, and a float that happens to be integral may
 * arrive as an integer (Go encodes 1.0 as 1). An int must be an int. */
static bool cert_equal(json_object *want, json_object *got) {
        json_type wt = json_object_get_type(want), gt = json_object_get_type(got);

        switch (wt) {
        case json_type_null:
                return gt == json_type_null;
        case json_type_boolean:
                return gt == json_type_boolean && json_object_get_boolean(want) == json_object_get_boolean(got);
        case json_type_int:
                return gt == json_type_int && json_object_get_int64(want) == json_object_get_int64(got);
        case json_type_double:
                return (gt == json_type_double || gt == json_type_int) &&
                       json_object_get_double(want) == json_object_get_double(got);
        case json_type_string:
                return gt == json_type_string && json_object_get_string_len(want) == json_object_get_string_len(got) &&
                       memcmp(json_object_get_string(want), json_object_get_string(got),
                              (size_t) json_object_get_string_len(want)) == 0;
        case json_type_array:
                if (gt != json_type_array || json_object_array_length(want) != json_object_array_length(got))
                        return false;
                for (size_t i = 0; i < json_object_array_length(want); i++)
                        if (!cert_equal(json_object_array_get_idx(want, i), json_object_array_get_idx(got, i)))
                                return false;
                return true;
        case json_type_object: {
                if (gt != json_type_object)
                        return false;
                json_object_object_foreach(want, wkey, wval) {
                        json_object *gval = NULL;
                        (void) json_object_object_get_ex(got, wkey, &gval);
                        if (!cert_equal(wval, gval))
                                return false;
                }
                json_object_object_foreach(got, gkey, gval) {
                        if (!json_object_object_get_ex(want, gkey, NULL) && !json_object_is_type(gval, json_type_null))
                                return false;
                }
                return true;
        }
        }
        return false;
}

static json_object *cert_parse(const char *text) {
        /* The table is checked at start-up: only out of memory fails here. */
        return text ? json_tokener_parse(text) : json_object_new_object();
}

static int cert_fail(VarlinkCall *call, json_object *wants, json_object *got) {
        json_object *p = json_object_new_object();
        if (!p) {
                json_object_put(wants);
                json_object_put(got);
                return -ENOMEM;
        }
        json_object_object_add(p, "wants", wants);
        json_object_object_add(p, "got", got);
        return varlink_call_error(call, CERT_ERROR_CERTIFICATION, p);
}

static json_object *one_field(const char *key, json_object *value) {
        json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, key, value);
        else
                json_object_put(value);
        return o;
}

static int cert_stream(VarlinkCall *call) {
        for (int i = 1; i <= TEST10_REPLIES; i++) {
                char s[32];
                int r;

                snprintf(s, sizeof s, "Reply number %d", i);
                json_object *p = one_field("string", json_object_new_string(s));
                if (!p)
                        return -ENOMEM;
                r = i < TEST10_REPLIES ? varlink_call_reply_more(call, p) : varlink_call_reply(call, p);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- the one handler behind every method ---- */

static const CertStep *cert_find_step(const char *method, size_t *ret_index) {
        const char *name = startswith(method, CERT_INTERFACE ".");
        for (size_t i = 0; name && i < ELEMENTSOF(steps); i++)
                if (streq(steps[i].method, name)) {
                        *ret_index = i;
                        return &steps[i];
                }
        return NULL;
}

static int cert_method(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Cert *cert = userdata;
        const char *method = varlink_call_method(call);
        _cleanup_(json_object_putp) json_object *got = NULL, *wants = NULL;
        CertClient *client;
        size_t index;
        json_object *v;
        int r;

        const CertStep *step = cert_find_step(method, &index);
        if (!step)
                return -EINVAL; /* every method of the table has an entry */

        if (json_object_deep_copy(parameters, &got, NULL) < 0)
                return -ENOMEM;

        if (step->kind == STEP_START) {
                wants = cert_parse(step->wants);
                if (!wants)
                        return -ENOMEM;
                if (!cert_equal(wants, got))
                        return cert_fail(call, TAKE_PTR(wants), TAKE_PTR(got));
                r = cert_new_client(cert, &client);
                if (r < 0)
                        return r;
                fprintf(stderr, "client %s: started\n", client->id);
                return varlink_call_reply(call, one_field("client_id", json_object_new_string(client->id)));
        }

        if (!json_object_object_get_ex(got, "client_id", &v) || !json_object_is_type(v, json_type_string))
                return varlink_call_error_invalid_parameter(call, "client_id");
        client = cert_find_client(cert, json_object_get_string(v));
        if (!client)
                return varlink_call_error(call, CERT_ERROR_CLIENT_ID, NULL);
        client->used = now_monotonic_usec();
        json_object_object_del(got, "client_id");

        /* Out of order: say which method was due. */
        if (index != client->next) {
                char due[128];
                snprintf(due, sizeof due, CERT_INTERFACE ".%s", steps[client->next].method);
                fprintf(stderr, "client %s: called %s, wanted %s\n", client->id, method, due);
                return cert_fail(call, one_field("method", json_object_new_string(due)),
                                 one_field("method", json_object_new_string(method)));
        }

        wants = cert_parse(step->wants);
        if (!wants)
                return -ENOMEM;
        if (!cert_equal(wants, got)) {
                fprintf(stderr, "client %s: %s: unexpected parameters %s\n", client->id, method,
                        json_object_to_json_string(got));
                return cert_fail(call, TAKE_PTR(wants), TAKE_PTR(got));
        }

        switch (step->kind) {
        case STEP_STREAM:
                if (!(flags & VARLINK_CALL_MORE))
                        return cert_fail(call, one_field("more", json_object_new_boolean(true)),
                                         one_field("more", json_object_new_boolean(false)));
                client->next++;
                fprintf(stderr, "client %s: %s passed\n", client->id, step->method);
                return cert_stream(call);
        case STEP_ONEWAY:
                /* An error here never reaches the client, but the step is not
                 * passed: End then tells it so. */
                if (!(flags & VARLINK_CALL_ONEWAY))
                        return cert_fail(call, one_field("oneway", json_object_new_boolean(true)),
                                         one_field("oneway", json_object_new_boolean(false)));
                break;
        case STEP_END:
                fprintf(stderr, "client %s: all tests passed\n", client->id);
                cert_drop_client(cert, client);
                return varlink_call_reply(call, cert_parse(step->reply));
        case STEP_START:
        case STEP_REPLY:
                break;
        }

        client->next++;
        fprintf(stderr, "client %s: %s passed\n", client->id, step->method);
        json_object *reply = cert_parse(step->reply);
        if (!reply)
                return -ENOMEM;
        return varlink_call_reply(call, reply);
}

static const VarlinkMethod cert_methods[] = {
        { "Start", cert_method, 0 },   { "Test01", cert_method, 0 }, { "Test02", cert_method, 0 },
        { "Test03", cert_method, 0 },  { "Test04", cert_method, 0 }, { "Test05", cert_method, 0 },
        { "Test06", cert_method, 0 },  { "Test07", cert_method, 0 }, { "Test08", cert_method, 0 },
        { "Test09", cert_method, 0 },  { "Test10", cert_method, 0 }, { "Test11", cert_method, 0 },
        { "End", cert_method, 0 },     {},
};

static const VarlinkInterface cert_interface = {
        .name = CERT_INTERFACE,
        .description = varlink_idl_org_varlink_certification,
        .methods = cert_methods,
};

/* Every JSON text of the table parses, and every step has a method. */
static int cert_check_table(void) {
        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                const char *texts[] = { steps[i].wants, steps[i].reply };
                bool found = false;

                for (size_t j = 0; j < ELEMENTSOF(texts); j++) {
                        json_object *o = texts[j] ? json_tokener_parse(texts[j]) : NULL;
                        if (texts[j] && !json_object_is_type(o, json_type_object)) {
                                json_object_put(o);
                                fprintf(stderr, "step %s: bad JSON in table\n", steps[i].method);
                                return -EINVAL;
                        }
                        json_object_put(o);
                }
                for (const VarlinkMethod *m = cert_methods; m->name; m++)
                        found = found || streq(m->name, steps[i].method);
                if (!found)
                        return -EINVAL;
        }
        return 0;
}

/* ---- main ---- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int parse_argv(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "socket", required_argument, NULL, 's' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "hs:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        printf("%s --socket PATH\n\n"
                               "Serves org.varlink.certification on a Unix socket until SIGTERM.\n",
                               program_invocation_short_name);
                        return 0;
                case 's':
                        arg_socket = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc || !arg_socket) {
                fprintf(stderr, "Usage: %s --socket PATH\n", program_invocation_short_name);
                return -EINVAL;
        }
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        VarlinkServer *server = NULL;
        Cert cert = {};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        r = cert_check_table();
        if (r < 0)
                return EXIT_FAILURE;

        /* For the life of the process: the loop takes these as events. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return EXIT_FAILURE;

        r = sd_event_new(&event);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGTERM, on_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, on_signal, NULL);
        if (r >= 0)
                r = varlink_server_new(event, &server);
        if (r >= 0)
                r = varlink_server_set_info(server, "tokend", "varlink-cert-server", PACKAGE_VERSION, PACKAGE_URL);
        if (r >= 0) {
                varlink_server_set_callbacks(server, NULL, NULL, &cert);
                r = varlink_server_add_interface(server, &cert_interface);
        }
        if (r >= 0)
                r = varlink_server_listen_path(server, arg_socket, 0600);
        if (r < 0) {
                fprintf(stderr, "Failed to set up the service on %s: %s\n", arg_socket, strerror(-r));
                varlink_server_free(server);
                return EXIT_FAILURE;
        }

        fprintf(stderr, "Serving %s on %s\n", CERT_INTERFACE, arg_socket);
        r = sd_event_loop(event);
        varlink_server_free(server);
        (void) unlink(arg_socket);
        if (r < 0) {
                fprintf(stderr, "Event loop failed: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
