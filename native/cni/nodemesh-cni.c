// SPDX-License-Identifier: Apache-2.0
// nodemesh-cni: the chained CNI plugin a container runtime runs after `bridge`. It does no
// work itself: it relays the CNI request to the node agent over a unix socket and prints the
// agent's answer. Contract: docs/cni.md. Static, libc only, because the host may have
// nothing else (no Node.js) where the runtime runs it.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cni_json.h"

#define DEFAULT_SOCKET "/run/nodemesh/agent/cni.sock"
#define DEFAULT_TIMEOUT_S 30
#define MAX_STDIN (64u << 20)
#define MAX_ANSWER (16u << 20)

/* CNI spec error codes (SPEC.md "Error" section). */
#define CNI_ERR_INCOMPATIBLE_VERSION 1
#define CNI_ERR_INVALID_ENV 4
#define CNI_ERR_DECODE 6
#define CNI_ERR_INVALID_CONFIG 7
#define CNI_ERR_TRY_AGAIN 11
#define CNI_ERR_NOT_AVAILABLE 50

static const char VERSION_JSON[] =
    "{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}";

/* The cniVersion to stamp on error objects: the config's, once known. */
static char cni_version[64] = "1.0.0";

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Prints a CNI error object on stdout, where the runtime reads it, and exits 1. */
static void __attribute__((noreturn)) cni_fail(int code, const char *msg, const char *details) {
  struct buf b = {0};
  char num[16];
  buf_puts(&b, "{\"cniVersion\":");
  buf_json_string(&b, cni_version);
  snprintf(num, sizeof num, "%d", code);
  buf_puts(&b, ",\"code\":");
  buf_puts(&b, num);
  buf_puts(&b, ",\"msg\":");
  buf_json_string(&b, msg);
  if (details && *details) {
    buf_puts(&b, ",\"details\":");
    buf_json_string(&b, details);
  }
  buf_puts(&b, "}\n");
  write_all(1, b.p, b.len);
  exit(1);
}

static void read_stdin(struct buf *in) {
  char chunk[65536];
  for (;;) {
    ssize_t r = read(0, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      cni_fail(CNI_ERR_DECODE, "failed to read the network configuration from stdin", strerror(errno));
    }
    if (r == 0) break;
    if (in->len + (size_t)r > MAX_STDIN) cni_fail(CNI_ERR_DECODE, "network configuration on stdin is too large", NULL);
    buf_append(in, chunk, (size_t)r);
  }
  buf_append(in, "", 0);
}

static const char *env_or_empty(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

static void require_env(const char *name, const char *command) {
  const char *v = getenv(name);
  if (v && *v) return;
  char msg[160];
  char details[256];
  snprintf(msg, sizeof msg, "invalid environment variables: %s is not set", name);
  if (command)
    snprintf(details, sizeof details, "the container runtime must set %s for CNI_COMMAND=%s (CNI spec, \"Parameters\")",
             name, command);
  else
    snprintf(details, sizeof details, "the container runtime must set %s to ADD, CHECK, DEL, GC, STATUS or VERSION", name);
  cni_fail(CNI_ERR_INVALID_ENV, msg, details);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline. 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    return 1;
  }
}

/*
 * One request/answer exchange with the agent. Returns 0 with the answer in `ans`, or -1 with
 * a human-readable reason in `why`.
 */
static int relay(const char *path, const struct buf *req, int timeout_s, struct buf *ans, char *why, size_t whylen) {
  long long deadline = now_ms() + (long long)timeout_s * 1000;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    snprintf(why, whylen, "the socket path is longer than %zu bytes", sizeof sa.sun_path - 1);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    snprintf(why, whylen, "socket: %s", strerror(errno));
    return -1;
  }
  /* A non-blocking unix connect fails with EAGAIN while the listen backlog is full: retry. */
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN && now_ms() < deadline) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    snprintf(why, whylen, "connect: %s", errno == EAGAIN ? "the agent's accept queue stayed full" : strerror(errno));
    close(fd);
    return -1;
  }
  size_t off = 0;
  while (off < req->len) {
    ssize_t w = send(fd, req->p + off, req->len - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      int r = wait_fd(fd, POLLOUT, deadline);
      if (r > 0) continue;
      if (r == 0)
        snprintf(why, whylen, "no answer within %d s (sending the request)", timeout_s);
      else
        snprintf(why, whylen, "poll: %s", strerror(errno));
      close(fd);
      return -1;
    }
    if (w < 0) {
      snprintf(why, whylen, "send: %s", strerror(errno));
      close(fd);
      return -1;
    }
    off += (size_t)w;
  }
  shutdown(fd, SHUT_WR);
  char chunk[65536];
  for (;;) {
    ssize_t r = recv(fd, chunk, sizeof chunk, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      int w = wait_fd(fd, POLLIN, deadline);
      if (w > 0) continue;
      if (w == 0)
        snprintf(why, whylen, "no answer within %d s", timeout_s);
      else
        snprintf(why, whylen, "poll: %s", strerror(errno));
      close(fd);
      return -1;
    }
    if (r < 0) {
      snprintf(why, whylen, "recv: %s", strerror(errno));
      close(fd);
      return -1;
    }
    if (r == 0) break;
    if (ans->len + (size_t)r > MAX_ANSWER) {
      snprintf(why, whylen, "the answer is larger than %u bytes", MAX_ANSWER);
      close(fd);
      return -1;
    }
    buf_append(ans, chunk, (size_t)r);
  }
  close(fd);
  buf_append(ans, "", 0);
  return 0;
}

static void add_field(struct buf *b, const char *key, const char *value, int first) {
  if (!first) buf_puts(b, ",");
  buf_json_string(b, key);
  buf_puts(b, ":");
  buf_json_string(b, value);
}

/* Exit path when the agent can't be asked: fail closed for ADD/CHECK, succeed for DEL/GC. */
static void __attribute__((noreturn)) agent_unreachable(const char *command, const char *sock, const char *why) {
  if (strcmp(command, "DEL") == 0 || strcmp(command, "GC") == 0) exit(0);
  char msg[768];
  char details[768];
  if (strcmp(command, "STATUS") == 0) {
    snprintf(msg, sizeof msg, "nodemesh agent is not reachable at %s: %s", sock, why);
    cni_fail(CNI_ERR_NOT_AVAILABLE, msg, "start the nodemesh agent on this node");
  }
  snprintf(msg, sizeof msg,
           "nodemesh agent is not reachable at %s (%s): refusing %s, because the pod would start uncaptured by the mesh",
           sock, why, command);
  snprintf(details, sizeof details,
           "start the nodemesh agent on this node (it listens on %s), or remove the nodemesh-cni plugin from the "
           "node's CNI config to run pods without the mesh",
           sock);
  cni_fail(CNI_ERR_TRY_AGAIN, msg, details);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const char *command = getenv("CNI_COMMAND");
  if (command && strcmp(command, "VERSION") == 0) {
    /* Answered locally: a runtime may ask before the agent is up. */
    write_all(1, VERSION_JSON, sizeof VERSION_JSON - 1);
    write_all(1, "\n", 1);
    return 0;
  }

  struct buf config = {0};
  if (command && *command) read_stdin(&config);

  const char *v;
  size_t vlen;
  struct buf tmp = {0};
  if (config.len > 0 && json_validate(config.p, config.len) &&
      json_top_member(config.p, config.len, "cniVersion", &v, &vlen) && json_decode_string(v, vlen, &tmp) == 0 &&
      tmp.len < sizeof cni_version)
    memcpy(cni_version, tmp.p, tmp.len + 1);

  if (!command || !*command) require_env("CNI_COMMAND", NULL);
  int is_add = strcmp(command, "ADD") == 0, is_del = strcmp(command, "DEL") == 0,
      is_check = strcmp(command, "CHECK") == 0;
  if (!is_add && !is_del && !is_check && strcmp(command, "GC") != 0 && strcmp(command, "STATUS") != 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "invalid environment variables: unknown CNI_COMMAND %.100s", command);
    cni_fail(CNI_ERR_INVALID_ENV, msg, "expected one of ADD, CHECK, DEL, GC, STATUS, VERSION");
  }

  /* Validated before the environment: a runtime that sends garbage learns that first. */
  if (config.len == 0 || !json_validate(config.p, config.len))
    cni_fail(CNI_ERR_DECODE, "failed to decode the network configuration on stdin: not valid JSON", NULL);
  if (config.p[strspn(config.p, " \t\r\n")] != '{')
    cni_fail(CNI_ERR_DECODE, "failed to decode the network configuration on stdin: not a JSON object", NULL);

  if (is_add || is_del || is_check) {
    require_env("CNI_CONTAINERID", command);
    require_env("CNI_IFNAME", command);
  }
  if (is_add || is_check) require_env("CNI_NETNS", command);

  const char *sock = DEFAULT_SOCKET;
  struct buf sockbuf = {0};
  if (json_top_member(config.p, config.len, "agentSocket", &v, &vlen)) {
    if (json_decode_string(v, vlen, &sockbuf) < 0 || sockbuf.len == 0)
      cni_fail(CNI_ERR_INVALID_CONFIG, "invalid network config: agentSocket must be a non-empty string", NULL);
    sock = sockbuf.p;
  }
  int timeout_s = DEFAULT_TIMEOUT_S;
  if (json_top_member(config.p, config.len, "timeoutSeconds", &v, &vlen)) {
    char num[32];
    char *end = NULL;
    if (vlen == 0 || vlen >= sizeof num)
      cni_fail(CNI_ERR_INVALID_CONFIG, "invalid network config: timeoutSeconds must be a number of seconds", NULL);
    memcpy(num, v, vlen);
    num[vlen] = '\0';
    double d = strtod(num, &end);
    if (*end != '\0' || !(d >= 1 && d <= 3600))
      cni_fail(CNI_ERR_INVALID_CONFIG, "invalid network config: timeoutSeconds must be a number from 1 to 3600", NULL);
    timeout_s = (int)d;
  }

  /* The request: the environment as strings, the stdin config embedded verbatim. */
  struct buf req = {0};
  buf_puts(&req, "{");
  add_field(&req, "command", command, 1);
  add_field(&req, "containerId", env_or_empty("CNI_CONTAINERID"), 0);
  add_field(&req, "netns", env_or_empty("CNI_NETNS"), 0);
  add_field(&req, "ifName", env_or_empty("CNI_IFNAME"), 0);
  add_field(&req, "args", env_or_empty("CNI_ARGS"), 0);
  add_field(&req, "path", env_or_empty("CNI_PATH"), 0);
  buf_puts(&req, ",\"config\":");
  {
    size_t a = 0, z = config.len;
    while (a < z && strchr(" \t\r\n", config.p[a])) a++;
    while (z > a && strchr(" \t\r\n", config.p[z - 1])) z--;
    buf_append(&req, config.p + a, z - a);
  }
  buf_puts(&req, "}\n");

  struct buf ans = {0};
  char why[256];
  if (relay(sock, &req, timeout_s, &ans, why, sizeof why) < 0) agent_unreachable(command, sock, why);

  /* First line: OK or ERR <code>. The rest goes to stdout unchanged. */
  char *nl = ans.len ? memchr(ans.p, '\n', ans.len) : NULL;
  size_t linelen = nl ? (size_t)(nl - ans.p) : ans.len;
  const char *body = nl ? nl + 1 : ans.p + ans.len;
  size_t bodylen = ans.len - (size_t)(body - ans.p);
  if (linelen > 0 && ans.p[linelen - 1] == '\r') linelen--;

  if (linelen == 2 && memcmp(ans.p, "OK", 2) == 0) {
    if (bodylen == 0 && is_add) {
      /* A chained plugin must pass prevResult on; do it if the agent sent nothing. */
      if (json_top_member(config.p, config.len, "prevResult", &v, &vlen)) {
        write_all(1, v, vlen);
      } else {
        write_all(1, "{\"cniVersion\":", 14);
        struct buf vb = {0};
        buf_json_string(&vb, cni_version);
        write_all(1, vb.p, vb.len);
        write_all(1, "}", 1);
      }
      write_all(1, "\n", 1);
      return 0;
    }
    write_all(1, body, bodylen);
    return 0;
  }
  if (linelen > 4 && memcmp(ans.p, "ERR ", 4) == 0) {
    char num[16];
    size_t n = linelen - 4;
    if (n < sizeof num) {
      memcpy(num, ans.p + 4, n);
      num[n] = '\0';
      char *end = NULL;
      long code = strtol(num, &end, 10);
      if (*end == '\0' && code >= 0 && code <= 65535) {
        size_t ws = 0;
        while (ws < bodylen && strchr(" \t\r\n", body[ws])) ws++;
        if (ws == bodylen) cni_fail((int)code, "the nodemesh agent refused the request without details", NULL);
        write_all(1, body, bodylen);
        return 1;
      }
    }
  }
  /* An agent that answers nonsense is treated like one that does not answer. */
  if (ans.len == 0) {
    snprintf(why, sizeof why, "the agent closed the connection without answering");
  } else {
    ans.p[linelen] = '\0';
    snprintf(why, sizeof why, "malformed answer, first line \"%.60s\"", ans.p);
  }
  agent_unreachable(command, sock, why);
}
