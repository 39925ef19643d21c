/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-tokenctl-replies.c: what tokenctl makes of what tokend
 * answers: the blocking client's reply parsing (varlink-client.c), each
 * verb's reading and printing of the reply parameters, and the error
 * explanations (tokenctl_report_error()). tokend is trusted, but $TOKEND_SOCKET
 * or --socket can point tokenctl at anything, and an answer of the wrong
 * shape must not crash it.
 *
 * Input: one byte choosing the command line (bits 0-6, modulo the table
 * below; bit 7 adds --json), then the bytes a fake tokend sends on every
 * connection tokenctl opens, NUL-terminated Varlink frames as on the wire.
 * The fake tokend is a thread of this process on a socket in a private
 * directory; it writes what fits into the socket at once (a few hundred KiB)
 * and hangs up.
 *
 * tokenctl.c is compiled into this file, as in fuzz-tokenctl-args.c; what it
 * prints goes to /dev/null, standard input is /dev/null, and the signal
 * handlers "login" installs are put back after each run.
 *
 * Invariant checked: tokenctl exits with one of its documented codes. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz.h"

int tokenctl_main(int argc, char *argv[]);
#define main tokenctl_main
#include "tokenctl.c"
#undef main

#define REPLY_MAX (128U * 1024U)
#define CONNECTIONS_MAX 16

static const char *const commands[][9] = {
        { "list" },
        { "status" },
        { "token", "github", "--scope", "repo", "--min-ttl", "60" },
        { "pending" },
        { "grants" },
        { "whoami" },
        { "approve", "req-1", "--for", "1h", "--scope", "repo" },
        { "deny", "req-1" },
        { "grants", "revoke", "grant-1" },
        { "reload" },
        { "remove", "github" },
        { "revoke", "github" },
        { "store", "migrate", "--to", "keyring" },
        { "login", "work", "--provider", "github", "--client-id", "Iv1.abc", "--no-browser" },
};

static FILE *devnull;
static char socket_dir[] = "/tmp/tokend-fuzz-XXXXXX";
static char socket_file[sizeof socket_dir + 16];

typedef struct FakeTokend {
        int listen_fd, stop_fd; /* stop_fd: readable once tokenctl is done */
        const uint8_t *reply;
        size_t reply_len;
        int conns[CONNECTIONS_MAX];
        size_t n_conns;
} FakeTokend;

static void remove_socket_dir(void) {
        (void) unlink(socket_file);
        (void) rmdir(socket_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
                abort();
        if (fd != STDIN_FILENO)
                close(fd);
        devnull = fopen("/dev/null", "we");
        if (!devnull || !mkdtemp(socket_dir))
                abort();
        snprintf(socket_file, sizeof socket_file, "%s/socket", socket_dir);
        atexit(remove_socket_dir);
        setenv("TOKEND_SOCKET", socket_file, 1);
        unsetenv("DISPLAY");
        unsetenv("WAYLAND_DISPLAY");
        return 0;
}

/* Answers every connection with the same bytes, until told to stop. The
 * connections stay open (written and shut for writing) until then, so that
 * closing them cannot reset what tokenctl has not read yet. */
static void *fake_tokend(void *userdata) {
        FakeTokend *t = userdata;

        for (;;) {
                struct pollfd p[2] = { { .fd = t->listen_fd, .events = POLLIN }, { .fd = t->stop_fd, .events = POLLIN } };
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        abort();
                if (p[1].revents)
                        return NULL;
                if (!(p[0].revents & POLLIN))
                        continue;
                int c = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                if (t->n_conns >= CONNECTIONS_MAX) {
                        close(c);
                        continue;
                }
                t->conns[t->n_conns++] = c;
                /* What fits; tokenctl reads at its own pace, or not at all. */
                (void) send(c, t->reply, t->reply_len, MSG_DONTWAIT | MSG_NOSIGNAL);
                (void) shutdown(c, SHUT_WR);
        }
}

static int listen_on(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        strcpy(sa.sun_path, path);
        (void) unlink(path);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, CONNECTIONS_MAX) < 0)
                abort();
        return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *argv[16] = { (char *) "tokenctl" };
        int argc = 1, stop[2];

        if (size < 1 || size > FUZZ_INPUT_MAX)
                return 0;
        if (data[0] & 0x80)
                argv[argc++] = (char *) "--json";
        const char *const *cmd = commands[(data[0] & 0x7f) % ELEMENTSOF(commands)];
        for (size_t i = 0; i < ELEMENTSOF(commands[0]) && cmd[i]; i++)
                argv[argc++] = (char *) cmd[i];
        argv[argc] = NULL;

        FakeTokend t = {
                .listen_fd = listen_on(socket_file),
                .reply = data + 1,
                .reply_len = size - 1 < REPLY_MAX ? size - 1 : REPLY_MAX,
        };
        pthread_t thread;
        if (pipe2(stop, O_CLOEXEC) < 0)
                abort();
        t.stop_fd = stop[0];
        if (pthread_create(&thread, NULL, fake_tokend, &t) != 0)
                abort();

        struct sigaction saved_int, saved_term;
        (void) sigaction(SIGINT, NULL, &saved_int);
        (void) sigaction(SIGTERM, NULL, &saved_term);
        FILE *out = stdout, *err = stderr;
        stdout = stderr = devnull;
        arg_socket = NULL;
        arg_json = false;
        optind = 0;
        int r = tokenctl_main(argc, argv);
        stdout = out;
        stderr = err;
        (void) sigaction(SIGINT, &saved_int, NULL);
        (void) sigaction(SIGTERM, &saved_term, NULL);

        (void) !write(stop[1], "x", 1);
        pthread_join(thread, NULL);
        for (size_t i = 0; i < t.n_conns; i++)
                close(t.conns[i]);
        close(t.listen_fd);
        close(stop[0]);
        close(stop[1]);
        (void) unlink(socket_file);

        if (r < EXIT_OK || r > EXIT_DENIED)
                TEST_FAIL("tokenctl exited %d", r);
        return 0;
}
