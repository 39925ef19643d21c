/* SPDX-License-Identifier: MIT */
/* daemon/store.c: helpers shared by the store backends. */
#include "store.h"

static const char *const secret_kind_table[_SECRET_KIND_MAX] = {
        [SECRET_REFRESH_TOKEN] = "refresh_token",
        [SECRET_CLIENT_SECRET] = "client_secret",
};

const char *secret_kind_to_string(SecretKind k) {
        if (k < 0 || k >= _SECRET_KIND_MAX)
                return (const char *) 0;
        return secret_kind_table[k];
}
