/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * An allocation backend. Each allocates one buffer of a page-aligned size and returns a
 * new close-on-exec descriptor owned by the caller.
 */
struct db_backend {
	const char *name;
	/* false only for memfd: its fds are not dma-bufs and no device can import them. */
	bool is_dmabuf;
	/* Whether the backend can be used on this machine now (devices come and go). */
	bool (*probe)(void);
	/* contiguous: the memory must be physically contiguous (-EOPNOTSUPP if it cannot be). */
	int (*allocate)(size_t size, bool contiguous, int *ret_fd);
};

extern const struct db_backend db_backend_udmabuf;
extern const struct db_backend db_backend_dma_heap;
extern const struct db_backend db_backend_memfd;

/* Every backend, in order of preference. */
extern const struct db_backend *const db_backends[];

const struct db_backend *db_backend_find(const char *name);

/*
 * Which backends this machine offers, and udmabuf's size cap: probed once and again by
 * db_backends_refresh() when devices change or the configuration is reloaded, so that calls do
 * not pay for probing with syscalls.
 */
void db_backends_refresh(void);
bool db_backend_available(const struct db_backend *be);

/* What a kernel without udmabuf and dma-heaps lacks, with the config options, for messages. */
const char *db_backend_missing_reason(void);

/* Whether this kernel's udmabuf can vmap (Linux 6.2 and later): vb2-vmalloc importers need it. */
bool db_udmabuf_has_vmap(void);

/* The first available backend in preference order (memfd always is). */
const struct db_backend *db_backend_default(void);

/* Names the dma-buf (DMA_BUF_SET_NAME) so /proc/PID/fdinfo and debugfs show it; the kernel
 * keeps at most DMA_BUF_NAME_LEN - 1 bytes, so longer names are cut. */
int db_dmabuf_set_name(int fd, const char *name);

/* Whether hugetlb-backed udmabufs are safe for importers that vmap (the kernel has the
 * large-folio vmap fix); set once the kernel's attachment report is seen. */
void db_backend_set_hugetlb_vmap_safe(bool safe);

/* The most bytes one udmabuf may have (its size_limit_mb module parameter), 0 if unknown or
 * unlimited; as of the last refresh. */
size_t db_udmabuf_size_limit(void);

/* Turns size bytes of a sealed memfd (borrowed) into a udmabuf (*ret_fd, owned). */
int db_udmabuf_create(int memfd, size_t size, int *ret_fd);

/* Directory of the dma-heap devices; tests may point it elsewhere. */
#define DB_DMA_HEAP_DIR "/dev/dma_heap"
#define DB_UDMABUF_DEV "/dev/udmabuf"

/*
 * What the collection solver needs to know of this machine (constraints.h): the heaps under
 * DB_DMA_HEAP_DIR (every heap but the system ones is a CMA area, hence contiguous), up to
 * max of them, their names written into names. Returns how many.
 */
#define DB_HEAP_NAME_MAX 64
size_t db_dma_heaps_list(char names[][DB_HEAP_NAME_MAX], bool *contiguous, size_t max);
/* Allocates size bytes from the named heap (*ret_fd owned). */
int db_dma_heap_allocate_from(const char *heap, size_t size, int *ret_fd);
/* The huge page size when at least one huge page is free (a hugetlb udmabuf can be made),
 * else 0; and whether such buffers are safe for importers that vmap. */
size_t db_huge_page_size_if_free(void);
bool db_backend_hugetlb_vmap_safe(void);

/* Copies size bytes from src to dst, bracketed by DMA_BUF_IOCTL_SYNC where they are
 * dma-bufs: the copy step of a move. A memfd source is read with pread, so that holes its
 * owner punched are read as zeros and not allocated in the daemon. */
int db_buffer_copy(int dst, int src, size_t size);
