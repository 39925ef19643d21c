/* SPDX-License-Identifier: MIT */
/* daemon/loopback.h: the loopback redirect listener of the authorization
 * code flow (RFC 8252 7.3): HTTP on 127.0.0.1 with a random port, answering
 * GET /callback until one request is accepted, then closing. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct Loopback Loopback;

typedef enum LoopbackVerdict {
        LOOPBACK_REJECT, /* answer 400 and keep listening */
        LOOPBACK_ACCEPT, /* answer 200, then stop listening and close every connection */
        LOOPBACK_FAIL,   /* answer 200 with the message, then stop like ACCEPT */
} LoopbackVerdict;

/* Called for each GET /callback with its query string (possibly ""). Sets
 * *ret_message to a short static text for the browser. Must not free the
 * Loopback. */
typedef LoopbackVerdict (*LoopbackRequestFn)(const char *query, const char **ret_message, void *userdata);

int loopback_new(sd_event *event, LoopbackRequestFn fn, void *userdata, Loopback **ret);
uint16_t loopback_port(Loopback *l);
bool loopback_done(Loopback *l); /* a request was accepted */
Loopback *loopback_free(Loopback *l);
