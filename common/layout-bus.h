/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "layout.h"

/*
 * The layout dictionary (a{sv}) the daemon returns for a buffer, as
 * data/org.dmabroker.Broker1.xml spells it: "size" t, "width" u, "height" u, "fourcc" u,
 * "modifier" t, "planes" u, "offsets" au, "strides" au, "backend" s, "dmabuf" b,
 * "name" s. The daemon writes it and the library reads it with the functions below only,
 * so the two cannot drift apart.
 */
struct db_layout_dict {
	struct db_layout layout; /* layout.size is "size": the buffer's bytes */
	const char *backend; /* NULL: absent when read */
	bool is_dmabuf;
	const char *name; /* NULL: absent when read */
};

/*
 * Appends the dictionary (the whole a{sv}) to m. implied NULL: the full form, every key (NULL
 * strings go out as ""). implied non-NULL: the compact form, only the entries whose value
 * differs from implied's ("planes", "offsets" and "strides" go together); a reader that
 * starts from the same implied values (db_layout_dict_read_over()) reads it back whole. With
 * implied all zero, a plain buffer's dictionary is "size" and "backend".
 * -EINVAL if a layout has more than DMABROKER_MAX_PLANES planes.
 */
int db_layout_dict_append(sd_bus_message *m, const struct db_layout_dict *d,
			  const struct db_layout_dict *implied);

/*
 * Reads a dictionary from m into ret; its strings point into m. Keys this version does not
 * know are skipped, so the daemon can add some; a known key with another type, a key given
 * twice, more than DMABROKER_MAX_PLANES planes or offsets and strides not exactly "planes"
 * long are -EBADMSG (sd-bus's own errors pass through). ret is untouched on failure.
 * An absent key is zero, false or NULL.
 */
int db_layout_dict_read(sd_bus_message *m, struct db_layout_dict *ret);

/*
 * The same, an absent key taking its value from implied (its strings are copied as
 * pointers), for a compact dictionary written against the same implied values.
 */
int db_layout_dict_read_over(sd_bus_message *m, const struct db_layout_dict *implied,
			     struct db_layout_dict *ret);

/* Appends one {"key": <au>} entry to an open a{sv} container. */
int db_dict_append_u32_array(sd_bus_message *m, const char *key, const uint32_t *v, uint32_t n);
