/*
** files.c - the C baseline of scripts/bench/files.lua: writes a file of
** N MiB in 1 MiB chunks with write(2), then reads it back in 1 MiB chunks
** with read(2), in a new temporary directory (under $TMPDIR, else /tmp)
** removed at the end. No fsync, as in files.lua; sync(2) before the
** clock starts, so writeback left by an earlier run (the discards of its
** deleted file) is not measured. The buffers are aligned to 2 MiB, so
** the kernel can back them with huge pages: the fastest case of the
** copies, and so the strictest baseline. Prints
** "files_write c N seconds MiB/s" and "files_read c N seconds MiB/s".
** usage: files [N_MIB [CHUNK_KIB]]
*/

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die (const char *what) {
  perror(what);
  exit(1);
}

int main (int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1024;
  size_t chunk = (size_t)(argc > 2 ? atol(argv[2]) : 1024) * 1024;
  size_t total = (size_t)n * 1024 * 1024, got = 0, i;
  const char *tmp = getenv("TMPDIR");
  char dir[4096], path[4200];
  size_t asz = (chunk + (2u << 20) - 1) / (2u << 20) * (2u << 20);
  char *block = aligned_alloc(2u << 20, asz), *buf = aligned_alloc(2u << 20, asz);
  double t0, t1, t2;
  int fd, first = 1;
  if (n <= 0 || chunk == 0 || block == NULL || buf == NULL)
    return 2;
  for (i = 0; i < chunk; i += 64) {  /* the pattern of files.lua */
    char line[65];
    snprintf(line, sizeof line, "%063zu\n", i / 64 + 1);
    memcpy(block + i, line, chunk - i < 64 ? chunk - i : 64);
  }
  snprintf(dir, sizeof dir, "%s/loom-bench-c-XXXXXX", tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL)
    die("mkdtemp");
  snprintf(path, sizeof path, "%s/data", dir);
  sync();
  t0 = now();
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0)
    die("open");
  for (i = 0; i < total / chunk; i++) {
    size_t off = 0;
    while (off < chunk) {
      ssize_t k = write(fd, block + off, chunk - off);
      if (k < 0 && errno != EINTR)
        die("write");
      if (k > 0)
        off += (size_t)k;
    }
  }
  close(fd);
  t1 = now();
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    die("open");
  for (;;) {
    size_t have = 0;
    while (have < chunk) {  /* a full chunk, or the end: as read(n) */
      ssize_t k = read(fd, buf + have, chunk - have);
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0)
        die("read");
      if (k == 0)
        break;
      have += (size_t)k;
    }
    if (have == 0)
      break;
    if (first && (have != chunk || memcmp(buf, block, chunk) != 0)) {
      fprintf(stderr, "the first chunk read back differs\n");
      return 1;
    }
    first = 0;
    got += have;
  }
  close(fd);
  t2 = now();
  unlink(path);
  rmdir(dir);
  if (got != total) {
    fprintf(stderr, "read %zu bytes of %zu\n", got, total);
    return 1;
  }
  printf("files_write c %ld %.6f %.1f\n", n, t1 - t0, (double)n / (t1 - t0));
  printf("files_read c %ld %.6f %.1f\n", n, t2 - t1, (double)n / (t2 - t1));
  return 0;
}
