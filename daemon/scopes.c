/* SPDX-License-Identifier: MIT */
/* daemon/scopes.c: see scopes.h. */
#include "common/util.h"
#include "scopes.h"

void scope_set_done(ScopeSet *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->items[i]);
        free(s->items);
        *s = (ScopeSet) {};
}

bool scope_token_valid(const char *s) {
        if (isempty(s) || strlen(s) > 256)
                return false;
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
                        return false;
        }
        return true;
}

static size_t scope_set_find(const ScopeSet *s, const char *scope, bool *found) {
        size_t lo = 0, hi = s->n;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int c = strcmp(s->items[mid], scope);
                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

bool scope_set_contains(const ScopeSet *s, const char *scope) {
        bool found;
        scope_set_find(s, scope, &found);
        return found;
}

int scope_set_add(ScopeSet *s, const char *scope) {
        bool found;
        if (!scope_token_valid(scope))
                return -EINVAL;
        size_t at = scope_set_find(s, scope, &found);
        if (found)
                return 0;
        if (s->n >= SCOPES_MAX)
                return -E2BIG;
        char *d = strdup(scope);
        if (!d)
                return -ENOMEM;
        char **n = realloc(s->items, (s->n + 1) * sizeof *n);
        if (!n) {
                free(d);
                return -ENOMEM;
        }
        s->items = n;
        memmove(n + at + 1, n + at, (s->n - at) * sizeof *n);
        n[at] = d;
        s->n++;
        return 0;
}

int scope_set_from_string(const char *str, ScopeSet *ret) {
        ScopeSet s = {};
        const char *p = str;
        int r;

        while (*p) {
                size_t l = strcspn(p, " ");
                if (l > 0) {
                        char buf[257];
                        if (l >= sizeof buf) {
                                scope_set_done(&s);
                                return -EINVAL;
                        }
                        memcpy(buf, p, l);
                        buf[l] = 0;
                        r = scope_set_add(&s, buf);
                        if (r < 0) {
                                scope_set_done(&s);
                                return r;
                        }
                }
                p += l;
                while (*p == ' ')
                        p++;
        }
        *ret = s;
        return 0;
}

int scope_set_from_json(json_object *array, ScopeSet *ret) {
        ScopeSet s = {};
        if (!json_object_is_type(array, json_type_array))
                return -EINVAL;
        for (size_t i = 0; i < json_object_array_length(array); i++) {
                json_object *e = json_object_array_get_idx(array, i);
                int r = json_object_is_type(e, json_type_string) ? scope_set_add(&s, json_object_get_string(e)) : -EINVAL;
                if (r < 0) {
                        scope_set_done(&s);
                        return r;
                }
        }
        *ret = s;
        return 0;
}

int scope_set_copy(const ScopeSet *s, ScopeSet *ret) {
        /* s is a set already (valid, sorted, no duplicates): copied as it is. */
        ScopeSet c = {};
        if (s->n > 0) {
                c.items = calloc(s->n, sizeof *c.items);
                if (!c.items)
                        return -ENOMEM;
                for (; c.n < s->n; c.n++)
                        if (!(c.items[c.n] = strdup(s->items[c.n]))) {
                                scope_set_done(&c);
                                return -ENOMEM;
                        }
        }
        *ret = c;
        return 0;
}

char *scope_set_join(const ScopeSet *s) {
        size_t len = 1;
        for (size_t i = 0; i < s->n; i++)
                len += strlen(s->items[i]) + 1;
        char *r = malloc(len), *p = r;
        if (!r)
                return NULL;
        *p = 0;
        for (size_t i = 0; i < s->n; i++) {
                if (i > 0)
                        *p++ = ' ';
                p = stpcpy(p, s->items[i]);
        }
        return r;
}

json_object *scope_set_to_json(const ScopeSet *s) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < s->n; i++)
                json_object_array_add(a, json_object_new_string(s->items[i]));
        return a;
}

bool scope_set_equal(const ScopeSet *a, const ScopeSet *b) {
        if (a->n != b->n)
                return false;
        for (size_t i = 0; i < a->n; i++)
                if (!streq(a->items[i], b->items[i]))
                        return false;
        return true;
}

bool scope_set_is_subset(const ScopeSet *a, const ScopeSet *b, ScopeSet *ret_missing) {
        bool ok = true;
        for (size_t i = 0; i < a->n; i++)
                if (!scope_set_contains(b, a->items[i])) {
                        ok = false;
                        if (ret_missing)
                                (void) scope_set_add(ret_missing, a->items[i]);
                }
        return ok;
}
