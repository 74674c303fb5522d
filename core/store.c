/*
 * store.c - what every backend of the store shares: telling them apart.
 */
#include <string.h>

#include "store.h"

enum store_scheme store_scheme(const char *name)
{
	static const char *const postgres[] = { "postgresql://", "postgres://" };

	for (size_t i = 0; i < sizeof(postgres) / sizeof(postgres[0]); i++)
		if (strncmp(name, postgres[i], strlen(postgres[i])) == 0)
			return STORE_SCHEME_POSTGRES;
	return STORE_SCHEME_SQLITE;
}
