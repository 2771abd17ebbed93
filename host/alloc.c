/*
** alloc.c
** The executable's Lua allocator: size classes for small blocks.
**
** An event loop makes and drops small objects at a high rate (handles,
** futures, coroutines and their call frames). Lua tells the allocator the
** old size of every block it resizes or frees, so blocks need no header:
** each size class (multiples of 16 bytes up to ALLOC_MAX) keeps a free
** list, refilled by carving slabs. Freed small blocks are kept for reuse,
** not returned to the system, as CPython's object allocator does.
**
** Blocks above ALLOC_MAX up to LARGE_MAX (the strings of a server's reads
** of 10 or 100 KiB) come from the C library with their size rounded up to
** a multiple of LARGE_QUANTUM, and a freed one waits on its class's list,
** up to LARGE_KEEP bytes in all. The lists are last in, first out: the
** next read's string gets the block freed last, the one likeliest to be
** still in the cache, where malloc would carve it from the free memory
** it coalesced. Larger blocks go to the C library as they are.
**
** The module loaded by a plain lua5.4 uses that interpreter's allocator;
** sanitizer builds use the C library's (so AddressSanitizer sees every
** block).
*/

#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "internal.h"

#define ALLOC_QUANTUM 16
/* Up to 4 KiB: the strings a network server makes for every read (a 1 KiB
** message is a 1049-byte block) stay off malloc, whose bins cost several
** times a free-list pop. */
#define ALLOC_MAX 4096
#define ALLOC_NCLASS (ALLOC_MAX / ALLOC_QUANTUM)
#define SLAB_SIZE (64 * 1024)
#define LARGE_QUANTUM 4096
#define LARGE_MAX (512 * 1024)
#define LARGE_NCLASS (LARGE_MAX / LARGE_QUANTUM)
/* Kept freed large blocks at most: a poll's worth of read strings. The
** old parts of tables that grew through the classes land here too, and
** what is kept counts in a program's peak memory (8 MiB added 30 bytes
** to each of 100,000 sleeping tasks; 1 MiB adds under 10). */
#define LARGE_KEEP ((size_t)1024 * 1024)

typedef struct freeblock {
  struct freeblock *next;
} freeblock;

typedef struct slab {
  struct slab *next;
} slab;

struct loom_alloc {
  freeblock *free[ALLOC_NCLASS];
  slab *slabs;           /* every slab, to free them at the end */
  char *cur, *end;       /* the part of the newest slab not carved yet */
  freeblock *large[LARGE_NCLASS];  /* freed large blocks, by class */
  size_t largekept;      /* bytes in them */
};

static size_t classof (size_t size) {
  return (size + ALLOC_QUANTUM - 1) / ALLOC_QUANTUM - 1;
}

static size_t lclassof (size_t size) {
  return (size + LARGE_QUANTUM - 1) / LARGE_QUANTUM - 1;
}

#define LSIZE(c) (((c) + 1) * (size_t)LARGE_QUANTUM)

/* A block of class c, from its free list or carved from a slab. */
static void *small_alloc (loom_alloc *a, size_t c) {
  size_t size = (c + 1) * ALLOC_QUANTUM;
  freeblock *b = a->free[c];
  if (b != NULL) {
    a->free[c] = b->next;
    return b;
  }
  if ((size_t)(a->end - a->cur) < size) {
    /* the rest of the slab goes to the free lists it fits */
    while ((size_t)(a->end - a->cur) >= ALLOC_QUANTUM) {
      size_t rest = (size_t)(a->end - a->cur);
      size_t rc = (rest > ALLOC_MAX ? ALLOC_MAX : rest) / ALLOC_QUANTUM - 1;
      freeblock *fb = (freeblock *)a->cur;
      fb->next = a->free[rc];
      a->free[rc] = fb;
      a->cur += (rc + 1) * ALLOC_QUANTUM;
    }
    {
      slab *s = (slab *)malloc(SLAB_SIZE);
      if (s == NULL)
        return NULL;
      s->next = a->slabs;
      a->slabs = s;
      a->cur = (char *)s + ALLOC_QUANTUM;  /* keep blocks 16-aligned */
      a->end = (char *)s + SLAB_SIZE;
    }
  }
  b = (freeblock *)a->cur;
  a->cur += size;
  return b;
}

static void small_free (loom_alloc *a, void *p, size_t c) {
  freeblock *b = (freeblock *)p;
  b->next = a->free[c];
  a->free[c] = b;
}

/* Gives every kept large block back to the C library. */
static void large_flush (loom_alloc *a) {
  size_t c;
  for (c = 0; c < LARGE_NCLASS; c++) {
    while (a->large[c] != NULL) {
      freeblock *b = a->large[c];
      a->large[c] = b->next;
      free(b);
    }
  }
  a->largekept = 0;
}

/* A large block of class c: the one freed last, or a new one. When
** malloc fails, the kept blocks go back to it and it is asked again (Lua
** then collects and asks once more itself). */
static void *large_alloc (loom_alloc *a, size_t c) {
  freeblock *b = a->large[c];
  void *p;
  if (b != NULL) {
    a->large[c] = b->next;
    a->largekept -= LSIZE(c);
    return b;
  }
  p = malloc(LSIZE(c));
  if (p == NULL && a->largekept > 0) {
    large_flush(a);
    p = malloc(LSIZE(c));
  }
  return p;
}

static void large_free (loom_alloc *a, void *p, size_t c) {
  if (a->largekept + LSIZE(c) <= LARGE_KEEP) {
    freeblock *b = (freeblock *)p;
    b->next = a->large[c];
    a->large[c] = b;
    a->largekept += LSIZE(c);
  }
  else
    free(p);
}

/* A block for size bytes, and its release, whatever its kind. */
static void *obtain (loom_alloc *a, size_t size) {
  if (size <= ALLOC_MAX)
    return small_alloc(a, classof(size));
  else if (size <= LARGE_MAX)
    return large_alloc(a, lclassof(size));
  return malloc(size);
}

static void release (loom_alloc *a, void *p, size_t size) {
  if (size <= ALLOC_MAX)
    small_free(a, p, classof(size));
  else if (size <= LARGE_MAX)
    large_free(a, p, lclassof(size));
  else
    free(p);
}

/* Whether a block of osize bytes holds nsize as it is. */
static int fits (size_t osize, size_t nsize) {
  if (osize <= ALLOC_MAX)
    return nsize <= ALLOC_MAX && classof(osize) == classof(nsize);
  if (osize <= LARGE_MAX)
    return nsize > ALLOC_MAX && nsize <= LARGE_MAX
           && lclassof(osize) == lclassof(nsize);
  return 0;
}

/* The lua_Alloc function: ud is the loom_alloc. */
static void *alloc_f (void *ud, void *ptr, size_t osize, size_t nsize) {
  loom_alloc *a = (loom_alloc *)ud;
  void *n;
  if (ptr == NULL)
    osize = 0;  /* then osize tells the kind of object, not a size */
  if (nsize == 0) {
    if (ptr != NULL)
      release(a, ptr, osize);
    return NULL;
  }
  if (ptr != NULL && fits(osize, nsize))
    return ptr;  /* same class: nothing to do */
  if (nsize > LARGE_MAX && (ptr == NULL || osize > LARGE_MAX))
    return realloc(ptr, nsize);  /* beyond the classes: the C library's */
  n = obtain(a, nsize);
  if (n == NULL)
    return NULL;
  if (ptr != NULL) {
    memcpy(n, ptr, osize < nsize ? osize : nsize);
    release(a, ptr, osize);
  }
  return n;
}

/*
** Makes an allocator; loom__alloc_f is its lua_Alloc. Free it with
** loom__alloc_free after lua_close.
*/
loom_alloc *loom__alloc_new (void) {
  loom_alloc *a = (loom_alloc *)calloc(1, sizeof(loom_alloc));
#if defined(__GLIBC__)
  /* Blocks above ALLOC_MAX come from malloc. A collection that frees many
  ** large strings at once (the chunks of a stream that lived long enough
  ** to get old, say) leaves megabytes free at the top of the heap, which
  ** glibc gives back to the system past 128 KiB; the next chunks then
  ** fault fresh pages in again, several for each 100 KiB chunk. Keep up
  ** to 32 MiB, and take blocks up to 4 MiB from the heap (fixing one
  ** threshold stops glibc from raising the other by itself). */
  mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
#endif
  return a;
}

lua_Alloc loom__alloc_f (void) {
  return alloc_f;
}

void loom__alloc_free (loom_alloc *a) {
  slab *s;
  if (a == NULL)
    return;
  large_flush(a);
  s = a->slabs;
  while (s != NULL) {
    slab *next = s->next;
    free(s);
    s = next;
  }
  free(a);
}
