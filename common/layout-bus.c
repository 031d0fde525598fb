// SPDX-License-Identifier: MIT
#include "layout-bus.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "macros.h"

enum {
	KEY_SIZE,
	KEY_WIDTH,
	KEY_HEIGHT,
	KEY_FOURCC,
	KEY_MODIFIER,
	KEY_PLANES,
	KEY_OFFSETS,
	KEY_STRIDES,
	KEY_BACKEND,
	KEY_DMABUF,
	KEY_NAME,
	N_KEYS,
};

/* Each key's name and the one signature its variant may have. */
static const struct {
	const char *name;
	const char *sig;
} keys[N_KEYS] = {
	[KEY_SIZE] = {"size", "t"},	    [KEY_WIDTH] = {"width", "u"},
	[KEY_HEIGHT] = {"height", "u"},	    [KEY_FOURCC] = {"fourcc", "u"},
	[KEY_MODIFIER] = {"modifier", "t"}, [KEY_PLANES] = {"planes", "u"},
	[KEY_OFFSETS] = {"offsets", "au"},  [KEY_STRIDES] = {"strides", "au"},
	[KEY_BACKEND] = {"backend", "s"},   [KEY_DMABUF] = {"dmabuf", "b"},
	[KEY_NAME] = {"name", "s"},
};

int db_dict_append_u32_array(sd_bus_message *m, const char *key, const uint32_t *v, uint32_t n)
{
	int r;

	r = sd_bus_message_open_container(m, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', key);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'v', "au");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', v, n * sizeof(uint32_t));
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static int append_u32_entry(sd_bus_message *m, unsigned k, uint32_t v)
{
	return sd_bus_message_append(m, "{sv}", keys[k].name, "u", v);
}

static bool str_equal(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool planes_equal(const struct db_layout *a, const struct db_layout *b)
{
	return a->n_planes == b->n_planes &&
	       memcmp(a->offsets, b->offsets, a->n_planes * sizeof(uint32_t)) == 0 &&
	       memcmp(a->strides, b->strides, a->n_planes * sizeof(uint32_t)) == 0;
}

/* The compact form: only the entries whose value is not the implied one. */
static int append_compact(sd_bus_message *m, const struct db_layout_dict *d,
			  const struct db_layout_dict *implied)
{
	const struct db_layout *l = &d->layout, *i = &implied->layout;
	int r = 0;

	if (l->size != i->size)
		r = sd_bus_message_append(m, "{sv}", keys[KEY_SIZE].name, "t", (uint64_t)l->size);
	if (r >= 0 && l->width != i->width)
		r = append_u32_entry(m, KEY_WIDTH, l->width);
	if (r >= 0 && l->height != i->height)
		r = append_u32_entry(m, KEY_HEIGHT, l->height);
	if (r >= 0 && l->fourcc != i->fourcc)
		r = append_u32_entry(m, KEY_FOURCC, l->fourcc);
	if (r >= 0 && l->modifier != i->modifier)
		r = sd_bus_message_append(m, "{sv}", keys[KEY_MODIFIER].name, "t", l->modifier);
	/* The three go together: a reader checks them against each other. */
	if (r >= 0 && !planes_equal(l, i)) {
		r = append_u32_entry(m, KEY_PLANES, l->n_planes);
		if (r >= 0)
			r = db_dict_append_u32_array(m, keys[KEY_OFFSETS].name, l->offsets,
						     l->n_planes);
		if (r >= 0)
			r = db_dict_append_u32_array(m, keys[KEY_STRIDES].name, l->strides,
						     l->n_planes);
	}
	if (r >= 0 && !str_equal(d->backend, implied->backend))
		r = sd_bus_message_append(m, "{sv}", keys[KEY_BACKEND].name, "s",
					  d->backend ? d->backend : "");
	if (r >= 0 && d->is_dmabuf != implied->is_dmabuf)
		r = sd_bus_message_append(m, "{sv}", keys[KEY_DMABUF].name, "b", (int)d->is_dmabuf);
	if (r >= 0 && !str_equal(d->name, implied->name))
		r = sd_bus_message_append(m, "{sv}", keys[KEY_NAME].name, "s",
					  d->name ? d->name : "");
	return r;
}

int db_layout_dict_append(sd_bus_message *m, const struct db_layout_dict *d,
			  const struct db_layout_dict *implied)
{
	const struct db_layout *l = &d->layout;
	int r;

	/* The arrays are read for n_planes entries: more would read past them. */
	if (l->n_planes > DMABROKER_MAX_PLANES ||
	    (implied && implied->layout.n_planes > DMABROKER_MAX_PLANES))
		return -EINVAL;
	r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && implied)
		r = append_compact(m, d, implied);
	else if (r >= 0)
		r = sd_bus_message_append(
			m, "{sv}{sv}{sv}{sv}{sv}{sv}", keys[KEY_SIZE].name, "t", (uint64_t)l->size,
			keys[KEY_WIDTH].name, "u", l->width, keys[KEY_HEIGHT].name, "u", l->height,
			keys[KEY_FOURCC].name, "u", l->fourcc, keys[KEY_MODIFIER].name, "t",
			l->modifier, keys[KEY_PLANES].name, "u", l->n_planes);
	if (r >= 0 && !implied)
		r = db_dict_append_u32_array(m, keys[KEY_OFFSETS].name, l->offsets, l->n_planes);
	if (r >= 0 && !implied)
		r = db_dict_append_u32_array(m, keys[KEY_STRIDES].name, l->strides, l->n_planes);
	if (r >= 0 && !implied)
		r = sd_bus_message_append(m, "{sv}{sv}{sv}", keys[KEY_BACKEND].name, "s",
					  d->backend ? d->backend : "", keys[KEY_DMABUF].name, "b",
					  (int)d->is_dmabuf, keys[KEY_NAME].name, "s",
					  d->name ? d->name : "");
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static int key_lookup(const char *name)
{
	for (unsigned k = 0; k < N_KEYS; k++)
		if (strcmp(keys[k].name, name) == 0)
			return (int)k;
	return -1;
}

static int read_u32_array(sd_bus_message *m, uint32_t out[static DMABROKER_MAX_PLANES],
			  uint32_t *ret_n)
{
	const void *p;
	size_t size;
	int r;

	r = sd_bus_message_read_array(m, 'u', &p, &size);
	if (r < 0)
		return r;
	if (size / sizeof(uint32_t) > DMABROKER_MAX_PLANES)
		return -EBADMSG;
	if (size)
		memcpy(out, p, size);
	*ret_n = (uint32_t)(size / sizeof(uint32_t));
	return 0;
}

/* Reads the value of key k, the variant entered and its type already checked. */
static int read_value(sd_bus_message *m, unsigned k, struct db_layout_dict *d, uint32_t *n_offsets,
		      uint32_t *n_strides)
{
	struct db_layout *l = &d->layout;
	uint64_t size;
	int r, b;

	switch (k) {
	case KEY_SIZE:
		r = sd_bus_message_read_basic(m, 't', &size);
		if (r < 0)
			return r;
		/* Only a 32-bit library can meet a buffer it cannot map. */
		if (size > SIZE_MAX)
			return -EBADMSG;
		l->size = (size_t)size;
		return 0;
	case KEY_WIDTH:
		return sd_bus_message_read_basic(m, 'u', &l->width);
	case KEY_HEIGHT:
		return sd_bus_message_read_basic(m, 'u', &l->height);
	case KEY_FOURCC:
		return sd_bus_message_read_basic(m, 'u', &l->fourcc);
	case KEY_MODIFIER:
		return sd_bus_message_read_basic(m, 't', &l->modifier);
	case KEY_PLANES:
		return sd_bus_message_read_basic(m, 'u', &l->n_planes);
	case KEY_OFFSETS:
		return read_u32_array(m, l->offsets, n_offsets);
	case KEY_STRIDES:
		return read_u32_array(m, l->strides, n_strides);
	case KEY_BACKEND:
		return sd_bus_message_read_basic(m, 's', &d->backend);
	case KEY_DMABUF:
		r = sd_bus_message_read_basic(m, 'b', &b);
		if (r >= 0)
			d->is_dmabuf = b;
		return r;
	case KEY_NAME:
		return sd_bus_message_read_basic(m, 's', &d->name);
	}
	return -EINVAL;
}

int db_layout_dict_read_over(sd_bus_message *m, const struct db_layout_dict *implied,
			     struct db_layout_dict *ret)
{
	struct db_layout_dict d = implied ? *implied : (struct db_layout_dict){0};
	uint32_t n_offsets, n_strides;
	bool seen[N_KEYS] = {false};
	int r;

	if (d.layout.n_planes > DMABROKER_MAX_PLANES)
		return -EINVAL;
	/* Arrays not in the message are the implied ones: as long as its planes. */
	n_offsets = n_strides = d.layout.n_planes;
	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key;
		int k;

		r = sd_bus_message_read_basic(m, 's', &key);
		if (r < 0)
			return r;
		k = key_lookup(key);
		if (k < 0) {
			/* A key from a newer daemon. */
			r = sd_bus_message_skip(m, "v");
		} else {
			/* A second value would leave "planes" and the arrays to disagree
			 * about which one counts. */
			if (seen[k])
				return -EBADMSG;
			seen[k] = true;
			/* sd-bus checks the variant's type: -ENXIO if it is another. */
			r = sd_bus_message_enter_container(m, 'v', keys[k].sig);
			if (r == -ENXIO)
				return -EBADMSG;
			if (r >= 0)
				r = read_value(m, (unsigned)k, &d, &n_offsets, &n_strides);
			if (r >= 0)
				r = sd_bus_message_exit_container(m);
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = sd_bus_message_exit_container(m);
	if (r < 0)
		return r;
	/* Callers index offsets and strides by n_planes: it must say how many there are. */
	if (d.layout.n_planes > DMABROKER_MAX_PLANES || n_offsets != d.layout.n_planes ||
	    n_strides != d.layout.n_planes)
		return -EBADMSG;
	*ret = d;
	return 0;
}

int db_layout_dict_read(sd_bus_message *m, struct db_layout_dict *ret)
{
	return db_layout_dict_read_over(m, NULL, ret);
}
