/* SPDX-License-Identifier: MIT */
/* daemon/login.h: logins run by the daemon (device flow, auth code + PKCE). */
#pragma once

#include <json-c/json.h>

#include "manager.h"
#include "varlink.h"

/* Answers an io.tokend.manager.Login call (called with "more"): streams
 * progress, ends with the credential or a named error. */
int login_start(Manager *m, VarlinkCall *call, json_object *parameters);
/* A login for this credential name is in progress. */
bool login_name_busy(Manager *m, const char *name);
