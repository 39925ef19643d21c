/* SPDX-License-Identifier: MIT */
/* lib/libtokend-internal.h: what tokenctl, which links libtokend statically,
 * uses beyond the public API. Not exported by libtokend.so (hidden, and not
 * in libtokend.sym), not installed. */
#pragma once

#include "tokend.h"
#include "varlink.h"

/* Hands c a connection to its daemon that the caller made, and may have
 * called methods on already (all of their replies taken): c's next call goes
 * over it, and c owns it from now on (a connection c had is closed). This
 * lets tokenctl ask WhoAmI and then GetToken on one connection, so that
 * tokend identifies the caller once. */
void tokend_client_adopt_connection(tokend_client *c, VarlinkClient *conn);
