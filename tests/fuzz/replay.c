/* SPDX-License-Identifier: MIT */
/* tests/fuzz/replay.c: the driver of a fuzz target built without libFuzzer
 * (gcc, a plain `meson test`): runs every file named on the command line, and
 * every file in every directory named there (in byte order of the names,
 * dot files skipped), once through LLVMFuzzerTestOneInput. So the corpora and
 * crashers replay in every build, with whatever sanitizers the build has.
 * Each input gets a buffer of exactly its size, as libFuzzer gives it, so an
 * over-read shows under AddressSanitizer. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/util.h"
#include "fuzz.h"

/* Overrides the prototype in fuzz.h: targets that need no setup leave it out. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int read_input(const char *path, uint8_t **ret, size_t *ret_size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        /* Larger inputs are still run: the target is the one that rejects them. */
        size_t cap = FUZZ_INPUT_MAX + 1, n = 0;
        size_t want = (size_t) st.st_size < cap ? (size_t) st.st_size : cap;
        uint8_t *buf = malloc(want ?: 1);
        if (!buf)
                return -ENOMEM;
        while (n < want) {
                ssize_t k = read(fd, buf + n, want - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        int r = k < 0 ? -errno : -EIO;
                        free(buf);
                        return r;
                }
                n += (size_t) k;
        }
        *ret = buf;
        *ret_size = n;
        return 0;
}

static int run_file(const char *path) {
        uint8_t *data = NULL;
        size_t size = 0;

        int r = read_input(path, &data, &size);
        if (r < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(-r));
                return r;
        }
        /* Named before it runs, so a crash in the log says which input it was. */
        fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
        (void) LLVMFuzzerTestOneInput(data, size);
        free(data);
        return 0;
}

static int skip_dot(const struct dirent *de) {
        return de->d_name[0] != '.';
}

static int by_bytes(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, unsigned *count) {
        struct dirent **entries = NULL;
        int n = scandir(dir, &entries, skip_dot, by_bytes), r = 0;

        if (n < 0) {
                r = -errno;
                fprintf(stderr, "replay: %s: %s\n", dir, strerror(-r));
                return r;
        }
        for (int i = 0; i < n; i++) {
                char path[PATH_MAX];
                if (r >= 0 && snprintf(path, sizeof path, "%s/%s", dir, entries[i]->d_name) >= (int) sizeof path)
                        r = -ENAMETOOLONG;
                if (r >= 0)
                        r = run_file(path);
                if (r >= 0)
                        (*count)++;
                free(entries[i]);
        }
        free(entries);
        return r;
}

int main(int argc, char *argv[]) {
        unsigned count = 0;

        if (LLVMFuzzerInitialize)
                (void) LLVMFuzzerInitialize(&argc, &argv);
        if (argc < 2) {
                fprintf(stderr, "Usage: %s DIR-OR-FILE...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "replay: %s: %m\n", argv[i]);
                        return 1;
                }
                if (S_ISDIR(st.st_mode))
                        r = run_dir(argv[i], &count);
                else {
                        r = run_file(argv[i]);
                        count += r >= 0;
                }
                if (r < 0)
                        return 1;
        }
        /* An empty corpus would pass while testing nothing. */
        if (count == 0) {
                fprintf(stderr, "replay: no inputs\n");
                return 1;
        }
        printf("replay: %u inputs, no crash\n", count);
        return 0;
}
