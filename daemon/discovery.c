/* SPDX-License-Identifier: MIT */
/* daemon/discovery.c: see discovery.h. */
#include "common/util.h"
#include "discovery.h"

struct Discovery {
        Http *http;
        char *issuer;
        char *fallback_url;
        HttpRequest *req;
        DiscoveryDoneFn done;
        void *userdata;
};

Discovery *discovery_cancel(Discovery *d) {
        if (!d)
                return NULL;
        http_request_cancel(d->req);
        free(d->issuer);
        free(d->fallback_url);
        free(d);
        return NULL;
}

static void discovery_on_response(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        Discovery *d = userdata;
        DiscoveryDocument doc = {};
        const char *reason = NULL;
        (void) req;

        d->req = NULL;
        if (resp->status == 200 && oauth_parse_discovery(resp->body, resp->body_len, d->issuer, &doc, &reason) >= 0) {
                d->done(&doc, NULL, d->userdata);
                discovery_document_done(&doc);
                discovery_cancel(d);
                return;
        }
        if (d->fallback_url) {
                _cleanup_free_ char *url = TAKE_PTR(d->fallback_url);
                if (http_get(d->http, url, discovery_on_response, d, &d->req) >= 0)
                        return;
        }
        if (!reason)
                reason = resp->curl_error ?: (resp->status == 200 ? "malformed discovery document"
                                                                  : "no discovery document at the issuer");
        d->done(NULL, reason, d->userdata);
        discovery_cancel(d);
}

int discovery_start(Http *h, const char *issuer, DiscoveryDoneFn done, void *userdata, Discovery **ret) {
        _cleanup_free_ char *oidc = NULL;
        Discovery *d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        *d = (Discovery) { .http = h, .done = done, .userdata = userdata };
        int r = -ENOMEM;
        if (!(d->issuer = strdup(issuer)) || (r = oauth_discovery_urls(issuer, &oidc, &d->fallback_url)) < 0 ||
            (r = http_get(h, oidc, discovery_on_response, d, &d->req)) < 0) {
                discovery_cancel(d);
                return r;
        }
        *ret = d;
        return 0;
}
