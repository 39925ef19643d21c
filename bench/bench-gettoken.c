/* SPDX-License-Identifier: MIT */
/* bench/bench-gettoken.c: what one cache-hit io.tokend.agent.GetToken costs on
 * a persistent connection, against the floor: a bare Unix-socket round trip
 * of the same request and reply sizes to a trivial echo server, measured in
 * the same run with the same client loop.
 * Usage: bench-gettoken SOCKET CREDENTIAL [ITERATIONS] */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static int connect_to(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* Sends req (with its NUL) and reads one NUL-terminated reply into buf. */
static ssize_t round_trip(int fd, const char *req, size_t req_len, char *buf, size_t size) {
        if (send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t) req_len)
                return -1;
        size_t got = 0;
        for (;;) {
                ssize_t n = recv(fd, buf + got, size - got, 0);
                if (n <= 0)
                        return -1;
                got += (size_t) n;
                if (memchr(buf + got - n, 0, (size_t) n))
                        return (ssize_t) got;
                if (got == size)
                        return -1;
        }
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

typedef struct Result {
        double median_us, p99_us, mean_us;
} Result;

static int run(int fd, const char *req, size_t req_len, unsigned n, Result *ret, size_t *ret_reply_len) {
        static char buf[65536];
        uint64_t *t = calloc(n, sizeof *t);
        if (!t)
                return -1;
        /* Warm-up. */
        for (unsigned i = 0; i < 200; i++)
                if (round_trip(fd, req, req_len, buf, sizeof buf) < 0)
                        return -1;
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++) {
                uint64_t a = now_ns();
                ssize_t r = round_trip(fd, req, req_len, buf, sizeof buf);
                t[i] = now_ns() - a;
                if (r < 0)
                        return -1;
                if (ret_reply_len)
                        *ret_reply_len = (size_t) r;
                total += t[i];
        }
        if (strstr(buf, "\"error\"")) {
                fprintf(stderr, "reply is an error: %s\n", buf);
                return -1;
        }
        qsort(t, n, sizeof *t, cmp_u64);
        ret->median_us = (double) t[n / 2] / 1000.0;
        ret->p99_us = (double) t[(size_t) n * 99 / 100] / 1000.0;
        ret->mean_us = (double) total / n / 1000.0;
        free(t);
        return 0;
}

/* The floor: reads a NUL-terminated message, answers with reply_len bytes ending in NUL. */
static void echo_server(int lfd, size_t reply_len) {
        static char buf[65536], reply[65536];
        memset(reply, 'x', reply_len);
        reply[reply_len - 1] = 0;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
                _exit(1);
        for (;;) {
                size_t got = 0;
                for (;;) {
                        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
                        if (n <= 0)
                                _exit(0);
                        got += (size_t) n;
                        if (memchr(buf + got - n, 0, (size_t) n))
                                break;
                }
                if (send(fd, reply, reply_len, MSG_NOSIGNAL) != (ssize_t) reply_len)
                        _exit(1);
        }
}

int main(int argc, char *argv[]) {
        if (argc < 3) {
                fprintf(stderr, "Usage: %s SOCKET CREDENTIAL [ITERATIONS]\n", argv[0]);
                return 2;
        }
        unsigned n = argc > 3 ? (unsigned) strtoul(argv[3], NULL, 10) : 20000;
        char req[512];
        int req_len = snprintf(req, sizeof req,
                               "{\"method\":\"io.tokend.agent.GetToken\",\"parameters\":{\"credential\":\"%s\"}}",
                               argv[2]);
        req_len++; /* the NUL delimiter */

        int fd = connect_to(argv[1]);
        if (fd < 0) {
                fprintf(stderr, "cannot connect to %s: %m\n", argv[1]);
                return 1;
        }
        Result tok, floor_;
        size_t reply_len = 0;
        if (run(fd, req, (size_t) req_len, n, &tok, &reply_len) < 0) {
                fprintf(stderr, "GetToken run failed\n");
                return 1;
        }
        close(fd);

        char path[] = "/tmp/bench-floor-XXXXXX";
        if (!mkdtemp(path))
                return 1;
        char sock[sizeof path + 2];
        snprintf(sock, sizeof sock, "%s/s", path);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(lfd, 1) < 0)
                return 1;
        pid_t pid = fork();
        if (pid == 0)
                echo_server(lfd, reply_len);
        close(lfd);
        fd = connect_to(sock);
        if (fd < 0 || run(fd, req, (size_t) req_len, n, &floor_, NULL) < 0) {
                fprintf(stderr, "floor run failed\n");
                return 1;
        }
        close(fd);
        waitpid(pid, NULL, 0);
        unlink(sock);
        rmdir(path);

        printf("%-34s %10s %10s %10s\n", "round trip (request/reply bytes)", "median us", "p99 us", "mean us");
        printf("%-34s %10.1f %10.1f %10.1f\n", "tokend GetToken, cache hit", tok.median_us, tok.p99_us, tok.mean_us);
        printf("%-34s %10.1f %10.1f %10.1f\n", "bare Unix socket echo (floor)", floor_.median_us, floor_.p99_us,
               floor_.mean_us);
        printf("requests %d B, replies %zu B, %u calls each; GetToken costs %.2fx the floor (median), "
               "%.1f us above it\n",
               req_len, reply_len, n, tok.median_us / floor_.median_us, tok.median_us - floor_.median_us);
        return 0;
}
