/* SPDX-License-Identifier: MIT */
/* bench/tokend-load.c: load generators for tokend's benchmark suite (bench/run).
 *
 * Every mode talks Varlink over AF_UNIX (NUL-terminated JSON) to a running
 * tokend, and prints exactly one JSON object on stdout with its figures
 * (times in microseconds). Nothing printed contains a token: replies are
 * only checked for an "error" member and, where needed, their expires_at.
 *
 *   latency SOCKET CRED N             cache-hit GetToken on one persistent connection, against the
 *                                     floor: a bare AF_UNIX echo of the same request/reply sizes to
 *                                     a forked process; blocks of both alternate
 *   throughput SOCKET CRED CLIENTS SECONDS
 *                                     closed-loop cache-hit GetToken on CLIENTS connections, driven
 *                                     from one epoll loop; then the same against a forked epoll echo
 *                                     server (the floor)
 *   storm SOCKET CRED CLIENTS PORT    CLIENTS connections each get the token once (cache hit), wait
 *                                     for it to expire, then all ask at once; time until the last
 *                                     reply, and the refreshes the OAuth server on 127.0.0.1:PORT
 *                                     counted meanwhile (its /_test/stats)
 *   load SOCKET CRED CONNS MIN_TTL SECONDS
 *                                     background load: closed-loop GetToken with min_ttl on CONNS
 *                                     connections (min_ttl = the token lifetime: each call needs a
 *                                     refresh, and is then answered LifetimeTooShort, since a token's
 *                                     life is counted from when it was asked for); prints replies
 *                                     and errors
 *   rotate SOCKET CRED N              N sequential GetToken calls, each for a resource not asked
 *                                     for before (a new cache entry): each is a refresh (with
 *                                     rotation) from request to token handed out
 *   fill SOCKET PREFIX NCRED NRES [CONNS]
 *                                     GetToken for credentials PREFIX0..PREFIX{NCRED-1}, each with
 *                                     NRES distinct resources: NCRED*NRES cache entries, each one
 *                                     refresh; CONNS connections (default NCRED) in parallel
 *   whoami SOCKET TIMEOUT_MS          retries connect + WhoAmI until answered; the time it took
 *   spawn N CMD [ARG...]              runs CMD N times (stdout, stderr to /dev/null), wall time each
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define BUF_SIZE 65536

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static _Noreturn void die(const char *what) {
        fprintf(stderr, "tokend-load: %s: %s\n", what, errno ? strerror(errno) : "failed");
        exit(1);
}

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
        }
        return fd;
}

/* Builds a GetToken call (with its NUL); min_ttl < 0 and resource NULL: omitted. */
static size_t build_get_token(char *buf, size_t size, const char *cred, long min_ttl, const char *resource) {
        char extra[256] = "";
        size_t k = 0;
        if (min_ttl >= 0)
                k += (size_t) snprintf(extra + k, sizeof extra - k, ",\"min_ttl\":%ld", min_ttl);
        if (resource)
                snprintf(extra + k, sizeof extra - k, ",\"resource\":\"%s\"", resource);
        int n = snprintf(buf, size, "{\"method\":\"io.tokend.agent.GetToken\",\"parameters\":{\"credential\":\"%s\"%s}}",
                         cred, extra);
        if (n < 0 || (size_t) n + 1 > size)
                die("request too long");
        return (size_t) n + 1;
}

/* Sends req and reads one NUL-terminated reply into buf; returns its length. */
static ssize_t round_trip(int fd, const char *req, size_t req_len, char *buf, size_t size) {
        if (send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t) req_len)
                return -1;
        size_t got = 0;
        for (;;) {
                ssize_t n = recv(fd, buf + got, size - got - 1, 0);
                if (n <= 0)
                        return -1;
                got += (size_t) n;
                if (memchr(buf + got - n, 0, (size_t) n))
                        return (ssize_t) got;
                if (got >= size - 1)
                        return -1;
        }
}

static bool is_error(const char *reply) {
        return strstr(reply, "\"error\"") != NULL;
}

/* The error name of a reply, for diagnostics (never a token). */
static void print_error(const char *reply) {
        const char *p = strstr(reply, "\"error\"");
        char name[128] = "?";
        if (p && (p = strchr(p + 7, '"')))
                sscanf(p + 1, "%127[^\"]", name);
        fprintf(stderr, "tokend-load: error reply: %s\n", name);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* Sorts t and returns the q-quantile (nearest rank) in microseconds. */
static double quantile_us(uint64_t *t, size_t n, double q) {
        size_t i = (size_t) (q * (double) n);
        if (i >= n)
                i = n - 1;
        return (double) t[i] / 1000.0;
}

static void raise_nofile(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_cur < 8192)
                rl.rlim_cur = rl.rlim_max = 8192; /* root may raise the hard limit */
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- the floor: a forked echo server answering each NUL-terminated message with reply_len bytes ---- */

typedef struct Floor {
        char dir[64];
        char path[96];
        pid_t pid;
} Floor;

static void echo_serve(int lfd, size_t reply_len) {
        static char reply[BUF_SIZE];
        memset(reply, 'x', reply_len);
        reply[reply_len - 1] = 0;
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
        static struct epoll_event evs[512];
        static char buf[BUF_SIZE];
        for (;;) {
                int n = epoll_wait(ep, evs, 512, -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        _exit(1);
                for (int i = 0; i < n; i++) {
                        int fd = evs[i].data.fd;
                        if (fd == lfd) {
                                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                                if (c >= 0) {
                                        struct epoll_event e2 = { .events = EPOLLIN, .data.fd = c };
                                        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e2);
                                }
                                continue;
                        }
                        /* A client has one request outstanding at a time, so each read ends in
                         * whole requests: answer one reply per NUL. */
                        ssize_t r = recv(fd, buf, sizeof buf, 0);
                        if (r <= 0) {
                                close(fd);
                                continue;
                        }
                        for (ssize_t j = 0; j < r; j++)
                                if (buf[j] == 0)
                                        (void) send(fd, reply, reply_len, MSG_NOSIGNAL);
                }
        }
}

static void floor_start(Floor *f, size_t reply_len) {
        snprintf(f->dir, sizeof f->dir, "/tmp/tokend-floor-XXXXXX");
        if (!mkdtemp(f->dir))
                die("mkdtemp");
        snprintf(f->path, sizeof f->path, "%s/s", f->dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(lfd, 4096) < 0)
                die("floor socket");
        f->pid = fork();
        if (f->pid < 0)
                die("fork");
        if (f->pid == 0) {
                echo_serve(lfd, reply_len);
                _exit(0);
        }
        close(lfd);
}

static void floor_stop(Floor *f) {
        kill(f->pid, SIGTERM);
        waitpid(f->pid, NULL, 0);
        unlink(f->path);
        rmdir(f->dir);
}

/* ---- latency ---- */

static int mode_latency(int argc, char **argv) {
        if (argc < 3)
                return 2;
        unsigned n = (unsigned) strtoul(argv[2], NULL, 10);
        const unsigned blocks = 10;
        unsigned per = n / blocks;
        static char req[1024], buf[BUF_SIZE];
        size_t req_len = build_get_token(req, sizeof req, argv[1], -1, NULL);

        int tfd = connect_unix(argv[0]);
        if (tfd < 0)
                die("connect to tokend");
        ssize_t reply_len = 0;
        for (unsigned i = 0; i < 500; i++) /* warm-up, and the reply size */
                if ((reply_len = round_trip(tfd, req, req_len, buf, sizeof buf)) < 0)
                        die("GetToken");
        if (is_error(buf)) {
                print_error(buf);
                return 1;
        }
        Floor fl;
        floor_start(&fl, (size_t) reply_len);
        int ffd = -1;
        for (int i = 0; i < 100 && ffd < 0; i++)
                if ((ffd = connect_unix(fl.path)) < 0)
                        usleep(1000);
        if (ffd < 0)
                die("connect to the floor");
        for (unsigned i = 0; i < 500; i++)
                if (round_trip(ffd, req, req_len, buf, sizeof buf) < 0)
                        die("floor round trip");

        uint64_t *tt = calloc(per * blocks, sizeof *tt), *tf = calloc(per * blocks, sizeof *tf);
        if (!tt || !tf)
                die("calloc");
        size_t it = 0, iff = 0;
        for (unsigned b = 0; b < blocks; b++) {
                for (unsigned i = 0; i < per; i++) {
                        uint64_t a = now_ns();
                        if (round_trip(tfd, req, req_len, buf, sizeof buf) < 0)
                                die("GetToken");
                        tt[it++] = now_ns() - a;
                }
                if (is_error(buf)) {
                        print_error(buf);
                        return 1;
                }
                for (unsigned i = 0; i < per; i++) {
                        uint64_t a = now_ns();
                        if (round_trip(ffd, req, req_len, buf, sizeof buf) < 0)
                                die("floor round trip");
                        tf[iff++] = now_ns() - a;
                }
        }
        close(tfd);
        close(ffd);
        floor_stop(&fl);
        qsort(tt, it, sizeof *tt, cmp_u64);
        qsort(tf, iff, sizeof *tf, cmp_u64);
        printf("{\"calls\":%zu,\"req_bytes\":%zu,\"reply_bytes\":%zd,\"tok_med\":%.2f,\"tok_p99\":%.2f,"
               "\"floor_med\":%.2f,\"floor_p99\":%.2f}\n",
               it, req_len, reply_len, quantile_us(tt, it, 0.5), quantile_us(tt, it, 0.99), quantile_us(tf, iff, 0.5),
               quantile_us(tf, iff, 0.99));
        return 0;
}

/* ---- an epoll-driven set of connections, each with at most one call outstanding ---- */

typedef struct Conn {
        int fd;
        size_t got;
        char buf[2048];
        uint64_t sent_at, done_at;
        bool done, error;
        const char *req;
        size_t req_len;
} Conn;

typedef struct Pool {
        int ep;
        Conn *c;
        unsigned n;
} Pool;

static void pool_open(Pool *p, const char *path, unsigned n) {
        raise_nofile();
        p->ep = epoll_create1(EPOLL_CLOEXEC);
        p->c = calloc(n, sizeof *p->c);
        p->n = n;
        if (p->ep < 0 || !p->c)
                die("pool");
        for (unsigned i = 0; i < n; i++) {
                p->c[i].fd = connect_unix(path);
                if (p->c[i].fd < 0)
                        die("connect");
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
                if (epoll_ctl(p->ep, EPOLL_CTL_ADD, p->c[i].fd, &ev) < 0)
                        die("epoll_ctl");
        }
}

static void pool_close(Pool *p) {
        for (unsigned i = 0; i < p->n; i++)
                close(p->c[i].fd);
        close(p->ep);
        free(p->c);
}

static void conn_send(Conn *c) {
        c->got = 0;
        c->done = false;
        c->sent_at = now_ns();
        if (send(c->fd, c->req, c->req_len, MSG_NOSIGNAL) != (ssize_t) c->req_len)
                die("send");
}

/* Waits up to timeout_ms for replies; calls on_reply for each complete one. Returns how many. */
static unsigned pool_poll(Pool *p, int timeout_ms, void (*on_reply)(Conn *c, void *ud), void *ud) {
        static struct epoll_event evs[1024];
        unsigned replies = 0;
        int n = epoll_wait(p->ep, evs, 1024, timeout_ms);
        if (n < 0 && errno != EINTR)
                die("epoll_wait");
        for (int i = 0; i < n; i++) {
                Conn *c = &p->c[evs[i].data.u32];
                ssize_t r = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got - 1, 0);
                if (r <= 0) {
                        errno = r < 0 ? errno : ECONNRESET;
                        die("recv (the daemon closed a connection)");
                }
                c->got += (size_t) r;
                if (!memchr(c->buf + c->got - r, 0, (size_t) r)) {
                        if (c->got >= sizeof c->buf - 1)
                                die("reply too long");
                        continue;
                }
                c->done = true;
                c->done_at = now_ns();
                c->error = is_error(c->buf);
                replies++;
                on_reply(c, ud);
        }
        return replies;
}

/* ---- throughput ---- */

typedef struct Counter {
        uint64_t ok, errors;
        bool resend;
} Counter;

static void count_and_resend(Conn *c, void *ud) {
        Counter *k = ud;
        if (c->error) {
                if (k->errors++ == 0)
                        print_error(c->buf);
        } else
                k->ok++;
        if (k->resend)
                conn_send(c);
}

/* Runs a closed loop on n connections for warm_ms then for ms; returns replies/s of the second part. */
static double closed_loop(const char *path, const char *req, size_t req_len, unsigned n, unsigned warm_ms,
                          unsigned ms, uint64_t *ret_errors, uint64_t *ret_replies) {
        Pool p;
        pool_open(&p, path, n);
        Counter k = { .resend = true };
        for (unsigned i = 0; i < n; i++) {
                p.c[i].req = req;
                p.c[i].req_len = req_len;
                conn_send(&p.c[i]);
        }
        uint64_t end_warm = now_ns() + (uint64_t) warm_ms * 1000000ULL;
        while (now_ns() < end_warm)
                pool_poll(&p, 100, count_and_resend, &k);
        uint64_t ok0 = k.ok, t0 = now_ns(), end = t0 + (uint64_t) ms * 1000000ULL;
        uint64_t t;
        while ((t = now_ns()) < end)
                pool_poll(&p, 100, count_and_resend, &k);
        double rps = (double) (k.ok - ok0) / ((double) (t - t0) / 1e9);
        /* Let the last calls finish before closing: the daemon sees orderly clients. */
        k.resend = false;
        unsigned outstanding = n;
        for (unsigned i = 0; i < n; i++)
                if (p.c[i].done)
                        outstanding--;
        while (outstanding > 0) {
                unsigned r = pool_poll(&p, 2000, count_and_resend, &k);
                if (r == 0)
                        break;
                outstanding -= r;
        }
        pool_close(&p);
        *ret_errors = k.errors;
        *ret_replies = k.ok;
        return rps;
}

static int mode_throughput(int argc, char **argv) {
        if (argc < 4)
                return 2;
        unsigned clients = (unsigned) strtoul(argv[2], NULL, 10);
        double secs = strtod(argv[3], NULL);
        static char req[1024], buf[BUF_SIZE];
        size_t req_len = build_get_token(req, sizeof req, argv[1], -1, NULL);

        int fd = connect_unix(argv[0]);
        ssize_t reply_len;
        if (fd < 0 || (reply_len = round_trip(fd, req, req_len, buf, sizeof buf)) < 0)
                die("GetToken");
        close(fd);
        if (is_error(buf)) {
                print_error(buf);
                return 1;
        }
        uint64_t errors = 0, ferrors = 0, replies = 0, freplies = 0;
        double rps = closed_loop(argv[0], req, req_len, clients, 300, (unsigned) (secs * 1000), &errors, &replies);
        Floor fl;
        floor_start(&fl, (size_t) reply_len);
        usleep(20000);
        double frps = closed_loop(fl.path, req, req_len, clients, 300, (unsigned) (secs * 1000), &ferrors, &freplies);
        floor_stop(&fl);
        /* calls: every GetToken tokend answered, the probe and the warm-up included. */
        printf("{\"clients\":%u,\"rps\":%.0f,\"floor_rps\":%.0f,\"errors\":%llu,\"calls\":%llu}\n", clients, rps,
               frps, (unsigned long long) errors, (unsigned long long) (replies + 1));
        return errors ? 1 : 0;
}

/* ---- storm ---- */

static void count_only(Conn *c, void *ud) {
        Counter *k = ud;
        if (c->error) {
                if (k->errors++ == 0)
                        print_error(c->buf);
        } else
                k->ok++;
}

/* The test OAuth server's count of refresh_token grants (GET /_test/stats on loopback). */
static long server_refreshes(int port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                die("connect to the OAuth server");
        static const char req[] = "GET /_test/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t) sizeof req - 1)
                die("send stats request");
        static char buf[8192];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof buf - 1 && (n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
                got += (size_t) n;
        buf[got] = 0;
        close(fd);
        const char *p = strstr(buf, "\"refresh_token\":");
        if (!p)
                die("no refresh_token count in /_test/stats");
        return strtol(p + 16, NULL, 10);
}

static int mode_storm(int argc, char **argv) {
        if (argc < 4)
                return 2;
        int stats_port = atoi(argv[3]);
        unsigned n = (unsigned) strtoul(argv[2], NULL, 10);
        static char req[1024];
        size_t req_len = build_get_token(req, sizeof req, argv[1], -1, NULL);
        Pool p;
        pool_open(&p, argv[0], n);
        for (unsigned i = 0; i < n; i++) {
                p.c[i].req = req;
                p.c[i].req_len = req_len;
        }
        /* Each connection gets the token once: the daemon has identified every caller, and
         * the reply says when the cached token expires. */
        Counter k = {};
        long expires_at = 0;
        for (unsigned i = 0; i < n; i++) {
                conn_send(&p.c[i]);
                while (!p.c[i].done)
                        pool_poll(&p, 5000, count_only, &k);
                const char *e = strstr(p.c[i].buf, "\"expires_at\"");
                if (e) {
                        long v = strtol(e + 13, NULL, 10);
                        if (v > expires_at)
                                expires_at = v;
                }
        }
        if (k.errors || expires_at == 0) {
                fprintf(stderr, "tokend-load: storm warm-up failed\n");
                return 1;
        }
        /* expires_at is whole seconds, rounded down: past expires_at + 1 the token has expired. */
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        double wait = (double) expires_at + 1.2 - ((double) rt.tv_sec + (double) rt.tv_nsec / 1e9);
        if (wait > 0)
                usleep((useconds_t) (wait * 1e6));

        long refreshes_before = server_refreshes(stats_port);
        k = (Counter) {};
        uint64_t t0 = now_ns();
        for (unsigned i = 0; i < n; i++)
                conn_send(&p.c[i]);
        uint64_t sent = now_ns();
        unsigned left = n;
        while (left > 0) {
                unsigned r = pool_poll(&p, 30000, count_only, &k);
                if (r == 0)
                        die("storm: no reply within 30 s");
                left -= r;
        }
        uint64_t first = UINT64_MAX, last = 0;
        for (unsigned i = 0; i < n; i++) {
                if (p.c[i].done_at < first)
                        first = p.c[i].done_at;
                if (p.c[i].done_at > last)
                        last = p.c[i].done_at;
        }
        pool_close(&p);
        long refreshes = server_refreshes(stats_port) - refreshes_before;
        printf("{\"clients\":%u,\"server_refreshes\":%ld,\"send_all_us\":%.1f,\"first_us\":%.1f,\"last_us\":%.1f,"
               "\"errors\":%llu}\n",
               n, refreshes, (double) (sent - t0) / 1000.0, (double) (first - t0) / 1000.0, (double) (last - t0) / 1000.0,
               (unsigned long long) k.errors);
        return k.errors ? 1 : 0;
}

/* ---- load (background) ---- */

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) {
        (void) sig;
        stop_flag = 1;
}

static int mode_load(int argc, char **argv) {
        if (argc < 5)
                return 2;
        unsigned conns = (unsigned) strtoul(argv[2], NULL, 10);
        long min_ttl = strtol(argv[3], NULL, 10);
        double secs = strtod(argv[4], NULL);
        static char req[1024];
        size_t req_len = build_get_token(req, sizeof req, argv[1], min_ttl, NULL);
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term);
        Pool p;
        pool_open(&p, argv[0], conns);
        Counter k = { .resend = true };
        for (unsigned i = 0; i < conns; i++) {
                p.c[i].req = req;
                p.c[i].req_len = req_len;
                conn_send(&p.c[i]);
        }
        uint64_t end = now_ns() + (uint64_t) (secs * 1e9);
        while (!stop_flag && now_ns() < end)
                pool_poll(&p, 100, count_and_resend, &k);
        pool_close(&p);
        printf("{\"replies\":%llu,\"errors\":%llu}\n", (unsigned long long) k.ok, (unsigned long long) k.errors);
        return 0;
}

/* ---- rotate ---- */

static int mode_rotate(int argc, char **argv) {
        if (argc < 3)
                return 2;
        unsigned n = (unsigned) strtoul(argv[2], NULL, 10);
        static char req[1024], buf[BUF_SIZE];
        int fd = connect_unix(argv[0]);
        if (fd < 0)
                die("connect");
        uint64_t *t = calloc(n, sizeof *t);
        if (!t)
                die("calloc");
        /* A resource no earlier call (of this or another run) asked for: the
         * daemon has no token for it, so the call is a refresh. (The test
         * server ignores the resource; the cache does not.) */
        char resource[128];
        unsigned long salt = (unsigned long) getpid() ^ (unsigned long) now_ns();
        for (unsigned i = 0; i < n + 2; i++) {
                snprintf(resource, sizeof resource, "https://rotate.bench.example/%lx/%u", salt, i);
                size_t req_len = build_get_token(req, sizeof req, argv[1], -1, resource);
                uint64_t a = now_ns();
                if (round_trip(fd, req, req_len, buf, sizeof buf) < 0)
                        die("GetToken");
                uint64_t d = now_ns() - a;
                if (is_error(buf)) {
                        print_error(buf);
                        return 1;
                }
                if (i >= 2) /* the first two warm up the HTTP connection to the provider */
                        t[i - 2] = d;
        }
        close(fd);
        qsort(t, n, sizeof *t, cmp_u64);
        printf("{\"calls\":%u,\"med\":%.1f,\"p99\":%.1f,\"min\":%.1f,\"max\":%.1f}\n", n, quantile_us(t, n, 0.5),
               quantile_us(t, n, 0.99), quantile_us(t, n, 0), quantile_us(t, n, 1));
        return 0;
}

/* ---- fill ---- */

/* Connection j works through credentials j, j+conns, j+2*conns, ..., each with
 * nres resources, one call at a time: at most conns refreshes in flight. */
typedef struct Fill {
        const char *prefix;
        unsigned ncred, nres, conns;
        unsigned *next; /* per connection: index of its next work item */
        char (*reqs)[512];
        uint64_t ok, errors;
} Fill;

static bool fill_send(Fill *f, Conn *c, unsigned j) {
        unsigned k = f->next[j], cred = j + f->conns * (k / f->nres), res = k % f->nres;
        if (cred >= f->ncred)
                return false;
        char name[128], uri[128];
        snprintf(name, sizeof name, "%s%u", f->prefix, cred);
        snprintf(uri, sizeof uri, "https://bench.example/r/%u", res);
        c->req_len = build_get_token(f->reqs[j], sizeof f->reqs[j], name, -1, uri);
        c->req = f->reqs[j];
        f->next[j]++;
        conn_send(c);
        return true;
}

static Pool *fill_pool;
static void fill_on_reply(Conn *c, void *ud) {
        Fill *f = ud;
        unsigned j = (unsigned) (c - fill_pool->c);
        if (c->error) {
                if (f->errors++ < 3)
                        print_error(c->buf);
        } else
                f->ok++;
        (void) fill_send(f, c, j);
}

static int mode_fill(int argc, char **argv) {
        if (argc < 4)
                return 2;
        Fill f = { .prefix = argv[1] };
        f.ncred = (unsigned) strtoul(argv[2], NULL, 10);
        f.nres = (unsigned) strtoul(argv[3], NULL, 10);
        f.conns = argc > 4 ? (unsigned) strtoul(argv[4], NULL, 10) : f.ncred;
        if (f.conns == 0 || f.conns > f.ncred)
                f.conns = f.ncred;
        f.next = calloc(f.conns, sizeof *f.next);
        f.reqs = calloc(f.conns, sizeof *f.reqs);
        if (!f.next || !f.reqs)
                die("calloc");
        Pool p;
        pool_open(&p, argv[0], f.conns);
        fill_pool = &p;
        uint64_t t0 = now_ns();
        for (unsigned j = 0; j < f.conns; j++)
                (void) fill_send(&f, &p.c[j], j);
        uint64_t total = (uint64_t) f.ncred * f.nres, seen = 0;
        while (seen < total) {
                unsigned r = pool_poll(&p, 60000, fill_on_reply, &f);
                if (r == 0)
                        die("fill: no reply within 60 s");
                seen += r;
        }
        uint64_t t = now_ns() - t0;
        pool_close(&p);
        printf("{\"entries\":%llu,\"conns\":%u,\"ok\":%llu,\"errors\":%llu,\"seconds\":%.2f}\n",
               (unsigned long long) total, f.conns, (unsigned long long) f.ok, (unsigned long long) f.errors,
               (double) t / 1e9);
        return f.errors ? 1 : 0;
}

/* ---- whoami (start-up probe) ---- */

static int mode_whoami(int argc, char **argv) {
        if (argc < 2)
                return 2;
        unsigned timeout_ms = (unsigned) strtoul(argv[1], NULL, 10);
        static const char req[] = "{\"method\":\"io.tokend.agent.WhoAmI\"}";
        static char buf[BUF_SIZE];
        uint64_t t0 = now_ns(), end = t0 + (uint64_t) timeout_ms * 1000000ULL;
        for (;;) {
                int fd = connect_unix(argv[0]);
                if (fd >= 0) {
                        ssize_t r = round_trip(fd, req, sizeof req, buf, sizeof buf);
                        close(fd);
                        if (r > 0 && !is_error(buf))
                                break;
                }
                if (now_ns() > end) {
                        fprintf(stderr, "tokend-load: no WhoAmI answer within %u ms\n", timeout_ms);
                        return 1;
                }
                usleep(500);
        }
        printf("{\"ms\":%.2f}\n", (double) (now_ns() - t0) / 1e6);
        return 0;
}

/* ---- spawn ---- */

static int mode_spawn(int argc, char **argv) {
        if (argc < 2)
                return 2;
        unsigned n = (unsigned) strtoul(argv[0], NULL, 10);
        uint64_t *t = calloc(n, sizeof *t);
        if (!t)
                die("calloc");
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        for (unsigned i = 0; i < n + 3; i++) { /* 3 warm-up runs: page cache, dynamic loader */
                uint64_t a = now_ns();
                pid_t pid;
                int st;
                if (posix_spawn(&pid, argv[1], &fa, NULL, argv + 1, environ) != 0)
                        die("posix_spawn");
                if (waitpid(pid, &st, 0) < 0)
                        die("waitpid");
                uint64_t d = now_ns() - a;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        fprintf(stderr, "tokend-load: %s failed (status %d)\n", argv[1], st);
                        return 1;
                }
                if (i >= 3)
                        t[i - 3] = d;
        }
        qsort(t, n, sizeof *t, cmp_u64);
        printf("{\"runs\":%u,\"med\":%.1f,\"p99\":%.1f,\"min\":%.1f}\n", n, quantile_us(t, n, 0.5),
               quantile_us(t, n, 0.99), quantile_us(t, n, 0));
        return 0;
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*fn)(int argc, char **argv);
        } modes[] = {
                { "latency", mode_latency }, { "throughput", mode_throughput }, { "storm", mode_storm },
                { "load", mode_load },       { "rotate", mode_rotate },         { "fill", mode_fill },
                { "whoami", mode_whoami },   { "spawn", mode_spawn },
        };
        if (argc >= 2)
                for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
                        if (strcmp(argv[1], modes[i].name) == 0) {
                                int r = modes[i].fn(argc - 2, argv + 2);
                                if (r == 2)
                                        fprintf(stderr, "tokend-load %s: missing arguments (see the header of "
                                                        "bench/tokend-load.c)\n",
                                                argv[1]);
                                return r;
                        }
        fprintf(stderr, "Usage: tokend-load latency|throughput|storm|load|rotate|fill|whoami|spawn ARGS...\n");
        return 2;
}
