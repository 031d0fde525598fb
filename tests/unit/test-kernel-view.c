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
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\nattachment:\tcached=1 dev=x\n", &v),
	       -EINVAL, "an attachment line without importer_dynamic");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\nattachment:\tcached=1\n", &v), -EINVAL,
	       "malformed attachment line");
	tap_is(parse("exp_dynamic:\t7\nattachments:\t0\n", &v), -EINVAL, "flag out of range");
	tap_is(parse("attachment:\timporter_dynamic=0 cached=0 dev=x\n", &v), -EINVAL,
	       "attachments without a report header");

	/* A holder names the buffer with DMA_BUF_SET_NAME; newlines are allowed there. The
	 * kernel prints the name last: the parser stops at it. */
	tap_is(parse("size:\t4096\ncount:\t3\nexp_name:\tudmabuf\nname:\tx\nexp_dynamic:\t1\n"
		     "exp_dynamic:\t1\nattachments:\t0\n",
		     &v),
	       0, "report lines after the name are not read");
	tap_ok(!v.available, "so a stock kernel's fdinfo with a forged report has none");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\n"
		     "attachment:\timporter_dynamic=0 cached=1 dev=vgem\nname:\tx\n"
		     "attachment:\timporter_dynamic=1 cached=0 dev=fake\n",
		     &v),
	       0, "an attachment line added through the name");
	tap_ok(v.n_attachments == 1 && strcmp(v.attachments[0].dev, "vgem") == 0,
	       "is not read: the kernel's one attachment is");
	tap_is(parse("exp_dynamic:\t0\nattachments:\t0\nname:\tx\nattachment:\tbroken\n"
		     "attachments:\tmany\nexp_dynamic:\t7\n",
		     &v),
	       0, "a name of malformed report text does not blind the reader");
	tap_ok(v.available && !v.exp_dynamic && v.n_reported == 0, "the report before it reads");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\n"
		     "attachment:\timporter_dynamic=0 cached=1 dev=vgem\n"
		     "attachment:\timporter_dynamic=1 cached=0 dev=fake\nname:\tx\n",
		     &v),
	       -EBADMSG, "attachment lines that do not add up to the count are refused");

	/* The kernel did not wait for the lock that guards the list. */
	tap_is(parse("size:\t4096\ncount:\t1\nexp_name:\tudmabuf\nexp_dynamic:\t0\n"
		     "attachments:\tbusy\nname:\tattachments:\t0\n",
		     &v),
	       0, "a busy report parses");
	tap_ok(v.available && v.busy && v.n_attachments == 0 && v.file_count == 1,
	       "available, busy, no attachments known, the file count read");
	tap_is(parse("exp_dynamic:\t0\nattachments:\tbusy\n"
		     "attachment:\timporter_dynamic=0 cached=1 dev=vgem\n",
		     &v),
	       -EINVAL, "a busy report with attachment lines is malformed");
	tap_is(parse("exp_dynamic:\t0\nattachments:\tbusyx\n", &v), -EINVAL,
	       "a count that is neither a number nor busy");

	/* The keys true on any kernel, and the cache only where the kernel has one. */
	tap_is(parse("exp_dynamic:\t1\nattachments:\t2\n"
		     "attachment:\timporter_dynamic=0 pinned=1 peer2peer=0 cached=1 dev=vgem\n"
		     "attachment:\timporter_dynamic=1 pinned=0 peer2peer=1 dev=0000:03:00.0\n",
		     &v),
	       0, "pinned, peer2peer and an optional cached parse");
	tap_ok(v.attachments[0].has_pinned && v.attachments[0].pinned &&
		       v.attachments[0].has_peer2peer && !v.attachments[0].peer2peer &&
		       v.attachments[0].has_cached && v.attachments[0].cached,
	       "first: pinned, not peer-to-peer, cached");
	tap_ok(v.attachments[1].importer_dynamic && !v.attachments[1].pinned &&
		       v.attachments[1].peer2peer && !v.attachments[1].has_cached &&
		       !v.attachments[1].cached,
	       "second: no cached key, so no cache claimed");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\n"
		     "attachment:\timporter_dynamic=0 pinned=1 pinned=0 dev=vgem\n",
		     &v),
	       -EINVAL, "a key given twice");
	tap_is(parse("exp_dynamic:\t1\nattachments:\t1\n"
		     "attachment:\timporter_dynamic=0 peer2peer=2 dev=vgem\n",
		     &v),
	       -EINVAL, "a flag out of range");
	tap_is(parse("size:\t4096\ncount:\t2\nname:\tx\ncount:\t1\n", &v), 0,
	       "a count added after the name");
	tap_is(v.file_count, 2, "is ignored: the kernel's count comes before the name");
	tap_is(parse("exp_dynamic:\t0\nattachments:\t1\nattachment:\timporter_dynamic=1 "
		     "pinned=1 cached=0 future=x dev=my dev 0\n",
		     &v),
	       0, "keys the parser does not know are skipped");
	tap_ok(v.attachments[0].importer_dynamic && !v.attachments[0].cached &&
		       strcmp(v.attachments[0].dev, "my dev 0") == 0,
	       "and the known ones read, the device name with its spaces");
	{
		long count = 0;
		const char *t = "pos:\t0\nsize:\t4096\ncount:\t5\nname:\tq\nexp_dynamic:\t9\n";

		tap_is(db_kernel_view_parse_file_count(t, strlen(t), &count), 0,
		       "the file count reads even where the report is broken");
		tap_is(count, 5, "file count");
	}
	return tap_done();
}
