#ifndef H2T_CIMAGECODECS_SHIM_H
#define H2T_CIMAGECODECS_SHIM_H
#include <stdio.h>
#include <png.h>
#include <jpeglib.h>
#endif
