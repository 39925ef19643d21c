/* SPDX-License-Identifier: MIT */
/* daemon/api-agent.c: io.tokend.agent, the interface agents call. */
#include "audit.h"
#include "common/log.h"
#include "common/util.h"
#include "consent.h"
#include "credential.h"
#include "engine.h"
#include "manager.h"
#include "peer.h"
#include "policy.h"
#include "varlink-idl.h"

#define RESOURCE_MAX 2048U
#define MIN_TTL_MAX (366LL * 24 * 3600)

typedef struct GetTokenParams {
        const char *credential;
        json_object *scopes;
        const char *resource;
        int64_t min_ttl;
        bool has_min_ttl;
        bool as_owner;
        bool has_as_owner;
} GetTokenParams;

int api_parse_get_token(VarlinkCall *call, json_object *parameters, bool accept_as_owner, TokenRequest *ret) {
        static const VarlinkField fields[] = {
                { "credential", VARLINK_FIELD_STRING, offsetof(GetTokenParams, credential),
                  VARLINK_FIELD_REQUIRED | VARLINK_FIELD_NONEMPTY, CREDENTIAL_NAME_MAX, VARLINK_NO_PRESENT },
                { "scopes", VARLINK_FIELD_STRV, offsetof(GetTokenParams, scopes), 0, SCOPES_MAX, VARLINK_NO_PRESENT },
                { "resource", VARLINK_FIELD_STRING, offsetof(GetTokenParams, resource), VARLINK_FIELD_NONEMPTY,
                  RESOURCE_MAX, VARLINK_NO_PRESENT },
                { "min_ttl", VARLINK_FIELD_INT, offsetof(GetTokenParams, min_ttl), 0, 0,
                  offsetof(GetTokenParams, has_min_ttl) },
                { "as_owner", VARLINK_FIELD_BOOL, offsetof(GetTokenParams, as_owner), 0, 0,
                  offsetof(GetTokenParams, has_as_owner) },
                {},
        };
        GetTokenParams p = {};
        const char *bad = NULL;
        ScopeSet scopes = {};

        if (varlink_parse_parameters(parameters, fields, &p, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad), 0;
        if (p.has_as_owner && !accept_as_owner)
                /* Not a parameter of this method: named as any unknown one is. */
                return varlink_call_error_invalid_parameter(call, "as_owner"), 0;
        if (p.has_min_ttl && (p.min_ttl < 0 || p.min_ttl > MIN_TTL_MAX))
                return varlink_call_error_invalid_parameter(call, "min_ttl"), 0;
        if (p.scopes && scope_set_from_json(p.scopes, &scopes) < 0)
                return varlink_call_error_invalid_parameter(call, "scopes"), 0;
        if (p.resource) {
                const char *reason;
                if (oauth_check_url(p.resource, true, &reason) < 0) {
                        scope_set_done(&scopes);
                        return varlink_call_error_invalid_parameter(call, "resource"), 0;
                }
        }
        *ret = (TokenRequest) { .credential = p.credential, .scopes = scopes, .resource = p.resource,
                                .min_ttl = p.has_min_ttl ? p.min_ttl : -1, .as_owner = p.as_owner };
        return 1;
}

static int agent_get_token(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        TokenRequest t;
        (void) flags;

        int r = api_parse_get_token(call, parameters, true, &t);
        if (r <= 0)
                return r;
        /* "as_owner": the owner's tools (tokenctl) ask this way so that one
         * call serves both the owner and an agent running them, with no
         * WhoAmI first. Judged here, by the same rule as the manager
         * interface's, under the policy in force; for anyone else it changes
         * nothing, so an agent gains nothing by setting it. */
        if (t.as_owner && policy_is_manager_allowed(m->policy, audit_call_agent(call), m->owner_uid))
                return api_owner_get_token(m, call, &t);
        return consent_get_token(m, call, t.credential, &t.scopes, t.resource, t.min_ttl);
}

/* Like GetToken; the engine keeps the call as a subscriber once it has its
 * first token (engine.c). Needs "more" (checked by the Varlink server). */
static int agent_subscribe(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        TokenRequest t;
        /* Never oneway: without "more" the server answers ExpectedMore, and
         * "more" with "oneway" is a protocol error that closes the connection. */
        (void) flags;

        int r = api_parse_get_token(call, parameters, false, &t);
        if (r <= 0)
                return r;
        if (m->n_subscriptions >= SUBSCRIPTIONS_MAX) {
                scope_set_done(&t.scopes);
                json_object *p = json_object_new_object();
                if (p)
                        json_object_object_add(p, "max", json_object_new_int64(SUBSCRIPTIONS_MAX));
                return varlink_call_error(call, "io.tokend.agent.TooManySubscriptions", p);
        }
        return consent_get_token(m, call, t.credential, &t.scopes, t.resource, t.min_ttl);
}

static int agent_who_am_i(VarlinkCall *call, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        static const VarlinkField fields[] = { {} };
        const char *bad = NULL;
        (void) flags;

        if (varlink_parse_parameters(parameters, fields, NULL, &bad) < 0)
                return varlink_call_error_invalid_parameter(call, bad);
        /* Identified once, at connect (manager.c); a caller gone by then was
         * refused. The identity holds only while the pinned process lives
         * (its socket may have been handed on): a poll, no /proc read. */
        const PeerIdentity *id = audit_call_agent(call);
        if (!id || peer_exited(id))
                return varlink_call_error(call, "io.tokend.agent.CallerGone", NULL);
        Manager *m = userdata;
        json_object *o = peer_identity_to_json(id);
        if (!o)
                return -ENOMEM;
        json_object *pol = policy_agent_to_json(policy_match(m->policy, id));
        if (!pol) {
                json_object_put(o);
                return -ENOMEM;
        }
        json_object_object_add(o, "policy", pol);
        json_object_object_add(o, "manager",
                               json_object_new_boolean(policy_is_manager_allowed(m->policy, id, m->owner_uid)));
        return varlink_call_reply(call, o);
}

static const VarlinkMethod agent_methods[] = {
        { "GetToken", agent_get_token, 0 },
        { "Subscribe", agent_subscribe, VARLINK_METHOD_REQUIRES_MORE },
        { "WhoAmI", agent_who_am_i, 0 },
        {},
};

const VarlinkInterface agent_interface = {
        .name = "io.tokend.agent",
        .description = varlink_idl_io_tokend_agent,
        .methods = agent_methods,
};
