/* SPDX-License-Identifier: MIT */
/* common/util.c: secret memory, clocks and randomness. */
#include <malloc.h>
#include <sys/random.h>
#include <time.h>

#include "util.h"

void *erase_and_free(void *p) {
        if (!p)
                return NULL;
        size_t n = malloc_usable_size(p);
        explicit_bzero(p, n);
        free(p);
        return NULL;
}

char *secret_strdup(const char *s) {
        size_t n = strlen(s) + 1;
        char *r = malloc(n);
        if (!r)
                return NULL;
        memcpy(r, s, n);
        return r;
}

bool secret_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        unsigned char diff = la != lb;

        for (size_t i = 0; i < lb; i++)
                diff |= (unsigned char) (i < la ? a[i] : 0) ^ (unsigned char) b[i];
        return diff == 0;
}

const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t now_monotonic_usec(void) {
        return clock_usec(CLOCK_MONOTONIC);
}

uint64_t now_boottime_usec(void) {
        return clock_usec(CLOCK_BOOTTIME);
}

/* Whether any of the 8 bytes in w is a control character (< 0x20), '"' or
 * '\\': the classic "has a zero byte" test on w itself (bytes < 0x20) and
 * on w with each of the two quoted characters cancelled out. Bytes >= 0x80
 * pass, as below. */
static inline bool word_needs_escape(uint64_t w) {
        const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t t = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b);
        return t & highs;
}

bool json_plain(const char *s, size_t len) {
        size_t i = 0;
        for (; len - i >= 8; i += 8) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (word_needs_escape(w))
                        return false;
        }
        for (; i < len; i++) {
                unsigned char ch = (unsigned char) s[i];
                if (ch < 0x20 || ch == '"' || ch == '\\')
                        return false;
        }
        return true;
}

size_t json_escape(char *out, const char *s, size_t len) {
        static const char hex[] = "0123456789abcdef";
        char *o = out;
        for (size_t i = 0; i < len; i++) {
                /* Runs of 8 plain bytes are copied whole (tokens, URLs: nearly all of it). */
                while (len - i >= 8) {
                        uint64_t w;
                        memcpy(&w, s + i, 8);
                        if (word_needs_escape(w))
                                break;
                        memcpy(o, &w, 8);
                        o += 8;
                        i += 8;
                }
                if (i >= len)
                        break;
                unsigned char ch = (unsigned char) s[i];
                if (ch >= 0x20 && ch != '"' && ch != '\\') {
                        *o++ = (char) ch;
                        continue;
                }
                *o++ = '\\';
                switch (ch) {
                case '"':
                case '\\':
                        *o++ = (char) ch;
                        break;
                case '\n':
                        *o++ = 'n';
                        break;
                case '\t':
                        *o++ = 't';
                        break;
                case '\r':
                        *o++ = 'r';
                        break;
                default:
                        *o++ = 'u';
                        *o++ = '0';
                        *o++ = '0';
                        *o++ = hex[ch >> 4];
                        *o++ = hex[ch & 15];
                        break;
                }
        }
        return (size_t) (o - out);
}

uint64_t now_realtime_usec(void) {
        return clock_usec(CLOCK_REALTIME);
}

int random_bytes(void *buf, size_t len) {
        uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = getrandom(p, len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

uint64_t random_below(uint64_t n) {
        uint64_t x;
        if (n <= 1)
                return 0;
        /* Rejection sampling avoids modulo bias. */
        uint64_t limit = UINT64_MAX - UINT64_MAX % n;
        do {
                if (random_bytes(&x, sizeof x) < 0)
                        return 0;
        } while (x >= limit);
        return x % n;
}
