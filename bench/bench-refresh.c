/* SPDX-License-Identifier: MIT */
/* bench/bench-refresh.c: the OAuth server's own refresh latency, the baseline
 * of the storm and rotation figures. N refresh_token grants in a row, each
 * with the refresh token the previous one returned (the server rotates), on
 * one keep-alive HTTP connection (libcurl easy handle reused), as a client
 * that does nothing else would see it.
 *
 *   bench-refresh TOKEN_ENDPOINT CLIENT_ID N  < "CLIENT_SECRET\nREFRESH_TOKEN\n"
 *
 * Secrets come on stdin, never argv. Prints one JSON object (microseconds). */
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct Body {
        char *data;
        size_t len;
} Body;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
        Body *b = ud;
        size_t k = size * n;
        char *d = realloc(b->data, b->len + k + 1);
        if (!d)
                return 0;
        memcpy(d + b->len, p, k);
        b->len += k;
        d[b->len] = 0;
        b->data = d;
        return k;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void chomp(char *s) {
        s[strcspn(s, "\r\n")] = 0;
}

int main(int argc, char **argv) {
        if (argc < 4) {
                fprintf(stderr, "Usage: %s TOKEN_ENDPOINT CLIENT_ID N < secret-and-refresh-token\n", argv[0]);
                return 2;
        }
        unsigned n = (unsigned) strtoul(argv[3], NULL, 10);
        static char secret[512], rt[4096];
        if (!fgets(secret, sizeof secret, stdin) || !fgets(rt, sizeof rt, stdin)) {
                fprintf(stderr, "bench-refresh: expected the client secret and a refresh token on stdin\n");
                return 2;
        }
        chomp(secret);
        chomp(rt);

        curl_global_init(CURL_GLOBAL_DEFAULT);
        CURL *h = curl_easy_init();
        if (!h)
                return 1;
        curl_easy_setopt(h, CURLOPT_URL, argv[1]);
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, argv[2]);
        curl_easy_setopt(h, CURLOPT_PASSWORD, secret);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
        uint64_t *t = calloc(n, sizeof *t);
        if (!t)
                return 1;
        for (unsigned i = 0; i < n + 2; i++) { /* 2 warm-up grants: the connection, the server's JIT */
                char *enc = curl_easy_escape(h, rt, 0);
                char form[8192];
                snprintf(form, sizeof form, "grant_type=refresh_token&refresh_token=%s", enc);
                curl_free(enc);
                Body b = {};
                curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
                uint64_t a = now_ns();
                CURLcode c = curl_easy_perform(h);
                uint64_t d = now_ns() - a;
                long status = 0;
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                json_object *o = b.data ? json_tokener_parse(b.data) : NULL, *v;
                if (c != CURLE_OK || status != 200 || !o || !json_object_object_get_ex(o, "refresh_token", &v)) {
                        fprintf(stderr, "bench-refresh: refresh %u failed: %s, HTTP %ld\n", i, curl_easy_strerror(c),
                                status);
                        return 1;
                }
                snprintf(rt, sizeof rt, "%s", json_object_get_string(v));
                json_object_put(o);
                explicit_bzero(form, sizeof form);
                if (b.data)
                        explicit_bzero(b.data, b.len);
                free(b.data);
                if (i >= 2)
                        t[i - 2] = d;
        }
        explicit_bzero(rt, sizeof rt);
        explicit_bzero(secret, sizeof secret);
        curl_easy_cleanup(h);
        qsort(t, n, sizeof *t, cmp_u64);
        printf("{\"refreshes\":%u,\"med\":%.1f,\"p99\":%.1f,\"min\":%.1f,\"max\":%.1f}\n", n,
               (double) t[n / 2] / 1000.0, (double) t[(size_t) n * 99 / 100] / 1000.0, (double) t[0] / 1000.0,
               (double) t[n - 1] / 1000.0);
        return 0;
}
