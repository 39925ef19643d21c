/* SPDX-License-Identifier: MIT */
/* daemon/provider.h: provider presets, the JSON data files in providers/ that
 * say how to log in to GitHub, Google, Microsoft Entra ID, GitLab or any OIDC
 * issuer. Parsing is strict: unknown fields, wrong types, duplicate keys and
 * plain-http URLs are errors, and every message names the file and the field.
 * providers/README.md documents the format. No network I/O here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"
#include "oauth.h"
#include "scopes.h"

#define PROVIDER_FILE_MAX (64U * 1024U)
#define PROVIDER_NAME_MAX 32U
#define PROVIDER_DESCRIPTION_MAX 256U
#define PROVIDER_NOTES_MAX 2048U
#define PROVIDER_PARAMS_MAX 16U
#define PROVIDER_PARAM_KEY_MAX 64U
#define PROVIDER_PARAM_VALUE_MAX 256U
#define PROVIDER_DOCS_MAX 16U
#define PROVIDER_TENANT_MAX 64U

typedef enum ProviderFlow {
        PROVIDER_FLOW_DEVICE = 1U << 0,    /* RFC 8628 device authorization grant */
        PROVIDER_FLOW_AUTH_CODE = 1U << 1, /* authorization code, loopback redirect (RFC 8252) */
} ProviderFlow;

typedef struct ProviderParam {
        char *key;
        char *value;
} ProviderParam;

typedef struct ProviderPreset {
        char *path; /* where it was parsed from; prefixes every error message */
        char *name;
        char *description;
        /* NULL when the provider has none (GitHub) or the user must give one
         * (the generic "oidc" preset); see provider_preset_set_issuer(). */
        char *issuer;
        /* Each NULL when absent. With discovery on, a discovered endpoint
         * wins and these are fallbacks; with it off they are the only source. */
        char *authorization_endpoint;
        char *token_endpoint;
        char *device_authorization_endpoint;
        char *revocation_endpoint;
        bool discovery;
        unsigned flows; /* ProviderFlow bits, at least one */
        ScopeSet default_scopes;
        bool offline_access_scope; /* add "offline_access" to get a refresh token */
        bool prompt_consent;       /* send prompt=consent with the authorization request */
        ProviderParam *extra_authorization_params;
        size_t n_extra_authorization_params;
        bool pkce;
        char *notes; /* may be NULL */
        OAuthAuthMethod auth_method;
        bool tenant;          /* the URLs contain {tenant} */
        char *default_tenant; /* NULL when there is none */
        char **docs;
        size_t n_docs;
} ProviderPreset;

ProviderPreset *provider_preset_free(ProviderPreset *p);
static inline void provider_preset_freep(ProviderPreset **p) {
        provider_preset_free(*p);
}
#define _cleanup_provider_preset_ _cleanup_(provider_preset_freep)

/* Checks a preset name: 1 to 32 characters of [a-z0-9-], not starting with '-'. */
bool provider_name_valid(const char *name);

/* Checks a tenant: 1 to 64 characters of [A-Za-z0-9.-], and not "." or "..". */
bool provider_tenant_valid(const char *tenant);

/* Parses and validates one preset. `path` is used in messages only. URLs must
 * be https; plain http to a loopback host is accepted only with
 * allow_insecure_loopback (test presets). On failure returns a negative errno
 * (-EINVAL for a bad preset, -EFBIG when over PROVIDER_FILE_MAX, -ENOMEM) and,
 * when ret_error is not NULL, sets *ret_error to a malloc'd message of the
 * form "PATH: FIELD: why" (NULL only when even that allocation failed). */
int provider_preset_parse(const char *path, const char *text, size_t len, bool allow_insecure_loopback,
                          ProviderPreset **ret, char **ret_error);

/* Looks for NAME.json in each of `dirs` (NULL-terminated) in order; the first
 * file that exists wins, and a broken file is an error, not a reason to look
 * further. The name is checked with provider_name_valid() first, and the
 * file's "name" must equal it. -ENOENT (with a message listing the
 * directories) when no directory has it. */
int provider_preset_load(const char *name, const char *const *dirs, bool allow_insecure_loopback,
                         ProviderPreset **ret, char **ret_error);

/* The preset directories in lookup order, NULL-terminated: the user's
 * $XDG_CONFIG_HOME/tokend/providers ($HOME/.config/tokend/providers when
 * XDG_CONFIG_HOME is unset or not absolute; left out when HOME is not
 * absolute either), then `system_dir` (PROVIDERS_DIR from config.h for the
 * installed presets). Free the result with provider_dirs_free(). */
int provider_default_dirs(const char *system_dir, char ***ret);
char **provider_dirs_free(char **dirs);

/* Substitutes {tenant} in the issuer and every endpoint, with `tenant` or,
 * when it is NULL, the preset's default_tenant. A preset without {tenant}
 * refuses a tenant. On failure the preset is unchanged. */
int provider_preset_expand_tenant(ProviderPreset *p, const char *tenant, char **ret_error);

/* Sets the issuer (the user's --issuer: a self-managed GitLab, the generic
 * OIDC preset) and expands a leading {issuer} in the endpoints. Only for
 * presets that use discovery or {issuer}; GitHub's fixed endpoints refuse it.
 * With issuer NULL, the preset's own issuer is used to expand {issuer}.
 * On failure the preset is unchanged. */
int provider_preset_set_issuer(ProviderPreset *p, const char *issuer, bool allow_insecure_loopback,
                               char **ret_error);

/* 0 when the preset is ready to use: no placeholder left, and an issuer when
 * discovery is on. Otherwise -EINVAL and a message saying what is missing
 * (a tenant, an issuer). */
int provider_preset_check_complete(const ProviderPreset *p, char **ret_error);
