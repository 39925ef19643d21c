/* SPDX-License-Identifier: MIT */
/* protocol/varlink-client.c: a small blocking Varlink client for tokenctl and tests. */
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/util.h"
#include "varlink.h"

/* Replies can carry interface descriptions and credential lists: allow more than a call. */
#define CLIENT_MESSAGE_MAX (4U * 1024U * 1024U)

struct VarlinkClient {
        VarlinkStream stream;
        char *error; /* name of the last error reply */
        bool in_more; /* a "more" call is still streaming */
};

int varlink_client_connect(const char *path, VarlinkClient **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                return -errno;

        VarlinkClient *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        varlink_stream_init(&c->stream, TAKE_FD(fd), CLIENT_MESSAGE_MAX, VARLINK_DEPTH_MAX_DEFAULT);
        *ret = c;
        return 0;
}

VarlinkClient *varlink_client_free(VarlinkClient *c) {
        if (!c)
                return NULL;
        varlink_stream_done(&c->stream);
        free(c->error);
        free(c);
        return NULL;
}

int varlink_client_fd(VarlinkClient *c) {
        return c->stream.fd;
}

static int client_wait(VarlinkClient *c, short events, uint64_t deadline) {
        struct pollfd p = { .fd = c->stream.fd, .events = events };
        int timeout = -1;

        if (deadline > 0) {
                uint64_t now = now_monotonic_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                timeout = (int) ((deadline - now + 999) / 1000);
        }
        int r = poll(&p, 1, timeout);
        if (r < 0)
                return errno == EINTR ? 0 : -errno;
        if (r == 0)
                return -ETIMEDOUT;
        return 0;
}

static int client_read_reply(VarlinkClient *c, uint64_t deadline, json_object **ret_parameters,
                             const char **ret_error, bool *ret_continues) {
        _cleanup_(json_object_put_erasep) json_object *m = NULL;
        int r;

        for (;;) {
                r = varlink_stream_next(&c->stream, &m);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
                r = client_wait(c, POLLIN, deadline);
                if (r < 0)
                        return r;
                r = varlink_stream_fill(&c->stream);
                if (r < 0)
                        return r;
        }

        json_object *v;
        bool continues = false;
        if (json_object_object_get_ex(m, "continues", &v)) {
                if (!json_object_is_type(v, json_type_boolean))
                        return -EBADMSG;
                continues = json_object_get_boolean(v);
        }
        c->in_more = continues;

        free(c->error);
        c->error = NULL;
        if (json_object_object_get_ex(m, "error", &v)) {
                if (!json_object_is_type(v, json_type_string))
                        return -EBADMSG;
                c->error = strdup(json_object_get_string(v));
                if (!c->error)
                        return -ENOMEM;
                c->in_more = false;
        }

        if (ret_parameters) {
                json_object *p = NULL;
                if (json_object_object_get_ex(m, "parameters", &p) && json_object_is_type(p, json_type_object)) {
                        /* Detach the parameters from the message before the message's
                         * strings are wiped on return, or the caller gets them blank. */
                        *ret_parameters = json_object_get(p);
                        json_object_object_del(m, "parameters");
                } else
                        *ret_parameters = json_object_new_object();
        }
        if (ret_error)
                *ret_error = c->error;
        if (ret_continues)
                *ret_continues = c->in_more;
        return 0;
}

static uint64_t deadline_from(uint64_t timeout_usec) {
        return timeout_usec > 0 ? now_monotonic_usec() + timeout_usec : 0;
}

int varlink_client_call(VarlinkClient *c, const char *method, json_object *parameters, VarlinkCallFlags flags,
                        uint64_t timeout_usec, json_object **ret_parameters, const char **ret_error,
                        bool *ret_continues) {
        uint64_t deadline = deadline_from(timeout_usec);
        int r;

        if (c->in_more) {
                json_object_put_erase(parameters);
                return -EBUSY;
        }

        json_object *m = json_object_new_object();
        if (!m) {
                json_object_put_erase(parameters);
                return -ENOMEM;
        }
        json_object_object_add(m, "method", json_object_new_string(method));
        json_object_object_add(m, "parameters", parameters ?: json_object_new_object());
        if (flags & VARLINK_CALL_MORE)
                json_object_object_add(m, "more", json_object_new_boolean(true));
        if (flags & VARLINK_CALL_ONEWAY)
                json_object_object_add(m, "oneway", json_object_new_boolean(true));

        r = varlink_stream_enqueue(&c->stream, m);
        if (r < 0)
                return r;
        for (;;) {
                r = varlink_stream_flush(&c->stream);
                if (r == 0)
                        break;
                if (r != -EAGAIN)
                        return r;
                r = client_wait(c, POLLOUT, deadline);
                if (r < 0)
                        return r;
        }

        if (flags & VARLINK_CALL_ONEWAY) {
                if (ret_parameters)
                        *ret_parameters = NULL;
                if (ret_error)
                        *ret_error = NULL;
                if (ret_continues)
                        *ret_continues = false;
                return 0;
        }
        return client_read_reply(c, deadline, ret_parameters, ret_error, ret_continues);
}

int varlink_client_next(VarlinkClient *c, uint64_t timeout_usec, json_object **ret_parameters,
                        const char **ret_error, bool *ret_continues) {
        if (!c->in_more)
                return -ENOMSG;
        return client_read_reply(c, deadline_from(timeout_usec), ret_parameters, ret_error, ret_continues);
}
