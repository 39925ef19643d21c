/* SPDX-License-Identifier: MIT */
/* daemon/http.h: asynchronous HTTP requests through libcurl's multi
 * interface, driven by sd-event. No call here ever blocks the event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct Http Http;
typedef struct HttpRequest HttpRequest;

/* Response bodies over this size abort the request (a token response is a few KiB). */
#define HTTP_BODY_MAX (64U * 1024U)

typedef struct HttpResponse {
        int curl_code;        /* CURLcode; 0 when a response arrived */
        const char *curl_error; /* human-readable transfer error, or NULL */
        long status;          /* HTTP status, 0 when none */
        const char *body;     /* NUL-terminated; wiped and freed after the callback */
        size_t body_len;
        int64_t retry_after;  /* seconds from a Retry-After header, or -1 */
        uint64_t started;     /* CLOCK_BOOTTIME usec when the request was made */
} HttpResponse;

/* Called once per request when it completes (not when cancelled). The request
 * is freed right after the callback returns. */
typedef void (*HttpDoneFn)(HttpRequest *req, const HttpResponse *resp, void *userdata);

typedef struct HttpOptions {
        const char *ca_file;        /* custom CA bundle, or NULL for the system one */
        uint64_t connect_timeout_usec;
        uint64_t total_timeout_usec;
} HttpOptions;

int http_new(sd_event *event, const HttpOptions *opts, Http **ret);
Http *http_free(Http *h); /* cancels every request without calling callbacks */
unsigned http_in_flight(Http *h);

/* POSTs an application/x-www-form-urlencoded body. `body` and the
 * Authorization header value (if any) may hold secrets: they are copied
 * into memory that is wiped when the request ends. */
int http_post_form(Http *h, const char *url, const char *body, const char *authorization, HttpDoneFn done,
                   void *userdata, HttpRequest **ret);
/* GETs a JSON document. */
int http_get(Http *h, const char *url, HttpDoneFn done, void *userdata, HttpRequest **ret);
/* Aborts a request; its callback is not called. Accepts NULL, returns NULL. */
HttpRequest *http_request_cancel(HttpRequest *req);
