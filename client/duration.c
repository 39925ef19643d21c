/* SPDX-License-Identifier: MIT */
/* client/duration.c: see duration.h. */
#include <inttypes.h>
#include <stdio.h>

#include "common/util.h"
#include "duration.h"

static const struct {
        char unit;
        uint64_t sec;
} units[] = {
        { 'd', 86400 },
        { 'h', 3600 },
        { 'm', 60 },
        { 's', 1 },
};

int duration_parse(const char *s, uint64_t *ret_sec) {
        uint64_t total = 0;

        if (!s || !*s)
                return -EINVAL;
        while (*s) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                uint64_t n = 0;
                for (; *s >= '0' && *s <= '9'; s++) {
                        n = n * 10 + (uint64_t) (*s - '0');
                        if (n > DURATION_MAX_SEC)
                                return -ERANGE;
                }
                uint64_t unit = 0;
                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if (*s == units[i].unit)
                                unit = units[i].sec;
                if (unit == 0) /* a bare number, or an unknown unit */
                        return -EINVAL;
                s++;
                total += n * unit; /* n <= DURATION_MAX_SEC and unit <= 86400: no overflow */
                if (total > DURATION_MAX_SEC)
                        return -ERANGE;
        }
        if (total == 0)
                return -EINVAL;
        *ret_sec = total;
        return 0;
}

char *duration_format(uint64_t sec, char *buf, size_t size) {
        size_t i = 0;

        while (i < ELEMENTSOF(units) - 1 && sec < units[i].sec)
                i++;
        uint64_t major = sec / units[i].sec, rest = sec % units[i].sec;
        if (i + 1 < ELEMENTSOF(units) && rest >= units[i + 1].sec)
                snprintf(buf, size, "%" PRIu64 "%c%" PRIu64 "%c", major, units[i].unit, rest / units[i + 1].sec,
                         units[i + 1].unit);
        else
                snprintf(buf, size, "%" PRIu64 "%c", major, units[i].unit);
        return buf;
}
