/* SPDX-License-Identifier: MIT */
/* daemon/scopes.h: OAuth scope sets, kept sorted and free of duplicates so
 * that equal sets compare equal and make equal cache keys. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#define SCOPES_MAX 64U

typedef struct ScopeSet {
        char **items; /* sorted, unique */
        size_t n;
} ScopeSet;

void scope_set_done(ScopeSet *s);
/* Each scope token must be RFC 6749 scope-token characters. -EINVAL otherwise. */
bool scope_token_valid(const char *s);
int scope_set_add(ScopeSet *s, const char *scope);
int scope_set_from_string(const char *space_separated, ScopeSet *ret); /* RFC 6749 "scope" */
int scope_set_from_json(json_object *array, ScopeSet *ret);
int scope_set_copy(const ScopeSet *s, ScopeSet *ret);
char *scope_set_join(const ScopeSet *s); /* space-separated; "" for the empty set */
json_object *scope_set_to_json(const ScopeSet *s);
bool scope_set_equal(const ScopeSet *a, const ScopeSet *b);
/* True when every element of a is in b; otherwise fills *ret_missing (may be NULL) with those that are not. */
bool scope_set_is_subset(const ScopeSet *a, const ScopeSet *b, ScopeSet *ret_missing);
bool scope_set_contains(const ScopeSet *s, const char *scope);
