/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz-credential-input.c: what git writes on the standard input
 * of "tokenctl credential-helper" (tokenctl_credential_input_read(),
 * client/tokenctl-credential.c): key=value lines up to a blank line. The
 * input is handed over through a memfd, as git hands it through a pipe.
 *
 * Invariants checked: the answer is 0 with the fields it found, or a negative
 * errno with every field NULL; a field holds no newline and stays within the
 * line cap; a host that was read matches itself, also in upper case, and
 * matches neither with a character added nor (when longer than one
 * character) with its last character dropped. */
#include <ctype.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "tokenctl-audit.h"

int tokenctl_main(int argc, char *argv[]);
#define main tokenctl_main
#include "tokenctl.c"
#undef main

#include "tokenctl-credential.h"

/* No journal: "tokenctl audit" must not read the host's. This replaces
 * the weak one in tokenctl-audit.c, which names journalctl. */
const char *tokenctl_audit_journalctl(void) {
        return NULL;
}

/* The parser says why it refuses an input on stderr: that goes to
 * /dev/null, while the fuzzer's own reports still reach the log. */
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        devnull = fopen("/dev/null", "we");
        if (!devnull)
                abort();
        return 0;
}

static void check_field(const char *v) {
        if (!v)
                return;
        ASSERT_TRUE(strchr(v, '\n') == NULL);
        ASSERT_TRUE(strlen(v) <= CREDENTIAL_LINE_MAX);
}

static void check_host(const char *host) {
        char *hosts[1];
        size_t n = strlen(host);
        char *upper = strdup(host), *longer = malloc(n + 2);
        ASSERT_TRUE(upper && longer);
        for (char *p = upper; *p; p++)
                *p = (char) toupper((unsigned char) *p);
        memcpy(longer, host, n);
        longer[n] = 'x';
        longer[n + 1] = 0;

        hosts[0] = (char *) host;
        ASSERT_TRUE(tokenctl_credential_host_match(host, hosts, 1));
        ASSERT_TRUE(tokenctl_credential_host_match(upper, hosts, 1));
        hosts[0] = longer;
        ASSERT_TRUE(!tokenctl_credential_host_match(host, hosts, 1));
        if (n > 1) {
                longer[n - 1] = 0;
                ASSERT_TRUE(!tokenctl_credential_host_match(host, hosts, 1));
        }
        free(upper);
        free(longer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > CREDENTIAL_INPUT_MAX + 16)
                return 0;
        int fd = memfd_create("credential-input", MFD_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(size == 0 || write(fd, data, size) == (ssize_t) size);
        ASSERT_TRUE(lseek(fd, 0, SEEK_SET) == 0);

        CredentialInput in = {};
        FILE *err = stderr;
        stderr = devnull;
        int r = tokenctl_credential_input_read(fd, &in);
        stderr = err;
        close(fd);
        if (r < 0) {
                ASSERT_TRUE(!in.protocol && !in.host && !in.username);
                return 0;
        }
        ASSERT_TRUE(r == 0);
        check_field(in.protocol);
        check_field(in.host);
        check_field(in.username);
        if (in.host && in.host[0])
                check_host(in.host);
        tokenctl_credential_input_done(&in);
        ASSERT_TRUE(!in.protocol && !in.host && !in.username);
        return 0;
}
