// SPDX-License-Identifier: MIT
/* The configuration file (GKeyFile) and its limits. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct db_config cfg;
	char err[256];

	db_config_init_default(&cfg);
	if (db_config_apply_data(&cfg, (const char *)data, size, err, sizeof(err)) == 0 &&
	    (cfg.limits.max_name_length == 0 || cfg.limits.max_name_length > 255))
		abort(); /* accepted values stay in their ranges */
	return 0;
}
