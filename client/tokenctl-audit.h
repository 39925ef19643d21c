/* SPDX-License-Identifier: MIT */
/* client/tokenctl-audit.h: "tokenctl audit", reading tokend's audit trail
 * back from the journal and from the fallback file. */
#pragma once

#include <stdbool.h>

typedef struct JournalApi JournalApi;

/* Loads libsystemd.so.0 (tokenctl does not link it) and looks up the
 * sd-journal functions "tokenctl audit" uses. 0, or -EOPNOTSUPP after saying
 * on stderr why (the library is missing, or lacks one of them); *ret is
 * written only on success. Defined weak, so that a test program can put a
 * stub in its place: the fuzz targets run "audit" without the host's journal
 * with one that fails. */
int tokenctl_audit_journal_load(JournalApi *ret);

/* argv[0] is "audit". json: print one JSON object per line. Returns an exit code. */
int tokenctl_audit(int argc, char *argv[], bool json);
