/* SPDX-License-Identifier: MIT */
/* common/util.h: cleanup helpers, secret memory and small string utilities. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define TAKE_PTR(p)                         \
        ({                                  \
                __typeof__(p) _p_ = (p);    \
                (p) = NULL;                 \
                _p_;                        \
        })
#define TAKE_FD(fd)                         \
        ({                                  \
                int _fd_ = (fd);            \
                (fd) = -1;                  \
                _fd_;                       \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)  \
        static inline void func##p(type *p) {    \
                if (*p)                          \
                        func(*p);                \
        }

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Wipes the whole allocation behind p (as reported by the allocator, not just
 * the string length) and frees it. Accepts NULL, returns NULL. Every buffer
 * that may hold a token, refresh token, client secret or verifier goes
 * through here. */
void *erase_and_free(void *p);
static inline void erase_and_freep(void *p) {
        erase_and_free(*(void **) p);
}
#define _cleanup_erase_ _cleanup_(erase_and_freep)

/* Like strdup(), but for secrets: the result must be released with erase_and_free(). */
char *secret_strdup(const char *s);

/* Constant-time comparison of two NUL-terminated secrets. The time taken
 * depends only on the length of b (the expected value). */
bool secret_equal(const char *a, const char *b);

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}
static inline bool isempty(const char *s) {
        return !s || !*s;
}
static inline const char *strempty(const char *s) {
        return s ?: "";
}
static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

/* Returns the suffix after prefix when s starts with it, else NULL. */
const char *startswith(const char *s, const char *prefix);

/* Monotonic and wall clocks in microseconds. */
uint64_t now_monotonic_usec(void);
uint64_t now_boottime_usec(void); /* runs through suspend */

/* The body of a JSON string (no quotes): '"', '\\' and control characters
 * escaped, every other byte as it is. out must hold JSON_ESCAPED_MAX(len)
 * bytes; returns how many were written. */
#define JSON_ESCAPED_MAX(len) (6 * (len))
size_t json_escape(char *out, const char *s, size_t len);
/* Whether json_escape() would copy s unchanged (no control character, '"'
 * or '\\'): such a string can be written between quotes as it is. */
bool json_plain(const char *s, size_t len);
uint64_t now_realtime_usec(void);

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

/* Uniform random number in [0, n) from getrandom(). */
uint64_t random_below(uint64_t n);

/* Fills buf with len random bytes; returns 0 or negative errno. */
int random_bytes(void *buf, size_t len);
