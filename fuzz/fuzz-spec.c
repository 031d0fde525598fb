// SPDX-License-Identifier: MIT
/* The a{sv} arguments clients send: Allocate's spec, Export's info, Share's options. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz-message.h"
#include "registry.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct db_registry *reg;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	struct db_alloc_plan plan;
	struct db_share_opts opts;
	struct db_layout layout;
	const char *name;

	if (!reg) {
		struct db_limits l;

		db_limits_init_default(&l);
		reg = db_registry_new(&l);
	}
	if (size < 1 || fuzz_dict_message(data + 1, size - 1, &m) < 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		if (db_spec_parse_alloc(m, reg, &plan, &error) >= 0 &&
		    (plan.size == 0 || plan.size > db_registry_limits(reg)->max_buffer_size + 4096))
			abort(); /* a plan the daemon would act on must be within limits */
		break;
	case 1:
		if (db_spec_parse_export(m, reg, 1u << 20, &layout, &name, &error) >= 0 &&
		    db_layout_validate(&layout, 1u << 20) < 0)
			abort(); /* an accepted layout fits the buffer */
		break;
	default:
		db_spec_parse_share(m, 1000000, &opts, &error);
		break;
	}
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	return 0;
}
