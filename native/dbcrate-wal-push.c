/*
 * dbcrate-wal-push: the archive_command client of the dbcrate agent.
 *
 *   archive_command = '/path/to/dbcrate-wal-push %p --config /etc/dbcrate/wal.yaml'
 *
 * PostgreSQL runs archive_command once per WAL file, so its start-up cost is paid per
 * segment. A Node.js process costs ~50 ms before it does anything; this client costs ~1 ms.
 * It hands the file to the agent listening on <pgdata>/pg_wal/dbcrate-agent.sock (the
 * agent has usually pushed it ahead already) and exits with the agent's answer. When no
 * agent listens it execs `dbcrate wal-push` with the same arguments, which does the work
 * itself. It never decides success on its own: exit 0 only on the agent's "ok".
 *
 * Built by `npm run build` (scripts/build-native.mjs) with NODE_BIN and DBCRATE_JS baked in.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef NODE_BIN
#error "NODE_BIN must be defined"
#endif
#ifndef DBCRATE_JS
#error "DBCRATE_JS must be defined"
#endif

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

int main(int argc, char **argv) {
  const char *file = NULL, *socket_path = getenv("DBCRATE_SOCKET"), *pgdata = getenv("DBCRATE_PGDATA");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--no-agent") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) fallback(argc, argv);
    if (strcmp(a, "--socket") == 0 && i + 1 < argc) socket_path = argv[++i];
    else if (strncmp(a, "--socket=", 9) == 0) socket_path = a + 9;
    else if (strcmp(a, "--pgdata") == 0 && i + 1 < argc) pgdata = argv[++i];
    else if (strncmp(a, "--pgdata=", 9) == 0) pgdata = a + 9;
    else if (a[0] == '-' && a[1] == '-' && !strchr(a, '=') && i + 1 < argc) i++; /* option with a value */
    else if (a[0] != '-' && !file) file = a;
  }
  if (!file) fallback(argc, argv);

  char cwd[PATH_MAX], abs[PATH_MAX * 2], sock[PATH_MAX * 2];
  if (!getcwd(cwd, sizeof cwd)) fallback(argc, argv);
  if (file[0] == '/') snprintf(abs, sizeof abs, "%s", file);
  else snprintf(abs, sizeof abs, "%s/%s", cwd, file);
  if (socket_path) snprintf(sock, sizeof sock, "%s", socket_path);
  else snprintf(sock, sizeof sock, "%s/pg_wal/dbcrate-agent.sock", pgdata ? pgdata : cwd);

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof addr.sun_path || strpbrk(abs, "\"\\\n")) fallback(argc, argv);
  strcpy(addr.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fallback(argc, argv);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    fallback(argc, argv); /* no agent: push from a full dbcrate process */
  }

  char req[PATH_MAX * 2 + 64];
  int len = snprintf(req, sizeof req, "{\"op\":\"push\",\"path\":\"%s\"}\n", abs);
  for (int off = 0; off < len;) {
    ssize_t w = write(fd, req + off, (size_t)(len - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fprintf(stderr, "dbcrate: error: cannot talk to the agent at %s: %s [E_AGENT]\n", sock, strerror(errno));
      return 4;
    }
    off += (int)w;
  }

  char reply[16384];
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
    if (memchr(reply, '\n', got) || got == sizeof reply - 1) break;
  }
  close(fd);
  reply[got] = '\0';
  if (!memchr(reply, '\n', got)) {
    /* An agent that died mid-request: that is a failure, never success. PostgreSQL retries. */
    fprintf(stderr, "dbcrate: error: the agent at %s closed the connection without answering [E_AGENT]\n", sock);
    return 4;
  }
  if (strncmp(reply, "{\"ok\":true", 10) == 0) return 0;

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
