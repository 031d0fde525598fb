/* SPDX-License-Identifier: MIT */
#ifndef DMABROKER_GLIB_H
#define DMABROKER_GLIB_H

/*
 * libdmabroker-glib: runs a libdmabroker context from a GLib main loop. A separate library
 * so that libdmabroker itself links libsystemd only (a compositor need not pull in GLib).
 * pkg-config: libdmabroker-glib.
 */

#include <glib.h>

#include <dmabroker.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A GSource that calls dmabroker_dispatch(ctx) whenever ctx has work (its fd is readable or
 * its timeout came). ctx must outlive the source: destroy the source first. A callback set
 * with g_source_set_callback() (a GSourceFunc) runs after each dispatch that failed (the
 * bus connection is gone); returning G_SOURCE_REMOVE from it removes the source.
 * Attach it with g_source_attach(); unref it when done.
 */
GSource *dmabroker_glib_source_new(struct dmabroker *ctx);

#ifdef __cplusplus
}
#endif

#endif /* DMABROKER_GLIB_H */
