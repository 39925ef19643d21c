/* SPDX-License-Identifier: MIT */
/* client/tokenctl-consent.h: the owner's side of consent and policy:
 * "tokenctl pending", "watch", "approve", "deny", "grants", "reload" and
 * "whoami". Each takes the verb's argv (argv[0] is the verb) and returns an
 * exit code, after saying on stderr what went wrong. */
#pragma once

int tokenctl_pending(int argc, char *argv[]);
int tokenctl_watch(int argc, char *argv[]);
int tokenctl_approve(int argc, char *argv[]);
int tokenctl_deny(int argc, char *argv[]);
int tokenctl_grants(int argc, char *argv[]);
int tokenctl_reload(int argc, char *argv[]);
int tokenctl_whoami(int argc, char *argv[]);
