/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Buffer collections: the intersection of the participants' constraints, in Fuchsia sysmem's
 * vocabulary. A collection has participants; each sets constraints; the broker computes their
 * intersection once, allocates buffer_count buffers of one layout on one backend, and gives
 * every participant the same buffers. This is the pure part: no D-Bus, no devices, no syscalls
 * (the machine is described by the caller), so every rule is unit-tested.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "protocol.h"

/* The named conflicting set is a bitmask of participant indices. */
#define DB_CONSTRAINTS_MAX_PARTICIPANTS 64
/* Entries in one participant's fourcc, modifier or backend set. */
#define DB_CONSTRAINTS_MAX_SET 16
/* The most buffers one collection gets (its camping minimums added up included). */
#define DB_CONSTRAINTS_MAX_BUFFERS 256
/* Heap names as /dev/dma_heap spells them; longer ones are malformed. */
#define DB_CONSTRAINTS_NAME_MAX 64
/* What the human messages take (they are cut, never overflowed). */
#define DB_CONSTRAINTS_MESSAGE_MAX 512

/*
 * One participant's constraints. Zero means "no constraint" for every number, NULL for every
 * set; a set that is given must not be empty. Sets are borrowed for the call.
 */
struct db_constraints {
	/* For messages, e.g. "media-client (vivid, /dev/video1)". Required. */
	const char *name;

	/* Buffers this participant holds at once: added up over participants (sysmem). */
	uint32_t min_buffer_count_for_camping;
	uint32_t min_buffer_count;
	uint32_t max_buffer_count;

	/* Bytes of each buffer. */
	uint64_t min_size;
	uint64_t max_size;
	uint32_t size_divisor; /* the size is a multiple of it (a V4L2 sizeimage, ...) */

	/*
	 * The image. Participants that list fourccs allow only those; if nobody lists one, the
	 * buffers are plain bytes and the other image fields are not looked at. Modifiers: the
	 * ones this participant can use (only LINEAR can be laid out today).
	 */
	const uint32_t *fourccs;
	size_t n_fourccs;
	const uint64_t *modifiers;
	size_t n_modifiers;
	uint32_t min_width, max_width;
	uint32_t min_height, max_height;
	/* The size the creator asks for; without one, the smallest the ranges allow. */
	uint32_t width, height;
	/* Per plane (bytes_per_row in sysmem's words). */
	uint32_t min_stride[DMABROKER_MAX_PLANES];
	uint32_t max_stride[DMABROKER_MAX_PLANES];
	uint32_t stride_divisor; /* every plane's */
	uint32_t offset_divisor; /* every plane's offset */

	/* DMA. Any of these also makes the participant a device importer (see device). */
	bool contiguous; /* physically contiguous memory required */
	uint64_t max_segment_size; /* the device's DMA max segment size */
	uint32_t dma_address_bits; /* 1..64 */
	/* A device imports the buffers: they must be dma-bufs (memfd is not). */
	bool device;

	/*
	 * Backends this participant accepts: "udmabuf", "memfd", "dma-heap:<heap>" (e.g.
	 * "dma-heap:system", "dma-heap:linux,cma") or "dma-heap" for any heap.
	 */
	const char *const *backends;
	size_t n_backends;

	bool cpu_read;
	bool cpu_write;
	/* The participant's dynamic capability: decides its attachment path. */
	bool dynamic;
};

struct db_heap_info {
	const char *name; /* "system", "linux,cma", ... */
	bool contiguous; /* a CMA area: each buffer is one physically contiguous segment */
};

/* What this machine offers, as the daemon probed it. */
struct db_machine_info {
	bool udmabuf;
	uint64_t udmabuf_size_limit; /* size_limit_mb in bytes; 0: unlimited */
	uint64_t huge_page_size; /* 0: no huge pages */
	bool hugetlb_vmap_safe; /* the kernel has the large-folio vmap fix */
	const struct db_heap_info *heaps;
	size_t n_heaps;
	bool memfd;
	uint64_t page_size; /* 0: this machine's */
	uint64_t max_buffer_size; /* the broker's limit; 0: none */
};

enum {
	/* A segment limit no backend meets refuses the collection instead of flagging it. */
	DB_CONSTRAINTS_STRICT_SEGMENTS = 1 << 0,
};

enum db_backend_kind {
	DB_BACKEND_UDMABUF,
	DB_BACKEND_UDMABUF_HUGETLB, /* one huge page per buffer: contiguous */
	DB_BACKEND_HEAP,
	DB_BACKEND_MEMFD,
};

/* What the result says beyond the allocation. */
enum {
	/* Some participant's max segment size is smaller than the backend's segments. */
	DB_COLLECTION_SEGMENT_LIMIT_NOT_MET = 1 << 0,
	/* Some participant declared fewer than 64 DMA address bits; nothing here can check it. */
	DB_COLLECTION_ADDRESS_BITS_UNCHECKED = 1 << 1,
};

/* The intersection: what to allocate, and how each participant will attach. */
struct db_collection_plan {
	uint32_t buffer_count;
	uint32_t camping_total; /* the camping minimums the count covers */
	size_t size; /* of each buffer: page-aligned, == layout.size */
	struct db_layout layout; /* fourcc 0: plain bytes */
	enum db_backend_kind kind;
	char backend[DB_CONSTRAINTS_NAME_MAX + 16]; /* "udmabuf", "dma-heap:linux,cma", ... */
	bool contiguous;
	bool is_dmabuf;
	uint64_t max_segment; /* the largest DMA segment a buffer has; 0 for memfd */
	uint32_t dma_address_bits; /* the fewest declared, 0: none */
	bool cpu_read, cpu_write;
	unsigned flags; /* DB_COLLECTION_* */
	/* Per participant: the exporter is the daemon's backend, which is dynamic. */
	size_t n_participants;
	enum db_attach_path paths[DB_CONSTRAINTS_MAX_PARTICIPANTS];
	char note[DB_CONSTRAINTS_MESSAGE_MAX]; /* what the flags mean, naming participants */
};

/* Why not. */
struct db_constraints_error {
	/* -EOPNOTSUPP: a minimal set of participants whose constraints conflict (one alone:
	 * it against what the machine provides). Removing any one of them lets the rest through. */
	uint64_t conflict;
	/* -EINVAL: the malformed participant's index, -1 for the collection or machine. */
	int participant;
	char message[DB_CONSTRAINTS_MESSAGE_MAX];
};

/* Whether one participant's constraints make sense alone. -EINVAL with a message if not. */
int db_constraints_validate(const struct db_constraints *c, struct db_constraints_error *err);

/*
 * Intersects n participants' constraints against the machine. flags: DB_CONSTRAINTS_*.
 * 0 and *ret; -EINVAL: malformed input (err->participant), or nobody says how large the
 * buffers are; -EOPNOTSUPP: the constraints conflict (err->conflict, a minimal set); -ENODEV:
 * the machine offers no backend at all. err may be NULL.
 */
int db_constraints_intersect(const struct db_constraints *parts, size_t n,
			     const struct db_machine_info *machine, unsigned flags,
			     struct db_collection_plan *ret, struct db_constraints_error *err);

/* How a late joiner would use the allocated buffers. */
struct db_constraints_fit {
	enum db_attach_path path;
	unsigned flags; /* DB_COLLECTION_* that hold for this participant */
};

/*
 * Whether a participant joining after allocation is satisfied by plan: the count covers the
 * camping minimums so far (plan->camping_total) and its own; the layout, size and backend
 * meet its constraints. On success the caller adds its camping minimum to camping_total.
 * 0 and *ret; -EINVAL: malformed; -EOPNOTSUPP: it does not fit (err->message says why).
 */
int db_constraints_check_joiner(const struct db_collection_plan *plan,
				const struct db_constraints *c, unsigned flags,
				struct db_constraints_fit *ret, struct db_constraints_error *err);
