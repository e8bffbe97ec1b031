#ifndef H2T_CZSTD_SHIM_H
#define H2T_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
#endif
