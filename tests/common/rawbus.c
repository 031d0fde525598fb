// SPDX-License-Identifier: MIT
#include "rawbus.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "protocol.h"

struct msgbuf {
	uint8_t data[4096];
	size_t len;
};

static void pad(struct msgbuf *m, size_t align)
{
	while (m->len % align)
		m->data[m->len++] = 0;
}

static void put_u32(struct msgbuf *m, uint32_t v)
{
	pad(m, 4);
	memcpy(m->data + m->len, &v, 4);
	m->len += 4;
}

static void put_str(struct msgbuf *m, const char *s)
{
	put_u32(m, (uint32_t)strlen(s));
	memcpy(m->data + m->len, s, strlen(s) + 1);
	m->len += strlen(s) + 1;
}

static void put_sig(struct msgbuf *m, const char *s)
{
	m->data[m->len++] = (uint8_t)strlen(s);
	memcpy(m->data + m->len, s, strlen(s) + 1);
	m->len += strlen(s) + 1;
}

/* One header field: (byte code, variant). */
static void field_str(struct msgbuf *m, uint8_t code, char type, const char *v)
{
	char sig[2] = {type, 0};

	pad(m, 8);
	m->data[m->len++] = code;
	put_sig(m, sig);
	if (type == 'g')
		put_sig(m, v);
	else
		put_str(m, v);
}

static void field_u32(struct msgbuf *m, uint8_t code, uint32_t v)
{
	pad(m, 8);
	m->data[m->len++] = code;
	put_sig(m, "u");
	put_u32(m, v);
}

static int send_all(int fd, const void *p, size_t len, const int *fds, int n_fds)
{
	/* Room for more than the bus carries: hostile tests send too many on purpose. */
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 64)];
	} cbuf;
	struct iovec iov = {(void *)p, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (n_fds > 64)
		return -E2BIG;
	if (n_fds > 0) {
		struct cmsghdr *c;

		mh.msg_control = &cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n_fds);
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

/* Marshals a message into m; the serial is the next of rb's. */
static int build_message(struct rawbus *rb, struct msgbuf *mb, uint8_t type, const char *dest,
			 const char *path, const char *iface, const char *member, const char *sig,
			 const void *body, size_t body_len, uint32_t n_unix_fds)
{
	struct msgbuf *m = mb;
	size_t fields_len_at;
	uint32_t serial = ++rb->serial;

	m->len = 0;
	m->data[m->len++] = 'l';
	m->data[m->len++] = type;
	m->data[m->len++] = 0;
	m->data[m->len++] = 1;
	put_u32(m, (uint32_t)body_len);
	put_u32(m, serial);
	fields_len_at = m->len;
	put_u32(m, 0);
	field_str(m, 1, 'o', path);
	if (iface)
		field_str(m, 2, 's', iface);
	field_str(m, 3, 's', member);
	if (dest)
		field_str(m, 6, 's', dest);
	if (sig && *sig)
		field_str(m, 8, 'g', sig);
	if (n_unix_fds)
		field_u32(m, 9, n_unix_fds);
	{
		uint32_t fl = (uint32_t)(m->len - fields_len_at - 4);

		memcpy(m->data + fields_len_at, &fl, 4);
	}
	pad(m, 8);
	if (m->len + body_len > sizeof(m->data))
		return -E2BIG;
	if (body_len)
		memcpy(m->data + m->len, body, body_len);
	m->len += body_len;
	return (int)serial;
}

static int send_message(struct rawbus *rb, uint8_t type, const char *dest, const char *path,
			const char *iface, const char *member, const char *sig, const void *body,
			size_t body_len, uint32_t n_unix_fds, const int *fds, int n_fds)
{
	struct msgbuf m;
	int serial = build_message(rb, &m, type, dest, path, iface, member, sig, body, body_len,
				   n_unix_fds);

	if (serial < 0)
		return serial;
	return send_all(rb->fd, m.data, m.len, fds, n_fds) < 0 ? -EIO : serial;
}

int rawbus_build_peer_call(struct rawbus *rb, const char *iface, const char *member,
			   const char *sig, const void *body, size_t body_len, void *out,
			   size_t out_len, size_t *ret_len)
{
	struct msgbuf m;
	int serial = build_message(rb, &m, 1, NULL, DB_OBJECT_PATH, iface, member, sig, body,
				   body_len, 0);

	if (serial < 0)
		return serial;
	if (m.len > out_len)
		return -E2BIG;
	memcpy(out, m.data, m.len);
	*ret_len = m.len;
	return serial;
}

static int read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;

	while (n + 1 < len) {
		if (read(fd, buf + n, 1) != 1)
			return -EIO;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return 0;
}

int rawbus_connect(struct rawbus *rb, const char *address)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *path = strstr(address, "path=");
	char line[256], uid_hex[32], hello_err[128];
	size_t n;
	int r;

	memset(rb, 0, sizeof(*rb));
	if (!path)
		return -EINVAL;
	path += 5;
	n = strcspn(path, ",");
	if (n >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, n);
	rb->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rb->fd < 0 || connect(rb->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	{
		char uid[16];
		size_t k = 0;

		snprintf(uid, sizeof(uid), "%u", (unsigned)getuid());
		for (size_t i = 0; uid[i]; i++)
			k += (size_t)snprintf(uid_hex + k, sizeof(uid_hex) - k, "%02x", uid[i]);
	}
	snprintf(line, sizeof(line), "%cAUTH EXTERNAL %s\r\n", 0, uid_hex);
	if (write(rb->fd, line, strlen(line + 1) + 1) < 0 || read_line(rb->fd, line, sizeof(line)))
		return -EIO;
	if (strncmp(line, "OK", 2) != 0)
		return -EACCES;
	if (write(rb->fd, "NEGOTIATE_UNIX_FD\r\n", 19) < 0 || read_line(rb->fd, line, sizeof(line)))
		return -EIO;
	if (write(rb->fd, "BEGIN\r\n", 7) < 0)
		return -EIO;
	r = send_message(rb, 1, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			 "org.freedesktop.DBus", "Hello", NULL, NULL, 0, 0, NULL, 0);
	if (r < 0)
		return r;
	return rawbus_wait_reply(rb, (uint32_t)r, hello_err, sizeof(hello_err), 5000) == 0
		       ? 0
		       : -EPROTO;
}

int rawbus_connect_peer(struct rawbus *rb, int fd)
{
	char line[256];
	static const char auth[] = "\0AUTH ANONYMOUS\r\n";

	memset(rb, 0, sizeof(*rb));
	rb->fd = fd;
	if (write(fd, auth, sizeof(auth) - 1) < 0 || read_line(fd, line, sizeof(line)))
		return -EIO;
	/* sd-bus asks for the (optional) trace string. */
	if (strncmp(line, "DATA", 4) == 0 &&
	    (write(fd, "DATA\r\n", 6) < 0 || read_line(fd, line, sizeof(line))))
		return -EIO;
	if (strncmp(line, "OK", 2) != 0) {
		fprintf(stderr, "rawbus: peer auth answered '%s'\n", line);
		return -EACCES;
	}
	if (write(fd, "NEGOTIATE_UNIX_FD\r\n", 19) < 0 || read_line(fd, line, sizeof(line)))
		return -EIO;
	if (write(fd, "BEGIN\r\n", 7) < 0)
		return -EIO;
	return 0;
}

int rawbus_call_peer(struct rawbus *rb, const char *member, const char *sig, const void *body,
		     size_t body_len, uint32_t n_unix_fds, const int *fds, int n_fds)
{
	return send_message(rb, 1, NULL, DB_OBJECT_PATH, DB_IFACE_BROKER, member, sig, body,
			    body_len, n_unix_fds, fds, n_fds);
}

void rawbus_close(struct rawbus *rb)
{
	if (rb->fd >= 0)
		close(rb->fd);
	rb->fd = -1;
}

int rawbus_call(struct rawbus *rb, const char *member, const char *sig, const void *body,
		size_t body_len, uint32_t n_unix_fds, const int *fds, int n_fds)
{
	return send_message(rb, 1, DB_BUS_NAME, DB_OBJECT_PATH, DB_IFACE_BROKER, member, sig, body,
			    body_len, n_unix_fds, fds, n_fds);
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

int rawbus_wait_reply(struct rawbus *rb, uint32_t serial, char *err, size_t len, int timeout_ms)
{
	return rawbus_next_reply(rb, serial ? &serial : NULL, err, len, timeout_ms);
}

int rawbus_next_reply(struct rawbus *rb, uint32_t *serial, char *err, size_t len, int timeout_ms)
{
	uint8_t buf[65536];

	for (;;) {
		struct pollfd pfd = {rb->fd, POLLIN, 0};
		uint32_t body_len, fields_len, reply_serial = 0;
		size_t total, got = 0, pos;
		uint8_t type;
		char name[256] = "";

		if (poll(&pfd, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		/* Fixed header first, then the rest. */
		while (got < 16) {
			ssize_t n = read(rb->fd, buf + got, 16 - got);

			if (n <= 0)
				return -ECONNRESET;
			got += (size_t)n;
		}
		type = buf[1];
		body_len = get_u32(buf + 4);
		fields_len = get_u32(buf + 12);
		total = 16 + ((fields_len + 7) & ~7u) + body_len;
		if (total > sizeof(buf))
			return -E2BIG;
		while (got < total) {
			ssize_t n = read(rb->fd, buf + got, total - got);

			if (n <= 0)
				return -ECONNRESET;
			got += (size_t)n;
		}
		for (pos = 16; pos < 16 + fields_len;) {
			uint8_t code = buf[pos], siglen = buf[pos + 1];
			char t = (char)buf[pos + 2];

			pos += 3 + siglen;
			if (t == 'u') {
				pos = (pos + 3) & ~(size_t)3;
				if (code == 5)
					reply_serial = get_u32(buf + pos);
				pos += 4;
			} else if (t == 's' || t == 'o') {
				uint32_t l;

				pos = (pos + 3) & ~(size_t)3;
				l = get_u32(buf + pos);
				if (code == 4 && l < sizeof(name)) {
					memcpy(name, buf + pos + 4, l);
					name[l] = '\0';
				}
				pos += 4 + l + 1;
			} else if (t == 'g') {
				pos += 1 + buf[pos] + 1;
			} else {
				break;
			}
			pos = (pos + 7) & ~(size_t)7;
		}
		if ((type != 2 && type != 3) || (serial && *serial && reply_serial != *serial))
			continue;
		if (serial)
			*serial = reply_serial;
		if (type == 3) {
			snprintf(err, len, "%s", name);
			return 1;
		}
		err[0] = '\0';
		return 0;
	}
}
