/* SPDX-License-Identifier: MIT */
/* daemon/discovery.h: asynchronous issuer discovery: OIDC
 * .well-known/openid-configuration first, then RFC 8414
 * .well-known/oauth-authorization-server. */
#pragma once

#include "http.h"
#include "oauth.h"

typedef struct Discovery Discovery;

/* Called once. On success `doc` is the parsed document (the callee may steal
 * its fields; it is cleaned up after the callback) and `reason` is NULL; on
 * failure `doc` is NULL and `reason` says why. The Discovery is freed after
 * the callback returns. */
typedef void (*DiscoveryDoneFn)(DiscoveryDocument *doc, const char *reason, void *userdata);

int discovery_start(Http *h, const char *issuer, DiscoveryDoneFn done, void *userdata, Discovery **ret);
/* Stops a discovery without calling its callback. Accepts NULL, returns NULL. */
Discovery *discovery_cancel(Discovery *d);
