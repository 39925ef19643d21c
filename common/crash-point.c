/* SPDX-License-Identifier: MIT */
/* common/crash-point.c: see crash-point.h. Compiled only with -Dcrash_points=true. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "crash-point.h"

void crash_point(const char *name) {
        static unsigned passes;
        const char *want = getenv("TOKEND_CRASH_POINT");
        if (!want)
                return;
        size_t n = strlen(name);
        if (strncmp(want, name, n) != 0 || (want[n] != 0 && want[n] != ':'))
                return;
        unsigned long nth = want[n] == ':' ? strtoul(want + n + 1, NULL, 10) : 1;
        if (++passes >= nth)
                (void) raise(SIGKILL);
}
