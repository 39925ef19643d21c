/* SPDX-License-Identifier: MIT */
/* daemon/store-migrate.h: io.tokend.manager.MigrateStore, moving every
 * credential's secrets to another store backend. */
#pragma once

#include "manager.h"

/* Starts moving the secrets of every credential not yet in backend `to`:
 * write them there, read them back from its durable copy, record the new
 * place in the state file, and only then delete the old copies. Answers
 * `call` when done (moved: the number of credentials moved). Credentials
 * that fail stay where they were and keep working. */
int store_migrate_start(Manager *m, VarlinkCall *call, const char *to);
/* Drops a migration in progress (at exit), without answering. */
void store_migrate_free(Manager *m);
