/* SPDX-License-Identifier: MIT */
/* client/tokenctl-audit.h: "tokenctl audit", reading tokend's audit trail
 * back from the journal and from the fallback file. */
#pragma once

#include <stdbool.h>

/* argv[0] is "audit". json: print one JSON object per line. Returns an exit code. */
int tokenctl_audit(int argc, char *argv[], bool json);
