/* SPDX-License-Identifier: MIT */
/* daemon/http.c: libcurl multi on sd-event (socket and timer callbacks). */
#include <curl/curl.h>
#include <stdio.h>

#include "common/list.h"
#include "common/log.h"
#include "common/util.h"
#include "http.h"

struct Http {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        HttpRequest *requests;
        unsigned n_requests;
        char *ca_file;
        uint64_t connect_timeout_usec, total_timeout_usec;
};

struct HttpRequest {
        Http *http;
        HttpRequest *prev, *next;
        CURL *easy;
        struct curl_slist *headers;
        char *body_out; /* secret */
        char *body_in;  /* secret */
        size_t body_in_len, body_in_size;
        bool too_large;
        int64_t retry_after;
        uint64_t started; /* CLOCK_BOOTTIME usec */
        char errbuf[CURL_ERROR_SIZE];
        HttpDoneFn done;
        void *userdata;
};

static void slist_free_erase(struct curl_slist *l) {
        for (struct curl_slist *i = l; i; i = i->next)
                if (i->data)
                        explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

static void request_free(HttpRequest *req) {
        Http *h = req->http;

        if (req->easy) {
                curl_multi_remove_handle(h->multi, req->easy);
                curl_easy_cleanup(req->easy);
        }
        slist_free_erase(req->headers);
        erase_and_free(req->body_out);
        erase_and_free(req->body_in);

        LIST_REMOVE(h->requests, req);
        h->n_requests--;
        free(req);
}

HttpRequest *http_request_cancel(HttpRequest *req) {
        if (req)
                request_free(req);
        return NULL;
}

static void http_check_done(Http *h) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(h->multi, &left))) {
                if (msg->msg != CURLMSG_DONE)
                        continue;
                HttpRequest *req = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
                if (!req)
                        continue;

                HttpResponse resp = {
                        .curl_code = msg->data.result,
                        .retry_after = req->retry_after,
                        .started = req->started,
                };
                if (req->too_large) {
                        resp.curl_code = CURLE_FILESIZE_EXCEEDED;
                        resp.curl_error = "response too large";
                } else if (resp.curl_code != CURLE_OK)
                        resp.curl_error = req->errbuf[0] ? req->errbuf : curl_easy_strerror(resp.curl_code);
                else {
                        curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &resp.status);
                        resp.body = req->body_in ?: "";
                        resp.body_len = req->body_in_len;
                }
                req->done(req, &resp, req->userdata);
                request_free(req);
        }
}

static int http_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Http *h = userdata;
        int action = 0, running;
        (void) s;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;
        curl_multi_socket_action(h->multi, fd, action, &running);
        http_check_done(h);
        return 0;
}

static int http_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Http *h = userdata;
        int running;
        (void) s;
        (void) usec;

        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        http_check_done(h);
        return 0;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        Http *h = userp;
        sd_event_source *src = socketp;
        uint32_t events = 0;
        (void) easy;

        if (what == CURL_POLL_REMOVE) {
                if (src) {
                        sd_event_source_disable_unref(src);
                        curl_multi_assign(h->multi, fd, NULL);
                }
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (src) {
                if (sd_event_source_set_io_events(src, events) < 0)
                        return -1;
                return 0;
        }
        if (sd_event_add_io(h->event, &src, fd, events, http_on_io, h) < 0)
                return -1;
        /* Provider I/O goes ahead of callers' calls: in a storm of callers
         * waiting for one refresh, the refresh must not wait behind them. */
        (void) sd_event_source_set_priority(src, SD_EVENT_PRIORITY_IMPORTANT);
        curl_multi_assign(h->multi, fd, src);
        return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        Http *h = userp;
        (void) multi;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(h->timer, SD_EVENT_OFF) < 0 ? -1 : 0;

        uint64_t now;
        sd_event_now(h->event, CLOCK_MONOTONIC, &now);
        if (sd_event_source_set_time(h->timer, now + (uint64_t) timeout_ms * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

int http_new(sd_event *event, const HttpOptions *opts, Http **ret) {
        static bool global_done;
        int r;

        if (!global_done) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                global_done = true;
        }

        Http *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(event);
        h->connect_timeout_usec = opts && opts->connect_timeout_usec ? opts->connect_timeout_usec : 5 * USEC_PER_SEC;
        h->total_timeout_usec = opts && opts->total_timeout_usec ? opts->total_timeout_usec : 15 * USEC_PER_SEC;
        if (opts && opts->ca_file && !(h->ca_file = strdup(opts->ca_file))) {
                http_free(h);
                return -ENOMEM;
        }

        h->multi = curl_multi_init();
        if (!h->multi) {
                http_free(h);
                return -ENOMEM;
        }
        /* Accuracy 1 µs: libcurl's timeouts are mostly "now" or a few ms, and
         * 0 would mean sd-event's default slack of 250 ms on every request. */
        r = sd_event_add_time(event, &h->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, http_on_timer, h);
        if (r < 0) {
                http_free(h);
                return r;
        }
        (void) sd_event_source_set_enabled(h->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_priority(h->timer, SD_EVENT_PRIORITY_IMPORTANT);

        curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
        *ret = h;
        return 0;
}

Http *http_free(Http *h) {
        if (!h)
                return NULL;
        while (h->requests)
                request_free(h->requests);
        if (h->multi)
                curl_multi_cleanup(h->multi);
        sd_event_source_disable_unref(h->timer);
        sd_event_unref(h->event);
        free(h->ca_file);
        free(h);
        return NULL;
}

unsigned http_in_flight(Http *h) {
        return h->n_requests;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        HttpRequest *req = userdata;
        size_t n = size * nmemb;

        if (req->body_in_len + n > HTTP_BODY_MAX) {
                req->too_large = true;
                return 0; /* aborts the transfer */
        }
        if (req->body_in_len + n + 1 > req->body_in_size) {
                size_t sz = req->body_in_size ? req->body_in_size * 2 : 4096;
                while (sz < req->body_in_len + n + 1)
                        sz *= 2;
                char *b = malloc(sz);
                if (!b)
                        return 0;
                if (req->body_in_len)
                        memcpy(b, req->body_in, req->body_in_len);
                erase_and_free(req->body_in);
                req->body_in = b;
                req->body_in_size = sz;
        }
        memcpy(req->body_in + req->body_in_len, data, n);
        req->body_in_len += n;
        req->body_in[req->body_in_len] = 0;
        return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        HttpRequest *req = userdata;
        size_t n = size * nmemb;
        static const char name[] = "retry-after:";

        if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
                char buf[32];
                size_t l = n - (sizeof name - 1);
                if (l >= sizeof buf)
                        l = sizeof buf - 1;
                memcpy(buf, data + sizeof name - 1, l);
                buf[l] = 0;
                char *end;
                long long v = strtoll(buf, &end, 10);
                /* Only the delta-seconds form; an HTTP date is ignored. */
                if (end != buf && v >= 0) {
                        while (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t')
                                end++;
                        if (*end == 0)
                                req->retry_after = v > 86400 ? 86400 : v;
                }
        }
        return n;
}

static int request_start(Http *h, const char *url, HttpDoneFn done, void *userdata, HttpRequest **ret,
                         HttpRequest **ret_req) {
        HttpRequest *req = calloc(1, sizeof *req);
        if (!req)
                return -ENOMEM;
        req->http = h;
        req->done = done;
        req->userdata = userdata;
        req->retry_after = -1;
        LIST_PREPEND(h->requests, req);
        h->n_requests++;

        req->easy = curl_easy_init();
        if (!req->easy) {
                request_free(req);
                return -ENOMEM;
        }
        CURL *e = req->easy;
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PRIVATE, req);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) (h->connect_timeout_usec / USEC_PER_MSEC));
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) (h->total_timeout_usec / USEC_PER_MSEC));
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "tokend/" PACKAGE_VERSION);
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) HTTP_BODY_MAX);
        /* Never CURLOPT_VERBOSE: it would print the Authorization header and token bodies. */
        if (h->ca_file)
                curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
        *ret_req = req;
        if (ret)
                *ret = req;
        return 0;
}

static int request_submit(HttpRequest *req, HttpRequest **ret) {
        if (curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers) != CURLE_OK ||
            curl_multi_add_handle(req->http->multi, req->easy) != CURLM_OK) {
                request_free(req);
                if (ret)
                        *ret = NULL;
                return -EIO;
        }
        return 0;
}

static int headers_add(HttpRequest *req, const char *h) {
        struct curl_slist *l = curl_slist_append(req->headers, h);
        if (!l)
                return -ENOMEM;
        req->headers = l;
        return 0;
}

int http_post_form(Http *h, const char *url, const char *body, const char *authorization, HttpDoneFn done,
                   void *userdata, HttpRequest **ret) {
        HttpRequest *req;
        int r = request_start(h, url, done, userdata, ret, &req);
        if (r < 0)
                return r;

        req->started = now_boottime_usec();
        req->body_out = secret_strdup(body);
        if (!req->body_out ||
            headers_add(req, "Content-Type: application/x-www-form-urlencoded") < 0 ||
            headers_add(req, "Accept: application/json") < 0) {
                request_free(req);
                if (ret)
                        *ret = NULL;
                return -ENOMEM;
        }
        if (authorization) {
                size_t n = strlen("Authorization: ") + strlen(authorization) + 1;
                _cleanup_erase_ char *hdr = malloc(n);
                if (!hdr || (snprintf(hdr, n, "Authorization: %s", authorization), headers_add(req, hdr) < 0)) {
                        request_free(req);
                        if (ret)
                                *ret = NULL;
                        return -ENOMEM;
                }
        }
        curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body_out);
        curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(req->body_out));
        return request_submit(req, ret);
}

int http_get(Http *h, const char *url, HttpDoneFn done, void *userdata, HttpRequest **ret) {
        HttpRequest *req;
        int r = request_start(h, url, done, userdata, ret, &req);
        if (r < 0)
                return r;
        if (headers_add(req, "Accept: application/json") < 0) {
                request_free(req);
                if (ret)
                        *ret = NULL;
                return -ENOMEM;
        }
        curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L);
        return request_submit(req, ret);
}
