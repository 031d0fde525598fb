// SPDX-License-Identifier: MIT
/*
 * A plain buffer's memory made in this process: a sealed memfd charged to our memory cgroup,
 * checked against the cgroup's memory.max first.
 */
#include "libdmabroker-private.h"

/*
 * Whether this allocation's memory is made here: a plain (not contiguous) buffer of the
 * daemon's default backend, when that is udmabuf or memfd.
 */
bool memory_is_ours(const struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec)
{
	const char *def = ctx->default_backend;

	if ((ctx->flags & DMABROKER_CONNECT_DAEMON_MEMORY) || spec->contiguous)
		return false;
	if (strcmp(def, "udmabuf") != 0 && strcmp(def, "memfd") != 0)
		return false;
	return !spec->backend || strcmp(spec->backend, def) == 0;
}

/*
 * A sealed memfd of the spec's size with its pages allocated now, by this process, so that
 * its memory cgroup is charged (and its memory.max can refuse: -ENOMEM, before the daemon
 * is asked). The size is the daemon's own computation (common/layout.c). This is local
 * work, the same in the asynchronous form: no wait on the daemon.
 */
/* Finds the cgroup v2 levels, from ours up, that set a memory.max. */
static void find_memcg_limits(struct dmabroker *ctx)
{
	_cleanup_(freep) char *cgroup = NULL;
	char dir[4096];
	char *path, *end;

	ctx->n_memcg_limits = 0;
	if (read_small_file("/proc/self/cgroup", &cgroup, 8192) < 0)
		return;
	/* cgroup v2 is the "0::" line. */
	path = strstr(cgroup, "0::/");
	if (!path || (path != cgroup && path[-1] != '\n'))
		return;
	path += 3;
	end = strchr(path, '\n');
	if (end)
		*end = '\0';
	while (ctx->n_memcg_limits < MAX_MEMCG_LEVELS) {
		_cleanup_(freep) char *max = NULL;
		char file[4200];
		char *slash;

		snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", strcmp(path, "/") ? path : "");
		snprintf(file, sizeof(file), "%s/memory.max", dir);
		if (read_small_file(file, &max, 64) > 0 && strncmp(max, "max", 3) != 0)
			ctx->memcg_limits[ctx->n_memcg_limits++] = strdup(dir);
		slash = strrchr(path, '/');
		if (!slash || slash == path)
			break;
		*slash = '\0';
	}
}

static int read_u64_file(const char *dir, const char *name, uint64_t *ret)
{
	_cleanup_(freep) char *text = NULL;
	char file[4200];
	char *end;

	snprintf(file, sizeof(file), "%s/%s", dir, name);
	if (read_small_file(file, &text, 64) <= 0)
		return -ENOENT;
	errno = 0;
	*ret = strtoull(text, &end, 10);
	return errno || end == text ? -EINVAL : 0;
}

/*
 * Past its memory.max a cgroup's allocation does not fail: the kernel's OOM killer picks a
 * process in it. So ask first: -ENOMEM if size more bytes would take any limited level above
 * us past its limit. (Another thread allocating at the same time can still get there first.)
 */
static int check_memcg_headroom(struct dmabroker *ctx, size_t size)
{
	if (ctx->n_memcg_limits < 0)
		find_memcg_limits(ctx);
	for (int i = 0; i < ctx->n_memcg_limits; i++) {
		uint64_t max, current;

		if (read_u64_file(ctx->memcg_limits[i], "memory.max", &max) < 0 ||
		    read_u64_file(ctx->memcg_limits[i], "memory.current", &current) < 0)
			continue; /* "max" again, or gone: no limit to respect */
		if (current + size > max) {
			snprintf(ctx->last_error, sizeof(ctx->last_error),
				 "%zu more bytes would take %s past its memory.max (%" PRIu64
				 " of %" PRIu64 " bytes in use)",
				 size, ctx->memcg_limits[i], current, max);
			return -ENOMEM;
		}
	}
	return 0;
}

int make_memfd(struct dmabroker *ctx, const struct dmabroker_alloc_spec *spec, int *ret_fd)
{
	_cleanup_(closep) int fd = -1;
	struct db_layout layout;
	uint64_t size = spec->size;
	size_t aligned;
	int r;

	if (!size) {
		r = db_layout_compute(spec->width, spec->height, spec->fourcc, spec->modifier,
				      spec->stride_align ? spec->stride_align : 64, &layout);
		if (r < 0)
			return r; /* the daemon would refuse it too; let it say why */
		size = layout.size;
	}
	/* The daemon's limits first: nothing is made for a size it would refuse. */
	if (db_size_page_align(size, &aligned) < 0 || aligned > (uint64_t)INT64_MAX ||
	    (ctx->max_buffer_size && aligned > ctx->max_buffer_size) ||
	    (ctx->max_bytes_per_client && aligned > ctx->max_bytes_per_client)) {
		snprintf(ctx->last_error, sizeof(ctx->last_error),
			 "%" PRIu64 " bytes exceed the daemon's MaxBufferSize (%" PRIu64
			 ") or MaxBytesPerClient (%" PRIu64 "): nothing was made",
			 size, ctx->max_buffer_size, ctx->max_bytes_per_client);
		return -EDQUOT;
	}
	r = check_memcg_headroom(ctx, aligned);
	if (r < 0)
		return r;
	fd = memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		r = -errno;
		snprintf(ctx->last_error, sizeof(ctx->last_error),
			 "could not make a memfd in this process: %s", strerror(-r));
		return r;
	}
	if (ftruncate(fd, (off_t)aligned) < 0) {
		/* EFBIG: this process may not have a file that large (RLIMIT_FSIZE). */
		r = -errno;
		snprintf(ctx->last_error, sizeof(ctx->last_error),
			 "could not size a memfd of %zu bytes in this process: %s", aligned,
			 strerror(-r));
		return r == -EFBIG || r == -ENOSPC ? -ENOMEM : r;
	}
	if (fallocate(fd, 0, 0, (off_t)aligned) < 0) {
		r = -errno;
		snprintf(ctx->last_error, sizeof(ctx->last_error),
			 "could not allocate %zu bytes in this process: %s", aligned, strerror(-r));
		return r == -ENOSPC ? -ENOMEM : r;
	}
	/* It can neither shrink under the holders' mappings nor be sealed read-only. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	*ret_fd = take_fd(&fd);
	return 0;
}
