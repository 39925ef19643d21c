/* SPDX-License-Identifier: MIT */
/* common/log.c: see log.h. */
#include <stdio.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool prefix_priority;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

void log_set_prefix_priority(bool on) {
        prefix_priority = on;
}

int log_internal(int level, int error, const char *fmt, ...) {
        int saved = errno;
        if (error < 0)
                error = -error;

        if (level <= max_level) {
                char buf[1024];
                va_list ap;

                va_start(ap, fmt);
                /* %m in fmt refers to `error`, as in systemd. */
                errno = error;
                vsnprintf(buf, sizeof buf, fmt, ap);
                va_end(ap);
                if (prefix_priority)
                        fprintf(stderr, "<%d>%s\n", level, buf);
                else
                        fprintf(stderr, "%s\n", buf);
        }
        errno = saved;
        return -error;
}
