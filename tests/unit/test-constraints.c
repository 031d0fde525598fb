// SPDX-License-Identifier: MIT
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <drm_fourcc.h>

#include "constraints.h"
#include "layout.h"
#include "macros.h"
#include "tap.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define PAGE 4096ull

#define VIVID "media-client (vivid, /dev/video1)"
#define VGEM "gpu-client (vgem, /dev/dri/renderD128)"
#define CPU "cpu-client (udmabuf)"

static const uint32_t fmt_nv12[] = {DRM_FORMAT_NV12};
static const uint32_t fmt_yuyv[] = {DRM_FORMAT_YUYV};
static const uint32_t fmt_yuv420[] = {DRM_FORMAT_YUV420};
static const uint32_t fmt_nv12_xr24[] = {DRM_FORMAT_NV12, DRM_FORMAT_XRGB8888};
static const uint64_t mod_linear[] = {DRM_FORMAT_MOD_LINEAR};

static const struct db_heap_info heap_system = {"system", false};
static const struct db_heap_info heap_cma = {"linux,cma", true};

static bool contains(const char *hay, const char *needle)
{
	bool ok = hay && strstr(hay, needle);

	if (!ok)
		tap_diag("  \"%s\" lacks \"%s\"", hay ? hay : "(null)", needle);
	return ok;
}

/* ---------------------------------------------------------------------------------------
 * The independent check: every constraint of every participant against a plan, written
 * apart from constraints.c so the two do not share a mistake. NULL, or what is violated.
 */

static bool needs_dmabuf(const struct db_constraints *c)
{
	return c->device || c->contiguous || c->max_segment_size || c->dma_address_bits;
}

static bool allows_backend(const struct db_constraints *c, const struct db_collection_plan *p)
{
	if (!c->backends)
		return true;
	for (size_t i = 0; i < c->n_backends; i++)
		if (strcmp(c->backends[i], p->backend) == 0 ||
		    (strcmp(c->backends[i], "dma-heap") == 0 &&
		     strncmp(p->backend, "dma-heap:", 9) == 0))
			return true;
	return false;
}

static const struct db_heap_info *machine_heap(const struct db_machine_info *m, const char *backend)
{
	if (strncmp(backend, "dma-heap:", 9) != 0)
		return NULL;
	for (size_t i = 0; i < m->n_heaps; i++)
		if (strcmp(m->heaps[i].name, backend + 9) == 0)
			return &m->heaps[i];
	return NULL;
}

static const char *check_plan(const struct db_collection_plan *p,
			      const struct db_constraints *parts, size_t n,
			      const struct db_machine_info *m, unsigned flags)
{
	static char why[256];
	uint64_t camping = 0, page = m->page_size ? m->page_size : PAGE;
	bool image = false, seg_violated = false, addr_note = false;
	const struct db_heap_info *heap = machine_heap(m, p->backend);

	for (size_t i = 0; i < n; i++) {
		camping += parts[i].min_buffer_count_for_camping;
		image |= parts[i].fourccs != NULL;
	}
	if (p->n_participants != n)
		return "participant count";
	if (p->camping_total != camping || p->buffer_count < camping || p->buffer_count == 0 ||
	    p->buffer_count > DB_CONSTRAINTS_MAX_BUFFERS)
		return "camping total or count";
	if (p->size == 0 || p->size % page || p->size != p->layout.size ||
	    (m->max_buffer_size && p->size > m->max_buffer_size))
		return "size not page-aligned or over the machine's limit";
	if (image != (p->layout.fourcc != 0))
		return "image or plain";
	if (image && db_layout_validate(&p->layout, p->size) != 0)
		return "layout does not validate";
	if (!image && db_layout_validate(&p->layout, p->size) != 0)
		return "plain layout does not validate";

	/* The backend is one this machine has, and what it makes is what the plan says. */
	if (strcmp(p->backend, "udmabuf") == 0) {
		if (!m->udmabuf || !p->is_dmabuf || p->max_segment != page)
			return "udmabuf";
		if (m->udmabuf_size_limit && p->size > m->udmabuf_size_limit)
			return "udmabuf size limit";
		if (p->kind == DB_BACKEND_UDMABUF_HUGETLB) {
			if (!m->huge_page_size || !m->hugetlb_vmap_safe ||
			    p->size != m->huge_page_size || !p->contiguous)
				return "hugetlb udmabuf";
		} else if (p->kind != DB_BACKEND_UDMABUF || p->contiguous) {
			return "udmabuf kind";
		}
	} else if (strcmp(p->backend, "memfd") == 0) {
		if (!m->memfd || p->is_dmabuf || p->contiguous || p->kind != DB_BACKEND_MEMFD)
			return "memfd";
	} else if (heap) {
		if (p->kind != DB_BACKEND_HEAP || !p->is_dmabuf ||
		    p->contiguous != heap->contiguous)
			return "heap";
		if (heap->contiguous && p->max_segment != p->size)
			return "CMA segment";
		if (!heap->contiguous && (p->max_segment > 256 * page || p->max_segment > p->size))
			return "system heap segment";
	} else {
		return "a backend this machine does not have";
	}

	for (size_t i = 0; i < n; i++) {
		const struct db_constraints *c = &parts[i];
		const struct db_layout *l = &p->layout;

#define FAIL(fmt, ...)                                                                 \
	do {                                                                           \
		snprintf(why, sizeof(why), "participant %zu: " fmt, i, ##__VA_ARGS__); \
		return why;                                                            \
	} while (0)
		if (p->buffer_count < c->min_buffer_count)
			FAIL("min count");
		if (c->max_buffer_count && p->buffer_count > c->max_buffer_count)
			FAIL("max count");
		if (p->size < c->min_size || (c->max_size && p->size > c->max_size))
			FAIL("size range");
		if (c->size_divisor && p->size % c->size_divisor)
			FAIL("size divisor");
		if (c->fourccs) {
			bool found = false;

			for (size_t k = 0; k < c->n_fourccs; k++)
				found |= c->fourccs[k] == l->fourcc;
			if (!found)
				FAIL("fourcc");
		}
		if (image) {
			if (l->modifier != DRM_FORMAT_MOD_LINEAR)
				FAIL("modifier");
			if (c->modifiers) {
				bool found = false;

				for (size_t k = 0; k < c->n_modifiers; k++)
					found |= c->modifiers[k] == DRM_FORMAT_MOD_LINEAR;
				if (!found)
					FAIL("modifier set");
			}
			if (l->width < c->min_width || (c->max_width && l->width > c->max_width) ||
			    l->height < c->min_height ||
			    (c->max_height && l->height > c->max_height))
				FAIL("width/height range");
			if ((c->width && l->width != c->width) ||
			    (c->height && l->height != c->height))
				FAIL("requested size");
			for (unsigned q = 0; q < l->n_planes; q++) {
				if (l->strides[q] < c->min_stride[q] ||
				    (c->max_stride[q] && l->strides[q] > c->max_stride[q]))
					FAIL("plane %u stride range", q);
				if (c->stride_divisor && l->strides[q] % c->stride_divisor)
					FAIL("plane %u stride divisor", q);
				if (c->offset_divisor && l->offsets[q] % c->offset_divisor)
					FAIL("plane %u offset divisor", q);
			}
		}
		if (!allows_backend(c, p))
			FAIL("backend set");
		if (c->contiguous && !p->contiguous)
			FAIL("contiguous");
		if (needs_dmabuf(c) && !p->is_dmabuf)
			FAIL("dma-buf");
		if (c->max_segment_size && p->max_segment > c->max_segment_size) {
			if (flags & DB_CONSTRAINTS_STRICT_SEGMENTS)
				FAIL("segment size in strict mode");
			seg_violated = true;
		}
		if (c->dma_address_bits && c->dma_address_bits < 64)
			addr_note = true;
		if (c->cpu_read && !p->cpu_read)
			FAIL("cpu read");
		if (c->cpu_write && !p->cpu_write)
			FAIL("cpu write");
		if (p->paths[i] != (c->dynamic ? DB_PATH_DIRECT : DB_PATH_CACHED))
			FAIL("attachment path");
#undef FAIL
	}
	if (seg_violated != !!(p->flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET))
		return "segment flag";
	if (addr_note != !!(p->flags & DB_COLLECTION_ADDRESS_BITS_UNCHECKED))
		return "address-bits flag";
	return NULL;
}

/* Each participant, joining late, fits the plan made with it (its own camping taken out). */
static const char *check_joiners(const struct db_collection_plan *p,
				 const struct db_constraints *parts, size_t n, unsigned flags)
{
	for (size_t i = 0; i < n; i++) {
		struct db_collection_plan q = *p;
		struct db_constraints_error err;
		struct db_constraints_fit fit;

		q.camping_total -= parts[i].min_buffer_count_for_camping;
		if (db_constraints_check_joiner(&q, &parts[i], flags, &fit, &err) != 0) {
			tap_diag("  joiner %zu: %s", i, err.message);
			return "a participant does not fit as a late joiner";
		}
		if (fit.path != p->paths[i])
			return "joiner path";
	}
	return NULL;
}

/* The participants of mask, in order, into out. */
static size_t subset(const struct db_constraints *parts, size_t n, uint64_t mask,
		     struct db_constraints *out)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (mask & (1ull << i))
			out[k++] = parts[i];
	return k;
}

/*
 * Intersects the participants of mask. A set without any size is malformed to the public
 * function; the conflict search measures it as the least buffer there is, which is what a
 * participant asking only for "at least one byte" gets. So such a set is run with that
 * participant added, and must not be named in a conflict. *ret_n: participants in out.
 */
static int run_set(const struct db_constraints *parts, size_t n, uint64_t mask,
		   const struct db_machine_info *m, unsigned flags, struct db_constraints *out,
		   size_t *ret_n, struct db_collection_plan *plan, struct db_constraints_error *err)
{
	size_t k = subset(parts, n, mask, out);
	int r;

	r = db_constraints_intersect(out, k, m, flags, plan, err);
	if (r == -EINVAL && strstr(err->message, "how large")) {
		out[k++] = (struct db_constraints){.name = "sizer", .min_size = 1};
		r = db_constraints_intersect(out, k, m, flags, plan, err);
		if (r == -EOPNOTSUPP && (err->conflict & (1ull << (k - 1))))
			r = -EPROTO; /* the sizer named */
	}
	*ret_n = k;
	return r;
}

/* ---------------------------------------------------------------------------------------
 * Hand-written cases.
 */

static struct db_constraints vivid(void)
{
	/* vb2 dma-contig without an IOMMU: contiguous only; the default 64 KiB segment cap. */
	return (struct db_constraints){
		.name = VIVID,
		.min_buffer_count_for_camping = 2,
		.min_buffer_count = 3,
		.max_buffer_count = 32,
		.fourccs = fmt_nv12,
		.n_fourccs = 1,
		.width = 640,
		.height = 480,
		.contiguous = true,
		.max_segment_size = 64 * KIB,
		.dma_address_bits = 32,
		.device = true,
		.cpu_read = false,
		.dynamic = false,
	};
}

static struct db_constraints vgem(void)
{
	return (struct db_constraints){
		.name = VGEM,
		.min_buffer_count_for_camping = 1,
		.fourccs = fmt_nv12_xr24,
		.n_fourccs = 2,
		.modifiers = mod_linear,
		.n_modifiers = 1,
		.stride_divisor = 64,
		.device = true,
		.dynamic = true,
	};
}

static struct db_constraints cpu(void)
{
	return (struct db_constraints){
		.name = CPU,
		.min_buffer_count_for_camping = 1,
		.cpu_read = true,
		.cpu_write = true,
	};
}

static void test_trio(void)
{
	struct db_constraints trio[3] = {vivid(), vgem(), cpu()};
	struct db_heap_info no_cma[] = {heap_system};
	struct db_heap_info with_cma[] = {heap_system, heap_cma};
	struct db_machine_info m = {
		.udmabuf = true,
		.huge_page_size = 2 * MIB,
		.hugetlb_vmap_safe = false,
		.heaps = no_cma,
		.n_heaps = 1,
		.memfd = true,
		.page_size = PAGE,
	};
	struct db_constraints_error err;
	struct db_collection_plan plan;
	int r;

	/* No CMA heap and no vmap-safe hugetlb: vivid alone cannot be served here. */
	r = db_constraints_intersect(trio, 3, &m, 0, &plan, &err);
	tap_is(r, -EOPNOTSUPP, "trio without a CMA heap is refused");
	tap_is(err.conflict, 1, "... naming vivid alone (against the machine)");
	tap_ok(contains(err.message, VIVID " requires physically contiguous memory; no backend can "
					   "provide 462848 bytes contiguous here (no CMA heap"),
	       "... with the message: %s", err.message);
	tap_ok(contains(err.message, "not vmap-safe"), "... and why hugetlb udmabuf does not do");

	/* A CMA heap: contiguous, but one 452 KiB segment against vivid's 64 KiB cap. */
	m.heaps = with_cma;
	m.n_heaps = 2;
	r = db_constraints_intersect(trio, 3, &m, 0, &plan, &err);
	tap_is(r, 0, "trio with a CMA heap is allocated");
	tap_ok(strcmp(plan.backend, "dma-heap:linux,cma") == 0, "... on the CMA heap (%s)",
	       plan.backend);
	tap_ok(plan.contiguous && plan.is_dmabuf, "... contiguous dma-bufs");
	tap_is(plan.buffer_count, 4, "... 4 buffers: camping 2 + 1 + 1 over vivid's minimum 3");
	tap_is(plan.layout.fourcc, DRM_FORMAT_NV12, "... NV12 (vivid's only format)");
	tap_is(plan.layout.strides[0], 640, "... luma stride 640 (a multiple of 64)");
	tap_is(plan.layout.offsets[1], 640 * 480, "... chroma after luma");
	tap_is(plan.size, 462848, "... 460800 bytes rounded to the page");
	tap_ok(plan.flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET,
	       "... flagged: segment limit not met");
	tap_ok(contains(plan.note,
			"segment limit not met: " VIVID " accepts DMA segments of at most "
			"64 KiB but dma-heap:linux,cma makes 452 KiB segments"),
	       "... the note says so: %s", plan.note);
	tap_ok(plan.flags & DB_COLLECTION_ADDRESS_BITS_UNCHECKED, "... and notes vivid's 32 bits");
	tap_is(plan.paths[0], DB_PATH_CACHED, "... vivid (not dynamic) attaches cached");
	tap_is(plan.paths[1], DB_PATH_DIRECT, "... vgem (dynamic) attaches direct");
	tap_is(plan.paths[2], DB_PATH_CACHED, "... the CPU client (not dynamic) attaches cached");
	tap_ok(!check_plan(&plan, trio, 3, &m, 0), "... the plan satisfies every participant");

	/* Strict: the same case is refused, vivid alone named (it sets both constraints). */
	r = db_constraints_intersect(trio, 3, &m, DB_CONSTRAINTS_STRICT_SEGMENTS, &plan, &err);
	tap_is(r, -EOPNOTSUPP, "strict: trio with only CMA for contiguity is refused");
	tap_is(err.conflict, 1, "... naming vivid");
	tap_ok(contains(err.message, "segment limit not met"), "... %s", err.message);

	/* A vmap-safe hugetlb udmabuf: contiguous, in page-sized segments. Both modes pass. */
	m.hugetlb_vmap_safe = true;
	for (int strict = 0; strict < 2; strict++) {
		unsigned fl = strict ? DB_CONSTRAINTS_STRICT_SEGMENTS : 0;

		r = db_constraints_intersect(trio, 3, &m, fl, &plan, &err);
		tap_is(r, 0,
		       strict ? "strict: trio with hugetlb udmabuf is allocated"
			      : "trio with hugetlb udmabuf is allocated");
		tap_ok(plan.kind == DB_BACKEND_UDMABUF_HUGETLB && plan.size == 2 * MIB,
		       "... one huge page per buffer (%s, %zu)", plan.backend, plan.size);
		tap_ok(!(plan.flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET), "... segments fit");
		tap_ok(!check_plan(&plan, trio, 3, &m, fl),
		       "... the plan satisfies every participant");
	}

	/* Contiguity from one participant, the segment cap from another: both are named. */
	m.hugetlb_vmap_safe = false;
	trio[0].contiguous = false;
	trio[1].contiguous = true;
	r = db_constraints_intersect(trio, 3, &m, DB_CONSTRAINTS_STRICT_SEGMENTS, &plan, &err);
	tap_is(r, -EOPNOTSUPP,
	       "strict: contiguity (vgem) against a segment cap (vivid) is refused");
	tap_is(err.conflict, 3, "... naming both");
	tap_ok(contains(err.message, "(" VGEM " requires physically contiguous memory)"), "... %s",
	       err.message);
	r = db_constraints_intersect(trio, 3, &m, 0, &plan, &err);
	tap_ok(r == 0 && (plan.flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET),
	       "... and is flagged when not strict");

	/* Without the 64 KiB cap the CMA heap just works. */
	trio[0] = vivid();
	trio[0].max_segment_size = 0;
	trio[1].contiguous = false;
	r = db_constraints_intersect(trio, 3, &m, DB_CONSTRAINTS_STRICT_SEGMENTS, &plan, &err);
	tap_ok(r == 0 && !(plan.flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET) &&
		       strcmp(plan.backend, "dma-heap:linux,cma") == 0,
	       "vivid without a segment cap gets the CMA heap, unflagged");
}

static void test_two_different(void)
{
	static const uint32_t a_fmt[] = {DRM_FORMAT_NV12, DRM_FORMAT_YUV420};
	struct db_constraints p[2] = {
		{
			.name = "encoder",
			.fourccs = a_fmt,
			.n_fourccs = 2,
			.width = 1920,
			.height = 1080,
			.stride_divisor = 256,
			.offset_divisor = 4096,
			.min_buffer_count_for_camping = 2,
			.max_buffer_count = 8,
			.device = true,
		},
		{
			.name = "display",
			.fourccs = fmt_nv12,
			.n_fourccs = 1,
			.stride_divisor = 64,
			.min_stride = {2000},
			.max_stride = {4096, 4096},
			.offset_divisor = 65536,
			.size_divisor = 3,
			.min_buffer_count_for_camping = 3,
			.min_buffer_count = 4,
			.dynamic = true,
		},
	};
	struct db_heap_info heaps[] = {heap_system};
	struct db_machine_info m = {.heaps = heaps, .n_heaps = 1, .memfd = true, .page_size = PAGE};
	struct db_constraints_error err;
	struct db_collection_plan plan;
	const char *why;

	tap_is(db_constraints_intersect(p, 2, &m, 0, &plan, &err), 0,
	       "two participants with different stride, offset and count constraints");
	tap_is(plan.buffer_count, 5, "... 2 + 3 camping buffers");
	tap_is(plan.layout.fourcc, DRM_FORMAT_NV12, "... NV12, the one both allow");
	tap_is(plan.layout.strides[0], 2048, "... luma stride: 2000 rounded to lcm(256, 64)");
	tap_is(plan.layout.strides[1], 2048, "... chroma stride: 1920 rounded to 256");
	tap_is(plan.layout.offsets[1], 34 * 65536, "... chroma offset aligned to 64 KiB");
	tap_is(plan.size, 272 * 12288, "... size a multiple of lcm(3, page)");
	tap_ok(strcmp(plan.backend, "dma-heap:system") == 0, "... on the system heap (no udmabuf)");
	why = check_plan(&plan, p, 2, &m, 0);
	tap_ok(!why, "... the plan satisfies both (%s)", why ? why : "ok");
	why = check_joiners(&plan, p, 2, 0);
	tap_ok(!why, "... and each would fit as a late joiner (%s)", why ? why : "ok");

	/* The count limits now conflict. */
	p[0].max_buffer_count = 4;
	tap_is(db_constraints_intersect(p, 2, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "camping 2 + 3 against a maximum of 4 is refused");
	tap_is(err.conflict, 3, "... naming both");
	tap_ok(contains(err.message, "encoder allows at most 4 buffers but 5 are needed (encoder "
				     "camps on 2, display camps on 3)"),
	       "... %s", err.message);
}

static void test_stride_conflict(void)
{
	struct db_constraints p[3] = {
		{.name = "gpu", .stride_divisor = 512, .device = true, .dynamic = true},
		{.name = "media",
		 .fourccs = fmt_yuyv,
		 .n_fourccs = 1,
		 .width = 640,
		 .height = 480,
		 .max_stride = {1400}},
		{.name = "cpu", .cpu_read = true},
	};
	struct db_machine_info m = {.udmabuf = true, .memfd = true, .page_size = PAGE};
	struct db_constraints_error err;
	struct db_collection_plan plan;

	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "a stride divisor that a max stride leaves no room for is refused");
	tap_is(err.conflict, 3, "... naming gpu and media, not cpu");
	tap_ok(contains(err.message,
			"gpu stride divisor 512 vs media max stride 1400 for 640 px YUYV"),
	       "... %s", err.message);

	/* 1280 is 5 x 256: a divisor of 256 fits. */
	p[0].stride_divisor = 256;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), 0,
	       "divisor 256 and max stride 1400 for 640 px YUYV agree (1280 = 5 x 256)");
	tap_is(plan.layout.strides[0], 1280, "... stride 1280");
	tap_ok(strcmp(plan.backend, "udmabuf") == 0, "... on udmabuf");

	/* Two divisors each of which fits (1280, 1281) but whose lcm (768: 1536) does not. */
	p[0].stride_divisor = 256;
	p[2].stride_divisor = 3;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "divisors 256 and 3 (768) against max stride 1400 for 1280 bytes of row");
	tap_is(err.conflict, 7, "... naming all three");
	tap_ok(contains(err.message,
			"stride divisors (gpu 256, cpu 3: 768) vs media max stride 1400"),
	       "... %s", err.message);
}

static void test_sets(void)
{
	static const char *const only_udmabuf[] = {"udmabuf"};
	static const char *const only_system[] = {"dma-heap:system"};
	static const char *const only_cma[] = {"dma-heap:linux,cma"};
	static const char *const any_heap[] = {"dma-heap"};
	static const uint32_t xr24[] = {DRM_FORMAT_XRGB8888};
	static const uint32_t p010[] = {DRM_FORMAT_P010};
	static const uint64_t tiled[] = {I915_FORMAT_MOD_X_TILED};
	struct db_heap_info heaps[] = {heap_system};
	struct db_machine_info m = {
		.udmabuf = true, .heaps = heaps, .n_heaps = 1, .memfd = true, .page_size = PAGE};
	struct db_constraints p[3] = {
		{.name = "a", .min_size = 100000, .backends = only_udmabuf, .n_backends = 1},
		{.name = "b", .backends = only_system, .n_backends = 1},
		{.name = "c", .cpu_read = true},
	};
	struct db_constraints_error err;
	struct db_collection_plan plan;

	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "disjoint backend sets are refused");
	tap_is(err.conflict, 3, "... naming a and b");
	tap_ok(contains(err.message, "a allows udmabuf; b allows dma-heap:system (here: udmabuf, "
				     "dma-heap:system, memfd)"),
	       "... %s", err.message);
	p[0].backends = any_heap;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), 0,
	       "\"dma-heap\" takes any heap");
	tap_ok(strcmp(plan.backend, "dma-heap:system") == 0 && plan.size == 102400,
	       "... the system heap, 100000 bytes rounded to the page");

	p[1].backends = only_cma;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "a heap the machine lacks is refused");
	tap_is(err.conflict, 2, "... naming b alone");

	/* Formats. */
	p[1] = (struct db_constraints){.name = "b", .fourccs = fmt_nv12, .n_fourccs = 1};
	p[2] = (struct db_constraints){.name = "c", .fourccs = xr24, .n_fourccs = 1};
	p[0].backends = NULL;
	p[0].n_backends = 0;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "disjoint formats are refused");
	tap_is(err.conflict, 6, "... naming b and c");
	tap_ok(contains(err.message, "no format in common: b allows NV12; c allows XR24"), "... %s",
	       err.message);
	p[2].fourccs = p010;
	p[1].fourccs = p010;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "formats the broker cannot lay out are refused");
	tap_ok(err.conflict == 2 || err.conflict == 4, "... naming one that lists only such");
	p[1] = (struct db_constraints){
		.name = "b", .fourccs = xr24, .n_fourccs = 1, .modifiers = tiled, .n_modifiers = 1};
	p[2] = (struct db_constraints){.name = "c"};
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "tiled modifiers only are refused");
	tap_is(err.conflict, 2, "... naming b");

	/* Requested sizes. */
	p[1] = (struct db_constraints){
		.name = "b", .fourccs = xr24, .n_fourccs = 1, .width = 640, .height = 480};
	p[2] = (struct db_constraints){.name = "c", .width = 1280, .height = 720};
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "two different requested sizes are refused");
	tap_is(err.conflict, 6, "... naming b and c");
	tap_ok(contains(err.message, "b requests 640x480 but c requests 1280x720"), "... %s",
	       err.message);
	p[2] = (struct db_constraints){.name = "c", .max_width = 320};
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "a request outside another's range is refused");
	tap_ok(contains(err.message, "b requests width 640 but c allows at most 320"), "... %s",
	       err.message);

	/* A device on a machine with only memfd. */
	struct db_machine_info bare = {.memfd = true, .page_size = PAGE};
	struct db_constraints dev[2] = {
		{.name = "cpu", .min_size = 4096, .cpu_read = true},
		{.name = "gpu", .device = true},
	};
	tap_is(db_constraints_intersect(dev, 2, &bare, 0, &plan, &err), -EOPNOTSUPP,
	       "a device importer where only memfd exists is refused");
	tap_is(err.conflict, 2, "... naming the device");
	tap_ok(contains(err.message, "gpu imports into a device"), "... %s", err.message);
	tap_is(db_constraints_intersect(dev, 1, &bare, 0, &plan, &err), 0,
	       "a CPU-only collection takes memfd");
	tap_ok(!plan.is_dmabuf && strcmp(plan.backend, "memfd") == 0, "... not a dma-buf");

	/* Address bits are noted, not checked. */
	dev[1].dma_address_bits = 32;
	m.heaps = heaps;
	tap_is(db_constraints_intersect(dev, 2, &m, 0, &plan, &err), 0, "32 address bits allocate");
	tap_ok(plan.flags & DB_COLLECTION_ADDRESS_BITS_UNCHECKED, "... with the note: %s",
	       plan.note);

	/* The udmabuf size limit sends a large buffer to the system heap. */
	m.udmabuf_size_limit = 1 * MIB;
	dev[0].min_size = 3 * MIB;
	tap_is(db_constraints_intersect(dev, 2, &m, 0, &plan, &err), 0,
	       "3 MiB over udmabuf's 1 MiB limit");
	tap_ok(strcmp(plan.backend, "dma-heap:system") == 0, "... goes to the system heap (%s)",
	       plan.backend);
	tap_ok(plan.max_segment == MIB, "... whose segments are at most 1 MiB");
}

static void test_late_joiners(void)
{
	static const char *const only_memfd[] = {"memfd"};
	struct db_constraints trio[3] = {vivid(), vgem(), cpu()};
	struct db_heap_info heaps[] = {heap_system, heap_cma};
	struct db_machine_info m = {.udmabuf = true,
				    .huge_page_size = 2 * MIB,
				    .hugetlb_vmap_safe = true,
				    .heaps = heaps,
				    .n_heaps = 2,
				    .memfd = true,
				    .page_size = PAGE};
	struct db_constraints_error err;
	struct db_collection_plan plan;
	struct db_constraints_fit fit;
	struct db_constraints j;

	tap_require(db_constraints_intersect(trio, 3, &m, 0, &plan, &err) == 0, "trio allocated");
	j = (struct db_constraints){.name = "late-viewer", .cpu_read = true, .dynamic = true};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), 0,
	       "a late CPU viewer without camping fits");
	tap_is(fit.path, DB_PATH_DIRECT, "... attaching direct (dynamic)");
	j.min_buffer_count_for_camping = 1;
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EOPNOTSUPP,
	       "a late joiner camping on one more buffer than the 4 does not");
	tap_ok(contains(err.message, "4 of the 4 are camped on already"), "... %s", err.message);
	j = (struct db_constraints){.name = "late-gpu", .stride_divisor = 4096};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EOPNOTSUPP,
	       "a late joiner whose stride divisor the layout misses does not fit");
	j = (struct db_constraints){
		.name = "late-dev", .contiguous = true, .max_segment_size = 4096};
	tap_is(db_constraints_check_joiner(&plan, &j, DB_CONSTRAINTS_STRICT_SEGMENTS, &fit, &err),
	       0, "a late contiguous device fits the hugetlb udmabuf, strict");
	j = (struct db_constraints){.name = "late-memfd", .backends = only_memfd, .n_backends = 1};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EOPNOTSUPP,
	       "a late joiner allowing only memfd does not fit");
	j = (struct db_constraints){.name = "late-fmt", .fourccs = fmt_yuyv, .n_fourccs = 1};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EOPNOTSUPP,
	       "a late joiner wanting YUYV does not fit NV12");
	j = (struct db_constraints){.name = "late-big", .min_size = 4 * MIB};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EOPNOTSUPP,
	       "a late joiner wanting bigger buffers does not fit");
	j = (struct db_constraints){.name = ""};
	tap_is(db_constraints_check_joiner(&plan, &j, 0, &fit, &err), -EINVAL,
	       "a malformed late joiner is -EINVAL");
}

static void test_malformed(void)
{
	static const uint32_t empty_fourccs[1];
	static const char *const bad_backend[] = {"dma-heap:"};
	static const char *const null_backend[] = {NULL};
	static const uint32_t zero_fourcc[] = {0};
	static const uint64_t mod_invalid[] = {DRM_FORMAT_MOD_INVALID};
	struct db_machine_info m = {.udmabuf = true, .memfd = true, .page_size = PAGE};
	struct db_constraints ok = {.name = "ok", .min_size = 4096};
	struct db_constraints many[DB_CONSTRAINTS_MAX_PARTICIPANTS + 1];
	struct db_constraints_error err;
	struct db_collection_plan plan;
	struct {
		const char *what;
		struct db_constraints c;
	} bad[] = {
		{"no name", {.min_size = 1}},
		{"an empty name", {.name = "", .min_size = 1}},
		{"min count over max", {.name = "x", .min_buffer_count = 5, .max_buffer_count = 2}},
		{"camping over max",
		 {.name = "x", .min_buffer_count_for_camping = 3, .max_buffer_count = 2}},
		{"min size over max", {.name = "x", .min_size = 8192, .max_size = 4096}},
		{"an empty fourcc set", {.name = "x", .fourccs = empty_fourccs, .n_fourccs = 0}},
		{"a count without a fourcc set", {.name = "x", .n_fourccs = 2}},
		{"fourcc 0", {.name = "x", .fourccs = zero_fourcc, .n_fourccs = 1}},
		{"too many fourccs", {.name = "x", .fourccs = zero_fourcc, .n_fourccs = 1000}},
		{"an empty modifier set", {.name = "x", .modifiers = mod_linear, .n_modifiers = 0}},
		{"DRM_FORMAT_MOD_INVALID",
		 {.name = "x", .modifiers = mod_invalid, .n_modifiers = 1}},
		{"min width over max", {.name = "x", .min_width = 100, .max_width = 50}},
		{"a request outside its own range",
		 {.name = "x", .width = 10, .height = 10, .max_width = 5}},
		{"a width without a height", {.name = "x", .width = 640}},
		{"min stride over max",
		 {.name = "x", .min_stride = {0, 300}, .max_stride = {0, 200}}},
		{"65 address bits", {.name = "x", .dma_address_bits = 65}},
		{"an empty backend set", {.name = "x", .backends = bad_backend, .n_backends = 0}},
		{"a heap without a name", {.name = "x", .backends = bad_backend, .n_backends = 1}},
		{"a NULL backend", {.name = "x", .backends = null_backend, .n_backends = 1}},
	};
	struct db_constraints pair[2];
	struct db_heap_info dup[] = {heap_system, heap_system};
	struct db_heap_info unnamed[] = {{NULL, false}};
	struct db_machine_info badm;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		pair[0] = ok;
		pair[1] = bad[i].c;
		memset(&err, 0xaa, sizeof(err));
		r = db_constraints_intersect(pair, 2, &m, 0, &plan, &err);
		tap_ok(r == -EINVAL && err.participant == 1 && err.conflict == 0 && err.message[0],
		       "%s is -EINVAL naming participant 1 (%s)", bad[i].what, err.message);
		tap_is(db_constraints_validate(&bad[i].c, &err), -EINVAL,
		       "... and fails validation alone");
	}
	tap_is(db_constraints_intersect(NULL, 1, &m, 0, &plan, &err), -EINVAL,
	       "no participants array");
	tap_is(db_constraints_intersect(&ok, 0, &m, 0, &plan, &err), -EINVAL, "zero participants");
	tap_is(db_constraints_intersect(&ok, 1, NULL, 0, &plan, &err), -EINVAL, "no machine");
	tap_is(db_constraints_intersect(&ok, 1, &m, 0, NULL, &err), -EINVAL, "no result");
	tap_is(db_constraints_intersect(&ok, 1, &m, 0x80, &plan, &err), -EINVAL, "unknown flags");
	tap_is(db_constraints_intersect(&ok, 1, &m, 0, &plan, NULL), 0, "err may be NULL");
	badm = (struct db_machine_info){.page_size = PAGE};
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -ENODEV,
	       "a machine without any backend is -ENODEV, blaming no participant");
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = ok;
	tap_is(db_constraints_intersect(many, ARRAY_SIZE(many), &m, 0, &plan, &err), -EINVAL,
	       "65 participants");
	tap_is(db_constraints_intersect(many, DB_CONSTRAINTS_MAX_PARTICIPANTS, &m, 0, &plan, &err),
	       0, "64 participants");
	badm = m;
	badm.page_size = 3000;
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -EINVAL, "page size 3000");
	badm = m;
	badm.huge_page_size = 5000;
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -EINVAL, "huge page 5000");
	badm = m;
	badm.n_heaps = 1;
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -EINVAL,
	       "heaps NULL with a count");
	badm.heaps = dup;
	badm.n_heaps = 2;
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -EINVAL, "a heap twice");
	badm.heaps = unnamed;
	badm.n_heaps = 1;
	tap_is(db_constraints_intersect(&ok, 1, &badm, 0, &plan, &err), -EINVAL,
	       "a heap without a name");

	/* Nobody says how large: malformed, not a conflict. */
	pair[0] = (struct db_constraints){.name = "a", .cpu_read = true};
	pair[1] = (struct db_constraints){.name = "b", .device = true};
	tap_is(db_constraints_intersect(pair, 2, &m, 0, &plan, &err), -EINVAL,
	       "a collection without any size is -EINVAL");
	tap_ok(contains(err.message, "how large"), "... %s", err.message);
}

static void test_huge(void)
{
	static const uint32_t xr24[] = {DRM_FORMAT_XRGB8888};
	struct db_machine_info m = {.udmabuf = true, .memfd = true, .page_size = PAGE};
	struct db_constraints_error err;
	struct db_collection_plan plan;
	struct db_constraints p[3];

	p[0] = (struct db_constraints){.name = "huge-image",
				       .fourccs = xr24,
				       .n_fourccs = 1,
				       .width = UINT32_MAX,
				       .height = UINT32_MAX};
	p[1] = (struct db_constraints){.name = "bystander", .cpu_read = true};
	tap_is(db_constraints_intersect(p, 2, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "a 4G x 4G XRGB image is refused");
	tap_ok(err.conflict == 1, "... naming it alone (%s)", err.message);

	p[0] = (struct db_constraints){.name = "all-the-bytes", .min_size = UINT64_MAX};
	tap_is(db_constraints_intersect(p, 2, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "UINT64_MAX bytes are refused");
	tap_ok(err.conflict == 1, "... naming it alone (%s)", err.message);

	p[0] = (struct db_constraints){
		.name = "camper-a", .min_size = 1, .min_buffer_count_for_camping = UINT32_MAX};
	p[1] = (struct db_constraints){.name = "camper-b",
				       .min_buffer_count_for_camping = UINT32_MAX};
	tap_is(db_constraints_intersect(p, 2, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "2 x UINT32_MAX camping buffers are refused (no overflow)");
	tap_ok(err.conflict == 1 || err.conflict == 2,
	       "... one of them is enough to name (0x%" PRIx64 ": %s)", err.conflict, err.message);

	/* Two large primes: their lcm passes 32 bits. */
	p[0] = (struct db_constraints){.name = "odd-a",
				       .fourccs = xr24,
				       .n_fourccs = 1,
				       .width = 16,
				       .height = 16,
				       .stride_divisor = 4294967291u};
	p[1] = (struct db_constraints){.name = "odd-b", .stride_divisor = 4294967279u};
	p[2] = (struct db_constraints){.name = "bystander", .cpu_read = true};
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "stride divisors whose lcm overflows 32 bits are refused");
	tap_ok(err.conflict == 3, "... naming both (%s)", err.message);
	p[1] = (struct db_constraints){.name = "odd-b", .size_divisor = 4294967279u};
	p[0].stride_divisor = 0;
	p[0].size_divisor = 4294967291u;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "size divisors whose lcm with the page overflows 64 bits are refused");
	tap_ok(err.conflict == 3, "... naming both (%s)", err.message);
	p[0].size_divisor = 0;
	p[0].offset_divisor = 4294967291u;
	p[0].fourccs = fmt_nv12;
	p[1] = (struct db_constraints){.name = "odd-b", .offset_divisor = 4294967279u};
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "offset divisors whose lcm overflows 32 bits are refused");
	tap_ok(err.conflict == 3, "... naming both (%s)", err.message);
	p[1].offset_divisor = 0;
	p[0].fourccs = fmt_yuv420;
	tap_is(db_constraints_intersect(p, 3, &m, 0, &plan, &err), -EOPNOTSUPP,
	       "a YUV420 V plane whose offset divisor puts it past 4 GiB is refused");
	tap_ok(err.conflict == 1, "... naming the divisor's owner (%s)", err.message);
}

/* ---------------------------------------------------------------------------------------
 * One participant at the integer edges. Random values almost never land on them, so every
 * numeric field is set to each edge value alone and in pairs. The participant lives alone in
 * a heap block of its own size, as the daemon keeps it: a message that names a participant
 * nobody is (an index of -1) reads the block's neighbour, and the sanitizer or the message
 * check below sees it.
 */

enum edge_field {
	E_CAMPING,
	E_MIN_COUNT,
	E_MAX_COUNT,
	E_MIN_SIZE,
	E_MAX_SIZE,
	E_SIZE_DIV,
	E_MIN_W,
	E_MAX_W,
	E_MIN_H,
	E_MAX_H,
	E_W,
	E_H,
	E_MIN_STRIDE0,
	E_MAX_STRIDE0,
	E_MIN_STRIDE1,
	E_MAX_STRIDE1,
	E_STRIDE_DIV,
	E_OFFSET_DIV,
	E_MAX_SEG,
	E_ADDR_BITS,
	E_N_FIELDS,
};

static const uint64_t edge_values[] = {
	0,
	1,
	2,
	3,
	4095,
	4096,
	0x7fffffffu,
	0x80000000u,
	0xfffffffeu,
	0xffffffffu,
	1ull << 32,
	1ull << 63,
	UINT64_MAX - 4095,
	UINT64_MAX,
};

static void set_edge(struct db_constraints *c, enum edge_field f, uint64_t v)
{
	uint32_t v32 = (uint32_t)v;

	switch (f) {
	case E_CAMPING:
		c->min_buffer_count_for_camping = v32;
		break;
	case E_MIN_COUNT:
		c->min_buffer_count = v32;
		break;
	case E_MAX_COUNT:
		c->max_buffer_count = v32;
		break;
	case E_MIN_SIZE:
		c->min_size = v;
		break;
	case E_MAX_SIZE:
		c->max_size = v;
		break;
	case E_SIZE_DIV:
		c->size_divisor = v32;
		break;
	case E_MIN_W:
		c->min_width = v32;
		break;
	case E_MAX_W:
		c->max_width = v32;
		break;
	case E_MIN_H:
		c->min_height = v32;
		break;
	case E_MAX_H:
		c->max_height = v32;
		break;
	/* A request needs both dimensions: the other one stays as small as can be. */
	case E_W:
		c->width = v32;
		c->height = c->height ? c->height : 2;
		break;
	case E_H:
		c->height = v32;
		c->width = c->width ? c->width : 2;
		break;
	case E_MIN_STRIDE0:
		c->min_stride[0] = v32;
		break;
	case E_MAX_STRIDE0:
		c->max_stride[0] = v32;
		break;
	case E_MIN_STRIDE1:
		c->min_stride[1] = v32;
		break;
	case E_MAX_STRIDE1:
		c->max_stride[1] = v32;
		break;
	case E_STRIDE_DIV:
		c->stride_divisor = v32;
		break;
	case E_OFFSET_DIV:
		c->offset_divisor = v32;
		break;
	case E_MAX_SEG:
		c->max_segment_size = v;
		break;
	case E_ADDR_BITS:
		c->dma_address_bits = v32;
		break;
	case E_N_FIELDS:
		break;
	}
}

/* Refusal text reaches logs and other clients: printable ASCII, never a stray byte. */
static bool clean_text(const char *s, size_t max)
{
	size_t len = strnlen(s, max);

	if (len == 0 || len == max)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/*
 * What one edge case must give: a plan that satisfies it, or a clean refusal naming it. The
 * participant sits behind a poisoned neighbour, so that a message naming participant -1 (the
 * slot before the array) prints the poison, whatever the heap holds there otherwise.
 */
static const char *check_edge(const struct db_constraints *one, const struct db_machine_info *m)
{
	struct db_constraints *slots = calloc(2, sizeof(*slots));
	struct db_constraints_error err;
	struct db_collection_plan plan;
	const char *why = NULL;
	static unsigned shown;
	int r;

	slots[0].name = "\n\x1b[31mnot a participant";
	slots[1] = *one;
	r = db_constraints_intersect(&slots[1], 1, m, 0, &plan, &err);
	if (r == 0)
		why = check_plan(&plan, &slots[1], 1, m, 0);
	else if (r != -EINVAL && r != -EOPNOTSUPP)
		why = "an unexpected error";
	else if (!clean_text(err.message, sizeof(err.message)) || strstr(err.message, "(null)"))
		why = "the refusal is not clean text";
	else if (r == -EOPNOTSUPP && err.conflict != 1)
		why = "the refusal does not name the participant";
	if (why && r != 0 && shown++ < 5)
		tap_diag("  %d: %.100s", r,
			 clean_text(err.message, sizeof(err.message)) ? err.message : "(not text)");
	free(slots);
	return why;
}

static void test_edges(void)
{
	static const uint32_t *const formats[] = {NULL, fmt_yuyv, fmt_nv12, fmt_yuv420};
	struct db_heap_info heaps[] = {heap_system, heap_cma};
	struct db_machine_info m = {.udmabuf = true,
				    .huge_page_size = 2 * MIB,
				    .hugetlb_vmap_safe = true,
				    .heaps = heaps,
				    .n_heaps = 2,
				    .memfd = true,
				    .page_size = PAGE};
	const size_t nv = ARRAY_SIZE(edge_values);
	unsigned long n = 0, bad = 0;

	for (size_t fi = 0; fi < ARRAY_SIZE(formats); fi++) {
		for (unsigned a = 0; a < E_N_FIELDS * nv; a++) {
			for (unsigned b = a; b < E_N_FIELDS * nv; b++) {
				struct db_constraints c = {.name = "edge (client 1)"};
				const char *why;

				if (formats[fi]) {
					c.fourccs = formats[fi];
					c.n_fourccs = 1;
				} else {
					c.min_size = 1;
				}
				set_edge(&c, a / nv, edge_values[a % nv]);
				set_edge(&c, b / nv, edge_values[b % nv]);
				n++;
				why = check_edge(&c, &m);
				if (why && bad++ < 5)
					tap_diag("  format %zu, field %u = 0x%" PRIx64
						 ", field %u = 0x%" PRIx64 ": %s",
						 fi, a / (unsigned)nv, edge_values[a % nv],
						 b / (unsigned)nv, edge_values[b % nv], why);
			}
		}
	}
	tap_ok(bad == 0,
	       "%lu one-participant collections at the integer edges: a plan or a clean "
	       "refusal naming the participant (%lu not)",
	       n, bad);
}

static void test_edge_stride(void)
{
	static const uint32_t xr24[] = {DRM_FORMAT_XRGB8888};
	struct db_machine_info m = {.udmabuf = true, .memfd = true, .page_size = PAGE};
	struct db_constraints c = {.name = "edge (client 1)",
				   .fourccs = xr24,
				   .n_fourccs = 1,
				   .width = UINT32_MAX,
				   .height = 1};

	/* The first find: a row of 4 x (2^32 - 1) bytes passes the 32-bit stride, which no
	 * participant set, and the refusal named participant -1. */
	tap_ok(check_edge(&c, &m) == NULL, "a 2^32 - 1 pixel wide XR24 image alone is refused "
					   "cleanly");
	c.width = 0x3fffffff;
	c.stride_divisor = 0x80000000u;
	tap_ok(check_edge(&c, &m) == NULL,
	       "a stride divisor that rounds the stride past 32 bits is refused cleanly");
}

/* ---------------------------------------------------------------------------------------
 * Random collections: thousands of them, every result checked against every participant,
 * every refusal checked to be a real and minimal conflict.
 */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: reproducible from the seed printed at the start. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static uint32_t below(uint32_t n)
{
	return n ? (uint32_t)(rnd() % n) : 0;
}

static bool one_in(uint32_t n)
{
	return below(n) == 0;
}

#define PICK(arr) ((arr)[below(ARRAY_SIZE(arr))])

struct gen_part {
	uint32_t fourccs[4];
	uint64_t modifiers[2];
	const char *backends[3];
	char name[16];
};

static const uint32_t pool_fourccs[] = {DRM_FORMAT_XRGB8888, DRM_FORMAT_YUYV, DRM_FORMAT_NV12,
					DRM_FORMAT_YUV420,   DRM_FORMAT_R8,   DRM_FORMAT_RGB565,
					DRM_FORMAT_P010};
static const uint32_t pool_divisors[] = {1,   2,   3,	4,    16,   32, 64,
					 128, 256, 512, 1024, 4096, 6,	4294967291u};
static const char *const pool_backends[] = {
	"udmabuf",	    "memfd", "dma-heap", "dma-heap:system", "dma-heap:linux,cma",
	"dma-heap:reserved"};

static void gen_participant(struct db_constraints *c, struct gen_part *g, size_t idx, bool image)
{
	snprintf(g->name, sizeof(g->name), "p%zu", idx);
	*c = (struct db_constraints){.name = g->name};
	if (one_in(3))
		c->min_buffer_count_for_camping = below(4);
	if (one_in(4))
		c->min_buffer_count = 1 + below(6);
	if (one_in(5)) {
		c->max_buffer_count = 1 + below(10);
		if (c->max_buffer_count < c->min_buffer_count)
			c->max_buffer_count = c->min_buffer_count;
		if (c->max_buffer_count < c->min_buffer_count_for_camping)
			c->max_buffer_count = c->min_buffer_count_for_camping;
	}
	if (one_in(4))
		c->min_size = 1 + below(8 * MIB);
	if (one_in(6))
		c->max_size = c->min_size + below(16 * MIB) + 1;
	if (one_in(6))
		c->size_divisor = PICK(((const uint32_t[]){3, 4096, 65536, 1 << 20, 5, 8192}));

	if (image && one_in(2)) {
		uint32_t n = 1 + below(3);

		for (uint32_t k = 0; k < n; k++)
			g->fourccs[k] = PICK(pool_fourccs);
		c->fourccs = g->fourccs;
		c->n_fourccs = n;
	}
	/* Most say how large a plain buffer is; a collection where nobody does is malformed. */
	if (!c->fourccs && !c->min_size && !one_in(3))
		c->min_size = 1 + below(4 * MIB);
	if (c->max_size && c->max_size < c->min_size)
		c->max_size = c->min_size;
	if (one_in(8)) {
		g->modifiers[0] = one_in(4) ? I915_FORMAT_MOD_Y_TILED : DRM_FORMAT_MOD_LINEAR;
		g->modifiers[1] = I915_FORMAT_MOD_X_TILED;
		c->modifiers = g->modifiers;
		c->n_modifiers = 2;
	}
	if (one_in(4))
		c->min_width = 1 + below(2000);
	if (one_in(4))
		c->max_width = c->min_width + below(3000);
	if (one_in(4))
		c->min_height = 1 + below(1200);
	if (one_in(4))
		c->max_height = c->min_height + below(2000);
	if ((idx == 0 && one_in(2)) || one_in(25)) {
		uint32_t wlo = c->min_width ? c->min_width : 1,
			 hlo = c->min_height ? c->min_height : 1;
		uint32_t whi = c->max_width ? c->max_width : wlo + 2000;
		uint32_t hhi = c->max_height ? c->max_height : hlo + 1200;

		c->width = wlo + below(whi - wlo + 1);
		c->height = hlo + below(hhi - hlo + 1);
		/* Mostly even, as real requests are. */
		if (!one_in(6) && c->width % 2 == 1 && c->width + 1 <= whi)
			c->width++;
		if (!one_in(6) && c->height % 2 == 1 && c->height + 1 <= hhi)
			c->height++;
	}
	for (unsigned p = 0; p < DMABROKER_MAX_PLANES; p++) {
		if (one_in(8))
			c->min_stride[p] = below(8192);
		if (one_in(8))
			c->max_stride[p] = c->min_stride[p] + 64 + below(8192);
	}
	if (one_in(3))
		c->stride_divisor = PICK(pool_divisors);
	if (one_in(4))
		c->offset_divisor = PICK(pool_divisors);

	c->contiguous = one_in(8);
	if (one_in(8))
		c->max_segment_size = PICK(((const uint64_t[]){4096, 64 * KIB, MIB, 2 * MIB}));
	if (one_in(10))
		c->dma_address_bits = PICK(((const uint32_t[]){32, 40, 64}));
	c->device = one_in(3);
	if (one_in(6)) {
		uint32_t n = 1 + below(3);

		for (uint32_t k = 0; k < n; k++)
			g->backends[k] = PICK(pool_backends);
		c->backends = g->backends;
		c->n_backends = n;
	}
	c->cpu_read = one_in(2);
	c->cpu_write = one_in(3);
	c->dynamic = one_in(2);
}

static const struct db_heap_info pool_heaps[] = {
	{"system", false},
	{"linux,cma", true},
	{"reserved", true},
};

static void gen_machine(struct db_machine_info *m, struct db_heap_info heaps[3])
{
	size_t n = 0;

	*m = (struct db_machine_info){.page_size = PAGE};
	m->udmabuf = !one_in(4);
	m->udmabuf_size_limit = PICK(((const uint64_t[]){0, 0, 16 * MIB, 64 * MIB}));
	m->huge_page_size = one_in(2) ? 2 * MIB : 0;
	m->hugetlb_vmap_safe = one_in(2);
	for (size_t i = 0; i < ARRAY_SIZE(pool_heaps); i++)
		if (one_in(2))
			heaps[n++] = pool_heaps[i];
	/* Any order: the machine lists heaps as the directory does. */
	if (n == 2 && one_in(2)) {
		struct db_heap_info t = heaps[0];

		heaps[0] = heaps[1];
		heaps[1] = t;
	}
	m->heaps = n ? heaps : NULL;
	m->n_heaps = n;
	m->memfd = !one_in(10);
	m->max_buffer_size = one_in(4) ? 32 * MIB : 0;
}

static void test_random(void)
{
	const char *env = getenv("DB_CONSTRAINTS_SEED");
	unsigned long n_cases = 20000;
	unsigned long ok = 0, refused = 0, unsized = 0, bad_result = 0, bad_refusal = 0, other = 0;
	unsigned long subset_checked = 0, bad_subset = 0, flagged = 0, singles = 0, multi = 0;
	unsigned long minimal_checked = 0, malformed = 0;
	uint64_t seed = env ? strtoull(env, NULL, 0) : 0x5eed0f5e550115ull;

	rng_state = seed ? seed : 1;
	tap_diag("random collections: seed 0x%" PRIx64 " (DB_CONSTRAINTS_SEED)", seed);
	for (unsigned long t = 0; t < n_cases; t++) {
		struct db_constraints parts[6], sub[7];
		struct gen_part gens[6];
		struct db_heap_info heaps[3];
		struct db_machine_info m;
		struct db_collection_plan plan, plan2;
		struct db_constraints_error err, err2;
		size_t n = 1 + below(6), k;
		unsigned flags = one_in(2) ? DB_CONSTRAINTS_STRICT_SEGMENTS : 0;
		bool image = !one_in(4);
		const char *why;
		int r;

		gen_machine(&m, heaps);
		for (size_t i = 0; i < n; i++)
			gen_participant(&parts[i], &gens[i], i, image);
		for (size_t i = 0; i < n; i++)
			malformed += db_constraints_validate(&parts[i], &err) != 0;

		r = db_constraints_intersect(parts, n, &m, flags, &plan, &err);
		if (r == 0) {
			ok++;
			flagged += !!(plan.flags & DB_COLLECTION_SEGMENT_LIMIT_NOT_MET);
			why = check_plan(&plan, parts, n, &m, flags);
			if (!why)
				why = check_joiners(&plan, parts, n, flags);
			if (why && bad_result++ < 5)
				tap_diag("  case %lu: result violates: %s", t, why);
			/* Any subset of a collection that works works too. */
			if (n > 1) {
				uint64_t mask = rnd() & ((1ull << n) - 1);

				if (mask) {
					r = run_set(parts, n, mask, &m, flags, sub, &k, &plan2,
						    &err2);
					subset_checked++;
					why = r == 0 ? check_plan(&plan2, sub, k, &m, flags)
						     : err2.message;
					if (why && bad_subset++ < 5)
						tap_diag("  case %lu: subset 0x%" PRIx64
							 " of a success: %s",
							 t, mask, why);
				}
			}
			continue;
		}
		if (r == -EINVAL && strstr(err.message, "how large")) {
			unsized++;
			continue;
		}
		if (r == -ENODEV && !m.udmabuf && !m.n_heaps && !m.memfd) {
			unsized++;
			continue;
		}
		if (r != -EOPNOTSUPP) {
			if (other++ < 5)
				tap_diag("  case %lu: %d: %s", t, r, err.message);
			continue;
		}
		refused++;
		if (!err.conflict || err.conflict >> n || !err.message[0]) {
			if (bad_refusal++ < 5)
				tap_diag("  case %lu: empty or stray conflict 0x%" PRIx64, t,
					 err.conflict);
			continue;
		}
		/* The named set alone conflicts, all of it named again... */
		r = run_set(parts, n, err.conflict, &m, flags, sub, &k, &plan2, &err2);
		if (k > (size_t)__builtin_popcountll(err.conflict))
			k--; /* the sizer, never named */
		if (r != -EOPNOTSUPP || err2.conflict != (1ull << k) - 1) {
			if (bad_refusal++ < 5)
				tap_diag("  case %lu: named set 0x%" PRIx64
					 " (%s) alone gives %d (0x%" PRIx64 ": %s)",
					 t, err.conflict, err.message, r, err2.conflict,
					 err2.message);
			continue;
		}
		if (__builtin_popcountll(err.conflict) == 1)
			singles++;
		else
			multi++;
		/* ... and is minimal: without any one of them the rest goes through. */
		for (size_t i = 0; i < n; i++) {
			uint64_t rest = err.conflict & ~(1ull << i);

			if (rest == err.conflict || !rest)
				continue;
			minimal_checked++;
			r = run_set(parts, n, rest, &m, flags, sub, &k, &plan2, &err2);
			why = r == 0 ? check_plan(&plan2, sub, k, &m, flags) : err2.message;
			if (why) {
				if (bad_refusal++ < 5)
					tap_diag("  case %lu: named 0x%" PRIx64
						 " (%s) not minimal: without %zu: %s",
						 t, err.conflict, err.message, i, why);
				break;
			}
		}
	}
	tap_diag("  %lu allocated (%lu flagged for segments), %lu refused (%lu by one participant, "
		 "%lu by several), %lu without a size or any backend",
		 ok, flagged, refused, singles, multi, unsized);
	tap_ok(bad_result == 0,
	       "every result of %lu random collections satisfies every participant", ok);
	tap_ok(bad_refusal == 0,
	       "every refusal of %lu names a real, minimal conflicting set (%lu removals checked)",
	       refused, minimal_checked);
	tap_ok(bad_subset == 0, "%lu subsets of successful collections succeed too",
	       subset_checked);
	tap_ok(malformed == 0, "every generated participant is well-formed");
	tap_ok(other == 0, "no well-formed random collection is -EINVAL but for having no size");
	tap_ok(ok > n_cases / 10 && refused > n_cases / 10 && multi > n_cases / 100,
	       "the generator reaches both outcomes (%lu, %lu, %lu)", ok, refused, multi);
}

/* Random bytes as constraints: never a crash, only 0, -EINVAL or -EOPNOTSUPP. */
static void test_garbage(void)
{
	unsigned long n_cases = 20000, odd = 0, n_ok = 0, n_inval = 0;
	static const char *const names[] = {"udmabuf",	  "memfd", "dma-heap",
					    "dma-heap:x", "bogus", ""};

	for (unsigned long t = 0; t < n_cases; t++) {
		struct db_constraints parts[4];
		uint32_t fourccs[4][3];
		uint64_t mods[4][2];
		const char *backends[4][2];
		struct db_heap_info heaps[2] = {{"system", false}, {"linux,cma", true}};
		struct db_machine_info m;
		struct db_collection_plan plan;
		struct db_constraints_error err;
		size_t n = 1 + below(4);
		const char *why;
		unsigned flags;
		int r;

		for (size_t i = 0; i < n; i++) {
			uint64_t *w = (uint64_t *)&parts[i];

			for (size_t k = 0; k < sizeof(parts[i]) / sizeof(uint64_t); k++)
				w[k] = one_in(2) ? rnd() >> below(64) : 0;
			parts[i].name = one_in(20) ? NULL : "g";
			for (size_t k = 0; k < 3; k++)
				fourccs[i][k] = one_in(2) ? PICK(pool_fourccs) : (uint32_t)rnd();
			for (size_t k = 0; k < 2; k++) {
				mods[i][k] = one_in(2) ? DRM_FORMAT_MOD_LINEAR : rnd();
				backends[i][k] = PICK(names);
			}
			parts[i].fourccs = one_in(2) ? fourccs[i] : NULL;
			parts[i].n_fourccs = parts[i].fourccs ? below(4) : 0;
			parts[i].modifiers = one_in(3) ? mods[i] : NULL;
			parts[i].n_modifiers = parts[i].modifiers ? below(3) : 0;
			parts[i].backends = one_in(3) ? backends[i] : NULL;
			parts[i].n_backends = parts[i].backends ? below(3) : 0;
			/* Booleans from random bytes would be undefined to read. */
			parts[i].contiguous = one_in(2);
			parts[i].device = one_in(2);
			parts[i].cpu_read = one_in(2);
			parts[i].cpu_write = one_in(2);
			parts[i].dynamic = one_in(2);
		}
		m = (struct db_machine_info){.udmabuf = one_in(2),
					     .udmabuf_size_limit = one_in(2) ? rnd() : 0,
					     .huge_page_size = one_in(2) ? 2 * MIB : 0,
					     .hugetlb_vmap_safe = one_in(2),
					     .heaps = heaps,
					     .n_heaps = below(3),
					     .memfd = one_in(2),
					     .page_size = PAGE,
					     .max_buffer_size = one_in(2) ? rnd() : 0};
		flags = one_in(2) ? DB_CONSTRAINTS_STRICT_SEGMENTS : 0;
		r = db_constraints_intersect(parts, n, &m, flags, &plan, &err);
		n_ok += r == 0;
		n_inval += r == -EINVAL;
		why = r == 0 ? check_plan(&plan, parts, n, &m, flags) : NULL;
		if (!why && r != 0 && r != -EINVAL && r != -EOPNOTSUPP && r != -ENODEV)
			why = "an unexpected error";
		if (why && odd++ < 5)
			tap_diag("  garbage case %lu: %d: %s", t, r, why);
	}
	tap_diag("  random bytes: %lu allocated, %lu -EINVAL", n_ok, n_inval);
	tap_ok(odd == 0,
	       "%lu collections of random bytes: no crash; 0 (valid), -EINVAL, -EOPNOTSUPP or "
	       "-ENODEV",
	       n_cases);
}

int main(void)
{
	test_trio();
	test_two_different();
	test_stride_conflict();
	test_sets();
	test_late_joiners();
	test_malformed();
	test_huge();
	test_edge_stride();
	test_edges();
	test_random();
	test_garbage();
	return tap_done();
}
