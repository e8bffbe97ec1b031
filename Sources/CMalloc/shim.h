#ifndef H2T_CMALLOC_SHIM_H
#define H2T_CMALLOC_SHIM_H
#if defined(__linux__)
#include <malloc.h>
#endif
#endif
