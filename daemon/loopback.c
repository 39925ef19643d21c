/* SPDX-License-Identifier: MIT */
/* daemon/loopback.c: see loopback.h. A deliberately tiny HTTP/1.x server:
 * one request per connection, request line and headers capped at 8 KiB,
 * 10 s per connection, at most 16 connections at once. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "loopback.h"

#define REQUEST_MAX 8192U
#define CONNECTIONS_MAX 16U
#define CONNECTION_TIMEOUT_USEC (10 * USEC_PER_SEC)

typedef struct LoopbackConn LoopbackConn;

struct LoopbackConn {
        Loopback *loopback;
        LoopbackConn *prev, *next;
        int fd;
        sd_event_source *io, *timer;
        char buf[REQUEST_MAX + 1];
        size_t len;
};

struct Loopback {
        sd_event *event;
        int fd;
        uint16_t port;
        sd_event_source *io;
        LoopbackConn *conns;
        unsigned n_conns;
        bool done;
        LoopbackRequestFn fn;
        void *userdata;
};

static void conn_free(LoopbackConn *c) {
        Loopback *l = c->loopback;
        LIST_REMOVE(l->conns, c);
        l->n_conns--;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        explicit_bzero(c->buf, sizeof c->buf); /* held the code and state */
        free(c);
}

static void loopback_close_all(Loopback *l) {
        l->io = sd_event_source_disable_unref(l->io);
        l->fd = safe_close(l->fd);
        while (l->conns)
                conn_free(l->conns);
}

Loopback *loopback_free(Loopback *l) {
        if (!l)
                return NULL;
        loopback_close_all(l);
        sd_event_unref(l->event);
        free(l);
        return NULL;
}

static void conn_respond(LoopbackConn *c, int status, const char *message) {
        char body[1024], head[512];
        int bl = snprintf(body, sizeof body,
                          "<!doctype html><html><head><meta charset=\"utf-8\"><title>tokend</title></head>"
                          "<body><h1>tokend</h1><p>%s</p></body></html>\n", message);
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
                          "Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
                          status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request", bl);
        /* Best effort, non-blocking: the page is small and the peer is local. */
        (void) send(c->fd, head, (size_t) hl, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) send(c->fd, body, (size_t) bl, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Handles a complete request head. Returns true when the loopback is finished. */
static bool conn_handle(LoopbackConn *c) {
        Loopback *l = c->loopback;
        char *line_end = strstr(c->buf, "\r\n");
        if (!line_end) {
                conn_respond(c, 400, "Malformed request.");
                return false;
        }
        *line_end = 0;
        /* "GET /callback?query HTTP/1.1" */
        const char *target = startswith(c->buf, "GET ");
        char *sp = target ? strchr(target, ' ') : NULL;
        if (!target || !sp || !startswith(sp + 1, "HTTP/1.")) {
                conn_respond(c, 400, "Malformed request.");
                return false;
        }
        *sp = 0;
        const char *rest = startswith(target, "/callback");
        if (!rest || (*rest != 0 && *rest != '?')) {
                conn_respond(c, 404, "Not found.");
                return false;
        }
        const char *message = "Request refused.";
        LoopbackVerdict v = l->fn(*rest == '?' ? rest + 1 : "", &message, l->userdata);
        switch (v) {
        case LOOPBACK_REJECT:
                conn_respond(c, 400, message);
                return false;
        case LOOPBACK_ACCEPT:
        case LOOPBACK_FAIL:
                conn_respond(c, 200, message);
                l->done = true;
                return true;
        }
        return false;
}

static int conn_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        LoopbackConn *c = userdata;
        Loopback *l = c->loopback;
        (void) s;
        (void) revents;

        ssize_t n = recv(fd, c->buf + c->len, REQUEST_MAX - c->len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                conn_free(c);
                return 0;
        }
        c->len += (size_t) n;
        c->buf[c->len] = 0;
        if (strlen(c->buf) != c->len) { /* a NUL byte: not HTTP */
                conn_free(c);
                return 0;
        }
        if (!strstr(c->buf, "\r\n\r\n")) {
                if (c->len >= REQUEST_MAX) {
                        conn_respond(c, 400, "Request too large.");
                        conn_free(c);
                }
                return 0;
        }
        if (conn_handle(c))
                loopback_close_all(l); /* frees c too */
        else
                conn_free(c);
        return 0;
}

static int conn_on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        conn_free(userdata);
        return 0;
}

static int loopback_on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Loopback *l = userdata;
        (void) s;
        (void) revents;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return 0;
                if (l->n_conns >= CONNECTIONS_MAX) {
                        safe_close(cfd);
                        continue;
                }
                LoopbackConn *c = calloc(1, sizeof *c);
                if (!c) {
                        safe_close(cfd);
                        continue;
                }
                c->loopback = l;
                c->fd = cfd;
                LIST_PREPEND(l->conns, c);
                l->n_conns++;
                if (sd_event_add_io(l->event, &c->io, cfd, EPOLLIN, conn_on_io, c) < 0 ||
                    sd_event_add_time_relative(l->event, &c->timer, CLOCK_MONOTONIC, CONNECTION_TIMEOUT_USEC, 0,
                                               conn_on_timeout, c) < 0)
                        conn_free(c);
        }
}

int loopback_new(sd_event *event, LoopbackRequestFn fn, void *userdata, Loopback **ret) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        int r;

        Loopback *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->event = sd_event_ref(event);
        l->fn = fn;
        l->userdata = userdata;
        l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (l->fd < 0 || bind(l->fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
            getsockname(l->fd, (struct sockaddr *) &sa, &len) < 0 || listen(l->fd, 16) < 0) {
                r = -errno;
                loopback_free(l);
                return r;
        }
        l->port = ntohs(sa.sin_port);
        r = sd_event_add_io(event, &l->io, l->fd, EPOLLIN, loopback_on_accept, l);
        if (r < 0) {
                loopback_free(l);
                return r;
        }
        *ret = l;
        return 0;
}

uint16_t loopback_port(Loopback *l) {
        return l->port;
}

bool loopback_done(Loopback *l) {
        return l->done;
}
