/* SPDX-License-Identifier: MIT */
/* protocol/varlink-server.c: a Varlink server on sd-event. One call at a time
 * per connection, in order: pipelined calls wait in the input buffer until the
 * previous one is answered, which keeps replies in call order as the
 * protocol requires. Connections are only freed from their own event
 * callbacks, never from inside a reply, so handlers may reply at any time. */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/list.h"
#include "common/util.h"
#include "varlink.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

static const char service_idl[] =
        "# Every Varlink service provides this interface: it describes the service\n"
        "# and lists the interfaces it implements.\n"
        "interface org.varlink.service\n"
        "\n"
        "# Describes the service and the interfaces it implements.\n"
        "method GetInfo() -> (\n"
        "  vendor: string,\n"
        "  product: string,\n"
        "  version: string,\n"
        "  url: string,\n"
        "  interfaces: []string\n"
        ")\n"
        "\n"
        "# Returns the IDL text of one of the service's interfaces.\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "\n"
        "# The service does not provide the interface asked for.\n"
        "error InterfaceNotFound (interface: string)\n"
        "\n"
        "# The interface has no method of that name.\n"
        "error MethodNotFound (method: string)\n"
        "\n"
        "# The interface declares the method but the service does not implement it.\n"
        "error MethodNotImplemented (method: string)\n"
        "\n"
        "# A parameter is missing, of the wrong type, or out of range.\n"
        "error InvalidParameter (parameter: string)\n"
        "\n"
        "# The caller may not call this method.\n"
        "error PermissionDenied ()\n"
        "\n"
        "# The method must be called with \"more\" set to true.\n"
        "error ExpectedMore ()\n";

#define SERVICE_INTERFACE "org.varlink.service"
#define DENIED_LINGER_USEC (1000 * 1000) /* how long a refused peer may take to send its first call */
#define INTERFACES_MAX 16

typedef struct Listener {
        VarlinkServer *server;
        int fd;
        sd_event_source *source;
        sd_event_source *resume; /* re-enables accepting after running out of descriptors */
} Listener;

#define ACCEPT_PAUSE_USEC (100 * 1000)

struct VarlinkCall {
        VarlinkConnection *conn;
        char *method;
        VarlinkCallFlags flags;
        VarlinkCancelFn cancel;
        void *cancel_userdata;
        char *tag;
};

struct VarlinkConnection {
        VarlinkServer *server;
        VarlinkConnection *prev, *next;
        VarlinkStream stream;
        VarlinkPeer peer;
        sd_event_source *io, *defer;
        sd_event_source *deny_timer; /* closes a refused connection that never calls */
        VarlinkCall *call;
        void *userdata;
        bool denied;  /* answer PermissionDenied, then close */
        bool closing; /* close once the output is flushed */
        bool dead;    /* free at the next chance */
        bool hup;
        bool processing; /* in connection_process(): a call completed now needs no deferred turn */
        uint32_t events; /* the epoll mask last set */
};

struct VarlinkServer {
        sd_event *event;
        char *vendor, *product, *version, *url;
        const VarlinkInterface *interfaces[INTERFACES_MAX];
        size_t n_interfaces;
        Listener listeners[4];
        size_t n_listeners;
        VarlinkConnection *connections;
        unsigned n_connections;
        size_t message_max;
        int depth_max;
        unsigned connections_max;
        VarlinkConnectFn on_connect;
        VarlinkDisconnectFn on_disconnect;
        void *userdata;
        json_tokener *tokener; /* parses every connection's calls, one at a time */
};

/* ---- connections ---- */

static void connection_free(VarlinkConnection *c) {
        VarlinkServer *s = c->server;

        if (c->call) {
                VarlinkCall *call = TAKE_PTR(c->call);
                if (call->cancel)
                        call->cancel(call, call->cancel_userdata);
                free(call->method);
                free(call->tag);
                free(call);
        }
        if (s->on_disconnect)
                s->on_disconnect(s, c, s->userdata);

        LIST_REMOVE(s->connections, c);
        s->n_connections--;

        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->defer);
        sd_event_source_disable_unref(c->deny_timer);
        varlink_stream_done(&c->stream);
        safe_close(c->peer.pidfd);
        free(c);
}

/* Connections are edge-triggered: with a thousand callers ready at once, a
 * level-triggered epoll would report every one of them again on each turn
 * of the loop, which dispatches one source a turn (quadratic). Edge-triggered
 * is safe because input is read until a short read or EAGAIN (on an AF_UNIX
 * stream socket without SO_PASSCRED, a short read takes everything queued;
 * after EPOLLRDHUP, until EOF),
 * output is written until EAGAIN, and every change of the event mask
 * (EPOLL_CTL_MOD) re-arms the descriptor, so input left unread at the buffer
 * cap is reported again once there is room. */
static void connection_update_events(VarlinkConnection *c) {
        uint32_t events = EPOLLET | EPOLLRDHUP;

        if (c->dead)
                return;
        if (!c->stream.read_eof && !c->closing && c->stream.rlen < c->stream.message_max + 1)
                events |= EPOLLIN;
        if (varlink_stream_has_output(&c->stream))
                events |= EPOLLOUT;
        /* sd-event re-arms an edge-triggered source on every call, even with
         * the same mask (an epoll_ctl() each time): only on a change. */
        if (events == c->events)
                return;
        if (sd_event_source_set_io_events(c->io, events) >= 0)
                c->events = events;
}

static void connection_schedule(VarlinkConnection *c) {
        (void) sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

static void connection_kill(VarlinkConnection *c) {
        c->dead = true;
        connection_schedule(c);
}

/* After a message was queued (r: how that went): sends what it can. */
static int connection_queued(VarlinkConnection *c, int r) {
        if (r < 0) {
                connection_kill(c);
                return r;
        }
        r = varlink_stream_flush(&c->stream);
        if (r < 0 && r != -EAGAIN) {
                connection_kill(c);
                return r;
        }
        connection_update_events(c);
        return 0;
}

static int connection_send(VarlinkConnection *c, json_object *message) {
        if (c->dead) {
                json_object_put_erase(message);
                return -ECONNRESET;
        }
        return connection_queued(c, varlink_stream_enqueue(&c->stream, message));
}

/* ---- replies ---- */

static void call_complete(VarlinkCall *call) {
        VarlinkConnection *c = call->conn;

        c->call = NULL;
        free(call->method);
        free(call->tag);
        free(call);
        /* Answered later (after a refresh, a consent): the connection's next
         * calls wait for a turn. Answered from its handler: the loop in
         * connection_process() goes on by itself. */
        if (!c->processing)
                connection_schedule(c);
}

static int call_send(VarlinkCall *call, const char *error, json_object *parameters, bool continues) {
        VarlinkConnection *c = call->conn;
        int r = 0;

        if (continues && !(call->flags & VARLINK_CALL_MORE)) {
                json_object_put_erase(parameters);
                return -EINVAL;
        }

        if (call->flags & VARLINK_CALL_ONEWAY)
                json_object_put_erase(parameters);
        else {
                json_object *m = json_object_new_object();
                if (!m) {
                        json_object_put_erase(parameters);
                        connection_kill(c);
                        r = -ENOMEM;
                        goto finish;
                }
                if (!parameters)
                        parameters = json_object_new_object();
                json_object_object_add(m, "parameters", parameters);
                if (continues)
                        json_object_object_add(m, "continues", json_object_new_boolean(true));
                if (error)
                        json_object_object_add(m, "error", json_object_new_string(error));
                r = connection_send(c, m);
        }
finish:
        if (!continues)
                call_complete(call);
        return r;
}

int varlink_call_reply(VarlinkCall *call, json_object *parameters) {
        return call_send(call, NULL, parameters, false);
}

int varlink_call_reply_more(VarlinkCall *call, json_object *parameters) {
        return call_send(call, NULL, parameters, true);
}

int varlink_call_reply_fields(VarlinkCall *call, const VarlinkOutField *fields, size_t n, bool continues,
                              VarlinkSentFn sent, void *userdata) {
        VarlinkConnection *c = call->conn;
        int r = 0;

        if (continues && !(call->flags & VARLINK_CALL_MORE))
                return -EINVAL;
        if (!(call->flags & VARLINK_CALL_ONEWAY))
                r = c->dead ? -ECONNRESET
                            : connection_queued(c, varlink_stream_enqueue_fields(&c->stream, fields, n, continues));
        if (sent)
                sent(call, userdata);
        if (!continues)
                call_complete(call);
        return r;
}

int varlink_call_error(VarlinkCall *call, const char *error, json_object *parameters) {
        return call_send(call, error, parameters, false);
}

static json_object *params_1(const char *key, const char *value) {
        return varlink_params_kv(key, value, NULL, NULL);
}

int varlink_call_error_invalid_parameter(VarlinkCall *call, const char *parameter) {
        return varlink_call_error(call, VARLINK_ERROR_INVALID_PARAMETER, params_1("parameter", parameter));
}

VarlinkConnection *varlink_call_connection(VarlinkCall *call) {
        return call->conn;
}

const char *varlink_call_method(VarlinkCall *call) {
        return call->method;
}

VarlinkCallFlags varlink_call_flags(VarlinkCall *call) {
        return call->flags;
}

void varlink_call_set_cancel(VarlinkCall *call, VarlinkCancelFn fn, void *userdata) {
        call->cancel = fn;
        call->cancel_userdata = userdata;
}

int varlink_call_set_tag(VarlinkCall *call, const char *tag) {
        char *t = NULL;
        if (tag && !(t = strdup(tag)))
                return -ENOMEM;
        free(call->tag);
        call->tag = t;
        return 0;
}

const char *varlink_call_get_tag(VarlinkCall *call) {
        return call ? call->tag : NULL;
}

const VarlinkPeer *varlink_connection_peer(VarlinkConnection *c) {
        return &c->peer;
}

void varlink_connection_set_userdata(VarlinkConnection *c, void *userdata) {
        c->userdata = userdata;
}

void *varlink_connection_get_userdata(VarlinkConnection *c) {
        return c->userdata;
}

/* ---- dispatch ---- */

static const VarlinkInterface *server_find_interface(VarlinkServer *s, const char *name, size_t len) {
        for (size_t i = 0; i < s->n_interfaces; i++)
                if (strlen(s->interfaces[i]->name) == len && strncmp(s->interfaces[i]->name, name, len) == 0)
                        return s->interfaces[i];
        return NULL;
}

static int service_get_info(VarlinkCall *call, json_object *parameters) {
        VarlinkServer *s = call->conn->server;

        if (json_object_object_length(parameters) > 0) {
                json_object_object_foreach(parameters, key, val) {
                        (void) val;
                        return varlink_call_error_invalid_parameter(call, key);
                }
        }

        json_object *r = json_object_new_object(), *ifaces = json_object_new_array();
        if (!r || !ifaces) {
                json_object_put(r);
                json_object_put(ifaces);
                return -ENOMEM;
        }
        json_object_object_add(r, "vendor", json_object_new_string(strempty(s->vendor)));
        json_object_object_add(r, "product", json_object_new_string(strempty(s->product)));
        json_object_object_add(r, "version", json_object_new_string(strempty(s->version)));
        json_object_object_add(r, "url", json_object_new_string(strempty(s->url)));
        json_object_array_add(ifaces, json_object_new_string(SERVICE_INTERFACE));
        for (size_t i = 0; i < s->n_interfaces; i++)
                json_object_array_add(ifaces, json_object_new_string(s->interfaces[i]->name));
        json_object_object_add(r, "interfaces", ifaces);
        return varlink_call_reply(call, r);
}

static int service_get_interface_description(VarlinkCall *call, json_object *parameters) {
        VarlinkServer *s = call->conn->server;
        const char *name = NULL;
        const char *bad = NULL;
        static const VarlinkField fields[] = {
                { "interface", VARLINK_FIELD_STRING, 0, VARLINK_FIELD_REQUIRED, 256, VARLINK_NO_PRESENT },
                {},
        };

        if (varlink_parse_parameters(parameters, fields, &name, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);

        const char *text = NULL;
        if (streq(name, SERVICE_INTERFACE))
                text = service_idl;
        else {
                const VarlinkInterface *i = server_find_interface(s, name, strlen(name));
                if (i)
                        text = i->description;
        }
        if (!text)
                return varlink_call_error(call, VARLINK_ERROR_INTERFACE_NOT_FOUND, params_1("interface", name));
        return varlink_call_reply(call, params_1("description", text));
}

static int get_bool_field(json_object *m, const char *key, bool *ret) {
        json_object *v;
        if (!json_object_object_get_ex(m, key, &v) || json_object_is_type(v, json_type_null)) {
                *ret = false;
                return 0;
        }
        if (!json_object_is_type(v, json_type_boolean))
                return -EBADMSG;
        *ret = json_object_get_boolean(v);
        return 0;
}

/* Dispatches one message. Returns negative errno for a protocol violation
 * that ends the connection. */
static int connection_dispatch(VarlinkConnection *c, json_object *m) {
        VarlinkServer *s = c->server;
        json_object *v, *parameters = NULL;
        _cleanup_(json_object_putp) json_object *empty = NULL;
        bool more, oneway;
        int r;

        if (!json_object_object_get_ex(m, "method", &v) || !json_object_is_type(v, json_type_string))
                return -EBADMSG;
        const char *method = json_object_get_string(v);
        if (get_bool_field(m, "more", &more) < 0 || get_bool_field(m, "oneway", &oneway) < 0)
                return -EBADMSG;
        if (more && oneway)
                return -EBADMSG;

        VarlinkCall *call = calloc(1, sizeof *call);
        if (!call)
                return -ENOMEM;
        call->conn = c;
        call->flags = (more ? VARLINK_CALL_MORE : 0) | (oneway ? VARLINK_CALL_ONEWAY : 0);
        call->method = strdup(method);
        if (!call->method) {
                free(call);
                return -ENOMEM;
        }
        c->call = call;

        if (c->denied) {
                c->closing = true;
                return varlink_call_error(call, VARLINK_ERROR_PERMISSION_DENIED, NULL), 0;
        }

        if (json_object_object_get_ex(m, "parameters", &v) && !json_object_is_type(v, json_type_null)) {
                if (!json_object_is_type(v, json_type_object))
                        return varlink_call_error_invalid_parameter(call, "parameters"), 0;
                parameters = v;
        } else {
                empty = json_object_new_object();
                if (!empty)
                        return varlink_call_error(call, VARLINK_ERROR_INTERNAL, NULL), 0;
                parameters = empty;
        }

        const char *dot = strrchr(method, '.');
        if (!dot || dot == method || dot[1] == 0)
                return varlink_call_error(call, VARLINK_ERROR_INTERFACE_NOT_FOUND, params_1("interface", method)), 0;
        size_t iface_len = (size_t) (dot - method);
        const char *member = dot + 1;

        if (iface_len == strlen(SERVICE_INTERFACE) && strncmp(method, SERVICE_INTERFACE, iface_len) == 0) {
                if (streq(member, "GetInfo"))
                        r = service_get_info(call, parameters);
                else if (streq(member, "GetInterfaceDescription"))
                        r = service_get_interface_description(call, parameters);
                else
                        return varlink_call_error(call, VARLINK_ERROR_METHOD_NOT_FOUND, params_1("method", method)), 0;
        } else {
                const VarlinkInterface *iface = server_find_interface(s, method, iface_len);
                if (!iface) {
                        _cleanup_free_ char *n = strndup(method, iface_len);
                        return varlink_call_error(call, VARLINK_ERROR_INTERFACE_NOT_FOUND,
                                                  params_1("interface", n ?: method)),
                               0;
                }
                if (iface->authorize && !iface->authorize(call, s->userdata))
                        return varlink_call_error(call, VARLINK_ERROR_PERMISSION_DENIED, NULL), 0;
                const VarlinkMethod *vm = NULL;
                for (const VarlinkMethod *i = iface->methods; i && i->name; i++)
                        if (streq(i->name, member)) {
                                vm = i;
                                break;
                        }
                if (!vm)
                        return varlink_call_error(call, VARLINK_ERROR_METHOD_NOT_FOUND, params_1("method", method)), 0;
                if (!vm->fn)
                        return varlink_call_error(call, VARLINK_ERROR_METHOD_NOT_IMPLEMENTED,
                                                  params_1("method", method)),
                               0;
                if ((vm->flags & VARLINK_METHOD_REQUIRES_MORE) && !more)
                        return varlink_call_error(call, VARLINK_ERROR_EXPECTED_MORE, NULL), 0;
                r = vm->fn(call, parameters, call->flags, s->userdata);
        }

        if (r < 0 && c->call == call) {
                json_object *p = json_object_new_object();
                if (p)
                        json_object_object_add(p, "errno", json_object_new_int(-r));
                varlink_call_error(call, VARLINK_ERROR_INTERNAL, p);
        }
        return 0;
}

static void connection_process(VarlinkConnection *c) {
        unsigned dispatched = 0;

        c->processing = true;
        while (!c->dead && !c->call && !c->closing) {
                /* Backpressure: a caller that does not read its replies gets
                 * no further calls answered (nor read) until it does. */
                if (c->stream.wlen - c->stream.wpos >= VARLINK_OUTPUT_BACKPRESSURE)
                        break;
                /* Fairness: after a few calls, the other connections get their
                 * turn; the rest of this one's input waits for its next one. */
                if (dispatched >= VARLINK_DISPATCH_BATCH) {
                        connection_schedule(c);
                        break;
                }
                dispatched++;
                json_object *m = NULL;
                int r = varlink_stream_next_cached(&c->stream, &c->server->tokener, &m);
                if (r == 0)
                        break;
                if (r < 0) {
                        /* Oversized, malformed or too deep: this connection ends, nothing else is disturbed. */
                        c->dead = true;
                        break;
                }
                r = connection_dispatch(c, m);
                json_object_put_erase(m);
                if (r < 0)
                        c->dead = true;
        }

        c->processing = false;
        if (c->hup && c->call)
                c->dead = true; /* the caller is gone: cancel what it waits for */
        if (!c->dead && !c->call && !varlink_stream_has_output(&c->stream)) {
                bool more_input = c->stream.rlen > 0 && memchr(c->stream.rbuf, 0, c->stream.rlen);
                if (c->closing || ((c->stream.read_eof || c->hup) && !more_input))
                        c->dead = true;
        }
        if (c->dead) {
                connection_free(c);
                return;
        }
        connection_update_events(c);
}

static int connection_on_defer(sd_event_source *es, void *userdata) {
        (void) es;
        connection_process(userdata);
        return 0;
}

static int connection_on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        VarlinkConnection *c = userdata;
        int r;
        (void) es;
        (void) fd;

        if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                        size_t before = c->stream.rlen;
                        r = varlink_stream_fill(&c->stream);
                        if (r == -ENOBUFS || r == -ECONNRESET)
                                break;
                        if (r < 0) {
                                c->dead = true;
                                break;
                        }
                        /* EAGAIN, or a short read: no recv() just to hear
                         * EAGAIN. Unless the peer has shut down its side: its
                         * EOF may be queued behind the data with no further
                         * edge to come, so read on until it is seen. */
                        if (c->stream.rlen == before ||
                            (c->stream.drained && !(revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))))
                                break;
                }
        }
        if (revents & (EPOLLHUP | EPOLLERR))
                c->hup = true;
        if (!c->dead && (revents & EPOLLOUT)) {
                r = varlink_stream_flush(&c->stream);
                if (r < 0 && r != -EAGAIN)
                        c->dead = true;
        }
        connection_process(c);
        return 0;
}

static int connection_on_deny_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        VarlinkConnection *c = userdata;
        (void) es;
        (void) usec;
        connection_kill(c);
        return 0;
}

static int connection_new(VarlinkServer *s, int fd) {
        _cleanup_close_ int fd_owned = fd;
        VarlinkConnection *c;
        struct ucred ucred = {};
        socklen_t len = sizeof ucred;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &ucred, &len) < 0)
                return -errno;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->server = s;
        c->peer = (VarlinkPeer) { .uid = ucred.uid, .gid = ucred.gid, .pid = ucred.pid, .pidfd = -1 };

        int pidfd = -1;
        len = sizeof pidfd;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) >= 0 && pidfd >= 0)
                c->peer.pidfd = pidfd;

        varlink_stream_init(&c->stream, TAKE_FD(fd_owned), s->message_max, s->depth_max);

        LIST_PREPEND(s->connections, c);
        s->n_connections++;

        c->events = EPOLLIN | EPOLLET | EPOLLRDHUP;
        r = sd_event_add_io(s->event, &c->io, c->stream.fd, c->events, connection_on_io, c);
        if (r >= 0)
                r = sd_event_add_defer(s->event, &c->defer, connection_on_defer, c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        if (r < 0) {
                connection_free(c);
                return r;
        }

        if (s->on_connect) {
                r = s->on_connect(s, c, s->userdata);
                if (r == -EPERM) {
                        c->denied = true;
                        /* A refused peer gets one call answered with
                         * PermissionDenied, but may not hold a connection slot. */
                        if (sd_event_add_time_relative(s->event, &c->deny_timer, CLOCK_MONOTONIC, DENIED_LINGER_USEC, 0,
                                                       connection_on_deny_timeout, c) < 0) {
                                connection_free(c);
                                return -ENOMEM;
                        }
                }
                else if (r < 0) {
                        connection_free(c);
                        return r;
                }
        }
        return 0;
}

static int listener_on_resume(sd_event_source *es, uint64_t usec, void *userdata) {
        Listener *l = userdata;
        (void) es;
        (void) usec;
        (void) sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

/* Out of descriptors or memory: the listening socket stays readable, so stop
 * watching it for a moment instead of spinning, and keep serving the others. */
static void listener_pause(Listener *l) {
        int r;
        if (!l->resume)
                r = sd_event_add_time_relative(l->server->event, &l->resume, CLOCK_MONOTONIC, ACCEPT_PAUSE_USEC, 0,
                                               listener_on_resume, l);
        else {
                r = sd_event_source_set_time_relative(l->resume, ACCEPT_PAUSE_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(l->resume, SD_EVENT_ONESHOT);
        }
        if (r >= 0)
                (void) sd_event_source_set_enabled(l->source, SD_EVENT_OFF);
}

static int listener_on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Listener *l = userdata;
        VarlinkServer *s = l->server;
        (void) es;
        (void) revents;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                listener_pause(l);
                        break; /* EAGAIN, or a transient error of the peer: try again on the next wakeup */
                }
                if (s->n_connections >= s->connections_max) {
                        safe_close(cfd); /* over the cap: refuse, the others keep being served */
                        continue;
                }
                (void) connection_new(s, cfd);
        }
        return 0;
}

/* ---- server ---- */

int varlink_server_new(sd_event *event, VarlinkServer **ret) {
        VarlinkServer *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->message_max = VARLINK_MESSAGE_MAX_DEFAULT;
        s->depth_max = VARLINK_DEPTH_MAX_DEFAULT;
        s->connections_max = VARLINK_CONNECTIONS_MAX_DEFAULT;
        *ret = s;
        return 0;
}

VarlinkServer *varlink_server_free(VarlinkServer *s) {
        if (!s)
                return NULL;
        while (s->connections)
                connection_free(s->connections);
        for (size_t i = 0; i < s->n_listeners; i++) {
                sd_event_source_disable_unref(s->listeners[i].source);
                sd_event_source_disable_unref(s->listeners[i].resume);
                safe_close(s->listeners[i].fd);
        }
        free(s->vendor);
        free(s->product);
        free(s->version);
        free(s->url);
        varlink_tokener_free(s->tokener);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

static int strdup_replace(char **p, const char *v) {
        char *n = strdup(strempty(v));
        if (!n)
                return -ENOMEM;
        free(*p);
        *p = n;
        return 0;
}

int varlink_server_set_info(VarlinkServer *s, const char *vendor, const char *product, const char *version,
                            const char *url) {
        if (strdup_replace(&s->vendor, vendor) < 0 || strdup_replace(&s->product, product) < 0 ||
            strdup_replace(&s->version, version) < 0 || strdup_replace(&s->url, url) < 0)
                return -ENOMEM;
        return 0;
}

void varlink_server_set_limits(VarlinkServer *s, size_t message_max, int depth_max, unsigned connections_max) {
        if (message_max > 0)
                s->message_max = message_max;
        if (depth_max > 0)
                s->depth_max = depth_max;
        if (connections_max > 0)
                s->connections_max = connections_max;
}

void varlink_server_set_callbacks(VarlinkServer *s, VarlinkConnectFn on_connect, VarlinkDisconnectFn on_disconnect,
                                  void *userdata) {
        s->on_connect = on_connect;
        s->on_disconnect = on_disconnect;
        s->userdata = userdata;
}

void *varlink_server_get_userdata(VarlinkServer *s) {
        return s->userdata;
}

int varlink_server_add_interface(VarlinkServer *s, const VarlinkInterface *iface) {
        if (s->n_interfaces >= INTERFACES_MAX)
                return -E2BIG;
        if (streq(iface->name, SERVICE_INTERFACE) || server_find_interface(s, iface->name, strlen(iface->name)))
                return -EEXIST;
        s->interfaces[s->n_interfaces++] = iface;
        return 0;
}

int varlink_server_listen_fd(VarlinkServer *s, int fd) {
        if (s->n_listeners >= ELEMENTSOF(s->listeners))
                return -E2BIG;
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        (void) fcntl(fd, F_SETFD, FD_CLOEXEC);

        Listener *l = &s->listeners[s->n_listeners];
        *l = (Listener) { .server = s, .fd = fd };
        int r = sd_event_add_io(s->event, &l->source, fd, EPOLLIN, listener_on_io, l);
        if (r < 0)
                return r;
        s->n_listeners++;
        return 0;
}

/* Sets the umask for the scope of the enclosing block and restores it on exit. */
static inline void umask_restorep(mode_t *m) {
        umask(*m);
}
#define WITH_UMASK(mask) \
        _cleanup_(umask_restorep) _unused_ mode_t _saved_umask_ = umask(mask)

int varlink_server_listen_path(VarlinkServer *s, const char *path, mode_t mode) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;

        /* A socket file nobody listens on is stale and replaced; a live one is not. */
        struct stat st;
        if (lstat(path, &st) >= 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe < 0)
                        return -errno;
                if (connect(probe, (struct sockaddr *) &sa, sizeof sa) >= 0)
                        return -EADDRINUSE;
                (void) unlink(path);
        }

        {
                WITH_UMASK(0777 & ~mode);
                r = bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ? -errno : 0;
        }
        if (r < 0)
                return r;
        if (chmod(path, mode) < 0 || listen(fd, SOMAXCONN) < 0)
                return -errno;

        r = varlink_server_listen_fd(s, fd);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        return 0;
}

unsigned varlink_server_connections_of_uid(VarlinkServer *s, uid_t uid) {
        unsigned n = 0;
        for (VarlinkConnection *c = s->connections; c; c = c->next)
                n += c->peer.uid == uid;
        return n;
}

unsigned varlink_server_connection_count(VarlinkServer *s) {
        return s->n_connections;
}
