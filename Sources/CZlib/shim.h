#ifndef H2T_CZLIB_SHIM_H
#define H2T_CZLIB_SHIM_H
#include <zlib.h>
#endif
