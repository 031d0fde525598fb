// SPDX-License-Identifier: MIT
/*
 * The contract's strings against the table of where each is checked: every in-argument of
 * type s, as or o, every a{sv} in-argument (its keys are client strings too), and every
 * string-valued key the contract documents for an a{sv} ("name" s, "device" (s: ...)). A
 * string the contract gains without a row in tests/common/text-args.h fails here, and so
 * does a row the contract no longer has.
 */
#include <string.h>
#include <glib.h>

#include "macros.h"
#include "tap.h"
#include "text-args.h"

struct found {
	char *method, *arg, *key, *type;
};

struct parse {
	GPtrArray *comments; /* char *, in document order */
	GPtrArray *methods; /* char *, in document order */
	GPtrArray *in_args; /* struct found *: method, arg, type (key NULL) */
	char *method; /* the method being read */
	bool in_interface; /* org.dmabroker.Broker1 */
};

static void found_free(struct found *f)
{
	g_free(f->method);
	g_free(f->arg);
	g_free(f->key);
	g_free(f->type);
	g_free(f);
}

static struct found *found_new(const char *method, const char *arg, const char *key,
			       const char *type)
{
	struct found *f = g_new0(struct found, 1);

	f->method = g_strdup(method);
	f->arg = g_strdup(arg);
	f->key = g_strdup(key);
	f->type = g_strdup(type);
	return f;
}

static void on_start(GMarkupParseContext *ctx, const char *element, const char **names,
		     const char **values, gpointer userdata, GError **error)
{
	struct parse *p = userdata;
	const char *name = NULL, *type = NULL, *direction = "in";

	for (size_t i = 0; names[i]; i++) {
		if (strcmp(names[i], "name") == 0)
			name = values[i];
		else if (strcmp(names[i], "type") == 0)
			type = values[i];
		else if (strcmp(names[i], "direction") == 0)
			direction = values[i];
	}
	if (strcmp(element, "interface") == 0) {
		p->in_interface = name && strcmp(name, "org.dmabroker.Broker1") == 0;
	} else if (strcmp(element, "method") == 0 && p->in_interface) {
		g_free(p->method);
		p->method = g_strdup(name);
		g_ptr_array_add(p->methods, g_strdup(name));
	} else if (strcmp(element, "arg") == 0 && p->method && name && type &&
		   strcmp(direction, "in") == 0) {
		g_ptr_array_add(p->in_args, found_new(p->method, name, NULL, type));
	}
}

static void on_end(GMarkupParseContext *ctx, const char *element, gpointer userdata, GError **error)
{
	struct parse *p = userdata;

	if (strcmp(element, "method") == 0)
		g_clear_pointer(&p->method, g_free);
}

static void on_passthrough(GMarkupParseContext *ctx, const char *text, gsize len, gpointer userdata,
			   GError **error)
{
	struct parse *p = userdata;

	if (len > 7 && strncmp(text, "<!--", 4) == 0)
		g_ptr_array_add(p->comments, g_strndup(text + 4, len - 7));
}

static bool is_method(const struct parse *p, const char *name)
{
	for (guint i = 0; i < p->methods->len; i++)
		if (strcmp(g_ptr_array_index(p->methods, i), name) == 0)
			return true;
	return false;
}

/*
 * The doc text of method's @arg: a comment's "Method:" line starts the method's part, "@arg:"
 * the argument's, up to the next "@other:" or the next method. Whitespace is made single
 * spaces. NULL if the contract does not document it.
 */
static char *arg_doc(const struct parse *p, const char *method, const char *arg)
{
	g_autoptr(GRegex) heading = g_regex_new("^\\s*([A-Za-z]+):", 0, 0, NULL);
	g_autoptr(GRegex) at = g_regex_new("^\\s*@([a-z_]+):", 0, 0, NULL);
	GString *doc = NULL;

	for (guint i = 0; i < p->comments->len; i++) {
		g_auto(GStrv) lines = g_strsplit(g_ptr_array_index(p->comments, i), "\n", -1);
		bool in_method = false, in_arg = false;

		for (size_t k = 0; lines[k]; k++) {
			g_autoptr(GMatchInfo) mi = NULL;
			const char *text = lines[k];

			if (g_regex_match(heading, lines[k], 0, &mi)) {
				g_autofree char *name = g_match_info_fetch(mi, 1);

				if (is_method(p, name)) {
					in_method = strcmp(name, method) == 0;
					in_arg = false;
				}
			}
			g_clear_pointer(&mi, g_match_info_free);
			if (g_regex_match(at, lines[k], 0, &mi)) {
				g_autofree char *name = g_match_info_fetch(mi, 1);
				int end;

				in_arg = in_method && strcmp(name, arg) == 0;
				g_match_info_fetch_pos(mi, 0, NULL, &end);
				text = lines[k] + end;
			}
			if (!in_arg)
				continue;
			if (!doc)
				doc = g_string_new(NULL);
			{
				g_autofree char *line = g_strstrip(g_strdup(text));

				g_string_append_printf(doc, " %s", line);
			}
		}
	}
	if (!doc)
		return NULL;
	{
		g_autoptr(GRegex) ws = g_regex_new("\\s+", 0, 0, NULL);
		char *flat = g_regex_replace_literal(ws, doc->str, -1, 0, " ", 0, NULL);

		g_string_free(doc, TRUE);
		return flat;
	}
}

/* The string-valued keys a documented a{sv} argument takes: "name" s, "device" (s: ...),
 * "backends" (as: ...); "as for Method" takes that method's. */
static void doc_keys(const struct parse *p, const char *method, const char *arg, int depth,
		     GPtrArray *out, const char *as_method)
{
	g_autofree char *doc = arg_doc(p, method, arg);
	g_autoptr(GRegex) key = g_regex_new("\"([A-Za-z0-9_-]+)\"((?:,\\s*\"[A-Za-z0-9_-]+\")*)"
					    "\\s*\\(?(as|s|o)(?=[\\s,:;)])",
					    0, 0, NULL);
	g_autoptr(GRegex) as_for = g_regex_new("^\\s*as for ([A-Za-z]+)", 0, 0, NULL);
	g_autoptr(GMatchInfo) mi = NULL;

	if (!doc)
		return;
	if (depth < 2 && g_regex_match(as_for, doc, 0, &mi)) {
		g_autofree char *other = g_match_info_fetch(mi, 1);

		doc_keys(p, other, arg, depth + 1, out, as_method);
	}
	g_clear_pointer(&mi, g_match_info_free);
	for (g_regex_match(key, doc, 0, &mi); g_match_info_matches(mi);
	     g_match_info_next(mi, NULL)) {
		g_autofree char *name = g_match_info_fetch(mi, 1);
		g_autofree char *more = g_match_info_fetch(mi, 2);
		g_autofree char *type = g_match_info_fetch(mi, 3);

		/* A list of keys that share a string type would need a row each. */
		g_ptr_array_add(out, found_new(as_method, arg, name, type));
		if (more && more[0]) {
			g_auto(GStrv) rest = g_strsplit_set(more, ", \"", -1);

			for (size_t k = 0; rest[k]; k++)
				if (rest[k][0])
					g_ptr_array_add(out,
							found_new(as_method, arg, rest[k], type));
		}
	}
}

static const struct text_arg *row_for(const struct found *f)
{
	for (size_t i = 0; i < ARRAY_SIZE(text_args); i++) {
		const struct text_arg *t = &text_args[i];

		if (strcmp(t->method, f->method) == 0 && strcmp(t->arg, f->arg) == 0 &&
		    g_strcmp0(t->key, f->key) == 0 && strcmp(t->type, f->type) == 0)
			return t;
	}
	return NULL;
}

int main(void)
{
	const char *path = getenv("DMABROKER_CONTRACT");
	GMarkupParser parser = {
		.start_element = on_start, .end_element = on_end, .passthrough = on_passthrough};
	struct parse p = {.comments = g_ptr_array_new_with_free_func(g_free),
			  .methods = g_ptr_array_new_with_free_func(g_free),
			  .in_args = g_ptr_array_new_with_free_func((GDestroyNotify)found_free)};
	g_autoptr(GPtrArray) strings = g_ptr_array_new_with_free_func((GDestroyNotify)found_free);
	g_autofree char *xml = NULL;
	g_autoptr(GError) error = NULL;
	GMarkupParseContext *ctx;
	bool *matched = g_new0(bool, ARRAY_SIZE(text_args));
	unsigned missing = 0, stale = 0;
	gsize len;

	tap_require(path && g_file_get_contents(path, &xml, &len, &error), "read the contract %s",
		    path ? path : "($DMABROKER_CONTRACT unset)");
	ctx = g_markup_parse_context_new(&parser, 0, &p, NULL);
	tap_require(g_markup_parse_context_parse(ctx, xml, (gssize)len, &error) &&
			    g_markup_parse_context_end_parse(ctx, &error),
		    "parse the contract (%s)", error ? error->message : "ok");
	g_markup_parse_context_free(ctx);
	tap_ok(p.methods->len >= 20, "the contract has %u methods", p.methods->len);

	for (guint i = 0; i < p.in_args->len; i++) {
		struct found *a = g_ptr_array_index(p.in_args, i);

		if (strcmp(a->type, "s") == 0 || strcmp(a->type, "as") == 0 ||
		    strcmp(a->type, "o") == 0 || strcmp(a->type, "a{sv}") == 0)
			g_ptr_array_add(strings, found_new(a->method, a->arg, NULL, a->type));
		if (strcmp(a->type, "a{sv}") == 0)
			doc_keys(&p, a->method, a->arg, 0, strings, a->method);
	}
	for (guint i = 0; i < strings->len; i++) {
		const struct found *f = g_ptr_array_index(strings, i);
		const struct text_arg *t = row_for(f);

		if (t) {
			matched[t - text_args] = true;
			continue;
		}
		missing++;
		tap_diag("  %s(%s%s%s) of type %s: no row says where it is checked", f->method,
			 f->arg, f->key ? ": " : "", f->key ? f->key : "", f->type);
	}
	tap_ok(strings->len >= ARRAY_SIZE(text_args) / 2, "the contract has %u client strings",
	       strings->len);
	tap_ok(missing == 0,
	       "every client string of the contract has a row in text-args.h (%u not)", missing);
	for (size_t i = 0; i < ARRAY_SIZE(text_args); i++) {
		if (matched[i])
			continue;
		stale++;
		tap_diag("  %s(%s%s%s) is in the table, not in the contract", text_args[i].method,
			 text_args[i].arg, text_args[i].key ? ": " : "",
			 text_args[i].key ? text_args[i].key : "");
	}
	tap_ok(stale == 0, "every row of text-args.h is in the contract (%u not)", stale);
	g_free(matched);
	g_free(p.method);
	g_ptr_array_unref(p.comments);
	g_ptr_array_unref(p.methods);
	g_ptr_array_unref(p.in_args);
	return tap_done();
}
