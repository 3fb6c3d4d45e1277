// SPDX-License-Identifier: Apache-2.0
// Minimal JSON support for nodemesh-cni: a growable byte buffer, a strict validator, lookup
// of top-level keys of an object, and string escaping. No allocation beyond the buffers.
#pragma once

#include <stddef.h>

struct buf {
  char *p;
  size_t len;
  size_t cap;
};

void buf_append(struct buf *b, const char *s, size_t n);
void buf_puts(struct buf *b, const char *s);
/* Appends `s` as a JSON string literal, quotes included. */
void buf_json_string(struct buf *b, const char *s);
void buf_free(struct buf *b);

/* 1 when [s, s+n) is exactly one JSON value, surrounded by optional whitespace. */
int json_validate(const char *s, size_t n);

/*
 * Looks up `key` among the members of the top-level object in [s, s+n) (which must have
 * been validated). Returns 1 and the raw value's span when found, 0 when absent or when the
 * document is not an object.
 */
int json_top_member(const char *s, size_t n, const char *key, const char **val, size_t *vlen);

/*
 * Decodes the JSON string literal at [s, s+n) (escapes included, \uXXXX to UTF-8) into `out`
 * (NUL-terminated). Returns 0 on success, -1 when the span is not a string or decodes to a
 * string containing NUL.
 */
int json_decode_string(const char *s, size_t n, struct buf *out);
