// glibc's allocator controls (mallopt), which the Glibc Swift module does not export.
#if defined(__linux__)
#include <malloc.h>
#endif
