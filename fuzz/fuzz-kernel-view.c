// SPDX-License-Identifier: MIT
/* The kernel's attachment report in fdinfo, which the daemon parses. */
#include <stdint.h>
#include <stdlib.h>

#include "kernel-view.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct db_kernel_view v;

	if (db_kernel_view_parse((const char *)data, size, &v) == 0 &&
	    v.n_attachments > DB_KERNEL_VIEW_MAX_ATTACHMENTS)
		abort();
	return 0;
}
