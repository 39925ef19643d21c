/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz.h: what the fuzz targets share: the input cap, the entry
 * points libFuzzer (or replay.c) calls, and small input helpers. Targets check
 * invariants with the always-evaluated macros of common/test.h, so a broken
 * invariant aborts like a sanitizer finding and leaves a crasher behind. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/test.h"

/* Larger inputs are rejected before any parser sees them: every parser under
 * test caps its own input far lower (64 KiB for files and HTTP bodies,
 * 128 KiB for a Varlink message), so bigger ones only slow the fuzzer. */
#define FUZZ_INPUT_MAX (1024U * 1024U)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, once per process before the first input; replay.c calls it too. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated copy of the input, which may itself contain NULs: the
 * shape in which http.c hands over a response body and fileio.c a file.
 * NULL when out of memory. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);
        if (!s)
                return NULL;
        if (size > 0)
                memcpy(s, data, size);
        s[size] = 0;
        return s;
}

/* Splits "STATUS\nBODY" (STATUS: 1 to 3 digits) off the front of the input
 * of the HTTP response targets and returns STATUS; without such a line the
 * whole input is the body of a 200. Status 0 is a failed transfer. */
static inline long fuzz_http_status(const uint8_t **data, size_t *size) {
        long status = 0;
        size_t i = 0;

        while (i < *size && i < 3 && (*data)[i] >= '0' && (*data)[i] <= '9')
                status = status * 10 + ((*data)[i++] - '0');
        if (i == 0 || i >= *size || (*data)[i] != '\n')
                return 200;
        *data += i + 1;
        *size -= i + 1;
        return status;
}

/* Splits the first line (up to '\n', which is dropped) off the input into a
 * NUL-terminated string; the rest stays in data/size. NULL when out of memory. */
static inline char *fuzz_first_line(const uint8_t **data, size_t *size) {
        const uint8_t *nl = *size > 0 ? memchr(*data, '\n', *size) : NULL;
        size_t n = nl ? (size_t) (nl - *data) : *size;
        char *line = fuzz_strndup(*data, n);
        *data += nl ? n + 1 : n;
        *size -= nl ? n + 1 : n;
        return line;
}
