// glibc's allocator statistics and trim, which Swift's Glibc module does not expose.
#include <malloc.h>
#include <stddef.h>

/// Bytes handed out by malloc and not yet freed (small-object heap plus mmapped blocks).
static inline size_t toki_heap_in_use(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#else
    return 0;
#endif
}

/// Returns free heap pages to the kernel; 1 if any memory was released.
static inline int toki_malloc_trim(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}
