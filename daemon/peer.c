/* SPDX-License-Identifier: MIT */
/* daemon/peer.c: see peer.h. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <systemd/sd-login.h>

#include "common/fileio.h"
#include "common/util.h"
#include "peer.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

void peer_identity_done(PeerIdentity *p) {
        p->pidfd = safe_close(p->pidfd);
        free(p->exe);
        free(p->cgroup);
        free(p->unit);
        p->exe = p->cgroup = p->unit = NULL;
}

static bool pidfd_exited(int pidfd) {
        struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
        /* A pidfd polls readable once the process has exited (zombies included). */
        return poll(&pfd, 1, 0) != 0;
}

bool peer_exited(const PeerIdentity *p) {
        return p->pidfd >= 0 && pidfd_exited(p->pidfd);
}

/* The PID a pidfd refers to, from /proc/self/fdinfo: -1 once it exited. */
static int pidfd_pid(int pidfd, pid_t *ret) {
        char path[64];
        _cleanup_free_ char *text = NULL;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
        int r = read_file_full(path, 4096, &text, NULL);
        if (r < 0)
                return r;
        const char *l = strstr(text, "\nPid:");
        if (!l)
                return -EOPNOTSUPP;
        *ret = (pid_t) strtol(l + 5, NULL, 10);
        return 0;
}

static int read_exe(pid_t pid, char **ret) {
        char path[64], buf[PATH_MAX];
        snprintf(path, sizeof path, "/proc/%d/exe", (int) pid);
        ssize_t n = readlink(path, buf, sizeof buf - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

static int read_comm(pid_t pid, char ret[static PEER_COMM_MAX + 1]) {
        char path[64];
        _cleanup_free_ char *text = NULL;
        snprintf(path, sizeof path, "/proc/%d/comm", (int) pid);
        int r = read_file_full(path, 64, &text, NULL);
        if (r < 0)
                return r;
        text[strcspn(text, "\n")] = 0;
        snprintf(ret, PEER_COMM_MAX + 1, "%s", text);
        return 0;
}

/* The unified (cgroup v2) path: the "0::" line. */
static int read_cgroup(pid_t pid, char **ret) {
        char path[64];
        _cleanup_free_ char *text = NULL;
        snprintf(path, sizeof path, "/proc/%d/cgroup", (int) pid);
        int r = read_file_full(path, 64 * 1024, &text, NULL);
        if (r < 0)
                return r;
        for (char *line = text, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                const char *v = startswith(line, "0::");
                if (v) {
                        *ret = strdup(v);
                        return *ret ? 0 : -ENOMEM;
                }
        }
        *ret = NULL;
        return 0;
}

/* Whether the kernel has SO_PEERPIDFD (6.5+), probed once on a socketpair.
 * When it has, a connection without a peer pidfd means the kernel could not
 * give one: on 6.5-6.8 that is what happens when the peer was already reaped
 * at accept() (EINVAL), and its PID may belong to someone else by now. */
static bool kernel_has_peer_pidfd(void) {
        static int cached = -1;
        if (cached >= 0)
                return cached;
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return true; /* cannot tell (e.g. EMFILE): assume the safe answer, ask again later */
        int fd = -1;
        socklen_t len = sizeof fd;
        int r = getsockopt(sv[0], SOL_SOCKET, SO_PEERPIDFD, &fd, &len) < 0 ? -errno : 0;
        safe_close(sv[0]);
        safe_close(sv[1]);
        if (r >= 0) {
                safe_close(fd);
                return (cached = 1);
        }
        if (r == -ENOPROTOOPT)
                return (cached = 0);
        return true;
}

int peer_identify(const VarlinkPeer *peer, PeerIdentity *ret) {
        PeerIdentity p = { .uid = peer->uid, .gid = peer->gid, .pid = peer->pid, .pidfd = -1 };
        int r;

        if (peer->pidfd >= 0) {
                p.pidfd = fcntl(peer->pidfd, F_DUPFD_CLOEXEC, 3);
                if (p.pidfd < 0)
                        return -errno;
        } else if (kernel_has_peer_pidfd()) {
                /* The kernel has SO_PEERPIDFD but gave none for this peer: it
                 * was gone at accept(). Pinning its PID now with pidfd_open()
                 * would pin whoever has that PID today. */
                return -ESRCH;
        } else {
                /* Kernels before 6.5: pin the PID now; the checks below still
                 * catch a process that died before this point only if its
                 * PID was not reused yet, which the peer's credentials cannot
                 * rule out. Identity is weaker there and documented so. */
                int fd = (int) syscall(SYS_pidfd_open, p.pid, 0);
                if (fd < 0) {
                        peer_identity_done(&p);
                        return errno == ESRCH ? -ESRCH : -errno;
                }
                p.pidfd = fd;
        }

        pid_t pinned;
        if (pidfd_pid(p.pidfd, &pinned) >= 0 && pinned != p.pid) {
                /* -1: exited (a stale pidfd of a reaped peer, kernel 6.9+), or another PID. */
                peer_identity_done(&p);
                return -ESRCH;
        }

        /* Read /proc, then check the pinned process is still alive: while it
         * lives, its PID cannot belong to anyone else, so what we read was it. */
        if ((r = read_exe(p.pid, &p.exe)) < 0 || (r = read_comm(p.pid, p.comm)) < 0 ||
            (r = read_cgroup(p.pid, &p.cgroup)) < 0) {
                peer_identity_done(&p);
                return r == -ENOENT ? -ESRCH : r;
        }
        char *unit = NULL;
        if (sd_pid_get_user_unit(p.pid, &unit) >= 0 && unit) {
                p.unit = unit;
                p.user_unit = true;
        } else if (sd_pid_get_unit(p.pid, &unit) >= 0 && unit)
                p.unit = unit;

        if (pidfd_exited(p.pidfd)) {
                peer_identity_done(&p);
                return -ESRCH;
        }
        *ret = p;
        return 0;
}

json_object *peer_identity_to_json(const PeerIdentity *p) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "uid", json_object_new_int64(p->uid));
        json_object_object_add(o, "gid", json_object_new_int64(p->gid));
        json_object_object_add(o, "pid", json_object_new_int64(p->pid));
        json_object_object_add(o, "pidfd", json_object_new_boolean(p->pidfd >= 0));
        if (p->exe)
                json_object_object_add(o, "exe", json_object_new_string(p->exe));
        json_object_object_add(o, "comm", json_object_new_string(p->comm));
        if (p->cgroup)
                json_object_object_add(o, "cgroup", json_object_new_string(p->cgroup));
        if (p->unit) {
                json_object_object_add(o, "unit", json_object_new_string(p->unit));
                json_object_object_add(o, "user_unit", json_object_new_boolean(p->user_unit));
        }
        return o;
}
