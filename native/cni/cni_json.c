// SPDX-License-Identifier: Apache-2.0
// Minimal, strict JSON for nodemesh-cni (RFC 8259): validation, top-level member lookup,
// string decoding and escaping. The plugin reads three keys of its config and relays the rest
// verbatim, so a full DOM would only add code that can be wrong.
#include "cni_json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deep enough for any CNI config; bounds the recursion on hostile input. */
#define MAX_DEPTH 128

void buf_append(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      fputs("nodemesh-cni: out of memory\n", stderr);
      exit(1);
    }
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_free(struct buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void buf_json_string(struct buf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  buf_append(b, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    switch (*c) {
      case '"': buf_append(b, "\\\"", 2); break;
      case '\\': buf_append(b, "\\\\", 2); break;
      case '\b': buf_append(b, "\\b", 2); break;
      case '\f': buf_append(b, "\\f", 2); break;
      case '\n': buf_append(b, "\\n", 2); break;
      case '\r': buf_append(b, "\\r", 2); break;
      case '\t': buf_append(b, "\\t", 2); break;
      default:
        if (*c < 0x20) {
          char u[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
          buf_append(b, u, 6);
        } else {
          buf_append(b, (const char *)c, 1);
        }
    }
  }
  buf_append(b, "\"", 1);
}

struct cur {
  const char *p;
  const char *end;
};

static void skip_ws(struct cur *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

static int read_hex4(const char *p, const char *end, uint32_t *out) {
  if (end - p < 4) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(p[i]);
    if (h < 0) return -1;
    v = (v << 4) | (uint32_t)h;
  }
  *out = v;
  return 0;
}

static void put_utf8(struct buf *out, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xc0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xe0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[2] = (char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    u[0] = (char)(0xf0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[3] = (char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  buf_append(out, u, n);
}

/*
 * Scans a string literal starting at the opening quote. With `out`, decodes it too.
 * Returns 0 and leaves the cursor after the closing quote, or -1.
 */
static int scan_string(struct cur *c, struct buf *out) {
  if (c->p >= c->end || *c->p != '"') return -1;
  c->p++;
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') {
      c->p++;
      return 0;
    }
    if (ch < 0x20) return -1; /* control characters must be escaped */
    if (ch != '\\') {
      if (out) buf_append(out, c->p, 1);
      c->p++;
      continue;
    }
    if (++c->p >= c->end) return -1;
    char e = *c->p++;
    const char *simple = NULL;
    switch (e) {
      case '"': simple = "\""; break;
      case '\\': simple = "\\"; break;
      case '/': simple = "/"; break;
      case 'b': simple = "\b"; break;
      case 'f': simple = "\f"; break;
      case 'n': simple = "\n"; break;
      case 'r': simple = "\r"; break;
      case 't': simple = "\t"; break;
      case 'u': {
        uint32_t cp;
        if (read_hex4(c->p, c->end, &cp) < 0) return -1;
        c->p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
          uint32_t lo;
          /* A high surrogate must be followed by an escaped low surrogate. */
          if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || read_hex4(c->p + 2, c->end, &lo) < 0 ||
              lo < 0xdc00 || lo > 0xdfff)
            return -1;
          c->p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
          return -1;
        }
        if (out) put_utf8(out, cp);
        break;
      }
      default: return -1;
    }
    if (simple && out) buf_append(out, simple, 1);
  }
  return -1;
}

static int scan_number(struct cur *c) {
  const char *p = c->p;
  if (p < c->end && *p == '-') p++;
  if (p >= c->end) return -1;
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < c->end && *p >= '0' && *p <= '9') p++;
  } else {
    return -1;
  }
  if (p < c->end && *p == '.') {
    p++;
    if (p >= c->end || *p < '0' || *p > '9') return -1;
    while (p < c->end && *p >= '0' && *p <= '9') p++;
  }
  if (p < c->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < c->end && (*p == '+' || *p == '-')) p++;
    if (p >= c->end || *p < '0' || *p > '9') return -1;
    while (p < c->end && *p >= '0' && *p <= '9') p++;
  }
  c->p = p;
  return 0;
}

static int scan_literal(struct cur *c, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return -1;
  c->p += n;
  return 0;
}

static int scan_value(struct cur *c, int depth) {
  if (depth > MAX_DEPTH) return -1;
  skip_ws(c);
  if (c->p >= c->end) return -1;
  switch (*c->p) {
    case '"': return scan_string(c, NULL);
    case '{':
      c->p++;
      skip_ws(c);
      if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
      }
      for (;;) {
        skip_ws(c);
        if (scan_string(c, NULL) < 0) return -1;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        if (scan_value(c, depth + 1) < 0) return -1;
        skip_ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') {
          c->p++;
          continue;
        }
        if (*c->p == '}') {
          c->p++;
          return 0;
        }
        return -1;
      }
    case '[':
      c->p++;
      skip_ws(c);
      if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 0;
      }
      for (;;) {
        if (scan_value(c, depth + 1) < 0) return -1;
        skip_ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') {
          c->p++;
          continue;
        }
        if (*c->p == ']') {
          c->p++;
          return 0;
        }
        return -1;
      }
    case 't': return scan_literal(c, "true");
    case 'f': return scan_literal(c, "false");
    case 'n': return scan_literal(c, "null");
    default: return scan_number(c);
  }
}

int json_validate(const char *s, size_t n) {
  struct cur c = {s, s + n};
  if (scan_value(&c, 0) < 0) return 0;
  skip_ws(&c);
  return c.p == c.end;
}

int json_top_member(const char *s, size_t n, const char *key, const char **val, size_t *vlen) {
  struct cur c = {s, s + n};
  skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return 0;
  c.p++;
  skip_ws(&c);
  if (c.p < c.end && *c.p == '}') return 0;
  struct buf k = {0};
  int found = 0;
  for (;;) {
    skip_ws(&c);
    k.len = 0;
    if (scan_string(&c, &k) < 0) break;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != ':') break;
    c.p++;
    skip_ws(&c);
    const char *start = c.p;
    if (scan_value(&c, 1) < 0) break;
    /* Keys are compared decoded, so "agent\u0053ocket" matches too. Last one wins, as in
       most decoders (Go's encoding/json, which the CNI reference plugins use). */
    if (k.p && strlen(k.p) == k.len && strcmp(k.p, key) == 0) {
      *val = start;
      *vlen = (size_t)(c.p - start);
      found = 1;
    }
    skip_ws(&c);
    if (c.p >= c.end || *c.p != ',') break;
    c.p++;
  }
  buf_free(&k);
  return found;
}

int json_decode_string(const char *s, size_t n, struct buf *out) {
  struct cur c = {s, s + n};
  out->len = 0;
  buf_append(out, "", 0);
  if (scan_string(&c, out) < 0 || c.p != c.end) return -1;
  if (strlen(out->p) != out->len) return -1; /* embedded NUL */
  return 0;
}
