/* SPDX-License-Identifier: MIT */
/* client/tokenctl-credential.h: "tokenctl credential-helper NAME --host HOST
 * [--host HOST]... [--username USER] [--scope S]... [--resource URI]
 * [--min-ttl SECONDS] get|store|erase", a git credential helper
 * (gitcredentials(7)) that answers "get" for https://HOST with a fresh access
 * token of credential NAME, and stores and erases nothing: tokend owns the
 * tokens. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The username "get" answers with when --username is not given. GitHub takes
 * any non-empty username with an OAuth token; GitLab wants "oauth2". */
#define CREDENTIAL_USERNAME_DEFAULT "x-access-token"
/* Caps on what git writes on standard input: bytes per line (without the
 * newline) and in all. git's own lines stay far below. */
#define CREDENTIAL_LINE_MAX (64U * 1024U)
#define CREDENTIAL_INPUT_MAX (1024U * 1024U)
/* Caps on the command line. */
#define CREDENTIAL_HOSTS_MAX 16U
#define CREDENTIAL_HOST_LEN_MAX 261U /* 253 for a name, ":65535" */
#define CREDENTIAL_USERNAME_MAX 256U

/* What the helper reads of git's description; everything else, a password
 * included, is read past and wiped. */
typedef struct CredentialInput {
        char *protocol;
        char *host;
        char *username;
} CredentialInput;

/* Frees the strings; leaves in empty. */
void tokenctl_credential_input_done(CredentialInput *in);

/* Reads git's description from fd up to a blank line or end of file: lines of
 * key=value (a trailing \r is dropped), at most CREDENTIAL_LINE_MAX bytes each
 * and CREDENTIAL_INPUT_MAX in all, no NUL byte; a later value of a key
 * replaces an earlier one. 0 and *ret filled (fields absent: NULL);
 * -EBADMSG, -E2BIG or another negative errno after saying why on stderr
 * (never showing the input), *ret then empty. */
int tokenctl_credential_input_read(int fd, CredentialInput *ret);

/* Whether git's host (HOST or HOST:PORT, as git sends it) is one of hosts:
 * exactly, ASCII letters compared without case. */
bool tokenctl_credential_host_match(const char *host, char *const *hosts, size_t n_hosts);

/* The verb. argv[0] is the verb. An operation other than get, store or erase
 * is ignored, as gitcredentials(7) asks. */
int tokenctl_credential_helper(int argc, char *argv[]);
