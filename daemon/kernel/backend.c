// SPDX-License-Identifier: MIT
#include "backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/udmabuf.h>

#include "client-memory.h"
#include "fd-util.h"
#include "log.h"
#include "macros.h"

static bool hugetlb_vmap_safe;

void db_backend_set_hugetlb_vmap_safe(bool safe)
{
	hugetlb_vmap_safe = safe;
}

int db_dmabuf_set_name(int fd, const char *name)
{
	char kname[DMA_BUF_NAME_LEN];

	snprintf(kname, sizeof(kname), "%s", name);
	if (ioctl(fd, DMA_BUF_SET_NAME, kname) < 0)
		return -errno;
	return 0;
}

static int memfd_new(size_t size, unsigned int flags, unsigned int seals, int *ret_fd)
{
	_cleanup_(closep) int fd =
		memfd_create("dmabroker", MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		return -errno;
	if (fcntl(fd, F_ADD_SEALS, seals) < 0)
		return -errno;
	*ret_fd = take_fd(&fd);
	return 0;
}

static int read_meminfo(char *buf, size_t len)
{
	_cleanup_(closep) int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	return 0;
}

static size_t huge_page_size(void)
{
	char buf[4096];
	char *p;

	if (read_meminfo(buf, sizeof(buf)) < 0)
		return 0;
	p = strstr(buf, "Hugepagesize:");
	return p ? strtoull(p + strlen("Hugepagesize:"), NULL, 10) * 1024 : 0;
}

size_t db_huge_page_size_if_free(void)
{
	char buf[4096];
	char *p;

	if (read_meminfo(buf, sizeof(buf)) < 0)
		return 0;
	p = strstr(buf, "HugePages_Free:");
	if (!p || strtoull(p + strlen("HugePages_Free:"), NULL, 10) == 0)
		return 0;
	return huge_page_size();
}

bool db_backend_hugetlb_vmap_safe(void)
{
	return hugetlb_vmap_safe;
}

/* --- udmabuf: a sealed memfd turned into a dma-buf by /dev/udmabuf --- */

static size_t read_udmabuf_size_limit(void)
{
	_cleanup_(closep) int fd =
		open("/sys/module/udmabuf/parameters/size_limit_mb", O_RDONLY | O_CLOEXEC);
	char buf[32];
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (size_t)strtoull(buf, NULL, 10) << 20;
}

static bool udmabuf_probe(void)
{
	return access(DB_UDMABUF_DEV, R_OK | W_OK) == 0;
}

static int udmabuf_allocate(size_t size, bool contiguous, int *ret_fd)
{
	_cleanup_(closep) int memfd = -1;
	unsigned int mfd_flags = 0;
	size_t alloc_size = size;
	int r;

	if (contiguous) {
		/*
		 * One huge page is physically contiguous. Kernels without the large-folio vmap
		 * fix corrupt such buffers for vmap importers, so only offer it where fixed.
		 */
		size_t huge = huge_page_size();

		if (!hugetlb_vmap_safe || huge == 0 || size > huge)
			return -EOPNOTSUPP;
		mfd_flags = MFD_HUGETLB;
		alloc_size = huge;
	}
	/* F_SEAL_SHRINK: udmabuf refuses a memfd that could shrink under its pages. */
	r = memfd_new(alloc_size, mfd_flags, F_SEAL_SHRINK, &memfd);
	if (r < 0)
		return r == -EINVAL && contiguous ? -ENOMEM : r;
	/* The udmabuf holds the memfd's pages; our memfd reference can go. */
	return db_udmabuf_create(memfd, alloc_size, ret_fd);
}

int db_udmabuf_create(int memfd, size_t size, int *ret_fd)
{
	_cleanup_(closep) int dev = open(DB_UDMABUF_DEV, O_RDWR | O_CLOEXEC);
	struct udmabuf_create create = {
		.memfd = (__u32)memfd,
		.flags = UDMABUF_FLAGS_CLOEXEC,
		.offset = 0,
		.size = size,
	};
	int fd;

	if (dev < 0)
		return errno == ENOENT ? -ENODEV : -errno;
	fd = ioctl(dev, UDMABUF_CREATE, &create);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

const struct db_backend db_backend_udmabuf = {
	.name = "udmabuf",
	.is_dmabuf = true,
	.probe = udmabuf_probe,
	.allocate = udmabuf_allocate,
};

/* --- dma-heap: /dev/dma_heap/<name> --- */

static bool dma_heap_probe(void)
{
	return access(DB_DMA_HEAP_DIR "/system", R_OK) == 0;
}

/* A heap other than the system ones is a CMA area: physically contiguous memory. */
static int find_contiguous_heap(char *path, size_t len)
{
	DIR *dir = opendir(DB_DMA_HEAP_DIR);
	struct dirent *de;
	int r = -EOPNOTSUPP;

	if (!dir)
		return -EOPNOTSUPP;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.' || strncmp(de->d_name, "system", 6) == 0)
			continue;
		snprintf(path, len, DB_DMA_HEAP_DIR "/%s", de->d_name);
		r = 0;
		break;
	}
	closedir(dir);
	return r;
}

size_t db_dma_heaps_list(char names[][DB_HEAP_NAME_MAX], bool *contiguous, size_t max)
{
	DIR *dir = opendir(DB_DMA_HEAP_DIR);
	struct dirent *de;
	size_t n = 0;

	if (!dir)
		return 0;
	while (n < max && (de = readdir(dir))) {
		if (de->d_name[0] == '.' || strlen(de->d_name) >= DB_HEAP_NAME_MAX)
			continue;
		snprintf(names[n], DB_HEAP_NAME_MAX, "%s", de->d_name);
		contiguous[n] = strncmp(de->d_name, "system", 6) != 0;
		n++;
	}
	closedir(dir);
	return n;
}

static int heap_allocate_path(const char *path, size_t size, int *ret_fd)
{
	_cleanup_(closep) int heap = open(path, O_RDONLY | O_CLOEXEC);
	struct dma_heap_allocation_data data = {
		.len = size,
		.fd_flags = O_RDWR | O_CLOEXEC,
	};

	if (heap < 0)
		return errno == ENOENT ? -ENODEV : -errno;
	if (ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data) < 0)
		return -errno;
	*ret_fd = (int)data.fd;
	return 0;
}

int db_dma_heap_allocate_from(const char *heap, size_t size, int *ret_fd)
{
	char path[DB_HEAP_NAME_MAX + sizeof(DB_DMA_HEAP_DIR) + 1];

	if (!heap[0] || strchr(heap, '/') || strlen(heap) >= DB_HEAP_NAME_MAX)
		return -EINVAL;
	snprintf(path, sizeof(path), DB_DMA_HEAP_DIR "/%s", heap);
	return heap_allocate_path(path, size, ret_fd);
}

static int dma_heap_allocate(size_t size, bool contiguous, int *ret_fd)
{
	char path[300] = DB_DMA_HEAP_DIR "/system";
	int r;

	if (contiguous) {
		r = find_contiguous_heap(path, sizeof(path));
		if (r < 0)
			return r;
	}
	return heap_allocate_path(path, size, ret_fd);
}

const struct db_backend db_backend_dma_heap = {
	.name = "dma-heap",
	.is_dmabuf = true,
	.probe = dma_heap_probe,
	.allocate = dma_heap_allocate,
};

/* --- memfd: the degraded mode for machines with neither; not a dma-buf --- */

static bool memfd_probe(void)
{
	return true;
}

static int memfd_allocate(size_t size, bool contiguous, int *ret_fd)
{
	_cleanup_(closep) int fd = -1;
	int r;

	if (contiguous)
		return -EOPNOTSUPP;
	/* Fully sealed: the size never changes under the holders' mappings. */
	r = memfd_new(size, 0, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, &fd);
	if (r < 0)
		return r;
	/*
	 * The pages now, as udmabuf pins them at creation: charged to the daemon's memory
	 * cgroup (not to whichever holder touches them first), and a shortage is an allocation
	 * error here rather than a SIGBUS or an OOM kill in a client later.
	 */
	if (fallocate(fd, 0, 0, (off_t)size) < 0)
		return errno == ENOSPC ? -ENOMEM : -errno;
	*ret_fd = take_fd(&fd);
	return 0;
}

const struct db_backend db_backend_memfd = {
	.name = "memfd",
	.is_dmabuf = false,
	.probe = memfd_probe,
	.allocate = memfd_allocate,
};

const struct db_backend *const db_backends[] = {
	&db_backend_udmabuf,
	&db_backend_dma_heap,
	&db_backend_memfd,
	NULL,
};

const struct db_backend *db_backend_find(const char *name)
{
	for (size_t i = 0; db_backends[i]; i++)
		if (strcmp(db_backends[i]->name, name) == 0)
			return db_backends[i];
	return NULL;
}

static bool probed, available[3];
static size_t udmabuf_limit;

const char *db_backend_missing_reason(void)
{
	return "no " DB_UDMABUF_DEV " (CONFIG_UDMABUF) and no " DB_DMA_HEAP_DIR "/system "
	       "(CONFIG_DMABUF_HEAPS, CONFIG_DMABUF_HEAPS_SYSTEM)";
}

bool db_udmabuf_has_vmap(void)
{
	struct utsname u;
	unsigned major = 0, minor = 0;

	/* udmabuf's vmap came with Linux 6.2; 6.1's, built as a module, has none. */
	if (uname(&u) < 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
		return true;
	return major > 6 || (major == 6 && minor >= 2);
}

/* Says what this kernel lacks, once for each change of what it offers. */
static void explain_backends(void)
{
	static int said = -1;
	int now = available[0] | available[1] << 1;

	if (now == said)
		return;
	said = now;
	if (!available[0] && !available[1]) {
		log_warning("This kernel has no dma-buf allocator: %s. Buffers are allocated as "
			    "sealed memfds, which the CPU can share but no device can import; "
			    "buffers that GPU and media devices export are still adopted and "
			    "shared. On Debian 12 install linux-image-amd64 from "
			    "bookworm-backports or a linux-image-6.12 package, or build 6.1's "
			    "udmabuf as a module (kernel-module/udmabuf in dmabroker's sources)",
			    db_backend_missing_reason());
		return;
	}
	if (available[0] && !db_udmabuf_has_vmap())
		log_notice("This kernel's udmabuf has no vmap (it came with Linux 6.2): importers "
			   "that vmap a buffer, such as V4L2 drivers on vb2-vmalloc, refuse "
			   "udmabufs; devices that map them (DRM PRIME, vb2-dma-contig) and CPU "
			   "clients work. Linux 6.12 (Debian 12's linux-image-6.12) has it");
	if (!available[1])
		log_info("No dma-heaps on this kernel (CONFIG_DMABUF_HEAPS, "
			 "CONFIG_DMABUF_HEAPS_SYSTEM): udmabuf only");
}

void db_backends_refresh(void)
{
	for (size_t i = 0; db_backends[i]; i++)
		available[i] = db_backends[i]->probe();
	udmabuf_limit = read_udmabuf_size_limit();
	probed = true;
	explain_backends();
}

bool db_backend_available(const struct db_backend *be)
{
	if (!probed)
		db_backends_refresh();
	for (size_t i = 0; db_backends[i]; i++)
		if (db_backends[i] == be)
			return available[i];
	return false;
}

size_t db_udmabuf_size_limit(void)
{
	if (!probed)
		db_backends_refresh();
	return udmabuf_limit;
}

const struct db_backend *db_backend_default(void)
{
	for (size_t i = 0; db_backends[i]; i++)
		if (db_backend_available(db_backends[i]))
			return db_backends[i];
	return &db_backend_memfd;
}

static void sync_dmabuf(int fd, __u64 flags)
{
	struct dma_buf_sync sync = {.flags = flags};

	/* ENOTTY: a memfd, which needs no cache maintenance. */
	while (ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) < 0 && (errno == EINTR || errno == EAGAIN))
		;
}

static int copy_mapped(int dst, int src, size_t size)
{
	void *s, *d;

	s = mmap(NULL, size, PROT_READ, MAP_SHARED, src, 0);
	if (s == MAP_FAILED)
		return -errno;
	d = mmap(NULL, size, PROT_WRITE, MAP_SHARED, dst, 0);
	if (d == MAP_FAILED) {
		int r = -errno;

		munmap(s, size);
		return r;
	}
	sync_dmabuf(src, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
	sync_dmabuf(dst, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
	memcpy(d, s, size);
	sync_dmabuf(dst, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
	sync_dmabuf(src, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
	munmap(d, size);
	munmap(s, size);
	return 0;
}

int db_buffer_copy(int dst, int src, size_t size)
{
	void *d;
	int r;

	/* A dma-buf's pages all exist (udmabuf pinned them, a heap allocated them). */
	if (fd_is_dmabuf(src) != 0)
		return copy_mapped(dst, src, size);
	/*
	 * A memfd may have holes (punched by its owner after it was handed over): read it with
	 * pread, which returns zeros for them, never through a mapping, whose read faults would
	 * allocate them in the daemon's memory cgroup.
	 */
	d = mmap(NULL, size, PROT_WRITE, MAP_SHARED, dst, 0);
	if (d == MAP_FAILED)
		return -errno;
	sync_dmabuf(dst, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
	r = db_copy_from_memfd(d, src, size);
	sync_dmabuf(dst, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
	munmap(d, size);
	return r;
}
