/* SPDX-License-Identifier: MIT */
/* daemon/peer.h: who is calling, from the kernel only: peer credentials, a
 * pidfd pinning the process, and what /proc says about that process, read
 * race-free (the pidfd is checked after /proc, so a recycled PID never passes
 * as another process). Nothing the caller says about itself counts. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "varlink.h"

#define PEER_COMM_MAX 16

typedef struct PeerIdentity {
        uid_t uid;
        gid_t gid;
        pid_t pid;
        int pidfd;       /* owned; -1 when the kernel gave none */
        char *exe;       /* resolved executable path; " (deleted)" suffix kept as the kernel says */
        char comm[PEER_COMM_MAX + 1];
        char *cgroup;    /* unified hierarchy path, e.g. /user.slice/.../app.slice/foo.service */
        char *unit;      /* systemd unit (user unit first, then system unit), NULL when none */
        bool user_unit;  /* unit is a user unit */
} PeerIdentity;

void peer_identity_done(PeerIdentity *p);

/* Identifies the peer of a connection. Takes a duplicate of the connection's
 * pidfd. -ESRCH when the process is gone (or its PID was recycled) before
 * the identity could be read reliably. */
int peer_identify(const VarlinkPeer *peer, PeerIdentity *ret);

/* Whether the process behind the pidfd has exited (poll on the pidfd). */
bool peer_exited(const PeerIdentity *p);

json_object *peer_identity_to_json(const PeerIdentity *p);
