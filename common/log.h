/* SPDX-License-Identifier: MIT */
/* common/log.h: minimal leveled logging to stderr with sd-daemon priority
 * prefixes, so journald keeps the level when the daemon runs under systemd.
 * Never pass a secret to these functions: log a name or a fingerprint. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <syslog.h>

#include "util.h"

void log_set_max_level(int level);
int log_get_max_level(void);
void log_set_prefix_priority(bool on); /* "<N>" prefixes, for journald */

_printf_(3, 4) int log_internal(int level, int error, const char *fmt, ...);

#define log_full_errno(level, error, ...) log_internal(level, error, __VA_ARGS__)
#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
/* These return -abs(error), so a caller can log and return in one statement. */
#define log_debug_errno(error, ...) log_internal(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...) log_internal(LOG_INFO, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_internal(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) log_internal(LOG_ERR, error, __VA_ARGS__)
