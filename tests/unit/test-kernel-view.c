// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "kernel-view.h"
#include "tap.h"

static int parse(const char *s, struct db_kernel_view *v)
{
	return db_kernel_view_parse(s, strlen(s), v);
}

int main(void)
{
	struct db_kernel_view v;

	tap_is(parse("pos:\t0\nflags:\t02\nsize:\t4096\ncount:\t1\nexp_name:\tudmabuf\n", &v), 0,
	       "a stock kernel's fdinfo parses");
	tap_ok(!v.available, "and reports nothing");
	tap_is(parse("size:\t4096\nexp_name:\tudmabuf\nexp_dynamic:\t1\nattachments:\t2\n"
		     "attachment:\timporter_dynamic=0 cached=1 dev=vgem\n"
		     "attachment:\timporter_dynamic=1 cached=0 dev=0000:03:00.0\n",
		     &v),
	       0, "a patched kernel's report parses");
	tap_ok(v.available && v.exp_dynamic, "exporter dynamic");
	tap_is(v.n_attachments, 2, "two attachments");
	tap_is(v.n_reported, 2, "the kernel's count");
	tap_ok(!v.attachments[0].importer_dynamic && v.attachments[0].cached,
	       "vgem: static, cached");
	tap_ok(strcmp(v.attachments[0].dev, "vgem") == 0, "device name");
	tap_ok(v.attachments[1].importer_dynamic && !v.attachments[1].cached,
	       "second: dynamic, direct");
	tap_is(parse("exp_dynamic:\t1\n", &v), -EINVAL, "report without a count");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\nattachment:\tcached=1\n", &v), -EINVAL,
	       "malformed attachment line");
	tap_is(parse("exp_dynamic:\t7\nattachments:\t0\n", &v), -EINVAL, "flag out of range");
	tap_is(parse("attachment:\timporter_dynamic=0 cached=0 dev=x\n", &v), -EINVAL,
	       "attachments without a report header");
	return tap_done();
}
