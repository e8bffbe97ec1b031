#ifndef H2T_JPEG_DECODE_H
#define H2T_JPEG_DECODE_H
// JPEG decoding through libjpeg with its fatal errors caught (setjmp/longjmp inside these C
// frames), so that no input can make libjpeg exit() or unwind through Swift frames. Only the
// libjpeg calls and the jump live here; every policy (channel counts, size limits, messages)
// stays in Swift (H2TBackbone/Images/ImageDecoding.swift).
#include <stddef.h>

/// Results of the decoding calls.
enum {
    /// The call succeeded.
    H2T_JPEG_OK = 0,
    /// libjpeg stopped with a fatal error (its error_exit); the message says which.
    H2T_JPEG_FATAL = 1,
    /// libjpeg reported corrupt data as a warning; the decode was stopped at that first warning.
    H2T_JPEG_WARNING = 2,
    /// The pixel buffer is smaller than the image libjpeg is about to produce.
    H2T_JPEG_BUFFER_TOO_SMALL = 3,
};

/// The header fields the caller needs to decide whether and how to decode.
typedef struct {
    /// Columns.
    unsigned int width;
    /// Rows.
    unsigned int height;
    /// Components in the file (1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK, ...).
    int components;
} h2t_jpeg_header;

/// One decode: libjpeg's state, its error manager and the jump target. Opaque to Swift.
typedef struct h2t_jpeg_decoder h2t_jpeg_decoder;

/// A new decoder, or NULL when memory runs out.
h2t_jpeg_decoder *h2t_jpeg_create(void);

/// Releases the decoder and everything libjpeg allocated for it (also after an error).
void h2t_jpeg_destroy(h2t_jpeg_decoder *decoder);

/// Reads the header of the `size` bytes at `data`, which must stay valid until the decoder is
/// destroyed.
int h2t_jpeg_read_header(h2t_jpeg_decoder *decoder, const unsigned char *data, size_t size,
                         h2t_jpeg_header *header);

/// Decodes the whole image, after a successful h2t_jpeg_read_header, into `pixels` as rows of
/// `channels` (1: grayscale, 3: RGB) interleaved 8-bit samples, with libjpeg's defaults
/// (islow IDCT, fancy upsampling).
int h2t_jpeg_read_pixels(h2t_jpeg_decoder *decoder, int channels, unsigned char *pixels, size_t capacity);

/// The message of the last error or warning (empty if none), NUL-terminated.
const char *h2t_jpeg_message(const h2t_jpeg_decoder *decoder);

#endif
