/* store/schema.h - schema migrations (internal to the store). */
#ifndef FERRY_STORE_SCHEMA_H
#define FERRY_STORE_SCHEMA_H

#include "util/err.h"

struct store;

/* Bring the open database to STORE_SCHEMA_VERSION, refusing newer or foreign files. */
int store_schema_migrate(struct store *s, struct ferry_err *err);

#endif
