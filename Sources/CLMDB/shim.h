#ifndef H2T_CLMDB_SHIM_H
#define H2T_CLMDB_SHIM_H
#include <lmdb.h>
#endif
