/*
 * dbcrate-wal-push: the archive_command client of the dbcrate agent.
 *
 *   archive_command = '/path/to/dbcrate-wal-push %p --config /etc/dbcrate/wal.yaml'
 *
 * PostgreSQL runs archive_command once per WAL file, so its start-up cost is paid per
 * segment. A Node.js process costs ~50 ms before it does anything; this client costs ~1 ms.
 * It hands the file to the agent (the agent has usually pushed it ahead already) and exits
 * with the agent's answer. When no agent listens it execs `dbcrate wal-push` with the same
 * arguments, which does the work itself. It never decides success on its own: exit 0 only
 * on the agent's "ok", authenticated with the secret the agent keeps in <socket>.secret.
 *
 * The same rules as libs/pitr/src/agent.protocol.ts (keep the two in step):
 *  - socket: <pgdata>/pg_wal/dbcrate-agent.sock, or for long paths
 *    $TMPDIR/dbcrate-agent-<uid>/<first 16 hex of sha256(realpath(pgdata))>.sock;
 *  - the socket must be owned by this user, in a directory owned by this user or root and
 *    writable by nobody else (the temp directory: this user's, mode 0700);
 *  - the reply is <json>\n<hex HMAC-SHA256(secret, nonce "\n" json)>\n;
 *  - DBCRATE_AGENT_TIMEOUT_MS bounds the wait for the answer (default 600000), connecting
 *    is bounded by 5 s; a timeout is E_AGENT, exit 4.
 *
 * Built by `npm run build` (scripts/build-native.mjs) with NODE_BIN and DBCRATE_JS baked in.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef NODE_BIN
#error "NODE_BIN must be defined"
#endif
#ifndef DBCRATE_JS
#error "DBCRATE_JS must be defined"
#endif

/* ---- SHA-256 and HMAC (FIPS 180-4, RFC 2104); checked against Node's in the e2e test ---- */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t n;
} sha256_ctx;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
  uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
  for (int i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, iv, sizeof iv);
  c->len = 0;
  c->n = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t len) {
  const unsigned char *p = data;
  c->len += len;
  while (len > 0) {
    size_t take = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, take);
    c->n += take, p += take, len -= take;
    if (c->n == 64) sha256_block(c, c->buf), c->n = 0;
  }
}

static void sha256_final(sha256_ctx *c, unsigned char out[32]) {
  uint64_t bits = c->len * 8;
  unsigned char pad = 0x80, zero = 0, lenb[8];
  sha256_update(c, &pad, 1);
  while (c->n != 56) sha256_update(c, &zero, 1);
  for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_update(c, lenb, 8);
  for (int i = 0; i < 8; i++)
    out[4 * i] = (unsigned char)(c->h[i] >> 24), out[4 * i + 1] = (unsigned char)(c->h[i] >> 16),
            out[4 * i + 2] = (unsigned char)(c->h[i] >> 8), out[4 * i + 3] = (unsigned char)c->h[i];
}

static void hex(const unsigned char *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", in[i]);
}

/* HMAC-SHA256 with a key of at most 64 bytes (the secret: 64 hex characters). */
static void hmac_sha256(const char *key, const char *m1, size_t n1, const char *m2, size_t n2, char out_hex[65]) {
  unsigned char k[64] = {0}, ipad[64], opad[64], inner[32], mac[32];
  memcpy(k, key, strlen(key) > 64 ? 64 : strlen(key));
  for (int i = 0; i < 64; i++) ipad[i] = k[i] ^ 0x36, opad[i] = k[i] ^ 0x5c;
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, ipad, 64);
  sha256_update(&c, m1, n1);
  sha256_update(&c, m2, n2);
  sha256_final(&c, inner);
  sha256_init(&c);
  sha256_update(&c, opad, 64);
  sha256_update(&c, inner, 32);
  sha256_final(&c, mac);
  hex(mac, 32, out_hex);
}

/* ---- the client ---- */

static void fallback(int argc, char **argv) {
  char **args = calloc((size_t)argc + 3, sizeof(char *));
  if (!args) _exit(70);
  args[0] = NODE_BIN;
  args[1] = DBCRATE_JS;
  args[2] = "wal-push";
  for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
  args[argc + 2] = NULL;
  execv(NODE_BIN, args);
  fprintf(stderr, "dbcrate: error: cannot run %s: %s [E_INTERNAL]\n", NODE_BIN, strerror(errno));
  _exit(70);
}

static int agent_error(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "dbcrate: error: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, " [E_AGENT]\n  hint: PostgreSQL keeps the WAL file and retries\n");
  return 4;
}

/* Copy the JSON string value of "key" from a one-line reply, undoing simple escapes. */
static void json_string(const char *reply, const char *key, char *out, size_t cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  out[0] = '\0';
  const char *p = strstr(reply, pat);
  if (!p) return;
  p += strlen(pat);
  size_t n = 0;
  while (*p && *p != '"' && n + 1 < cap) {
    if (*p == '\\' && p[1]) {
      p++;
      out[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
    } else {
      out[n++] = *p;
    }
    p++;
  }
  out[n] = '\0';
}

/* Append a JSON string literal; false when it does not fit. */
static int json_put(char *buf, size_t cap, size_t *len, const char *s) {
  if (*len + 2 >= cap) return 0;
  buf[(*len)++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*len + 8 >= cap) return 0;
    if (*p == '"' || *p == '\\') buf[(*len)++] = '\\', buf[(*len)++] = (char)*p;
    else if (*p < 0x20) *len += (size_t)snprintf(buf + *len, cap - *len, "\\u%04x", *p);
    else buf[(*len)++] = (char)*p;
  }
  buf[(*len)++] = '"';
  buf[*len] = '\0';
  return 1;
}

static int json_raw(char *buf, size_t cap, size_t *len, const char *s) {
  size_t n = strlen(s);
  if (*len + n + 1 >= cap) return 0;
  memcpy(buf + *len, s, n + 1);
  *len += n;
  return 1;
}

/* The socket's directory: owned by us or root, writable by nobody else; the private temp one 0700 and ours. */
static const char *untrusted_dir(const char *sock, const char *private_tmp) {
  static char dir[PATH_MAX * 2];
  snprintf(dir, sizeof dir, "%s", sock);
  char *slash = strrchr(dir, '/');
  if (!slash) return "it has no directory";
  if (slash == dir) slash[1] = '\0';
  else *slash = '\0';
  struct stat st;
  if (lstat(dir, &st) != 0) return strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "its directory is not a directory (a symlink?)";
  if (st.st_uid != geteuid() && st.st_uid != 0) return "its directory is owned by another user";
  if (st.st_mode & 022) return "its directory is writable by other users";
  if (strcmp(dir, private_tmp) == 0 && (st.st_uid != geteuid() || (st.st_mode & 077)))
    return "its private temp directory must be ours with mode 700";
  return NULL;
}

static long env_ms(const char *name, long dflt) {
  const char *v = getenv(name);
  char *end;
  long n = v ? strtol(v, &end, 10) : 0;
  return v && *v && !*end && n > 0 ? n : dflt;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv) {
  const char *file = NULL, *socket_path = getenv("DBCRATE_SOCKET"), *pgdata = getenv("DBCRATE_PGDATA");
  const char *to = NULL, *database_id = NULL, *signing_key = NULL, *config = getenv("DBCRATE_CONFIG");
  const char *recipients[32];
  int nrecipients = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--no-agent") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) fallback(argc, argv);
    const char *eq = strchr(a, '=');
    const char *v = NULL;
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (a[0] == '-' && a[1] == '-') {
      if (eq) v = eq + 1;
      else if (i + 1 < argc) v = argv[i + 1];
#define IS(name) (strlen(name) == nl && strncmp(a, name, nl) == 0)
      if (IS("--socket")) socket_path = v;
      else if (IS("--pgdata")) pgdata = v;
      else if (IS("--to")) to = v;
      else if (IS("--database-id")) database_id = v;
      else if (IS("--config")) config = v;
      else if (IS("--signing-key")) signing_key = v;
      else if (IS("--recipient")) {
        if (nrecipients == 32) fallback(argc, argv);
        recipients[nrecipients++] = v;
      }
      if (!eq && v) i++; /* every option of wal-push takes a value */
    } else if (a[0] != '-' && !file) {
      file = a;
    }
  }
  if (!file) fallback(argc, argv);

  char cwd[PATH_MAX], abs[PATH_MAX * 2], sock[PATH_MAX * 2], private_tmp[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) fallback(argc, argv);
  if (file[0] == '/') snprintf(abs, sizeof abs, "%s", file);
  else snprintf(abs, sizeof abs, "%s/%s", cwd, file);
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  snprintf(private_tmp, sizeof private_tmp, "%s", tmp);
  size_t tl = strlen(private_tmp);
  while (tl > 1 && private_tmp[tl - 1] == '/') private_tmp[--tl] = '\0';
  snprintf(private_tmp + tl, sizeof private_tmp - tl, "/dbcrate-agent-%u", (unsigned)geteuid());
  if (socket_path) {
    snprintf(sock, sizeof sock, "%s", socket_path);
  } else {
    char real[PATH_MAX];
    const char *base = pgdata ? pgdata : cwd;
    if (!realpath(base, real)) snprintf(real, sizeof real, "%s", base);
    snprintf(sock, sizeof sock, "%s/pg_wal/dbcrate-agent.sock", real);
    if (strlen(sock) >= 100) {
      unsigned char d[32];
      char h[65];
      sha256_ctx c;
      sha256_init(&c);
      sha256_update(&c, real, strlen(real));
      sha256_final(&c, d);
      hex(d, 32, h);
      h[16] = '\0';
      snprintf(sock, sizeof sock, "%s/%s.sock", private_tmp, h);
    }
  }

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof addr.sun_path) fallback(argc, argv);
  struct stat st;
  if (lstat(sock, &st) != 0) {
    if (errno == ENOENT) fallback(argc, argv); /* no agent: push from a full dbcrate process */
    return agent_error("cannot check the agent socket %s: %s", sock, strerror(errno));
  }
  const char *why = untrusted_dir(sock, private_tmp);
  if (why) return agent_error("refusing the agent socket %s: %s", sock, why);
  if (!S_ISSOCK(st.st_mode)) return agent_error("refusing %s: %s", sock, "it is not a socket");
  if (st.st_uid != geteuid()) return agent_error("refusing the agent socket %s: %s", sock, "it is owned by another user");

  char secret[80] = {0};
  /* nonce */
  unsigned char rnd[16];
  char nonce[33];
  int rfd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (rfd < 0 || read(rfd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) return agent_error("cannot read %s%s", "/dev/urandom", "");
  close(rfd);
  hex(rnd, sizeof rnd, nonce);

  /* the request, with the settings this call was given (the agent refuses other ones) */
  static char req[65536];
  size_t len = 0;
  int fits = json_raw(req, sizeof req, &len, "{\"v\":1,\"op\":\"push\",\"path\":") && json_put(req, sizeof req, &len, abs) &&
             json_raw(req, sizeof req, &len, ",\"nonce\":") && json_put(req, sizeof req, &len, nonce) &&
             json_raw(req, sizeof req, &len, ",\"expect\":{\"cwd\":") && json_put(req, sizeof req, &len, cwd);
  char cfg_abs[PATH_MAX * 2];
  if (fits && config) {
    if (config[0] == '/') snprintf(cfg_abs, sizeof cfg_abs, "%s", config);
    else snprintf(cfg_abs, sizeof cfg_abs, "%s/%s", cwd, config);
    fits = json_raw(req, sizeof req, &len, ",\"config\":") && json_put(req, sizeof req, &len, cfg_abs);
  }
  if (fits && to) fits = json_raw(req, sizeof req, &len, ",\"to\":") && json_put(req, sizeof req, &len, to);
  if (fits && database_id)
    fits = json_raw(req, sizeof req, &len, ",\"databaseId\":") && json_put(req, sizeof req, &len, database_id);
  if (fits && signing_key)
    fits = json_raw(req, sizeof req, &len, ",\"signingKey\":") && json_put(req, sizeof req, &len, signing_key);
  if (fits && nrecipients) {
    fits = json_raw(req, sizeof req, &len, ",\"recipient\":[");
    for (int i = 0; fits && i < nrecipients; i++)
      fits = (i == 0 || json_raw(req, sizeof req, &len, ",")) && json_put(req, sizeof req, &len, recipients[i]);
    fits = fits && json_raw(req, sizeof req, &len, "]");
  }
  /* the same variables as pushExpect() in agent.protocol.ts */
  const char *env_names[4] = {"DBCRATE_TO", "DBCRATE_RECIPIENT", "DBCRATE_DATABASE_ID", "DBCRATE_SIGNING_KEY"};
  int env_open = 0;
  for (int i = 0; fits && i < 4; i++) {
    const char *ev = getenv(env_names[i]);
    if (!ev || !*ev) continue;
    fits = json_raw(req, sizeof req, &len, env_open ? "," : ",\"env\":{") && json_put(req, sizeof req, &len, env_names[i]) &&
           json_raw(req, sizeof req, &len, ":") && json_put(req, sizeof req, &len, ev);
    env_open = 1;
  }
  if (fits && env_open) fits = json_raw(req, sizeof req, &len, "}");
  fits = fits && json_raw(req, sizeof req, &len, "}}\n");
  if (!fits) fallback(argc, argv);

  long timeout = env_ms("DBCRATE_AGENT_TIMEOUT_MS", 600000);
  long deadline = now_ms() + timeout;
  strcpy(addr.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return agent_error("cannot create a socket: %s%s", strerror(errno), "");
  /* connecting blocks only while the agent's backlog is full: 5 s at most */
  struct timeval ctv = {.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &ctv, sizeof ctv);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int e = errno;
    close(fd);
    if (e == ECONNREFUSED) fallback(argc, argv); /* a socket left by a dead agent */
    return agent_error("cannot connect to the agent at %s: %s", sock, strerror(e));
  }
  /* the shared secret (read once something listens): ours, private */
  char secret_path[PATH_MAX * 2 + 8];
  snprintf(secret_path, sizeof secret_path, "%s.secret", sock);
  int sfd = open(secret_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (sfd < 0) {
    const char *e = strerror(errno);
    close(fd);
    return agent_error("the agent at %s has no readable secret file (%s); refusing to trust its answers", sock, e);
  }
  if (fstat(sfd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
    close(sfd);
    return agent_error("refusing the agent secret %s%s: it must be a regular file of this user with mode 600", secret_path, "");
  }
  ssize_t sn = read(sfd, secret, sizeof secret - 1);
  close(sfd);
  while (sn > 0 && (secret[sn - 1] == '\n' || secret[sn - 1] == '\r')) secret[--sn] = '\0';
  if (sn != 64 || strspn(secret, "0123456789abcdef") != 64) return agent_error("the agent secret %s is malformed%s", secret_path, "");

  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, req + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return agent_error("cannot talk to the agent at %s: %s", sock, strerror(errno));
    off += (size_t)w;
  }

  static char reply[65536];
  size_t got = 0;
  int lines = 0;
  while (lines < 2) {
    long left = deadline - now_ms();
    if (left <= 0) {
      close(fd);
      fprintf(stderr,
              "dbcrate: error: the dbcrate agent at %s did not answer within %ld ms [E_AGENT]\n"
              "  hint: PostgreSQL keeps the WAL file and retries; check the agent (DBCRATE_AGENT_TIMEOUT_MS sets the wait)\n",
              sock, timeout);
      return 4;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int pr = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++) lines += reply[got + (size_t)i] == '\n';
    got += (size_t)r;
    if (got == sizeof reply - 1) break;
  }
  close(fd);
  reply[got] = '\0';
  if (lines < 2 && got == sizeof reply - 1)
    return agent_error("the agent at %s sent an answer longer than 64 KiB; refusing it%s", sock, "");
  /* A NUL byte would hide the newline from the string functions below. */
  if (memchr(reply, '\0', got)) return agent_error("the agent at %s sent a malformed answer%s", sock, "");
  if (lines < 1) {
    /* An agent that died mid-request: that is a failure, never success. PostgreSQL retries. */
    return agent_error("the agent at %s closed the connection without answering%s", sock, "");
  }
  char *nl1 = strchr(reply, '\n');
  *nl1 = '\0';
  char *mac = nl1 + 1, *nl2 = strchr(mac, '\n');
  if (nl2) *nl2 = '\0';
  else mac[0] = '\0'; /* no MAC line: refused below */
  char want[65], msg_prefix[40];
  int pn = snprintf(msg_prefix, sizeof msg_prefix, "%s\n", nonce);
  hmac_sha256(secret, msg_prefix, (size_t)pn, reply, strlen(reply), want);
  /* constant time: every byte is compared, whatever the first difference */
  unsigned diff = strlen(mac) != 64;
  for (int i = 0; i < 64 && mac[i]; i++) diff |= (unsigned)(mac[i] ^ want[i]);
  if (diff)
    return agent_error("the process listening on %s did not authenticate its answer; refusing it%s", sock, "");
  /* success is only the outcome of a push (JSON.stringify keeps the agent's key order) */
#define STARTS(lit) (strncmp(reply, lit, sizeof lit - 1) == 0)
  if (STARTS("{\"ok\":true,\"outcome\":\"archived\"") || STARTS("{\"ok\":true,\"outcome\":\"already-archived\""))
    return 0;
  if (strncmp(reply, "{\"ok\":true", 10) == 0)
    return agent_error("the agent at %s answered ok, but that is not an archived file%s", sock, "");

  char message[8192], code[64], hint[4096];
  json_string(reply, "message", message, sizeof message);
  json_string(reply, "code", code, sizeof code);
  json_string(reply, "hint", hint, sizeof hint);
  fprintf(stderr, "dbcrate: error: %s [%s]\n", message[0] ? message : "the agent refused the WAL file", code[0] ? code : "E_AGENT");
  if (hint[0]) fprintf(stderr, "  hint: %s\n", hint);
  const char *ec = strstr(reply, "\"exitCode\":");
  int exit_code = ec ? atoi(ec + 11) : 1;
  return exit_code > 0 && exit_code < 126 ? exit_code : 1;
}
