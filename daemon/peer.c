/* SPDX-License-Identifier: MIT */
/* daemon/peer.c: see peer.h. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <systemd/sd-login.h>

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

/* Reads a file of /proc (name relative to dfd, or a path with AT_FDCWD)
 * into buf, NUL-terminated, with one read() as systemd reads virtual files:
 * the kernel makes such a file's content in one go, and a later read could
 * see newer content instead of the end. Returns its length, -EFBIG when it
 * fills the buffer (it may be longer), or -errno. read_file_full() would
 * stat the file (whose size /proc says is 0) and grow its buffer a byte at a
 * time: a dozen system calls a file, and a caller is identified on every
 * connection. */
static ssize_t read_proc_file(int dfd, const char *name, char *buf, size_t size) {
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        ssize_t n;
        do
                n = read(fd, buf, size - 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if ((size_t) n >= size - 1)
                return -EFBIG;
        buf[n] = 0;
        return n;
}

/* PIDFD_GET_INFO (Linux 6.13), for headers that predate it: the first
 * version of struct pidfd_info, which every kernel with the ioctl takes. */
#ifndef PIDFD_GET_INFO
struct pidfd_info {
        uint64_t mask;
        uint64_t cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        uint32_t spare0[1];
};
#define PIDFD_INFO_PID (1ULL << 0)
#define PIDFD_GET_INFO _IOWR(0xFF, 11, struct pidfd_info)
#endif

/* The PID a pidfd refers to in our PID namespace: -1 once it was reaped (or
 * when it is not in our namespace). One ioctl; before Linux 6.13, the "Pid:"
 * line of /proc/self/fdinfo, which says the same (-1, or 0 outside). */
static int pidfd_pid(int pidfd, pid_t *ret) {
        struct pidfd_info info = { .mask = PIDFD_INFO_PID };
        if (ioctl(pidfd, PIDFD_GET_INFO, &info) >= 0) {
                *ret = (pid_t) info.pid;
                return 0;
        }
        if (errno == ESRCH) {
                *ret = -1;
                return 0;
        }

        char path[64], text[1024];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
        int r = (int) read_proc_file(AT_FDCWD, path, text, sizeof text);
        if (r < 0)
                return r;
        const char *l = strstr(text, "\nPid:");
        if (!l)
                return -EOPNOTSUPP;
        *ret = (pid_t) strtol(l + 5, NULL, 10);
        return 0;
}

static int read_exe(int dfd, char **ret) {
        char buf[PATH_MAX];
        ssize_t n = readlinkat(dfd, "exe", buf, sizeof buf - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

static int read_comm(int dfd, char ret[static PEER_COMM_MAX + 1]) {
        char text[64];
        int r = (int) read_proc_file(dfd, "comm", text, sizeof text);
        if (r < 0)
                return r;
        size_t l = strcspn(text, "\n");
        l = l < PEER_COMM_MAX ? l : PEER_COMM_MAX;
        memcpy(ret, text, l);
        ret[l] = 0;
        return 0;
}

/* /proc/PID/cgroup: one line with cgroup v2 only, more on a hybrid or legacy
 * hierarchy. Most fit on the stack; up to CGROUP_FILE_MAX on the heap. */
#define CGROUP_FILE_MAX (64U * 1024U)

static int read_cgroup_file(int dfd, char *stack, size_t stack_size, char **ret_text, char **ret_allocated) {
        ssize_t n = read_proc_file(dfd, "cgroup", stack, stack_size);
        if (n != -EFBIG) {
                *ret_text = stack;
                *ret_allocated = NULL;
                return n < 0 ? (int) n : 0;
        }
        _cleanup_free_ char *big = malloc(CGROUP_FILE_MAX + 1);
        if (!big)
                return -ENOMEM;
        n = read_proc_file(dfd, "cgroup", big, CGROUP_FILE_MAX + 1);
        if (n < 0)
                return (int) n;
        *ret_text = big;
        *ret_allocated = TAKE_PTR(big);
        return 0;
}

/* The unified (cgroup v2) path: the "0::" line; NULL when there is none. */
static int cgroup_unified_path(const char *text, char **ret) {
        for (const char *line = text; *line;) {
                size_t l = strcspn(line, "\n");
                if (l >= 3 && memcmp(line, "0::", 3) == 0) {
                        *ret = strndup(line + 3, l - 3);
                        return *ret ? 0 : -ENOMEM;
                }
                line += l;
                line += *line == '\n';
        }
        *ret = NULL;
        return 0;
}

/* The suffixes of the unit types that may hold processes, besides slices
 * (which never name a process's unit). */
static const char *const unit_suffixes[] = {
        ".service", ".scope", ".socket", ".mount", ".swap", ".device", ".target", ".timer", ".path", ".automount",
};

/* Whether sd_pid_get_unit() or sd_pid_get_user_unit() can find a unit in a
 * process's cgroup file: only when some line names one. Either call reads
 * /proc/PID/cgroup and /proc/1/cgroup again (with stdio: some 15 system
 * calls each), so they are skipped when the text rules them out; whenever
 * they could succeed they run, and they decide. */
static bool cgroup_may_name_unit(const char *text) {
        for (size_t i = 0; i < ELEMENTSOF(unit_suffixes); i++)
                if (strstr(text, unit_suffixes[i]))
                        return true;
        return false;
}

/* A user unit lies below a user manager ("/user@UID.service/") or a session
 * scope ("/session-ID.scope/"): sd_pid_get_user_unit() finds one only with
 * a component after such a component. */
static bool cgroup_may_name_user_unit(const char *text) {
        static const char *const prefixes[] = { "/user@", "/session-" };
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                for (const char *p = strstr(text, prefixes[i]); p; p = strstr(p + 1, prefixes[i])) {
                        const char *end = p + 1 + strcspn(p + 1, "/\n");
                        if (end[0] == '/' && end[1] && end[1] != '\n')
                                return true;
                }
        return false;
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
        char path[32], cgroup_stack[4096], *cgroup_text = NULL;
        _cleanup_free_ char *cgroup_allocated = NULL;
        snprintf(path, sizeof path, "/proc/%d", (int) p.pid);
        _cleanup_close_ int dfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                r = -errno;
        else if ((r = read_exe(dfd, &p.exe)) >= 0 && (r = read_comm(dfd, p.comm)) >= 0 &&
                 (r = read_cgroup_file(dfd, cgroup_stack, sizeof cgroup_stack, &cgroup_text, &cgroup_allocated)) >= 0)
                r = cgroup_unified_path(cgroup_text, &p.cgroup);
        if (r < 0) {
                peer_identity_done(&p);
                return r == -ENOENT ? -ESRCH : r;
        }
        if (cgroup_may_name_unit(cgroup_text)) {
                char *unit = NULL;
                if (cgroup_may_name_user_unit(cgroup_text) && sd_pid_get_user_unit(p.pid, &unit) >= 0 && unit) {
                        p.unit = unit;
                        p.user_unit = true;
                } else if (sd_pid_get_unit(p.pid, &unit) >= 0 && unit)
                        p.unit = unit;
        }

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
