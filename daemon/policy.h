/* SPDX-License-Identifier: MIT */
/* daemon/policy.h: which agent is calling and what it may do. Drop-in files
 * (*.conf, systemd-style INI) map selectors on the caller's kernel identity
 * (unit, exe, uid, cgroup) to a mode (allow, ask, deny), a consent duration,
 * a token lifetime cap, and per credential the widest scopes and the RFC 8707
 * resources the agent may get ([Credential *]: every credential without a
 * section of its own; Resources=*: any resource). docs/policy.md documents
 * the format.
 *
 * Parsing is strict and all-or-nothing: any error fails the whole load with
 * "PATH:LINE: why" and no policy, so a broken file never widens access; the
 * caller keeps the policy it had (see policy_new_failsafe() for the first
 * load). No I/O besides reading the directory; no logging above debug. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "common/util.h"
#include "peer.h"
#include "scopes.h"

#define POLICY_FILE_MAX (64U * 1024U)
#define POLICY_LINE_MAX 4096U
#define POLICY_FILES_MAX 256U
#define POLICY_AGENTS_MAX 256U
#define POLICY_CREDENTIALS_MAX 64U /* [Credential] sections per agent, [Credential *] included */
#define POLICY_RESOURCES_MAX 16U   /* Resources= entries per [Credential] */
#define POLICY_NAME_MAX 64U

#define POLICY_CONSENT_DEFAULT_USEC (8 * 3600 * USEC_PER_SEC)
#define POLICY_DURATION_MAX_USEC (30 * 24 * 3600 * USEC_PER_SEC)

typedef enum PolicyMode {
        POLICY_ALLOW,
        POLICY_ASK,
        POLICY_DENY,
        _POLICY_MODE_MAX,
        _POLICY_MODE_INVALID = -1,
} PolicyMode;

typedef struct Policy Policy;
typedef struct PolicyAgent PolicyAgent;

const char *policy_mode_to_string(PolicyMode m);
PolicyMode policy_mode_from_string(const char *s);

/* A policy without agents: every caller is unknown, so gets `ask`. What a
 * daemon without a policy directory runs with. NULL when out of memory. */
Policy *policy_new_default(void);

/* Like the default policy, and in addition policy_is_manager_allowed() is
 * false for everyone. For a daemon whose first load failed: without the
 * broken file it cannot tell agents of the owner's uid from the owner, so it
 * must not let any of them approve. A successful reload replaces it. */
Policy *policy_new_failsafe(void);

Policy *policy_free(Policy *p);
static inline void policy_freep(Policy **p) {
        policy_free(*p);
}
#define _cleanup_policy_ _cleanup_(policy_freep)

/* Whether p is the failsafe policy. */
bool policy_is_failsafe(const Policy *p);
size_t policy_n_agents(const Policy *p);

/* Parses one file's text and appends its agents to p. `path` names the file
 * in messages. On failure returns -EINVAL (a bad file), -EFBIG (over
 * POLICY_FILE_MAX), -E2BIG (over a count limit) or -ENOMEM, sets *ret_error
 * (may be NULL; NULL too when out of memory) to "PATH:LINE: why", and leaves
 * p as it was. Agent names must be unique across p. */
int policy_parse_file(Policy *p, const char *path, const char *text, size_t len, char **ret_error);

/* Loads every *.conf in dir (not starting with '.') in lexical (byte) order.
 * A missing directory gives the default policy. The directory and each file
 * must be owned by the effective uid or root and not writable by group or
 * others. Any error: a negative errno, *ret_error as above, and no policy. */
int policy_load_dir(const char *dir, Policy **ret, char **ret_error);

/* The first agent, in file order then section order, whose selectors all
 * match id; a selector on a field that is NULL in id does not match. NULL:
 * an unknown caller (mode ask). The agent is owned by p and valid until p is
 * freed: keep its name, not the pointer, across a reload. */
const PolicyAgent *policy_match(const Policy *p, const PeerIdentity *id);

/* Whether id may use the manager interface: only the owner's uid, and only
 * when no agent matches it, so that an agent can never approve itself.
 * False for everyone under the failsafe policy or when p is NULL. */
bool policy_is_manager_allowed(const Policy *p, const PeerIdentity *id, uid_t owner);

/* Checks a token request of agent a (NULL: an unknown caller) against the
 * policy. `requested` may be NULL or empty (the agent named no scopes);
 * `credential_scopes` (what the credential holds) may be NULL or empty when
 * the provider never said; `resource` may be NULL.
 *
 * The agent's section for the credential is its [Credential NAME], wherever
 * written, else its [Credential *]; without either the credential is not
 * allowed. A resource must be listed in that section's Resources=, or it
 * says Resources=* (any). The allowed set is that section's Scopes= (Scopes=*:
 * all the credential holds) intersected with the credential's scopes when
 * known.
 * An unknown caller may use any credential, any resource and all its scopes
 * (its gate is the owner's consent). Returns 0 and *ret_effective (may be
 * NULL) = the requested scopes when they are a subset of the allowed set, or
 * the allowed set when none were requested; an empty result means "send no
 * scope", i.e. all the credential holds, and only happens for Scopes=* or an
 * unknown caller.
 *
 * Returns -EPERM and *ret_why (may be NULL) = a reason for people when the
 * agent's mode is deny, the credential, the resource or a requested scope is
 * not allowed, or nothing is left to ask for. For the scope refusals,
 * *ret_effective is also set, to the allowed set, so the caller can say what
 * was allowed. Initialize *ret_effective to {} and always release it.
 * -ENOMEM when out of memory (nothing set). */
int policy_check_request(const PolicyAgent *a, const char *credential, const ScopeSet *requested,
                         const ScopeSet *credential_scopes, const char *resource, ScopeSet *ret_effective,
                         char **ret_why);

/* Accessors. All accept NULL, the unknown caller: no name, file or line,
 * mode ask, the default consent duration (8h), no lifetime cap (0). */
const char *policy_agent_name(const PolicyAgent *a);
PolicyMode policy_agent_mode(const PolicyAgent *a);
const char *policy_agent_file(const PolicyAgent *a);
unsigned policy_agent_line(const PolicyAgent *a);
uint64_t policy_agent_consent_usec(const PolicyAgent *a);
uint64_t policy_agent_max_lifetime_usec(const PolicyAgent *a);

/* How the policy sees an agent, for WhoAmI: name, mode, file, line,
 * consent_duration and max_lifetime (seconds; the latter omitted when
 * none), the selectors given, and the credentials in the order written, with
 * their scopes and resources ("*" for all or any; [Credential *] is a
 * credential named "*"). For NULL (unknown caller) only mode and
 * consent_duration. NULL when out of memory. */
json_object *policy_agent_to_json(const PolicyAgent *a);
