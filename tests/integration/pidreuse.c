/* SPDX-License-Identifier: MIT */
/* tests/integration/pidreuse.c: a caller for test_whoami.py that asks tokend
 * "who am I" over raw Varlink (JSON + NUL), from processes set up to probe the
 * daemon's caller identity:
 *
 *   pidreuse whoami SOCKET
 *       Connects and calls io.tokend.agent.WhoAmI itself (another executable
 *       than the Python test).
 *   pidreuse control SOCKET
 *       Child A (comm "pidreuse-A") connects and hands the connected socket to
 *       the parent (SCM_RIGHTS), then stays alive; the parent calls WhoAmI on
 *       it: the reply must describe A, the connecting process.
 *   pidreuse reuse SOCKET accepted|early [PROGRAM [ARG...]]
 *       Child A connects, hands the socket to the parent and exits; the parent
 *       reaps A, then creates B with clone3(set_tid = {A's pid}) so B has A's
 *       PID, and B execs PROGRAM (default /bin/sleep 30). Only then does the
 *       parent call WhoAmI on A's socket. "accepted": A made a GetInfo round
 *       trip first, so the daemon accepted the connection while A was alive.
 *       "early": A connects and exits at once (run it with the daemon stopped
 *       to be sure the daemon accepts only after B took the PID).
 *   pidreuse zombie SOCKET
 *       Child A connects (GetInfo round trip), hands the socket to the parent
 *       and exits; the parent calls WhoAmI while A is a zombie (not reaped, so
 *       its PID cannot be reused yet), then reaps it.
 *   pidreuse exec SOCKET [PROGRAM [ARG...]]
 *       Child A connects, hands the socket to the parent, then execs PROGRAM
 *       (same process, same PID, another executable); the parent calls WhoAmI
 *       once A's exec is done. Shows what the daemon reports then.
 *   pidreuse call SOCKET
 *       Connects and makes the probe call itself (a small C client: another
 *       executable than the Python test, for policy tests).
 *   pidreuse grant-reuse SOCKET
 *       Child A (comm "pidreuse-A") makes the probe call and prints the reply
 *       (A_SENT, then A_REPLY), makes it once more on a new connection
 *       (A2_REPLY), and exits; the parent reaps A, then B is created with A's
 *       PID and execs "pidreuse call SOCKET": the same executable, the same
 *       PID, another process. For test_consent_decay.py: a grant bound to A's
 *       process must not cover B.
 *
 * The probe call is io.tokend.agent.WhoAmI, or the whole Varlink call given
 * in $PIDREUSE_CALL (JSON text, e.g. a GetToken), for every mode.
 *
 * Output, one fact a line, for the test to parse:
 *   PARENT_PID n | A_PID n | A_STATE c (zombie) | A_EXE path (exec) |
 *   CLONE3_TRIES n | CLONE3_ERROR errno | B_PID n | B_EXE path | B_EXE_AFTER path |
 *   SENT (the WhoAmI call is written; a stopped daemon may be resumed now) |
 *   REPLY raw-json | CLOSED (EOF or reset, no reply) | TIMEOUT |
 *   A_SENT, A_REPLY raw-json, A2_REPLY raw-json (grant-reuse) | B_STATUS n
 * Exit status: 0 done (whatever the daemon answered), 1 error, 77 clone3 with
 * set_tid not permitted here (needs CAP_SYS_ADMIN over the PID namespace),
 * 3 the PID could not be taken over (EEXIST: someone else got it first).
 *
 * Built with -DPIDREUSE_PRELOAD, this file is instead an LD_PRELOAD module for
 * the daemon that makes this kernel answer SO_PEERPIDFD like kernels 6.5-6.8
 * do for a peer that was already reaped: EINVAL instead of a stale pidfd
 * (6.9+). It logs each such answer to stderr. */

#ifdef PIDREUSE_PRELOAD

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* The "Pid:" of a pidfd (-1 once reaped), or 0 when unknown. */
static int pidfd_fdinfo_pid(int pidfd) {
        char path[64], buf[2048];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
        int f = open(path, O_RDONLY | O_CLOEXEC);
        if (f < 0)
                return 0;
        ssize_t n = read(f, buf, sizeof buf - 1);
        close(f);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        const char *l = strstr(buf, "\nPid:");
        return l ? atoi(l + 5) : 0;
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *restrict len) {
        static int (*real)(int, int, int, void *, socklen_t *restrict);
        if (!real) {
                real = (int (*)(int, int, int, void *, socklen_t *restrict)) dlsym(RTLD_NEXT, "getsockopt");
                if (!real) {
                        errno = ENOSYS;
                        return -1;
                }
        }
        int r = real(fd, level, name, val, len);
        if (r == 0 && level == SOL_SOCKET && name == SO_PEERPIDFD && len && *len >= sizeof(int)) {
                int pidfd;
                memcpy(&pidfd, val, sizeof pidfd);
                if (pidfd >= 0 && pidfd_fdinfo_pid(pidfd) < 0) {
                        close(pidfd);
                        fprintf(stderr, "pidreuse-preload: SO_PEERPIDFD of a reaped peer -> EINVAL (as on 6.5-6.8)\n");
                        errno = EINVAL;
                        return -1;
                }
        }
        return r;
}

#else /* !PIDREUSE_PRELOAD: the caller */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

#define REPLY_MAX (256 * 1024)
#define REPLY_TIMEOUT_MS 30000

static const char *const default_program[] = { "/bin/sleep", "30", NULL };

static _Noreturn void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("pidreuse: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static void say(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

static int connect_socket(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path)
                die("socket path too long: %s", path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die("socket: %m");
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                die("connect %s: %m", path);
        return fd;
}

static void write_all(int fd, const void *buf, size_t n) {
        const char *p = buf;
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        /* The daemon closed the connection (a caller gone at
                         * connect is refused): the read reports CLOSED. */
                        if (errno == EPIPE || errno == ECONNRESET)
                                return;
                        die("send: %m");
                }
                p += k;
                n -= (size_t) k;
        }
}

/* Sends one Varlink call: the JSON text and its NUL terminator. */
static void send_call(int fd, const char *method) {
        char msg[256];
        int n = snprintf(msg, sizeof msg, "{\"method\":\"%s\"}", method);
        if (n < 0 || (size_t) n >= sizeof msg)
                die("method name too long");
        write_all(fd, msg, (size_t) n + 1);
}

/* Sends the probe call: $PIDREUSE_CALL when set, otherwise WhoAmI. */
static void send_probe(int fd) {
        const char *call = getenv("PIDREUSE_CALL");
        if (!call || !*call) {
                send_call(fd, "io.tokend.agent.WhoAmI");
                return;
        }
        write_all(fd, call, strlen(call) + 1);
}

enum { GOT_REPLY, GOT_CLOSED, GOT_TIMEOUT };

/* Reads one NUL-terminated message into buf (NUL-terminated string). */
static int read_reply(int fd, char *buf, size_t size, int timeout_ms) {
        size_t len = 0;
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
                if (elapsed >= timeout_ms)
                        return GOT_TIMEOUT;
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                int r = poll(&pfd, 1, (int) (timeout_ms - elapsed));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        die("poll: %m");
                }
                if (r == 0)
                        return GOT_TIMEOUT;
                if (len + 1 >= size)
                        die("reply larger than %zu bytes", size);
                ssize_t k = recv(fd, buf + len, size - 1 - len, 0);
                if (k < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        if (errno == ECONNRESET)
                                return GOT_CLOSED;
                        die("recv: %m");
                }
                if (k == 0)
                        return GOT_CLOSED;
                char *nul = memchr(buf + len, 0, (size_t) k);
                len += (size_t) k;
                if (nul)
                        return GOT_REPLY; /* buf is a C string up to the first NUL */
        }
}

/* Reads one reply and prints it as PREFIX REPLY/CLOSED/TIMEOUT. */
static void print_reply_as(int fd, const char *prefix) {
        char *buf = malloc(REPLY_MAX);
        if (!buf)
                die("out of memory");
        switch (read_reply(fd, buf, REPLY_MAX, REPLY_TIMEOUT_MS)) {
        case GOT_REPLY:
                /* json-c emits no raw newlines; replace any, to keep one fact a line. */
                for (char *p = buf; *p; p++)
                        if (*p == '\n' || *p == '\r')
                                *p = ' ';
                say("%sREPLY %s", prefix, buf);
                break;
        case GOT_CLOSED:
                say("%sCLOSED", prefix);
                break;
        default:
                say("%sTIMEOUT", prefix);
        }
        free(buf);
}

static void print_reply(int fd) {
        print_reply_as(fd, "");
}

static void send_fd(int sock, int fd) {
        char byte = 'F';
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        if (sendmsg(sock, &mh, MSG_NOSIGNAL) != 1)
                die("sendmsg(SCM_RIGHTS): %m");
}

static int recv_fd(int sock) {
        char byte;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf };
        ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        if (n != 1)
                die("recvmsg: %s", n < 0 ? strerror(errno) : "no data");
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
                    cm->cmsg_len == CMSG_LEN(sizeof(int))) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
                        return fd;
                }
        die("recvmsg: no file descriptor received");
}

static void read_exe(pid_t pid, char *buf, size_t size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/exe", (int) pid);
        ssize_t n = readlink(path, buf, size - 1);
        if (n < 0)
                snprintf(buf, size, "(unreadable: %s)", strerror(errno));
        else
                buf[n] = 0;
}

static void reap(pid_t pid, const char *what) {
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        die("waitpid %s (%d): %m", what, (int) pid);
}

/* Waits until the child has exec'd: the write end of `pipefd` is O_CLOEXEC in
 * the child, which writes errno into it when execv fails. */
static void wait_exec(int pipefd[2], const char *what) {
        close(pipefd[1]);
        int err = 0;
        ssize_t n;
        while ((n = read(pipefd[0], &err, sizeof err)) < 0 && errno == EINTR)
                ;
        close(pipefd[0]);
        if (n > 0)
                die("%s: exec failed: %s", what, strerror(err));
}

static _Noreturn void exec_or_report(int errfd, char *const argv[]) {
        execv(argv[0], argv);
        int err = errno;
        (void) !write(errfd, &err, sizeof err);
        _exit(127);
}

/* Child A: names itself, connects, optionally makes a round trip so the
 * daemon has certainly accepted, hands the socket to the parent over `chan`. */
static int child_connect(const char *path, int chan, bool round_trip) {
        (void) prctl(PR_SET_NAME, "pidreuse-A", 0, 0, 0);
        int fd = connect_socket(path);
        if (round_trip) {
                char buf[4096];
                send_call(fd, "org.varlink.service.GetInfo");
                if (read_reply(fd, buf, sizeof buf, REPLY_TIMEOUT_MS) != GOT_REPLY)
                        die("A: no GetInfo reply");
        }
        send_fd(chan, fd);
        return fd;
}

static void do_whoami(const char *path) {
        say("PARENT_PID %d", (int) getpid());
        int fd = connect_socket(path);
        send_probe(fd);
        say("SENT");
        print_reply(fd);
        close(fd);
}

static void do_control(const char *path) {
        int chan[2], hold[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0 || pipe2(hold, O_CLOEXEC) < 0)
                die("socketpair/pipe: %m");
        say("PARENT_PID %d", (int) getpid());
        pid_t a = fork();
        if (a < 0)
                die("fork: %m");
        if (a == 0) {
                close(chan[0]);
                close(hold[1]);
                (void) child_connect(path, chan[1], false);
                char c;
                /* Stay alive until the parent closes its end of `hold`. */
                while (read(hold[0], &c, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        close(chan[1]);
        close(hold[0]);
        int fd = recv_fd(chan[0]);
        say("A_PID %d", (int) a);
        send_probe(fd);
        say("SENT");
        print_reply(fd);
        close(hold[1]);
        reap(a, "A");
        close(fd);
}

static pid_t clone3_with_pid(pid_t want) {
        pid_t tid[1] = { want };
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.exit_signal = SIGCHLD;
        args.set_tid = (uint64_t) (uintptr_t) tid;
        args.set_tid_size = 1;
        return (pid_t) syscall(SYS_clone3, &args, sizeof args);
}

static void do_reuse(const char *path, bool accepted, char *const program[]) {
        int chan[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0)
                die("socketpair: %m");
        say("PARENT_PID %d", (int) getpid());
        pid_t a = fork();
        if (a < 0)
                die("fork: %m");
        if (a == 0) {
                close(chan[0]);
                (void) child_connect(path, chan[1], accepted);
                _exit(0); /* A is gone: only the parent's copy of the socket remains */
        }
        close(chan[1]);
        int fd = recv_fd(chan[0]);
        close(chan[0]);
        reap(a, "A");
        say("A_PID %d", (int) a);

        /* Take over A's PID. Retry briefly on EEXIST: a PID is free again only
         * once the reaped task is fully released. */
        int errp[2];
        if (pipe2(errp, O_CLOEXEC) < 0)
                die("pipe: %m");
        pid_t b = -1;
        int tries = 0;
        while (tries++ < 100) {
                b = clone3_with_pid(a);
                if (b >= 0 || errno != EEXIST)
                        break;
                usleep(10000);
        }
        if (b == 0) {
                close(errp[0]);
                exec_or_report(errp[1], program);
        }
        if (b < 0) {
                int err = errno;
                fprintf(stderr, "pidreuse: clone3(set_tid=%d): %s\n", (int) a, strerror(err));
                say("CLONE3_ERROR %d", err);
                exit(err == EPERM ? 77 : err == EEXIST ? 3 : 1);
        }
        wait_exec(errp, "B");
        say("CLONE3_TRIES %d", tries);
        say("B_PID %d", (int) b);
        char exe[PATH_MAX];
        read_exe(b, exe, sizeof exe);
        say("B_EXE %s", exe);

        send_probe(fd);
        say("SENT");
        print_reply(fd);

        /* B must still be the one holding the PID while the daemon answered. */
        read_exe(b, exe, sizeof exe);
        say("B_EXE_AFTER %s", exe);
        if (kill(b, SIGKILL) < 0)
                die("kill B: %m");
        reap(b, "B");
        close(fd);
}

static void do_zombie(const char *path) {
        int chan[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0)
                die("socketpair: %m");
        say("PARENT_PID %d", (int) getpid());
        pid_t a = fork();
        if (a < 0)
                die("fork: %m");
        if (a == 0) {
                close(chan[0]);
                (void) child_connect(path, chan[1], true);
                _exit(0);
        }
        close(chan[1]);
        int fd = recv_fd(chan[0]);
        close(chan[0]);
        /* Wait for A's exit without reaping it. */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        while (waitid(P_PID, (id_t) a, &si, WEXITED | WNOWAIT) < 0)
                if (errno != EINTR)
                        die("waitid: %m");
        say("A_PID %d", (int) a);
        char state[64] = "?";
        char stat_path[64];
        snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int) a);
        FILE *f = fopen(stat_path, "re");
        if (f) {
                char line[512];
                if (fgets(line, sizeof line, f)) {
                        const char *e = strrchr(line, ')');
                        if (e && e[1] == ' ')
                                snprintf(state, sizeof state, "%c", e[2]);
                }
                fclose(f);
        }
        say("A_STATE %s", state);
        send_probe(fd);
        say("SENT");
        print_reply(fd);
        reap(a, "A");
        close(fd);
}

static void do_exec(const char *path, char *const program[]) {
        int chan[2], errp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0 || pipe2(errp, O_CLOEXEC) < 0)
                die("socketpair/pipe: %m");
        say("PARENT_PID %d", (int) getpid());
        pid_t a = fork();
        if (a < 0)
                die("fork: %m");
        if (a == 0) {
                close(chan[0]);
                close(errp[0]);
                /* The socket is O_CLOEXEC: the exec'd program does not even hold it. */
                (void) child_connect(path, chan[1], true);
                exec_or_report(errp[1], program);
        }
        close(chan[1]);
        int fd = recv_fd(chan[0]);
        close(chan[0]);
        wait_exec(errp, "A");
        say("A_PID %d", (int) a);
        char exe[PATH_MAX];
        read_exe(a, exe, sizeof exe);
        say("A_EXE %s", exe);
        send_probe(fd);
        say("SENT");
        print_reply(fd);
        if (kill(a, SIGKILL) < 0)
                die("kill A: %m");
        reap(a, "A");
        close(fd);
}

static void do_call(const char *path) {
        say("PARENT_PID %d", (int) getpid());
        int fd = connect_socket(path);
        send_probe(fd);
        say("SENT");
        print_reply(fd);
        close(fd);
}

static void do_grant_reuse(const char *path) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0)
                die("readlink /proc/self/exe: %m");
        self[n] = 0;
        say("PARENT_PID %d", (int) getpid());
        pid_t a = fork();
        if (a < 0)
                die("fork: %m");
        if (a == 0) {
                (void) prctl(PR_SET_NAME, "pidreuse-A", 0, 0, 0);
                int fd = connect_socket(path);
                send_probe(fd);
                say("A_SENT");
                print_reply_as(fd, "A_");
                close(fd);
                fd = connect_socket(path);
                send_probe(fd);
                print_reply_as(fd, "A2_");
                close(fd);
                _exit(0);
        }
        reap(a, "A");
        say("A_PID %d", (int) a);

        int errp[2];
        if (pipe2(errp, O_CLOEXEC) < 0)
                die("pipe: %m");
        pid_t b = -1;
        int tries = 0;
        while (tries++ < 100) {
                b = clone3_with_pid(a);
                if (b >= 0 || errno != EEXIST)
                        break;
                usleep(10000);
        }
        if (b == 0) {
                close(errp[0]);
                char *const argv[] = { self, (char *) "call", (char *) path, NULL };
                exec_or_report(errp[1], argv);
        }
        if (b < 0) {
                int err = errno;
                fprintf(stderr, "pidreuse: clone3(set_tid=%d): %s\n", (int) a, strerror(err));
                say("CLONE3_ERROR %d", err);
                exit(err == EPERM ? 77 : err == EEXIST ? 3 : 1);
        }
        wait_exec(errp, "B");
        say("CLONE3_TRIES %d", tries);
        say("B_PID %d", (int) b);
        int status;
        while (waitpid(b, &status, 0) < 0)
                if (errno != EINTR)
                        die("waitpid B (%d): %m", (int) b);
        say("B_STATUS %d", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

static _Noreturn void usage(void) {
        fprintf(stderr,
                "usage: pidreuse whoami SOCKET\n"
                "       pidreuse control SOCKET\n"
                "       pidreuse reuse SOCKET accepted|early [PROGRAM [ARG...]]\n"
                "       pidreuse zombie SOCKET\n"
                "       pidreuse exec SOCKET [PROGRAM [ARG...]]\n"
                "       pidreuse call SOCKET\n"
                "       pidreuse grant-reuse SOCKET\n");
        exit(2);
}

int main(int argc, char *argv[]) {
        if (argc < 3)
                usage();
        const char *mode = argv[1], *path = argv[2];
        /* Replies are read with a timeout; a dead daemon must not kill us. */
        signal(SIGPIPE, SIG_IGN);

        if (strcmp(mode, "whoami") == 0 && argc == 3)
                do_whoami(path);
        else if (strcmp(mode, "control") == 0 && argc == 3)
                do_control(path);
        else if (strcmp(mode, "reuse") == 0 && argc >= 4) {
                bool accepted;
                if (strcmp(argv[3], "accepted") == 0)
                        accepted = true;
                else if (strcmp(argv[3], "early") == 0)
                        accepted = false;
                else
                        usage();
                do_reuse(path, accepted, argc > 4 ? argv + 4 : (char *const *) default_program);
        } else if (strcmp(mode, "zombie") == 0 && argc == 3)
                do_zombie(path);
        else if (strcmp(mode, "call") == 0 && argc == 3)
                do_call(path);
        else if (strcmp(mode, "grant-reuse") == 0 && argc == 3)
                do_grant_reuse(path);
        else if (strcmp(mode, "exec") == 0)
                do_exec(path, argc > 3 ? argv + 3 : (char *const *) default_program);
        else
                usage();
        return 0;
}

#endif /* PIDREUSE_PRELOAD */
