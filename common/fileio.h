/* SPDX-License-Identifier: MIT */
/* common/fileio.h: durable file writes and small reads. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Writes `data` to dir/name durably: a temp file in the same directory,
 * fsync, rename over the target, fsync the directory. After a crash the
 * target holds the old or the new content, never a torn mix. */
int write_file_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode);

/* Removes temp files a killed writer may have left (".NAME.tmp-*"). */
void remove_stale_temp_files(const char *dir);

/* Reads a whole file of at most max bytes, NUL-terminated. -EFBIG over the cap. */
int read_file_full(const char *path, size_t max, char **ret, size_t *ret_len);

/* mkdir -p with the given mode for each created component; the last one is
 * checked to be a directory owned by us and not accessible by others. */
int mkdir_private(const char *path);
