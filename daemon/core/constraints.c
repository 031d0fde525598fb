// SPDX-License-Identifier: MIT
#include "constraints.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "macros.h"
#include "text.h"

#define ALL_PLANES DMABROKER_MAX_PLANES
#define MIN_SZ(a, b) ((a) < (b) ? (a) : (b))
#define MAX_U64(a, b) ((uint64_t)(a) > (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))
/* The system heap allocates chunks of these orders, largest first (system_heap.c). */
static const unsigned system_heap_orders[] = {8, 4, 0};

/* --- messages --- */

/*
 * Every message goes through sb_vprintf into a fixed buffer: it is cut, never overflowed, and
 * the public functions sanitize it before returning (finish()), so a cut multi-byte character
 * or a byte nobody checked never reaches a log line or a D-Bus error that would refuse it.
 */
struct sbuf {
	char *s;
	size_t size;
	size_t len;
};

static void sb_vprintf(struct sbuf *b, const char *fmt, va_list ap) _printf_(2, 0);
static void sb_vprintf(struct sbuf *b, const char *fmt, va_list ap)
{
	int n;

	if (!b->s || b->len + 1 >= b->size)
		return;
	n = vsnprintf(b->s + b->len, b->size - b->len, fmt, ap);
	/* A cut message is still a message: keep what fitted. */
	if (n > 0)
		b->len = MIN_SZ(b->len + (size_t)n, b->size - 1);
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) _printf_(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sb_vprintf(b, fmt, ap);
	va_end(ap);
}

static void err_vprintf(struct db_constraints_error *err, const char *fmt, va_list ap)
	_printf_(2, 0);
static void err_vprintf(struct db_constraints_error *err, const char *fmt, va_list ap)
{
	struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};

	if (err)
		err->message[0] = '\0';
	sb_vprintf(&b, fmt, ap);
}

static void set_message(struct db_constraints_error *err, const char *fmt, ...) _printf_(2, 3);
static void set_message(struct db_constraints_error *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vprintf(err, fmt, ap);
	va_end(ap);
}

/* What the public functions return is text anyone may read (err only when they failed: it
 * is not written otherwise). */
static void finish(struct db_constraints_error *err, struct db_collection_plan *plan)
{
	if (err)
		db_text_sanitize(err->message);
	if (plan)
		db_text_sanitize(plan->note);
}

/* "64 KiB" where that is exact, else bytes: the numbers people read in limits. */
static const char *bytes_str(uint64_t v, char buf[static 32])
{
	if (v && v % (1024 * 1024) == 0)
		snprintf(buf, 32, "%" PRIu64 " MiB", v >> 20);
	else if (v && v % 1024 == 0 && v < 1024 * 1024)
		snprintf(buf, 32, "%" PRIu64 " KiB", v >> 10);
	else
		snprintf(buf, 32, "%" PRIu64 " bytes", v);
	return buf;
}

/* --- arithmetic --- */

static uint64_t gcd64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* *acc = lcm(*acc, d), false if that passes limit. d == 0 is no divisor. */
static bool lcm_into(uint64_t *acc, uint64_t d, uint64_t limit)
{
	uint64_t r;

	if (d == 0)
		return true;
	if (__builtin_mul_overflow(*acc / gcd64(*acc, d), d, &r) || r > limit)
		return false;
	*acc = r;
	return true;
}

/* The least multiple of d (non-zero) at least x, false if it passes 64 bits. */
static bool round_up_to(uint64_t x, uint64_t d, uint64_t *ret)
{
	uint64_t t;

	if (__builtin_add_overflow(x, d - 1, &t))
		return false;
	*ret = t / d * d;
	return true;
}

static uint64_t page_size_of(const struct db_machine_info *m)
{
	return m->page_size ? m->page_size : (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Any DMA constraint means a device maps the buffers, so they must be dma-bufs. */
static bool needs_dmabuf(const struct db_constraints *c)
{
	return c->device || c->contiguous || c->max_segment_size || c->dma_address_bits;
}

static bool has_fourcc(const struct db_constraints *c, uint32_t fourcc)
{
	for (size_t i = 0; i < c->n_fourccs; i++)
		if (c->fourccs[i] == fourcc)
			return true;
	return false;
}

static bool has_linear(const struct db_constraints *c)
{
	if (!c->modifiers)
		return true;
	for (size_t i = 0; i < c->n_modifiers; i++)
		if (c->modifiers[i] == DRM_FORMAT_MOD_LINEAR)
			return true;
	return false;
}

/* --- backends: the names participants allow, and what each kind of memory is --- */

/* "udmabuf", "memfd", "dma-heap" (any heap) or "dma-heap:<name>". */
static bool backend_name_valid(const char *s)
{
	size_t len;

	if (!s)
		return false;
	if (strcmp(s, "udmabuf") == 0 || strcmp(s, "memfd") == 0 || strcmp(s, "dma-heap") == 0)
		return true;
	if (strncmp(s, "dma-heap:", 9) != 0)
		return false;
	len = strlen(s + 9);
	return len > 0 && len < DB_CONSTRAINTS_NAME_MAX && !strchr(s + 9, '/');
}

struct candidate {
	enum db_backend_kind kind;
	const struct db_heap_info *heap; /* for DB_BACKEND_HEAP */
};

static void candidate_name(const struct candidate *cd, char *buf, size_t len)
{
	switch (cd->kind) {
	case DB_BACKEND_UDMABUF:
	case DB_BACKEND_UDMABUF_HUGETLB:
		snprintf(buf, len, "udmabuf");
		break;
	case DB_BACKEND_HEAP:
		snprintf(buf, len, "dma-heap:%s", cd->heap->name);
		break;
	case DB_BACKEND_MEMFD:
		snprintf(buf, len, "memfd");
		break;
	}
}

static bool backend_allowed(const struct db_constraints *c, const struct candidate *cd)
{
	char name[DB_CONSTRAINTS_NAME_MAX + 16];

	if (!c->backends)
		return true;
	candidate_name(cd, name, sizeof(name));
	for (size_t i = 0; i < c->n_backends; i++) {
		if (strcmp(c->backends[i], name) == 0)
			return true;
		if (cd->kind == DB_BACKEND_HEAP && strcmp(c->backends[i], "dma-heap") == 0)
			return true;
	}
	return false;
}

/*
 * The largest DMA segment a buffer of size bytes has. udmabuf (6.12) puts each page in its
 * own scatterlist entry, hugetlb or not; the system heap hands out chunks of orders 8, 4, 0,
 * the largest that fits what is left; a CMA heap's buffer is one segment. Other heaps that are
 * not contiguous are taken to behave like the system heap. memfd is never DMA-mapped.
 */
static uint64_t candidate_segment(const struct candidate *cd, uint64_t size, uint64_t page)
{
	switch (cd->kind) {
	case DB_BACKEND_UDMABUF:
	case DB_BACKEND_UDMABUF_HUGETLB:
		return MIN_SZ(page, size);
	case DB_BACKEND_HEAP:
		if (cd->heap->contiguous)
			return size;
		for (size_t i = 0; i < ARRAY_SIZE(system_heap_orders); i++) {
			uint64_t chunk = page << system_heap_orders[i];

			if (chunk <= size)
				return chunk;
		}
		return size;
	case DB_BACKEND_MEMFD:
		return 0;
	}
	return 0;
}

/* --- the aggregate of a set of participants --- */

struct solver {
	const struct db_constraints *parts;
	size_t n;
	const struct db_machine_info *m;
	unsigned flags;
	uint64_t page;
	struct candidate cands[2 + 2 * DB_CONSTRAINTS_MAX_SET];
	size_t n_cands;
};

/*
 * A participant's name for a message. Every index in the aggregate is -1 until a participant
 * sets that bound, and a bound nobody set can still be the one that fails (the 32-bit stride
 * a huge width passes): the name is read only for an index that is a participant.
 */
static const char *who(const struct solver *s, int i)
{
	return i >= 0 && (size_t)i < s->n ? s->parts[i].name : "the broker";
}

struct aggregate {
	uint64_t camping;
	uint64_t need; /* buffers */
	int min_count_by;
	uint32_t max_count;
	int max_count_by;
	uint64_t min_size, max_size;
	int min_size_by, max_size_by;
	uint64_t size_div; /* lcm of the size divisors, not yet the page size */
	uint64_t stride_div, offset_div;
	bool image; /* somebody lists fourccs */
	uint32_t fourccs[DB_CONSTRAINTS_MAX_SET];
	size_t n_fourccs;
	uint32_t min_w, max_w, min_h, max_h;
	int min_w_by, max_w_by, min_h_by, max_h_by;
	uint32_t req_w, req_h;
	int req_by;
	uint32_t min_stride[ALL_PLANES], max_stride[ALL_PLANES];
	int min_stride_by[ALL_PLANES], max_stride_by[ALL_PLANES];
	bool contiguous;
	int contiguous_by;
	uint64_t max_seg;
	int max_seg_by;
	uint32_t addr_bits;
	int addr_bits_by;
	bool dmabuf;
	int dmabuf_by;
	bool cpu_read, cpu_write;
};

/* Lists the fourccs each lister in mask allows: "A allows YUYV, NV12; B allows XR24". */
static void describe_fourccs(const struct solver *s, uint64_t mask, struct sbuf *b)
{
	const char *sep = "";

	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct db_constraints *c = &s->parts[i];

		if (!c->fourccs)
			continue;
		sb_printf(b, "%s%s allows ", sep, c->name);
		for (size_t k = 0; k < c->n_fourccs; k++) {
			char f[5];

			sb_printf(b, "%s%s", k ? ", " : "", db_fourcc_str(c->fourccs[k], f));
		}
		sep = "; ";
	}
}

/* -EOPNOTSUPP with err's message, or 0 with *a. */
static int aggregate(const struct solver *s, uint64_t mask, struct aggregate *a,
		     struct db_constraints_error *err)
{
	int first_lister = -1;
	char b1[32], b2[32];

	*a = (struct aggregate){
		.min_count_by = -1,
		.max_count = UINT32_MAX,
		.max_count_by = -1,
		.max_size = UINT64_MAX,
		.min_size_by = -1,
		.max_size_by = -1,
		.size_div = 1,
		.stride_div = 1,
		.offset_div = 1,
		.max_w = UINT32_MAX,
		.max_h = UINT32_MAX,
		.min_w_by = -1,
		.max_w_by = -1,
		.min_h_by = -1,
		.max_h_by = -1,
		.req_by = -1,
		.contiguous_by = -1,
		.max_seg = UINT64_MAX,
		.max_seg_by = -1,
		.addr_bits_by = -1,
		.dmabuf_by = -1,
	};
	for (unsigned p = 0; p < ALL_PLANES; p++) {
		a->max_stride[p] = UINT32_MAX;
		a->min_stride_by[p] = a->max_stride_by[p] = -1;
	}

	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct db_constraints *c = &s->parts[i];
		int idx = (int)i;

		/* Counts: each participant's camping buffers are its own, so they add up. */
		a->camping += c->min_buffer_count_for_camping;
		if (c->min_buffer_count > a->need) {
			a->need = c->min_buffer_count;
			a->min_count_by = idx;
		}
		if (c->max_buffer_count && c->max_buffer_count < a->max_count) {
			a->max_count = c->max_buffer_count;
			a->max_count_by = idx;
		}
		if (c->min_size > a->min_size) {
			a->min_size = c->min_size;
			a->min_size_by = idx;
		}
		if (c->max_size && c->max_size < a->max_size) {
			a->max_size = c->max_size;
			a->max_size_by = idx;
		}
		if (!lcm_into(&a->size_div, c->size_divisor, UINT64_MAX)) {
			set_message(err,
				    "size divisors have no common multiple in 64 bits (%s: %" PRIu32
				    ")",
				    c->name, c->size_divisor);
			return -EOPNOTSUPP;
		}
		if (!lcm_into(&a->stride_div, c->stride_divisor, UINT32_MAX)) {
			struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};

			sb_printf(
				&b,
				"stride divisors have no common multiple a 32-bit stride holds (");
			for (size_t k = 0; k < s->n; k++) {
				if (!(mask & (1ull << k)))
					continue;
				if (k > i)
					break;
				if (s->parts[k].stride_divisor > 1)
					sb_printf(&b, "%s%s %" PRIu32,
						  b.len && b.s[b.len - 1] != '(' ? ", " : "",
						  who(s, k), s->parts[k].stride_divisor);
			}
			sb_printf(&b, ")");
			return -EOPNOTSUPP;
		}
		if (!lcm_into(&a->offset_div, c->offset_divisor, UINT32_MAX)) {
			set_message(err,
				    "plane offset divisors have no common multiple a 32-bit offset "
				    "holds (%s: %" PRIu32 ")",
				    c->name, c->offset_divisor);
			return -EOPNOTSUPP;
		}

		if (c->fourccs) {
			if (first_lister < 0) {
				first_lister = idx;
				/* In the first lister's order: the creator's preference. */
				for (size_t k = 0; k < c->n_fourccs; k++) {
					bool dup = false;

					for (size_t j = 0; j < a->n_fourccs; j++)
						dup |= a->fourccs[j] == c->fourccs[k];
					if (!dup)
						a->fourccs[a->n_fourccs++] = c->fourccs[k];
				}
			} else {
				size_t j = 0;

				for (size_t k = 0; k < a->n_fourccs; k++)
					if (has_fourcc(c, a->fourccs[k]))
						a->fourccs[j++] = a->fourccs[k];
				a->n_fourccs = j;
			}
			a->image = true;
		}
		if (c->min_width > a->min_w) {
			a->min_w = c->min_width;
			a->min_w_by = idx;
		}
		if (c->max_width && c->max_width < a->max_w) {
			a->max_w = c->max_width;
			a->max_w_by = idx;
		}
		if (c->min_height > a->min_h) {
			a->min_h = c->min_height;
			a->min_h_by = idx;
		}
		if (c->max_height && c->max_height < a->max_h) {
			a->max_h = c->max_height;
			a->max_h_by = idx;
		}
		for (unsigned p = 0; p < ALL_PLANES; p++) {
			if (c->min_stride[p] > a->min_stride[p]) {
				a->min_stride[p] = c->min_stride[p];
				a->min_stride_by[p] = idx;
			}
			if (c->max_stride[p] && c->max_stride[p] < a->max_stride[p]) {
				a->max_stride[p] = c->max_stride[p];
				a->max_stride_by[p] = idx;
			}
		}

		if (c->contiguous && !a->contiguous) {
			a->contiguous = true;
			a->contiguous_by = idx;
		}
		if (c->max_segment_size && c->max_segment_size < a->max_seg) {
			a->max_seg = c->max_segment_size;
			a->max_seg_by = idx;
		}
		if (c->dma_address_bits && (!a->addr_bits || c->dma_address_bits < a->addr_bits)) {
			a->addr_bits = c->dma_address_bits;
			a->addr_bits_by = idx;
		}
		if (needs_dmabuf(c) && !a->dmabuf) {
			a->dmabuf = true;
			a->dmabuf_by = idx;
		}
		a->cpu_read |= c->cpu_read;
		a->cpu_write |= c->cpu_write;
	}

	/* The requested size is checked across participants whether or not there is an image:
	 * two creators asking for different sizes disagree either way. */
	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct db_constraints *c = &s->parts[i];

		if (!c->width && !c->height)
			continue;
		if (a->req_by < 0) {
			a->req_w = c->width;
			a->req_h = c->height;
			a->req_by = (int)i;
		} else if ((c->width && a->req_w && c->width != a->req_w) ||
			   (c->height && a->req_h && c->height != a->req_h)) {
			set_message(err,
				    "%s requests %" PRIu32 "x%" PRIu32 " but %s requests %" PRIu32
				    "x%" PRIu32,
				    who(s, a->req_by), a->req_w, a->req_h, c->name, c->width,
				    c->height);
			return -EOPNOTSUPP;
		} else {
			a->req_w = a->req_w ? a->req_w : c->width;
			a->req_h = a->req_h ? a->req_h : c->height;
		}
	}

	if (a->camping > DB_CONSTRAINTS_MAX_BUFFERS || a->need > DB_CONSTRAINTS_MAX_BUFFERS) {
		set_message(err,
			    "the collection needs %" PRIu64 " buffers; the broker makes at most %d",
			    MAX_U64(a->camping, a->need), DB_CONSTRAINTS_MAX_BUFFERS);
		return -EOPNOTSUPP;
	}
	a->need = MAX_U64(MAX_U64(a->need, a->camping), 1);
	if (a->need > a->max_count) {
		struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};
		const char *sep = " (";

		sb_printf(&b, "%s allows at most %" PRIu32 " buffers but %" PRIu64 " are needed",
			  who(s, a->max_count_by), a->max_count, a->need);
		if (a->camping >= a->need) {
			for (size_t i = 0; i < s->n; i++) {
				if (!(mask & (1ull << i)))
					continue;
				if (s->parts[i].min_buffer_count_for_camping) {
					sb_printf(&b, "%s%s camps on %" PRIu32, sep, who(s, i),
						  s->parts[i].min_buffer_count_for_camping);
					sep = ", ";
				}
			}
			sb_printf(&b, ")");
		} else {
			sb_printf(&b, " (%s needs %" PRIu64 ")", who(s, a->min_count_by), a->need);
		}
		return -EOPNOTSUPP;
	}
	if (a->min_size > a->max_size) {
		set_message(err, "%s needs buffers of at least %s but %s allows at most %s",
			    who(s, a->min_size_by), bytes_str(a->min_size, b1),
			    who(s, a->max_size_by), bytes_str(a->max_size, b2));
		return -EOPNOTSUPP;
	}
	if (a->image && a->n_fourccs == 0) {
		struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};

		sb_printf(&b, "no format in common: ");
		describe_fourccs(s, mask, &b);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* --- backend choice --- */

enum stage {
	STAGE_ALLOWED, /* a participant does not allow it */
	STAGE_CONTIGUOUS, /* cannot be contiguous (for this size) */
	STAGE_DMABUF, /* not a dma-buf */
	STAGE_SIZE, /* a size limit (udmabuf's, a huge page) */
	STAGE_SEGMENT, /* its segments are larger than someone's limit */
	STAGE_OK,
};

struct verdict {
	enum stage stage;
	int by; /* the participant that ruled it out, or -1 for the machine */
	uint64_t alloc_size;
	uint64_t segment;
	enum db_backend_kind kind;
};

/* Why hugetlb udmabuf cannot hold size bytes here, or NULL if it can. */
static const char *hugetlb_unfit(const struct solver *s, uint64_t size)
{
	if (!s->m->udmabuf)
		return "no udmabuf";
	if (!s->m->huge_page_size)
		return "no huge pages";
	if (!s->m->hugetlb_vmap_safe)
		return "hugetlb udmabuf is not vmap-safe on this kernel";
	if (size > s->m->huge_page_size)
		return "larger than a huge page";
	return NULL;
}

static struct verdict judge(const struct solver *s, uint64_t mask, const struct aggregate *a,
			    const struct candidate *cd, uint64_t size)
{
	struct verdict v = {.stage = STAGE_ALLOWED, .by = -1, .alloc_size = size, .kind = cd->kind};

	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		if (!backend_allowed(&s->parts[i], cd)) {
			v.by = (int)i;
			return v;
		}
	}
	v.stage = STAGE_CONTIGUOUS;
	v.by = a->contiguous_by;
	if (a->contiguous) {
		if (cd->kind == DB_BACKEND_UDMABUF) {
			if (hugetlb_unfit(s, size))
				return v;
			/* One huge page per buffer: the dma-buf is that large. */
			v.kind = DB_BACKEND_UDMABUF_HUGETLB;
			v.alloc_size = s->m->huge_page_size;
		} else if (cd->kind != DB_BACKEND_HEAP || !cd->heap->contiguous) {
			return v;
		}
	}
	v.stage = STAGE_DMABUF;
	v.by = a->dmabuf_by;
	if (a->dmabuf && cd->kind == DB_BACKEND_MEMFD)
		return v;
	v.stage = STAGE_SIZE;
	v.by = -1;
	if (cd->kind == DB_BACKEND_UDMABUF && s->m->udmabuf_size_limit &&
	    v.alloc_size > s->m->udmabuf_size_limit)
		return v;
	if (v.alloc_size != size) {
		/* The huge page is the buffer: the participants' sizes apply to it. */
		if (v.alloc_size > a->max_size) {
			v.by = a->max_size_by;
			return v;
		}
		if (v.alloc_size % a->size_div) {
			v.by = -2; /* a size divisor */
			return v;
		}
		if (s->m->max_buffer_size && v.alloc_size > s->m->max_buffer_size)
			return v;
	}
	v.stage = STAGE_SEGMENT;
	v.by = a->max_seg_by;
	v.segment = candidate_segment(cd, v.alloc_size, s->page);
	if (v.segment > a->max_seg)
		return v;
	v.stage = STAGE_OK;
	v.by = -1;
	return v;
}

static void describe_backends(const struct solver *s, uint64_t mask, struct sbuf *b)
{
	char name[DB_CONSTRAINTS_NAME_MAX + 16];
	const char *sep = "";

	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct db_constraints *c = &s->parts[i];

		if (!c->backends)
			continue;
		sb_printf(b, "%s%s allows ", sep, c->name);
		for (size_t k = 0; k < c->n_backends; k++)
			sb_printf(b, "%s%s", k ? ", " : "", c->backends[k]);
		sep = "; ";
	}
	sb_printf(b, " (here: ");
	for (size_t k = 0; k < s->n_cands; k++) {
		candidate_name(&s->cands[k], name, sizeof(name));
		sb_printf(b, "%s%s", k ? ", " : "", name);
	}
	sb_printf(b, "%s)", s->n_cands ? "" : "nothing");
}

/* Says why the best verdict (the one that got furthest) failed. */
static void backend_failure(const struct solver *s, uint64_t mask, const struct aggregate *a,
			    const struct verdict *v, const struct candidate *cd, uint64_t size,
			    struct db_constraints_error *err)
{
	struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};
	char name[DB_CONSTRAINTS_NAME_MAX + 16], b1[32], b2[32];
	bool cma = false, cma_allowed = false;

	if (!err)
		return;
	candidate_name(cd, name, sizeof(name));
	switch (v->stage) {
	case STAGE_ALLOWED:
		sb_printf(&b, "no backend here is allowed by every participant: ");
		describe_backends(s, mask, &b);
		break;
	case STAGE_CONTIGUOUS:
		sb_printf(
			&b,
			"%s requires physically contiguous memory; no backend can provide %" PRIu64
			" bytes contiguous here (",
			who(s, a->contiguous_by), size);
		for (size_t k = 0; k < s->n_cands; k++) {
			if (s->cands[k].kind != DB_BACKEND_HEAP || !s->cands[k].heap->contiguous)
				continue;
			cma = true;
			if (judge(s, mask, a, &s->cands[k], size).stage > STAGE_ALLOWED)
				cma_allowed = true;
		}
		if (!cma)
			sb_printf(&b, "no CMA heap");
		else if (!cma_allowed)
			sb_printf(&b, "the CMA heap is not allowed by every participant");
		if (s->m->udmabuf) {
			const char *why = hugetlb_unfit(s, size);

			if (why && strcmp(why, "larger than a huge page") == 0)
				sb_printf(&b, ", %s > huge page %s", bytes_str(size, b1),
					  bytes_str(s->m->huge_page_size, b2));
			else if (why)
				sb_printf(&b, ", %s", why);
			else
				sb_printf(&b, ", udmabuf not allowed by every participant");
		}
		sb_printf(&b, ")");
		break;
	case STAGE_DMABUF:
		sb_printf(&b,
			  "%s imports into a device, which needs a dma-buf; the only backend left "
			  "here is memfd",
			  who(s, a->dmabuf_by));
		break;
	case STAGE_SIZE:
		if (v->by >= 0)
			sb_printf(&b, "%s allows at most %s but %s makes %s buffers", who(s, v->by),
				  bytes_str(a->max_size, b1), name, bytes_str(v->alloc_size, b2));
		else if (v->by == -2)
			sb_printf(&b,
				  "%s makes %s buffers, which the size divisor %" PRIu64
				  " does not divide",
				  name, bytes_str(v->alloc_size, b1), a->size_div);
		else
			sb_printf(&b, "%s buffers exceed what %s may make here (limit %s)",
				  bytes_str(v->alloc_size, b1), name,
				  bytes_str(s->m->udmabuf_size_limit ? s->m->udmabuf_size_limit
								     : s->m->max_buffer_size,
					    b2));
		break;
	case STAGE_SEGMENT:
		sb_printf(&b, "%s accepts DMA segments of at most %s but %s makes %s segments",
			  who(s, a->max_seg_by), bytes_str(a->max_seg, b1), name,
			  bytes_str(v->segment, b2));
		if (a->contiguous && a->contiguous_by == a->max_seg_by)
			sb_printf(&b, " (it also requires physically contiguous memory)");
		else if (a->contiguous)
			sb_printf(&b, " (%s requires physically contiguous memory)",
				  who(s, a->contiguous_by));
		sb_printf(&b, "; segment limit not met (strict)");
		break;
	case STAGE_OK:
		break;
	}
}

/* Picks the backend for size bytes. 0 and *ret, or -EOPNOTSUPP. */
static int choose_backend(const struct solver *s, uint64_t mask, const struct aggregate *a,
			  uint64_t size, struct verdict *ret, size_t *ret_cand,
			  struct db_constraints_error *err)
{
	struct verdict best = {.stage = STAGE_ALLOWED, .by = -1};
	size_t best_cand = 0, fallback = SIZE_MAX;
	struct verdict fallback_v = {0};

	for (size_t k = 0; k < s->n_cands; k++) {
		struct verdict v = judge(s, mask, a, &s->cands[k], size);

		if (v.stage == STAGE_OK) {
			*ret = v;
			*ret_cand = k;
			return 0;
		}
		if (v.stage == STAGE_SEGMENT && fallback == SIZE_MAX) {
			fallback = k;
			fallback_v = v;
		}
		if (v.stage > best.stage) {
			best = v;
			best_cand = k;
		}
	}
	/* Segments that are too large still work where nothing enforces the limit (dma-direct
	 * does not): unless told to be strict, allocate and say so. */
	if (fallback != SIZE_MAX && !(s->flags & DB_CONSTRAINTS_STRICT_SEGMENTS)) {
		*ret = fallback_v;
		*ret_cand = fallback;
		return 0;
	}
	backend_failure(s, mask, a, &best, &s->cands[best_cand], size, err);
	return -EOPNOTSUPP;
}

/* --- the layout --- */

/*
 * The smallest width (or height) every participant allows that the format's blocks divide,
 * or the requested one. All choices here are the least that satisfy the lower bounds, so
 * when an upper bound fails no other choice would pass it.
 */
static int pick_dim(const struct solver *s, const struct aggregate *a, bool is_w,
		    const struct db_format_info *fmt, uint32_t *ret,
		    struct db_constraints_error *err)
{
	uint32_t lo = is_w ? a->min_w : a->min_h, hi = is_w ? a->max_w : a->max_h;
	int lo_by = is_w ? a->min_w_by : a->min_h_by, hi_by = is_w ? a->max_w_by : a->max_h_by;
	uint32_t req = is_w ? a->req_w : a->req_h;
	unsigned sub = is_w ? fmt->hsub : fmt->vsub;
	const char *what = is_w ? "width" : "height";
	uint64_t v;

	if (lo > hi) {
		set_message(err,
			    "%s needs a %s of at least %" PRIu32 " but %s allows at most %" PRIu32,
			    who(s, lo_by), what, lo, who(s, hi_by), hi);
		return -EOPNOTSUPP;
	}
	if (req) {
		if (req < lo || req > hi) {
			set_message(err, "%s requests %s %" PRIu32 " but %s %s %" PRIu32,
				    who(s, a->req_by), what, req, who(s, req < lo ? lo_by : hi_by),
				    req < lo ? "needs at least" : "allows at most",
				    req < lo ? lo : hi);
			return -EOPNOTSUPP;
		}
		if (req % sub) {
			set_message(err,
				    "%s requests %s %" PRIu32
				    ", which %s's %u-pixel blocks do not divide",
				    who(s, a->req_by), what, req, fmt->name, sub);
			return -EOPNOTSUPP;
		}
		*ret = req;
		return 0;
	}
	v = ((uint64_t)MAX_U64(lo, 1) + sub - 1) / sub * sub;
	if (v > hi) {
		set_message(err,
			    "no %s in %" PRIu32 "..%" PRIu32 " fits %s's %u-pixel blocks (%s, %s)",
			    what, lo, hi, fmt->name, sub, lo_by >= 0 ? who(s, lo_by) : "-",
			    hi_by >= 0 ? who(s, hi_by) : "-");
		return -EOPNOTSUPP;
	}
	*ret = (uint32_t)v;
	return 0;
}

/* The divisor's participants, for a message: "gpu stride divisor 256" or "stride divisors (a 3,
 * b 256: 768)". */
static void describe_divisor(const struct solver *s, uint64_t mask, bool stride, uint64_t lcm,
			     struct sbuf *b)
{
	int n = 0, last = -1;

	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		uint32_t d = stride ? s->parts[i].stride_divisor : s->parts[i].offset_divisor;

		if (d > 1) {
			n++;
			last = (int)i;
		}
	}
	if (n == 1) {
		sb_printf(b, "%s %s divisor %" PRIu64, who(s, last), stride ? "stride" : "offset",
			  lcm);
		return;
	}
	sb_printf(b, "%s divisors (", stride ? "stride" : "offset");
	n = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		uint32_t d = stride ? s->parts[i].stride_divisor : s->parts[i].offset_divisor;

		if (d > 1)
			sb_printf(b, "%s%s %" PRIu32, n++ ? ", " : "", who(s, i), d);
	}
	sb_printf(b, ": %" PRIu64 ")", lcm);
}

static int lay_out(const struct solver *s, uint64_t mask, const struct aggregate *a,
		   const struct db_format_info *fmt, struct db_layout *l, uint64_t *ret_end,
		   struct db_constraints_error *err)
{
	uint64_t offset = 0;
	uint32_t w, h;
	int r;

	r = pick_dim(s, a, true, fmt, &w, err);
	if (r < 0)
		return r;
	r = pick_dim(s, a, false, fmt, &h, err);
	if (r < 0)
		return r;
	*l = (struct db_layout){
		.width = w,
		.height = h,
		.fourcc = fmt->fourcc,
		.modifier = DRM_FORMAT_MOD_LINEAR,
		.n_planes = fmt->n_planes,
	};
	for (unsigned p = 0; p < fmt->n_planes; p++) {
		uint64_t row = (uint64_t)db_format_plane_width(fmt, p, w) * fmt->cpp[p];
		uint64_t rows = db_format_plane_height(fmt, p, h);
		uint64_t lb = MAX_U64(row, a->min_stride[p]), stride, size;
		struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};

		if (lb > a->max_stride[p]) {
			if (a->min_stride[p] > row)
				sb_printf(&b, "%s needs a plane-%u stride of at least %" PRIu32,
					  who(s, a->min_stride_by[p]), p, a->min_stride[p]);
			else
				sb_printf(&b,
					  "%" PRIu32 " px %s needs %" PRIu64
					  " bytes a row in plane %u",
					  w, fmt->name, row, p);
			if (a->max_stride_by[p] >= 0)
				sb_printf(&b, " but %s max stride is %" PRIu32,
					  who(s, a->max_stride_by[p]), a->max_stride[p]);
			else
				sb_printf(&b, " but a stride holds at most %" PRIu32 " bytes",
					  a->max_stride[p]);
			return -EOPNOTSUPP;
		}
		/* lb < 2^35 and the divisor < 2^32: no wrap. */
		stride = (lb + a->stride_div - 1) / a->stride_div * a->stride_div;
		if (stride > a->max_stride[p]) {
			describe_divisor(s, mask, true, a->stride_div, &b);
			if (a->max_stride_by[p] >= 0)
				sb_printf(&b, " vs %s max stride %" PRIu32 " for %" PRIu32 " px %s",
					  who(s, a->max_stride_by[p]), a->max_stride[p], w,
					  fmt->name);
			else
				sb_printf(&b,
					  " takes the stride of %" PRIu32 " px %s past %" PRIu32
					  " bytes",
					  w, fmt->name, a->max_stride[p]);
			if (p)
				sb_printf(&b, " (plane %u)", p);
			return -EOPNOTSUPP;
		}
		if (!round_up_to(offset, a->offset_div, &offset) || offset > UINT32_MAX) {
			if (a->offset_div > 1)
				describe_divisor(s, mask, false, a->offset_div, &b);
			sb_printf(&b,
				  "%s%" PRIu32 "x%" PRIu32 " %s: plane %u would start past 4 GiB",
				  a->offset_div > 1 ? " with " : "", w, h, fmt->name, p);
			return -EOPNOTSUPP;
		}
		if (stride > UINT32_MAX) {
			sb_printf(&b, "%" PRIu32 " px %s needs a stride past 4 GiB", w, fmt->name);
			return -EOPNOTSUPP;
		}
		l->strides[p] = (uint32_t)stride;
		l->offsets[p] = (uint32_t)offset;
		if (__builtin_mul_overflow(stride, rows, &size) ||
		    __builtin_add_overflow(offset, size, &offset)) {
			sb_printf(&b, "%" PRIu32 "x%" PRIu32 " %s does not fit in 64 bits", w, h,
				  fmt->name);
			return -EOPNOTSUPP;
		}
	}
	*ret_end = offset;
	return 0;
}

/* The buffer size: at least end and every minimum, a multiple of the size divisors and the
 * page, within every maximum. */
static int size_buffers(const struct solver *s, const struct aggregate *a, uint64_t end,
			const char *what, uint64_t *ret, struct db_constraints_error *err)
{
	uint64_t div = a->size_div, size;
	char b1[32], b2[32];

	if (!lcm_into(&div, s->page, UINT64_MAX) ||
	    !round_up_to(MAX_U64(end, a->min_size), div, &size) || size > SIZE_MAX) {
		set_message(err, "%s does not fit in 64 bits with size divisor %" PRIu64, what,
			    a->size_div);
		return -EOPNOTSUPP;
	}
	if (size > a->max_size) {
		set_message(err, "%s allows at most %s but %s takes %s", who(s, a->max_size_by),
			    bytes_str(a->max_size, b1), what, bytes_str(size, b2));
		if (a->size_div > 1 && err) {
			size_t len = strlen(err->message);

			snprintf(err->message + len, sizeof(err->message) - len,
				 " (a multiple of the size divisor %" PRIu64 ")", a->size_div);
		}
		return -EOPNOTSUPP;
	}
	if (s->m->max_buffer_size && size > s->m->max_buffer_size) {
		set_message(err, "%s takes %s; the broker allows at most %s per buffer", what,
			    bytes_str(size, b1), bytes_str(s->m->max_buffer_size, b2));
		return -EOPNOTSUPP;
	}
	*ret = size;
	return 0;
}

static void fill_plan(const struct solver *s, const struct aggregate *a, const struct verdict *v,
		      const struct candidate *cd, const struct db_layout *l,
		      struct db_collection_plan *plan)
{
	struct sbuf b = {plan->note, sizeof(plan->note), 0};
	char b1[32], b2[32];

	*plan = (struct db_collection_plan){
		.buffer_count = (uint32_t)a->need,
		.camping_total = (uint32_t)a->camping,
		.size = (size_t)v->alloc_size,
		.layout = *l,
		.kind = v->kind,
		.contiguous = v->kind == DB_BACKEND_UDMABUF_HUGETLB ||
			      (v->kind == DB_BACKEND_HEAP && cd->heap->contiguous),
		.is_dmabuf = v->kind != DB_BACKEND_MEMFD,
		.max_segment = v->segment,
		.dma_address_bits = a->addr_bits,
		.cpu_read = a->cpu_read,
		.cpu_write = a->cpu_write,
		.n_participants = s->n,
	};
	plan->layout.size = plan->size;
	candidate_name(cd, plan->backend, sizeof(plan->backend));
	for (size_t i = 0; i < s->n; i++)
		/* The daemon's backends can re-back a buffer, so they export as dynamic. */
		plan->paths[i] = db_attach_path_for(s->parts[i].dynamic, true);
	if (v->stage == STAGE_SEGMENT) {
		plan->flags |= DB_COLLECTION_SEGMENT_LIMIT_NOT_MET;
		sb_printf(&b,
			  "segment limit not met: %s accepts DMA segments of at most %s but %s "
			  "makes %s segments",
			  who(s, a->max_seg_by), bytes_str(a->max_seg, b1), plan->backend,
			  bytes_str(v->segment, b2));
		if (a->contiguous && a->contiguous_by == a->max_seg_by)
			sb_printf(&b, " (it also requires physically contiguous memory)");
		else if (a->contiguous)
			sb_printf(&b, " (%s requires physically contiguous memory)",
				  who(s, a->contiguous_by));
	}
	if (a->addr_bits && a->addr_bits < 64) {
		plan->flags |= DB_COLLECTION_ADDRESS_BITS_UNCHECKED;
		sb_printf(&b,
			  "%s%s declares %" PRIu32
			  " DMA address bits; where the memory lies is not checked",
			  b.len ? "; " : "", who(s, a->addr_bits_by), a->addr_bits);
	}
}

/*
 * The whole intersection for the participants in mask: 0, -EOPNOTSUPP, or -EINVAL when the
 * set has no size at all. With any_size, a set without a size gets the least there is (one
 * page): a subset of a collection that has its size from a participant left out is measured
 * as if that one asked for nothing more, so a conflict never names the participant whose only
 * part in it is to say how large the buffers are.
 */
static int solve(const struct solver *s, uint64_t mask, bool any_size,
		 struct db_collection_plan *plan, struct db_constraints_error *err)
{
	struct aggregate a;
	struct db_constraints_error first = {0};
	bool have_first = false, any_known = false;
	int r;

	r = aggregate(s, mask, &a, err);
	if (r < 0)
		return r;

	if (!a.image) {
		struct db_layout l = {0};
		struct verdict v;
		uint64_t size;
		size_t k;

		if (a.min_size == 0 && any_size) {
			a.min_size = 1;
		} else if (a.min_size == 0) {
			set_message(err, "no participant says how large the buffers are (a size or "
					 "an image format)");
			return -EINVAL;
		}
		r = size_buffers(s, &a, 0, "the buffer", &size, err);
		if (r < 0)
			return r;
		r = choose_backend(s, mask, &a, size, &v, &k, err);
		if (r < 0)
			return r;
		if (plan)
			fill_plan(s, &a, &v, &s->cands[k], &l, plan);
		return 0;
	}

	/* Every participant that sets modifiers must take LINEAR: the only one laid out. */
	for (size_t i = 0; i < s->n; i++) {
		if (!(mask & (1ull << i)))
			continue;
		if (!has_linear(&s->parts[i])) {
			set_message(err,
				    "%s allows only modifiers the broker cannot lay out (it lays "
				    "out LINEAR)",
				    who(s, i));
			return -EOPNOTSUPP;
		}
	}

	/* The formats in preference order: the first that works is the one. */
	for (size_t f = 0; f < a.n_fourccs; f++) {
		const struct db_format_info *fmt = db_format_lookup(a.fourccs[f]);
		struct db_constraints_error *e = have_first ? NULL : &first;
		char what[64];
		struct db_layout l;
		struct verdict v;
		uint64_t end, size;
		size_t k;

		if (!fmt)
			continue;
		any_known = true;
		r = lay_out(s, mask, &a, fmt, &l, &end, e);
		if (r >= 0) {
			snprintf(what, sizeof(what), "%" PRIu32 "x%" PRIu32 " %s", l.width,
				 l.height, fmt->name);
			r = size_buffers(s, &a, end, what, &size, e);
		}
		if (r >= 0)
			r = choose_backend(s, mask, &a, size, &v, &k, e);
		if (r >= 0) {
			if (plan)
				fill_plan(s, &a, &v, &s->cands[k], &l, plan);
			return 0;
		}
		have_first = true;
	}
	if (!any_known) {
		struct sbuf b = {err ? err->message : NULL, sizeof(err->message), 0};

		sb_printf(&b, "no format in common that the broker can lay out: ");
		describe_fourccs(s, mask, &b);
		return -EOPNOTSUPP;
	}
	if (err)
		memcpy(err->message, first.message, sizeof(err->message));
	return -EOPNOTSUPP;
}

/* --- checking input --- */

static int invalid(struct db_constraints_error *err, int who, const char *fmt, ...) _printf_(3, 4);
static int invalid(struct db_constraints_error *err, int who, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		err->participant = who;
		err->conflict = 0;
	}
	va_start(ap, fmt);
	err_vprintf(err, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int validate(const struct db_constraints *c, struct db_constraints_error *err)
{
	const char *name;

	if (!c)
		return invalid(err, -1, "no constraints");
	if (!c->name || !c->name[0] || strlen(c->name) > 255)
		return invalid(err, -1, "a participant needs a name of 1 to 255 bytes");
	name = c->name;
	if (c->max_buffer_count && (c->min_buffer_count > c->max_buffer_count ||
				    c->min_buffer_count_for_camping > c->max_buffer_count))
		return invalid(err, -1,
			       "%s: at least %" PRIu32 " buffers (camping on %" PRIu32
			       ") but at most %" PRIu32,
			       name, c->min_buffer_count, c->min_buffer_count_for_camping,
			       c->max_buffer_count);
	if (c->max_size && c->min_size > c->max_size)
		return invalid(err, -1, "%s: minimum size %" PRIu64 " over maximum %" PRIu64, name,
			       c->min_size, c->max_size);
	if ((c->fourccs && (c->n_fourccs == 0 || c->n_fourccs > DB_CONSTRAINTS_MAX_SET)) ||
	    (!c->fourccs && c->n_fourccs))
		return invalid(err, -1, "%s: the fourcc set needs 1 to %d entries", name,
			       DB_CONSTRAINTS_MAX_SET);
	for (size_t i = 0; i < c->n_fourccs; i++)
		if (c->fourccs[i] == 0)
			return invalid(err, -1, "%s: fourcc 0 is not a format", name);
	if ((c->modifiers && (c->n_modifiers == 0 || c->n_modifiers > DB_CONSTRAINTS_MAX_SET)) ||
	    (!c->modifiers && c->n_modifiers))
		return invalid(err, -1, "%s: the modifier set needs 1 to %d entries", name,
			       DB_CONSTRAINTS_MAX_SET);
	for (size_t i = 0; i < c->n_modifiers; i++)
		if (c->modifiers[i] == DRM_FORMAT_MOD_INVALID)
			return invalid(err, -1, "%s: DRM_FORMAT_MOD_INVALID is not a modifier",
				       name);
	if ((c->max_width && c->min_width > c->max_width) ||
	    (c->max_height && c->min_height > c->max_height))
		return invalid(err, -1, "%s: a minimum width or height over its maximum", name);
	if ((c->width && (c->width < c->min_width || (c->max_width && c->width > c->max_width))) ||
	    (c->height &&
	     (c->height < c->min_height || (c->max_height && c->height > c->max_height))))
		return invalid(err, -1, "%s: requests a size outside its own range", name);
	if (!c->width != !c->height)
		return invalid(err, -1, "%s: requests a width without a height or the reverse",
			       name);
	for (unsigned p = 0; p < ALL_PLANES; p++)
		if (c->max_stride[p] && c->min_stride[p] > c->max_stride[p])
			return invalid(err, -1, "%s: plane-%u minimum stride over its maximum",
				       name, p);
	if (c->dma_address_bits > 64)
		return invalid(err, -1, "%s: %" PRIu32 " DMA address bits", name,
			       c->dma_address_bits);
	if ((c->backends && (c->n_backends == 0 || c->n_backends > DB_CONSTRAINTS_MAX_SET)) ||
	    (!c->backends && c->n_backends))
		return invalid(err, -1, "%s: the backend set needs 1 to %d entries", name,
			       DB_CONSTRAINTS_MAX_SET);
	for (size_t i = 0; i < c->n_backends; i++)
		if (!backend_name_valid(c->backends[i]))
			return invalid(err, -1, "%s: unknown backend \"%s\"", name,
				       c->backends[i] ? c->backends[i] : "(null)");
	return 0;
}

static int validate_machine(const struct db_machine_info *m, struct db_constraints_error *err)
{
	uint64_t page;

	if (!m)
		return invalid(err, -1, "no machine description");
	page = page_size_of(m);
	if (!IS_POWER_OF_2(page) || page < 512 || page > (1u << 30))
		return invalid(err, -1, "page size %" PRIu64 " is not a power of two", page);
	if (m->huge_page_size && (m->huge_page_size % page || m->huge_page_size > (1ull << 40)))
		return invalid(err, -1, "huge page size %" PRIu64 " is not a multiple of the page",
			       m->huge_page_size);
	if ((m->heaps && m->n_heaps > DB_CONSTRAINTS_MAX_SET) || (!m->heaps && m->n_heaps))
		return invalid(err, -1, "at most %d heaps", DB_CONSTRAINTS_MAX_SET);
	for (size_t i = 0; i < m->n_heaps; i++) {
		const char *n = m->heaps[i].name;

		if (!n || !n[0] || strlen(n) >= DB_CONSTRAINTS_NAME_MAX || strchr(n, '/'))
			return invalid(err, -1, "a heap needs a name of 1 to %d bytes",
				       DB_CONSTRAINTS_NAME_MAX - 1);
		for (size_t j = 0; j < i; j++)
			if (strcmp(m->heaps[j].name, n) == 0)
				return invalid(err, -1, "heap %s is listed twice", n);
	}
	return 0;
}

/* Candidates in order of preference: udmabuf (its pages are charged to their memfd's
 * cgroup, as backend.c prefers), heaps that are not CMA (CMA is scarce), CMA heaps, memfd. */
static void build_candidates(struct solver *s)
{
	const struct db_machine_info *m = s->m;

	s->n_cands = 0;
	if (m->udmabuf)
		s->cands[s->n_cands++] = (struct candidate){DB_BACKEND_UDMABUF, NULL};
	for (int contig = 0; contig < 2; contig++)
		for (size_t i = 0; i < m->n_heaps; i++)
			if (m->heaps[i].contiguous == (bool)contig)
				s->cands[s->n_cands++] =
					(struct candidate){DB_BACKEND_HEAP, &m->heaps[i]};
	if (m->memfd)
		s->cands[s->n_cands++] = (struct candidate){DB_BACKEND_MEMFD, NULL};
}

static int intersect(const struct db_constraints *parts, size_t n,
		     const struct db_machine_info *machine, unsigned flags,
		     struct db_collection_plan *ret, struct db_constraints_error *err)
{
	struct solver s = {.parts = parts, .n = n, .m = machine, .flags = flags};
	uint64_t all, conflict;
	int r;

	if (err)
		*err = (struct db_constraints_error){.participant = -1};
	if (!ret)
		return invalid(err, -1, "nowhere to put the result");
	if (n == 0 || !parts)
		return invalid(err, -1, "a collection needs at least one participant");
	if (n > DB_CONSTRAINTS_MAX_PARTICIPANTS)
		return invalid(err, -1, "a collection has at most %d participants",
			       DB_CONSTRAINTS_MAX_PARTICIPANTS);
	if (flags & ~(unsigned)DB_CONSTRAINTS_STRICT_SEGMENTS)
		return invalid(err, -1, "unknown flags 0x%x", flags);
	r = validate_machine(machine, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = validate(&parts[i], err);
		if (r < 0) {
			if (err)
				err->participant = (int)i;
			return r;
		}
	}
	s.page = page_size_of(machine);
	build_candidates(&s);
	/* Nobody is to blame for that: every participant would be a minimal conflict alone. */
	if (s.n_cands == 0) {
		set_message(err, "this machine offers no backend at all");
		return -ENODEV;
	}

	all = n == 64 ? UINT64_MAX : (1ull << n) - 1;
	r = solve(&s, all, false, ret, NULL);
	if (r == 0)
		return 0;
	if (r == -EINVAL)
		return solve(&s, all, false, ret, err);

	/*
	 * Deletion: drop each participant whose absence still leaves a conflict. Adding a
	 * participant only adds constraints (every choice is the least that its lower bounds
	 * allow, and more participants only raise those and lower the upper ones), so what is
	 * left is a conflict from which no one can be removed.
	 */
	conflict = all;
	for (size_t i = 0; i < n; i++) {
		uint64_t rest = conflict & ~(1ull << i);

		if (rest == conflict || rest == 0)
			continue;
		if (solve(&s, rest, true, NULL, NULL) == -EOPNOTSUPP)
			conflict = rest;
	}
	r = solve(&s, conflict, true, NULL, err);
	if (err)
		err->conflict = conflict;
	return r < 0 ? r : -EOPNOTSUPP;
}

/* --- late joiners --- */

static int misfit(struct db_constraints_error *err, const char *fmt, ...) _printf_(2, 3);
static int misfit(struct db_constraints_error *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vprintf(err, fmt, ap);
	va_end(ap);
	return -EOPNOTSUPP;
}

static bool plan_backend_allowed(const struct db_collection_plan *plan,
				 const struct db_constraints *c)
{
	if (!c->backends)
		return true;
	for (size_t i = 0; i < c->n_backends; i++) {
		if (strcmp(c->backends[i], plan->backend) == 0)
			return true;
		if (plan->kind == DB_BACKEND_HEAP && strcmp(c->backends[i], "dma-heap") == 0)
			return true;
	}
	return false;
}

static int check_joiner(const struct db_collection_plan *plan, const struct db_constraints *c,
			unsigned flags, struct db_constraints_fit *ret,
			struct db_constraints_error *err)
{
	const struct db_layout *l;
	const char *name;
	uint64_t camping;
	char b1[32], b2[32];
	int r;

	if (err)
		*err = (struct db_constraints_error){.participant = -1};
	if (!plan || !ret)
		return invalid(err, -1, "no plan or nowhere to put the result");
	r = validate(c, err);
	if (r < 0)
		return r;
	l = &plan->layout;
	name = c->name;
	*ret = (struct db_constraints_fit){.path = db_attach_path_for(c->dynamic, true)};

	camping = (uint64_t)plan->camping_total + c->min_buffer_count_for_camping;
	if (camping > plan->buffer_count)
		return misfit(err,
			      "%s camps on %" PRIu32 " buffers; %" PRIu32 " of the %" PRIu32
			      " are camped on already",
			      name, c->min_buffer_count_for_camping, plan->camping_total,
			      plan->buffer_count);
	if (c->min_buffer_count > plan->buffer_count ||
	    (c->max_buffer_count && plan->buffer_count > c->max_buffer_count))
		return misfit(err,
			      "%s needs %" PRIu32 "..%" PRIu32
			      " buffers; the collection has %" PRIu32,
			      name, c->min_buffer_count, c->max_buffer_count, plan->buffer_count);
	if (plan->size < c->min_size || (c->max_size && plan->size > c->max_size))
		return misfit(err, "%s needs buffers of %s..%s; they are %s", name,
			      bytes_str(c->min_size, b1), bytes_str(c->max_size, b2),
			      bytes_str(plan->size, b1));
	if (c->size_divisor && plan->size % c->size_divisor)
		return misfit(err, "%s size divisor %" PRIu32 " does not divide %zu", name,
			      c->size_divisor, plan->size);

	if (c->fourccs && (l->fourcc == 0 || !has_fourcc(c, l->fourcc)))
		return misfit(err, "%s does not allow the collection's format %s", name,
			      l->fourcc ? db_fourcc_str(l->fourcc, b1) : "(plain bytes)");
	if (l->fourcc) {
		if (!has_linear(c))
			return misfit(err, "%s does not allow the LINEAR modifier", name);
		if (l->width < c->min_width || (c->max_width && l->width > c->max_width) ||
		    l->height < c->min_height || (c->max_height && l->height > c->max_height) ||
		    (c->width && c->width != l->width) || (c->height && c->height != l->height))
			return misfit(err, "%s does not allow %" PRIu32 "x%" PRIu32, name, l->width,
				      l->height);
		for (unsigned p = 0; p < l->n_planes && p < ALL_PLANES; p++) {
			if (l->strides[p] < c->min_stride[p] ||
			    (c->max_stride[p] && l->strides[p] > c->max_stride[p]) ||
			    (c->stride_divisor && l->strides[p] % c->stride_divisor))
				return misfit(err, "%s does not take plane-%u stride %" PRIu32,
					      name, p, l->strides[p]);
			if (c->offset_divisor && l->offsets[p] % c->offset_divisor)
				return misfit(err, "%s does not take plane-%u offset %" PRIu32,
					      name, p, l->offsets[p]);
		}
	}

	if (!plan_backend_allowed(plan, c))
		return misfit(err, "%s does not allow the collection's backend %s", name,
			      plan->backend);
	if (c->contiguous && !plan->contiguous)
		return misfit(err, "%s requires physically contiguous memory; the buffers are not",
			      name);
	if (needs_dmabuf(c) && !plan->is_dmabuf)
		return misfit(err, "%s imports into a device; the buffers are memfds, not dma-bufs",
			      name);
	if (c->max_segment_size && plan->max_segment > c->max_segment_size) {
		if (flags & DB_CONSTRAINTS_STRICT_SEGMENTS)
			return misfit(err,
				      "%s accepts DMA segments of at most %s; %s makes %s segments",
				      name, bytes_str(c->max_segment_size, b1), plan->backend,
				      bytes_str(plan->max_segment, b2));
		ret->flags |= DB_COLLECTION_SEGMENT_LIMIT_NOT_MET;
	}
	if (c->dma_address_bits && c->dma_address_bits < 64)
		ret->flags |= DB_COLLECTION_ADDRESS_BITS_UNCHECKED;
	return 0;
}

/* The public faces: whatever path a message took, it leaves here as text. */

int db_constraints_validate(const struct db_constraints *c, struct db_constraints_error *err)
{
	int r = validate(c, err);

	finish(r < 0 ? err : NULL, NULL);
	return r;
}

int db_constraints_intersect(const struct db_constraints *parts, size_t n,
			     const struct db_machine_info *machine, unsigned flags,
			     struct db_collection_plan *ret, struct db_constraints_error *err)
{
	int r = intersect(parts, n, machine, flags, ret, err);

	finish(r < 0 ? err : NULL, r == 0 ? ret : NULL);
	return r;
}

int db_constraints_check_joiner(const struct db_collection_plan *plan,
				const struct db_constraints *c, unsigned flags,
				struct db_constraints_fit *ret, struct db_constraints_error *err)
{
	int r = check_joiner(plan, c, flags, ret, err);

	finish(r < 0 ? err : NULL, NULL);
	return r;
}
