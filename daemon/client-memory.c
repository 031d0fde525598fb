// SPDX-License-Identifier: MIT
/*
 * Admission of client-supplied memory. A memfd a client hands over must be memory the client
 * already paid for, and must stay so: shmem charges a page to the memory cgroup of the task
 * that allocates it, so any page the daemon faults in (udmabuf pinning a hole, a copy reading
 * through a mapping) would be charged to the daemon, outside every quota.
 */
#include "client-memory.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "errors.h"
#include "protocol.h"

/* shmem counts st_blocks in 512-byte units for every page it holds, swapped ones included. */
static uint64_t allocated_bytes(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512u;
}

int db_client_memfd_check(int fd, size_t size, sd_bus_error *error)
{
	struct statfs sfs;
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(fd, &sfs) < 0 ||
	    sfs.f_type != TMPFS_MAGIC)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: not a memfd (memfd_create without MFD_HUGETLB)");
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: not created with MFD_ALLOW_SEALING");
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: a write seal would make it read-only for every "
					 "holder (udmabuf refuses it)");
	if ((seals & DB_CLIENT_MEMFD_SEALS) != DB_CLIENT_MEMFD_SEALS)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"memfd: needs F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL (it has%s%s%s): "
			"its size must never change under the holders' mappings, and no seal "
			"added later may break them",
			seals & F_SEAL_SHRINK ? " SHRINK" : "", seals & F_SEAL_GROW ? " GROW" : "",
			seals & F_SEAL_SEAL ? " SEAL" : "");
	/*
	 * Pages beyond the end (fallocate with FALLOC_FL_KEEP_SIZE before F_SEAL_GROW) count in
	 * st_blocks and would hide a hole inside from the count below. Nobody can map them, and
	 * with F_SEAL_GROW nobody can allocate there again: drop them (holes are punched, never
	 * filled, so this allocates nothing).
	 */
	if (st.st_size >= 0 && (uint64_t)st.st_size < (uint64_t)INT64_MAX &&
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size,
		      INT64_MAX - st.st_size) == 0)
		(void)fstat(fd, &st);
	if ((uint64_t)st.st_size != size)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "memfd: %jd bytes, the spec needs exactly %zu (its size "
					 "rounded up to the page size)",
					 (intmax_t)st.st_size, size);
	/*
	 * Exactly size bytes allocated: fewer is a hole that udmabuf would fill (in the context
	 * of whoever creates it) or the other holders would fault in; more is a huge page
	 * reaching past the end (shmem_enabled=always), which the punch above cannot split.
	 */
	if (allocated_bytes(&st) != size)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"memfd: %" PRIu64 " of its %zu bytes are allocated; allocate every page "
			"(fallocate) and nothing beyond its end before handing it over: the "
			"daemon does not fault in memory a client is to pay for",
			allocated_bytes(&st), size);
	return 0;
}

bool db_client_memfd_whole(int fd, size_t size)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (uint64_t)st.st_size == size && allocated_bytes(&st) == size;
}

void db_daemon_memfd_reclaim(int fd, size_t size)
{
	/* Seals allow it (no write seal); best effort: the fd is closed right after. */
	(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
}

int db_copy_from_memfd(void *dst, int src, size_t size)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = pread(src, (char *)dst + done, size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			/* Cannot happen with F_SEAL_SHRINK; zeros rather than a short copy. */
			memset((char *)dst + done, 0, size - done);
			break;
		}
		done += (size_t)n;
	}
	return 0;
}
