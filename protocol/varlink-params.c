/* SPDX-License-Identifier: MIT */
/* protocol/varlink-params.c: table-driven parsing of call parameters. */
#include "common/util.h"
#include "varlink.h"

#define STRV_ELEMENT_MAX 256U

static const VarlinkField *field_find(const VarlinkField fields[], const char *name) {
        for (const VarlinkField *f = fields; f->name; f++)
                if (streq(f->name, name))
                        return f;
        return NULL;
}

static int field_parse(const VarlinkField *f, json_object *v, void *out) {
        char *dest = (char *) out + f->offset;

        switch (f->type) {
        case VARLINK_FIELD_STRING: {
                if (!json_object_is_type(v, json_type_string))
                        return -EINVAL;
                size_t len = (size_t) json_object_get_string_len(v);
                const char *s = json_object_get_string(v);
                if (strlen(s) != len) /* embedded NUL */
                        return -EINVAL;
                if ((f->flags & VARLINK_FIELD_NONEMPTY) && len == 0)
                        return -EINVAL;
                if (f->max > 0 && len > f->max)
                        return -EINVAL;
                *(const char **) dest = s;
                return 0;
        }
        case VARLINK_FIELD_INT: {
                if (!json_object_is_type(v, json_type_int))
                        return -EINVAL;
                errno = 0;
                int64_t i = json_object_get_int64(v);
                if (errno != 0)
                        return -EINVAL;
                /* json-c clamps values beyond int64 range and saturates uint64 above INT64_MAX. */
                if (json_object_get_uint64(v) > (uint64_t) INT64_MAX && i >= 0)
                        return -EINVAL;
                /* Below the range it clamps to INT64_MIN without a trace: that value
                 * cannot be told apart from an overflow, so it is refused. */
                if (i == INT64_MIN)
                        return -EINVAL;
                *(int64_t *) dest = i;
                return 0;
        }
        case VARLINK_FIELD_BOOL:
                if (!json_object_is_type(v, json_type_boolean))
                        return -EINVAL;
                *(bool *) dest = json_object_get_boolean(v);
                return 0;
        case VARLINK_FIELD_STRV: {
                if (!json_object_is_type(v, json_type_array))
                        return -EINVAL;
                size_t n = json_object_array_length(v);
                if ((f->flags & VARLINK_FIELD_NONEMPTY) && n == 0)
                        return -EINVAL;
                if (f->max > 0 && n > f->max)
                        return -EINVAL;
                for (size_t i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(v, i);
                        if (!json_object_is_type(e, json_type_string))
                                return -EINVAL;
                        size_t len = (size_t) json_object_get_string_len(e);
                        if (len == 0 || len > STRV_ELEMENT_MAX || strlen(json_object_get_string(e)) != len)
                                return -EINVAL;
                }
                *(json_object **) dest = v;
                return 0;
        }
        }
        return -EINVAL;
}

int varlink_parse_parameters(json_object *parameters, const VarlinkField fields[], void *out,
                             const char **ret_bad_field) {
        json_object_object_foreach(parameters, key, val) {
                const VarlinkField *f = field_find(fields, key);
                if (!f) {
                        *ret_bad_field = key;
                        return -EINVAL;
                }
                if (json_object_is_type(val, json_type_null))
                        continue;
                if (field_parse(f, val, out) < 0) {
                        *ret_bad_field = f->name;
                        return -EINVAL;
                }
                if (f->present_offset != VARLINK_NO_PRESENT)
                        *(bool *) ((char *) out + f->present_offset) = true;
        }

        for (const VarlinkField *f = fields; f->name; f++) {
                json_object *v;
                if (!(f->flags & VARLINK_FIELD_REQUIRED))
                        continue;
                if (!json_object_object_get_ex(parameters, f->name, &v) || json_object_is_type(v, json_type_null)) {
                        *ret_bad_field = f->name;
                        return -EINVAL;
                }
        }
        return 0;
}

json_object *varlink_params_kv(const char *k1, const char *v1, const char *k2, const char *v2) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        if (k1 && v1)
                json_object_object_add(p, k1, json_object_new_string(v1));
        if (k2 && v2)
                json_object_object_add(p, k2, json_object_new_string(v2));
        return p;
}
