/* SPDX-License-Identifier: MIT */
/* client/duration.h: durations as people write them ("90s", "15m", "1h30m",
 * "2d"), the same syntax as ConsentDuration= in tokend.policy(5). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The longest grant tokend makes, and so the longest duration accepted. */
#define DURATION_MAX_SEC (30U * 24U * 3600U)

/* Parses one or more NUMBER UNIT pairs without blanks, units s, m, h and d.
 * A bare number is an error, so that nobody has to guess its unit. Returns 0
 * and *ret_sec (1 to DURATION_MAX_SEC); -EINVAL for bad syntax or zero;
 * -ERANGE over DURATION_MAX_SEC. *ret_sec is untouched on failure. */
int duration_parse(const char *s, uint64_t *ret_sec);

/* Formats seconds as the largest unit and the next one, rounded down: "7h59m",
 * "2d3h", "1m30s", "45s", "0s". Always NUL-terminates buf (size > 0);
 * returns buf. A buffer of DURATION_FORMAT_MAX bytes always suffices. */
#define DURATION_FORMAT_MAX 32
char *duration_format(uint64_t sec, char *buf, size_t size);
