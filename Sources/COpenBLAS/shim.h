#ifndef H2T_COPENBLAS_SHIM_H
#define H2T_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
