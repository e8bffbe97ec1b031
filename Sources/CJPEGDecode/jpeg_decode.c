#include "h2t_jpeg_decode.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct h2t_jpeg_decoder {
    // First member, so that libjpeg's j_common_ptr converts back to the decoder.
    struct jpeg_decompress_struct info;
    struct jpeg_error_mgr errors;
    jmp_buf escape;
    int status_on_jump;
    char message[JMSG_LENGTH_MAX];
};

static void h2t_jump(j_common_ptr common, int status) {
    struct h2t_jpeg_decoder *decoder = (struct h2t_jpeg_decoder *)common;
    common->err->format_message(common, decoder->message);
    decoder->status_on_jump = status;
    longjmp(decoder->escape, 1);
}

// libjpeg's default would exit() the process.
static void h2t_error_exit(j_common_ptr common) { h2t_jump(common, H2T_JPEG_FATAL); }

// Warnings (level < 0) are corrupt or truncated entropy data that libjpeg would paper over with
// grey blocks; the decoder refuses such images, so there is no point decoding the rest.
// Trace messages (level >= 0) are ignored, as before.
static void h2t_emit_message(j_common_ptr common, int level) {
    if (level < 0) {
        common->err->num_warnings++;
        h2t_jump(common, H2T_JPEG_WARNING);
    }
}

h2t_jpeg_decoder *h2t_jpeg_create(void) {
    h2t_jpeg_decoder *decoder = calloc(1, sizeof *decoder);
    if (decoder == NULL) return NULL;
    decoder->info.err = jpeg_std_error(&decoder->errors);
    decoder->errors.error_exit = h2t_error_exit;
    decoder->errors.emit_message = h2t_emit_message;
    if (setjmp(decoder->escape)) {
        jpeg_destroy_decompress(&decoder->info);
        free(decoder);
        return NULL;
    }
    jpeg_create_decompress(&decoder->info);
    return decoder;
}

void h2t_jpeg_destroy(h2t_jpeg_decoder *decoder) {
    if (decoder == NULL) return;
    jpeg_destroy_decompress(&decoder->info);
    free(decoder);
}

int h2t_jpeg_read_header(h2t_jpeg_decoder *decoder, const unsigned char *data, size_t size,
                         h2t_jpeg_header *header) {
    if (setjmp(decoder->escape)) return decoder->status_on_jump;
    jpeg_mem_src(&decoder->info, data, (unsigned long)size);
    jpeg_read_header(&decoder->info, TRUE);
    header->width = decoder->info.image_width;
    header->height = decoder->info.image_height;
    header->components = decoder->info.num_components;
    return H2T_JPEG_OK;
}

int h2t_jpeg_read_pixels(h2t_jpeg_decoder *decoder, int channels, unsigned char *pixels, size_t capacity) {
    struct jpeg_decompress_struct *info = &decoder->info;
    if (setjmp(decoder->escape)) return decoder->status_on_jump;
    info->out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(info);
    size_t stride = (size_t)info->output_width * (size_t)info->output_components;
    if (stride == 0 || (size_t)info->output_height > capacity / stride) {
        snprintf(decoder->message, sizeof decoder->message, "%ux%u image with %d components does not fit %zu bytes",
                 info->output_width, info->output_height, info->output_components, capacity);
        return H2T_JPEG_BUFFER_TOO_SMALL;
    }
    while (info->output_scanline < info->output_height) {
        JSAMPROW row = pixels + (size_t)info->output_scanline * stride;
        jpeg_read_scanlines(info, &row, 1);
    }
    jpeg_finish_decompress(info);
    return H2T_JPEG_OK;
}

const char *h2t_jpeg_message(const h2t_jpeg_decoder *decoder) { return decoder->message; }
