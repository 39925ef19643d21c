/* SPDX-License-Identifier: MIT */
/* client/tokenctl-exec.h: "tokenctl exec NAME [--env VAR] [--scope S]...
 * [--resource URI] [--min-ttl SECONDS] -- CMD [ARG]...": runs CMD in place of
 * tokenctl with an access token in its environment, never on a command line. */
#pragma once

/* The variable that holds the token when --env is not given; VAR_EXPIRES_AT
 * (here TOKEND_TOKEN_EXPIRES_AT) holds its expiry. */
#define EXEC_ENV_DEFAULT "TOKEND_TOKEN"
/* The longest name --env takes. */
#define EXEC_ENV_NAME_MAX 128U
/* Exit codes when CMD cannot be run (as env(1) and shells use them). */
#define EXIT_EXEC_CANNOT_RUN 126
#define EXIT_EXEC_NOT_FOUND 127

/* Does not return when CMD runs: its exit status and signals are CMD's.
 * Otherwise returns tokenctl's exit code (no token could be had, or a usage
 * error; CMD was not run), or 127 (CMD not found) or 126 (found, but it
 * cannot be run), after saying why on stderr. argv[0] is the verb. */
int tokenctl_exec(int argc, char *argv[]);
