// SPDX-License-Identifier: MIT
/*
 * The kernel's attachment report in fdinfo, which the daemon parses. The input is read twice:
 * as a whole fdinfo text (parses or fails cleanly), and as the name a holder set with
 * DMA_BUF_SET_NAME (newlines and report text included) after a report the kernel wrote, where
 * the view must be the kernel's, whatever the name holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernel-view.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const reports[] = {
	("size:\t4096\ncount:\t1\nexp_name:\tudmabuf\nexp_dynamic:\t0\nattachments:\t1\n"
	 "attachment:\timporter_dynamic=0 pinned=0 peer2peer=0 cached=1 dev=vgem\n"),
	"size:\t4096\ncount:\t2\nexp_name:\tudmabuf\nexp_dynamic:\t1\nattachments:\tbusy\n",
	"size:\t4096\ncount:\t3\nexp_name:\tudmabuf\n",
};

static bool same_view(const struct db_kernel_view *a, const struct db_kernel_view *b)
{
	return a->file_count == b->file_count && a->available == b->available &&
	       a->busy == b->busy && a->exp_dynamic == b->exp_dynamic &&
	       a->n_attachments == b->n_attachments && a->n_reported == b->n_reported &&
	       memcmp(a->attachments, b->attachments,
		      a->n_attachments * sizeof(a->attachments[0])) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct db_kernel_view v, w;

	if (db_kernel_view_parse((const char *)data, size, &v) == 0 &&
	    v.n_attachments > DB_KERNEL_VIEW_MAX_ATTACHMENTS)
		abort();

	for (size_t i = 0; i < sizeof(reports) / sizeof(reports[0]); i++) {
		size_t len = strlen(reports[i]);
		char *text = malloc(len + 6 + size + 1);

		if (!text)
			return 0;
		memcpy(text, reports[i], len);
		memcpy(text + len, "name:\t", 6);
		memcpy(text + len + 6, data, size);
		text[len + 6 + size] = '\n';
		memset(&v, 0, sizeof(v));
		memset(&w, 0, sizeof(w));
		if (db_kernel_view_parse(reports[i], len, &v) != 0 ||
		    db_kernel_view_parse(text, len + 6 + size + 1, &w) != 0 || !same_view(&v, &w))
			abort();
		free(text);
	}
	return 0;
}
