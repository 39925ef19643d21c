/* SPDX-License-Identifier: MIT */
/* client/tokenctl-audit.h: "tokenctl audit", reading tokend's audit trail
 * back from the journal and from the fallback file. */
#pragma once

#include <stdbool.h>

/* The journalctl that "tokenctl audit" runs to read the journal (the
 * build's, found at configure time). Defined weak, so that a test program
 * can put a stub in its place: the fuzz targets run "audit" without the
 * host's journal with one that returns NULL (no journal). */
const char *tokenctl_audit_journalctl(void);

/* argv[0] is "audit". json: print one JSON object per line. Returns an exit code. */
int tokenctl_audit(int argc, char *argv[], bool json);
