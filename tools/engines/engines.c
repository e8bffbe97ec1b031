// MobileNetV2's network pass on two CPU inference libraries, oneDNN (Debian libdnnl-dev) and
// XNNPACK (Debian libxnnpack-dev), for tools/bench-engines: images/s with seeded weights, at
// one input size, batch and thread count, in one of three tap modes:
//
//   fused      a plain inference: ReLU6 fused into each convolution (oneDNN eltwise clip post-op,
//              XNNPACK output clamp), residual additions fused where the engine can (oneDNN sum
//              post-op into the block input's buffer; XNNPACK has no fused sum: an add operator).
//   taps       every one of h2t-store's 99 taps written to its own buffer in the engine's own
//              layout: each convolution's pre-activation output (`conv_bn`), a separate clip
//              (`relu6`), a separate add (`residual_add`), pool and logits.
//   taps-nchw  (oneDNN) `taps` plus a reorder of each spatial tap from oneDNN's blocked layout to
//              plain NCHW: the cost of handing taps to a pooling written for plain layouts.
//   taps-nhwc  (oneDNN) `taps` with every activation forced to plain NHWC (no blocked layout, no
//              reorder): taps a pooling written for NHWC (as XNNPACK's) could read.
//
// Buffers are recycled once a tensor's last consumer has run (a real integration pools each tap
// as soon as it is produced), so the working set is what an engine plus immediate pooling needs.
// Weights and inputs are seeded (speed does not depend on their values); the same seed gives the
// same network to both engines, and `--dump FILE` writes it (canonical PyTorch layouts) with the
// engine's logits so that tools/engines/check_engines.py can compare them with ONNX Runtime.
//
//   h2t-engines --engine onednn|xnnpack [--mode fused|taps|taps-nchw|taps-nhwc] [--size 64] [--batch 32]
//               [--threads N (default: every core this process may use)] [--seconds 4]
//               [--wait spin|passive] [--clock wall|cpu] [--json] [--dump FILE]
//
// --wait passive: the thread pool's workers sleep in the kernel between operations instead of
// spinning (oneDNN: OMP_WAIT_POLICY=passive for its OpenMP runtime; XNNPACK: XNN_FLAG_YIELD_WORKERS
// on every operator). Spinning workers collapse when another runnable thread shares the cores.
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>
#include <pthreadpool.h>
#include <xnnpack.h>

// ------------------------------------------------------------------------------------------------
// The network, engine-agnostic: tensors (taps) and operations in network order.

enum op_kind { OP_CONV, OP_CLIP, OP_ADD, OP_GAP, OP_FC };
enum mode { MODE_FUSED, MODE_TAPS, MODE_TAPS_NCHW, MODE_TAPS_NHWC };

typedef struct {
    int cin, cout, k, stride, groups;
    float *weight; // OIHW (PyTorch): cout x (cin/groups) x k x k
    float *bias;   // cout (batch norm folded)
} layer_t;

typedef struct {
    char name[48];
    int c, h, w;
    int producer, last_use; // op indices
    int alias_of;           // -1, or the tensor whose buffer this one overwrites (fused sum)
    int is_tap;             // one of h2t-store's taps (every tensor but the input in taps modes)
    int slot;
    size_t bytes;           // in the engine's layout
} tensor_t;

typedef struct {
    int kind;
    int in, in2, out; // tensor ids (in2: the residual for OP_ADD or a fused sum)
    int layer;        // OP_CONV, OP_FC
    int relu6;        // OP_CONV: clip fused
} op_t;

#define MAX_T 256
#define MAX_OPS 256
#define MAX_LAYERS 64

typedef struct {
    int size, batch;
    layer_t layers[MAX_LAYERS];
    int nlayers;
    tensor_t t[MAX_T];
    int nt;
    op_t ops[MAX_OPS];
    int nops;
    float *input; // NCHW
} net_t;

static uint64_t splitmix_state = 0x5eed;
static uint64_t splitmix(void) {
    uint64_t z = (splitmix_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static float uniform(float limit) { return ((float)(splitmix() >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * limit; }

static void *xalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes < 64 ? 64 : bytes) != 0) { fprintf(stderr, "h2t-engines: out of memory\n"); exit(1); }
    memset(p, 0, bytes);
    return p;
}

static int add_layer(net_t *n, int cin, int cout, int k, int stride, int groups) {
    layer_t *l = &n->layers[n->nlayers];
    *l = (layer_t){cin, cout, k, stride, groups, NULL, NULL};
    size_t count = (size_t)cout * (cin / groups) * k * k;
    l->weight = xalloc(count * sizeof(float));
    l->bias = xalloc(cout * sizeof(float));
    float limit = sqrtf(6.0f / (float)((cin / groups) * k * k)); // He: keeps the signal through ReLU6s
    for (size_t i = 0; i < count; i++) l->weight[i] = uniform(limit);
    for (int i = 0; i < cout; i++) l->bias[i] = uniform(0.01f);
    return n->nlayers++;
}

// The layers in checkpoint order: stem, per block expand (t != 1) / depthwise / project, head, fc.
static const int SETTINGS[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                   {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};

static void make_weights(net_t *n) {
    add_layer(n, 3, 32, 3, 2, 1);
    int cin = 32;
    for (int s = 0; s < 7; s++)
        for (int i = 0; i < SETTINGS[s][2]; i++) {
            int t = SETTINGS[s][0], c = SETTINGS[s][1], stride = i == 0 ? SETTINGS[s][3] : 1, hidden = cin * t;
            if (t != 1) add_layer(n, cin, hidden, 1, 1, 1);
            add_layer(n, hidden, hidden, 3, stride, hidden);
            add_layer(n, hidden, c, 1, 1, 1);
            cin = c;
        }
    add_layer(n, 320, 1280, 1, 1, 1);
    add_layer(n, 1280, 1000, 1, 1, 1); // classifier: 1000 x 1280
    size_t count = (size_t)n->batch * 3 * n->size * n->size;
    n->input = xalloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) n->input[i] = uniform(2.0f);
}

static int add_tensor(net_t *n, const char *name, int c, int h, int w) {
    tensor_t *t = &n->t[n->nt];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->c = c; t->h = h; t->w = w;
    t->producer = n->nops; t->last_use = n->nops; t->alias_of = -1; t->slot = -1; t->is_tap = 1;
    return n->nt++;
}

static int add_op(net_t *n, int kind, int in, int in2, int layer, int relu6, const char *name, int c, int h, int w) {
    int out = add_tensor(n, name, c, h, w);
    n->ops[n->nops] = (op_t){kind, in, in2, out, layer, relu6};
    n->t[in].last_use = n->nops;
    if (in2 >= 0) n->t[in2].last_use = n->nops;
    n->nops++;
    return out;
}

// A convolution and its ReLU6: one fused op, or (taps) the conv_bn tap and a separate clip.
static int conv_relu6(net_t *n, int x, int layer, int relu6, int taps, const char *prefix) {
    const layer_t *l = &n->layers[layer];
    const tensor_t *in = &n->t[x];
    int pad = (l->k - 1) / 2;
    int h = (in->h + 2 * pad - l->k) / l->stride + 1, w = (in->w + 2 * pad - l->k) / l->stride + 1;
    char name[48];
    if (relu6 && !taps) { snprintf(name, sizeof name, "%s.relu6", prefix); return add_op(n, OP_CONV, x, -1, layer, 1, name, l->cout, h, w); }
    snprintf(name, sizeof name, "%s.conv_bn", prefix);
    int y = add_op(n, OP_CONV, x, -1, layer, 0, name, l->cout, h, w);
    if (!relu6) return y;
    snprintf(name, sizeof name, "%s.relu6", prefix);
    return add_op(n, OP_CLIP, y, -1, -1, 0, name, l->cout, h, w);
}

// fuse_sum: the project convolution accumulates into the block input's buffer (oneDNN, fused mode).
static void build_graph(net_t *n, int taps, int fuse_sum) {
    n->nt = 0; n->nops = 0;
    int x = add_tensor(n, "input", 3, n->size, n->size);
    n->t[x].is_tap = 0;
    int layer = 0;
    x = conv_relu6(n, x, layer++, 1, taps, "stem");
    int cin = 32, block = 0;
    for (int s = 0; s < 7; s++)
        for (int i = 0; i < SETTINGS[s][2]; i++, block++) {
            int t = SETTINGS[s][0], c = SETTINGS[s][1], stride = i == 0 ? SETTINGS[s][3] : 1;
            int block_in = x;
            char prefix[48];
            if (t != 1) { snprintf(prefix, sizeof prefix, "block%d.expand", block); x = conv_relu6(n, x, layer++, 1, taps, prefix); }
            snprintf(prefix, sizeof prefix, "block%d.depthwise", block);
            x = conv_relu6(n, x, layer++, 1, taps, prefix);
            int residual = stride == 1 && cin == c;
            snprintf(prefix, sizeof prefix, "block%d.project", block);
            if (residual && fuse_sum && !taps) {
                const tensor_t *bi = &n->t[block_in];
                snprintf(prefix, sizeof prefix, "block%d.residual_add", block);
                x = add_op(n, OP_CONV, x, block_in, layer++, 0, prefix, c, bi->h, bi->w);
                n->t[x].alias_of = block_in;
            } else {
                x = conv_relu6(n, x, layer++, 0, taps, prefix);
                if (residual) {
                    snprintf(prefix, sizeof prefix, "block%d.residual_add", block);
                    x = add_op(n, OP_ADD, x, block_in, -1, 0, prefix, c, n->t[x].h, n->t[x].w);
                }
            }
            cin = c;
        }
    x = conv_relu6(n, x, layer++, 1, taps, "head");
    x = add_op(n, OP_GAP, x, -1, -1, 0, "pool", 1280, 1, 1);
    x = add_op(n, OP_FC, x, -1, layer, 0, "logits", 1000, 1, 1);
    n->t[x].last_use = n->nops; // read after the pass
    if (!taps) for (int i = 0; i < n->nt; i++) n->t[i].is_tap = strcmp(n->t[i].name, "logits") == 0;
}

// Buffers recycled by liveness: a slot is free once the last consumer of its tensor has run; a
// tensor that overwrites another (fused sum) takes its slot. Returns the slot count; sizes[] gets
// each slot's bytes (the largest tensor it holds). The input has its own buffer (slot -1).
static int assign_slots(net_t *n, size_t *sizes) {
    int busy_until[MAX_T], nslots = 0;
    for (int i = 1; i < n->nt; i++) {
        tensor_t *t = &n->t[i];
        int until = t->last_use;
        if (t->alias_of >= 0) {
            t->slot = n->t[t->alias_of].slot;
            if (until > busy_until[t->slot]) busy_until[t->slot] = until;
            if (t->bytes > sizes[t->slot]) sizes[t->slot] = t->bytes;
            continue;
        }
        int s = 0;
        while (s < nslots && busy_until[s] >= t->producer) s++;
        if (s == nslots) { sizes[nslots] = 0; nslots++; }
        t->slot = s;
        busy_until[s] = until;
        if (t->bytes > sizes[s]) sizes[s] = t->bytes;
    }
    return nslots;
}

static int count_taps(const net_t *n) {
    int c = 0;
    for (int i = 0; i < n->nt; i++) c += n->t[i].is_tap;
    return c;
}

// ------------------------------------------------------------------------------------------------
// oneDNN: one primitive per op; reorders wherever a primitive prefers another layout.

#define DNNL(call) do { dnnl_status_t st_ = (call); if (st_ != dnnl_success) { \
    fprintf(stderr, "h2t-engines: oneDNN %s failed (status %d) at line %d\n", #call, (int)st_, __LINE__); exit(1); } } while (0)

typedef struct {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[8];
} dnnl_step_t;

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_step_t steps[2 * MAX_OPS + MAX_T];
    int nsteps, reorders;
    dnnl_memory_desc_t md[MAX_T];
    dnnl_memory_t mem[MAX_T];
    dnnl_primitive_desc_t pd[MAX_OPS];
    char impls[512];
} onednn_t;

static void dims4(dnnl_dims_t d, int n, int c, int h, int w) { d[0] = n; d[1] = c; d[2] = h; d[3] = w; }

static void note_impl(onednn_t *e, dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return;
    char key[72];
    snprintf(key, sizeof key, "%s;", impl);
    if (!strstr(e->impls, key) && strlen(e->impls) + strlen(key) < sizeof e->impls) strcat(e->impls, key);
}

static dnnl_memory_t user_memory(onednn_t *e, int ndims, const dnnl_dim_t *dims, dnnl_format_tag_t tag, void *data) {
    dnnl_memory_desc_t md;
    dnnl_memory_t m;
    DNNL(dnnl_memory_desc_init_by_tag(&md, ndims, dims, dnnl_f32, tag));
    DNNL(dnnl_memory_create(&m, &md, e->engine, data));
    return m;
}

static void add_step(onednn_t *e, dnnl_primitive_desc_t pd, int nargs, const dnnl_exec_arg_t *args) {
    dnnl_step_t *s = &e->steps[e->nsteps++];
    DNNL(dnnl_primitive_create(&s->prim, pd));
    s->nargs = nargs;
    memcpy(s->args, args, nargs * sizeof *args);
}

// Reorders `from` into a fresh memory of `to_md` now (setup) or at every pass (step).
static dnnl_memory_t reorder(onednn_t *e, dnnl_memory_t from, const dnnl_memory_desc_t *to_md, void *handle, int as_step) {
    const dnnl_memory_desc_t *from_md;
    DNNL(dnnl_memory_get_memory_desc(from, &from_md));
    dnnl_memory_t to;
    DNNL(dnnl_memory_create(&to, to_md, e->engine, handle ? handle : DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    DNNL(dnnl_reorder_primitive_desc_create(&rpd, from_md, e->engine, to_md, e->engine, NULL));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (as_step) { add_step(e, rpd, 2, args); e->reorders++; }
    else {
        dnnl_primitive_t r;
        DNNL(dnnl_primitive_create(&r, rpd));
        DNNL(dnnl_primitive_execute(r, e->stream, 2, args));
        DNNL(dnnl_stream_wait(e->stream));
        dnnl_primitive_destroy(r);
    }
    dnnl_primitive_desc_destroy(rpd);
    return to;
}

static void onednn_build(onednn_t *e, net_t *n, int mode) {
    memset(e, 0, sizeof *e);
    DNNL(dnnl_engine_create(&e->engine, dnnl_cpu, 0));
    DNNL(dnnl_stream_create(&e->stream, e->engine, dnnl_stream_default_flags));
    build_graph(n, mode != MODE_FUSED, 1);
    int N = n->batch;
    // Activations in the layouts oneDNN prefers, or (taps-nhwc) forced to plain NHWC.
    const dnnl_format_tag_t act_tag = mode == MODE_TAPS_NHWC ? dnnl_nhwc : dnnl_format_tag_any;
    dnnl_dims_t d;
    dims4(d, N, 3, n->size, n->size);
    DNNL(dnnl_memory_desc_init_by_tag(&e->md[0], 4, d, dnnl_f32, dnnl_nchw));

    // Phase 1: primitive descriptors (layouts chosen by oneDNN), each tensor's layout and size.
    for (int i = 0; i < n->nops; i++) {
        op_t *op = &n->ops[i];
        tensor_t *out = &n->t[op->out];
        dnnl_memory_desc_t any_dst;
        dims4(d, N, out->c, out->h, out->w);
        DNNL(dnnl_memory_desc_init_by_tag(&any_dst, op->kind == OP_FC ? 2 : 4, d, dnnl_f32, op->kind != OP_FC ? act_tag : dnnl_format_tag_any));
        dnnl_primitive_attr_t attr = NULL;
        if (op->kind == OP_CONV || op->kind == OP_FC) {
            const layer_t *l = &n->layers[op->layer];
            dnnl_memory_desc_t src, wei, bias;
            const tensor_t *in = &n->t[op->in];
            dims4(d, N, in->c, in->h, in->w);
            DNNL(dnnl_memory_desc_init_by_tag(&src, 4, d, dnnl_f32, op->kind != OP_FC ? act_tag : dnnl_format_tag_any));
            dnnl_dims_t bd = {l->cout};
            DNNL(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x));
            if (op->kind == OP_FC) {
                dims4(d, l->cout, l->cin, 1, 1);
                DNNL(dnnl_memory_desc_init_by_tag(&wei, 4, d, dnnl_f32, dnnl_format_tag_any));
                dnnl_inner_product_desc_t ip;
                DNNL(dnnl_inner_product_forward_desc_init(&ip, dnnl_forward_inference, &e->md[op->in], &wei, &bias, &any_dst));
                DNNL(dnnl_primitive_desc_create(&e->pd[i], &ip, NULL, e->engine, NULL));
            } else {
                if (l->groups > 1) {
                    dnnl_dims_t wd = {l->groups, l->cout / l->groups, l->cin / l->groups, l->k, l->k};
                    DNNL(dnnl_memory_desc_init_by_tag(&wei, 5, wd, dnnl_f32, dnnl_format_tag_any));
                } else {
                    dims4(d, l->cout, l->cin, l->k, l->k);
                    DNNL(dnnl_memory_desc_init_by_tag(&wei, 4, d, dnnl_f32, dnnl_format_tag_any));
                }
                int pad = (l->k - 1) / 2;
                dnnl_dims_t strides = {l->stride, l->stride}, pads = {pad, pad};
                dnnl_post_ops_t po;
                DNNL(dnnl_primitive_attr_create(&attr));
                DNNL(dnnl_post_ops_create(&po));
                if (op->in2 >= 0) DNNL(dnnl_post_ops_append_sum(po, 1.0f));
                if (op->relu6) DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, 0.0f, 6.0f));
                DNNL(dnnl_primitive_attr_set_post_ops(attr, po));
                dnnl_post_ops_destroy(po);
                dnnl_convolution_desc_t cd;
                // A fused sum writes into the block input's buffer: its layout is the block input's.
                const dnnl_memory_desc_t *dst = op->in2 >= 0 ? &e->md[op->in2] : &any_dst;
                DNNL(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                        &src, &wei, &bias, dst, strides, pads, pads));
                DNNL(dnnl_primitive_desc_create(&e->pd[i], &cd, attr, e->engine, NULL));
            }
        } else if (op->kind == OP_CLIP) {
            dnnl_eltwise_desc_t ed;
            DNNL(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, dnnl_eltwise_clip, &e->md[op->in], 0.0f, 6.0f));
            DNNL(dnnl_primitive_desc_create(&e->pd[i], &ed, NULL, e->engine, NULL));
        } else if (op->kind == OP_ADD) {
            dnnl_binary_desc_t bd;
            DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, &e->md[op->in], &e->md[op->in2], &e->md[op->in]));
            DNNL(dnnl_primitive_desc_create(&e->pd[i], &bd, NULL, e->engine, NULL));
        } else { // OP_GAP
            const tensor_t *in = &n->t[op->in];
            dnnl_dims_t strides = {1, 1}, kernel = {in->h, in->w}, pads = {0, 0};
            dnnl_pooling_desc_t pl;
            DNNL(dnnl_pooling_forward_desc_init(&pl, dnnl_forward_inference, dnnl_pooling_avg_exclude_padding,
                                                &e->md[op->in], &any_dst, strides, kernel, pads, pads));
            DNNL(dnnl_primitive_desc_create(&e->pd[i], &pl, NULL, e->engine, NULL));
        }
        if (attr) dnnl_primitive_attr_destroy(attr);
        note_impl(e, e->pd[i]);
        e->md[op->out] = *dnnl_primitive_desc_query_md(e->pd[i], dnnl_query_dst_md, 0);
        out->bytes = dnnl_memory_desc_get_size(&e->md[op->out]);
    }

    // Phase 2: buffers by liveness, memory objects on them.
    size_t sizes[MAX_T];
    int nslots = assign_slots(n, sizes);
    void *slots[MAX_T];
    for (int s = 0; s < nslots; s++) slots[s] = xalloc(sizes[s]);
    DNNL(dnnl_memory_create(&e->mem[0], &e->md[0], e->engine, n->input));
    for (int i = 1; i < n->nt; i++) DNNL(dnnl_memory_create(&e->mem[i], &e->md[i], e->engine, slots[n->t[i].slot]));
    size_t plain_max = 0;
    for (int i = 1; i < n->nt; i++) {
        size_t b = (size_t)N * n->t[i].c * n->t[i].h * n->t[i].w * sizeof(float);
        if (b > plain_max) plain_max = b;
    }
    void *plain = mode == MODE_TAPS_NCHW ? xalloc(plain_max) : NULL;

    // Phase 3: primitives in order, with a reorder wherever a primitive wants another layout.
    for (int i = 0; i < n->nops; i++) {
        op_t *op = &n->ops[i];
        dnnl_primitive_desc_t pd = e->pd[i];
        dnnl_memory_t src = e->mem[op->in];
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        if (!dnnl_memory_desc_equal(want, &e->md[op->in])) src = reorder(e, src, want, NULL, 1);
        dnnl_exec_arg_t args[8];
        int na = 0;
        args[na++] = (dnnl_exec_arg_t){op->kind == OP_ADD ? DNNL_ARG_SRC_0 : DNNL_ARG_SRC, src};
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->mem[op->out]};
        if (op->kind == OP_ADD) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_1, e->mem[op->in2]};
        if (op->kind == OP_CONV || op->kind == OP_FC) {
            const layer_t *l = &n->layers[op->layer];
            dnnl_dims_t wd = {l->groups, l->cout / l->groups, l->cin / l->groups, l->k, l->k}, bd = {l->cout};
            // groups x (cout/groups) x (cin/groups) x k x k is PyTorch's OIHW read per group.
            dnnl_memory_t user_w = l->groups > 1 ? user_memory(e, 5, wd, dnnl_goihw, l->weight)
                                                 : user_memory(e, 4, wd + 1, dnnl_oihw, l->weight);
            dnnl_memory_t w = reorder(e, user_w, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), NULL, 0);
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, w};
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, user_memory(e, 1, bd, dnnl_x, l->bias)};
        }
        add_step(e, pd, na, args);
        const tensor_t *out = &n->t[op->out];
        if (mode == MODE_TAPS_NCHW && out->h > 1) {
            dnnl_memory_desc_t plain_md;
            dnnl_dims_t pd4;
            dims4(pd4, N, out->c, out->h, out->w);
            DNNL(dnnl_memory_desc_init_by_tag(&plain_md, 4, pd4, dnnl_f32, dnnl_nchw));
            if (!dnnl_memory_desc_equal(&plain_md, &e->md[op->out])) reorder(e, e->mem[op->out], &plain_md, plain, 1);
        }
    }
}

static void onednn_pass(onednn_t *e) {
    for (int i = 0; i < e->nsteps; i++)
        DNNL(dnnl_primitive_execute(e->steps[i].prim, e->stream, e->steps[i].nargs, e->steps[i].args));
    DNNL(dnnl_stream_wait(e->stream));
}

static const char *onednn_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

// ------------------------------------------------------------------------------------------------
// XNNPACK: NHWC operators on a pthreadpool.

#define XNN(call) do { enum xnn_status st_ = (call); if (st_ != xnn_status_success) { \
    fprintf(stderr, "h2t-engines: XNNPACK %s failed (status %d) at line %d\n", #call, (int)st_, __LINE__); exit(1); } } while (0)

typedef struct {
    pthreadpool_t pool;
    xnn_operator_t ops[MAX_OPS];
    int nops;
    float *buf[MAX_T];
    float *input_nhwc;
} xnnpack_t;

// passive: every operator yields the pool's workers to the scheduler when it ends (kernel wait
// instead of a spin for the next operator's work).
static void xnnpack_build(xnnpack_t *e, net_t *n, int mode, int threads, int passive) {
    const uint32_t flags = passive ? XNN_FLAG_YIELD_WORKERS : 0;
    memset(e, 0, sizeof *e);
    XNN(xnn_initialize(NULL));
    e->pool = pthreadpool_create(threads);
    build_graph(n, mode != MODE_FUSED, 0);
    size_t N = n->batch;
    for (int i = 0; i < n->nt; i++) n->t[i].bytes = N * n->t[i].c * n->t[i].h * n->t[i].w * sizeof(float) + XNN_EXTRA_BYTES;
    size_t sizes[MAX_T];
    int nslots = assign_slots(n, sizes);
    float *slots[MAX_T];
    for (int s = 0; s < nslots; s++) slots[s] = xalloc(sizes[s]);
    // The input in NHWC: image preprocessing can produce it directly, so it is not timed.
    int S = n->size;
    e->input_nhwc = xalloc(n->t[0].bytes);
    for (size_t b = 0; b < N; b++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < S * S; p++) e->input_nhwc[(b * S * S + p) * 3 + c] = n->input[(b * 3 + c) * S * S + p];
    e->buf[0] = e->input_nhwc;
    for (int i = 1; i < n->nt; i++) e->buf[i] = slots[n->t[i].slot];

    for (int i = 0; i < n->nops; i++) {
        const op_t *op = &n->ops[i];
        const tensor_t *in = &n->t[op->in];
        xnn_operator_t x = NULL;
        if (op->kind == OP_CONV) {
            const layer_t *l = &n->layers[op->layer];
            int gi = l->cin / l->groups, go = l->cout / l->groups, pad = (l->k - 1) / 2;
            // XNNPACK's kernel layout is [groups][group out][kh][kw][group in] (OHWI per group).
            float *w = xalloc((size_t)l->cout * gi * l->k * l->k * sizeof(float));
            for (int o = 0; o < l->cout; o++)
                for (int c = 0; c < gi; c++)
                    for (int p = 0; p < l->k * l->k; p++) w[((size_t)o * l->k * l->k + p) * gi + c] = l->weight[((size_t)o * gi + c) * l->k * l->k + p];
            XNN(xnn_create_convolution2d_nhwc_f32(pad, pad, pad, pad, l->k, l->k, l->stride, l->stride, 1, 1, l->groups, gi, go,
                                                  l->cin, l->cout, w, l->bias, op->relu6 ? 0.0f : -INFINITY,
                                                  op->relu6 ? 6.0f : INFINITY, flags, &x));
            free(w);
            XNN(xnn_setup_convolution2d_nhwc_f32(x, N, in->h, in->w, e->buf[op->in], e->buf[op->out], e->pool));
        } else if (op->kind == OP_CLIP) {
            XNN(xnn_create_clamp_nc_f32(in->c, in->c, in->c, 0.0f, 6.0f, flags, &x));
            XNN(xnn_setup_clamp_nc_f32(x, N * in->h * in->w, e->buf[op->in], e->buf[op->out], e->pool));
        } else if (op->kind == OP_ADD) {
            size_t shape[4] = {N, in->h, in->w, in->c};
            XNN(xnn_create_add_nd_f32(-INFINITY, INFINITY, flags, &x));
            XNN(xnn_setup_add_nd_f32(x, 4, shape, 4, shape, e->buf[op->in], e->buf[op->in2], e->buf[op->out], e->pool));
        } else if (op->kind == OP_GAP) {
            XNN(xnn_create_global_average_pooling_nwc_f32(in->c, in->c, in->c, -INFINITY, INFINITY, flags, &x));
            XNN(xnn_setup_global_average_pooling_nwc_f32(x, N, in->h * in->w, e->buf[op->in], e->buf[op->out], e->pool));
        } else { // OP_FC: weights 1000 x 1280, the PyTorch layout
            const layer_t *l = &n->layers[op->layer];
            XNN(xnn_create_fully_connected_nc_f32(l->cin, l->cout, l->cin, l->cout, l->weight, l->bias, -INFINITY, INFINITY, flags, &x));
            XNN(xnn_setup_fully_connected_nc_f32(x, N, e->buf[op->in], e->buf[op->out], e->pool));
        }
        e->ops[e->nops++] = x;
    }
}

static void xnnpack_pass(xnnpack_t *e) {
    for (int i = 0; i < e->nops; i++) XNN(xnn_run_operator(e->ops[i], e->pool));
}

// ------------------------------------------------------------------------------------------------

// Seconds on the monotonic clock, or (cpu) CPU seconds of the whole process: the steadier measure
// of a one-thread run on a loaded machine (with more threads it also counts spinning workers).
static double now_on(int cpu) {
    struct timespec t;
    clock_gettime(cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *option(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static int positive(const char *text, const char *name, int fallback) {
    if (!text) return fallback;
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v <= 0 || v > 1 << 20) { fprintf(stderr, "h2t-engines: %s must be a positive integer, got '%s'\n", name, text); exit(2); }
    return (int)v;
}

static int affinity_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int c = CPU_COUNT(&set);
    return c > 0 ? c : 1;
}

static void dump(const char *path, const net_t *n, const float *logits) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "h2t-engines: cannot write %s: %s\n", path, strerror(errno)); exit(1); }
    // Header: size, batch, layer count; then per layer cout, cin, k, stride, groups, weights, bias;
    // then the NCHW input and the logits (batch x 1000).
    int32_t head[3] = {n->size, n->batch, n->nlayers};
    fwrite(head, sizeof head, 1, f);
    for (int i = 0; i < n->nlayers; i++) {
        const layer_t *l = &n->layers[i];
        int32_t h[5] = {l->cout, l->cin, l->k, l->stride, l->groups};
        fwrite(h, sizeof h, 1, f);
        fwrite(l->weight, sizeof(float), (size_t)l->cout * (l->cin / l->groups) * l->k * l->k, f);
        fwrite(l->bias, sizeof(float), l->cout, f);
    }
    fwrite(n->input, sizeof(float), (size_t)n->batch * 3 * n->size * n->size, f);
    fwrite(logits, sizeof(float), (size_t)n->batch * 1000, f);
    if (fclose(f) != 0) { fprintf(stderr, "h2t-engines: cannot write %s\n", path); exit(1); }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            puts("usage: h2t-engines --engine onednn|xnnpack [--mode fused|taps|taps-nchw|taps-nhwc] [--size 64] [--batch 32]\n"
                 "                   [--threads N (default: every core this process may use)] [--seconds 4] [--wait spin|passive]\n"
                 "                   [--clock wall|cpu] [--json] [--dump FILE]");
            return 0;
        }
    const char *engine = option(argc, argv, "--engine");
    const char *mode_name = option(argc, argv, "--mode");
    if (!mode_name) mode_name = "fused";
    int mode = strcmp(mode_name, "fused") == 0 ? MODE_FUSED : strcmp(mode_name, "taps") == 0 ? MODE_TAPS
             : strcmp(mode_name, "taps-nchw") == 0 ? MODE_TAPS_NCHW : strcmp(mode_name, "taps-nhwc") == 0 ? MODE_TAPS_NHWC : -1;
    if (!engine || (strcmp(engine, "onednn") && strcmp(engine, "xnnpack"))) { fprintf(stderr, "h2t-engines: --engine must be onednn or xnnpack\n"); return 2; }
    if (mode < 0 || (mode >= MODE_TAPS_NCHW && strcmp(engine, "onednn"))) {
        fprintf(stderr, "h2t-engines: --mode must be fused, taps or (oneDNN) taps-nchw or taps-nhwc, got '%s'\n", mode_name);
        return 2;
    }
    net_t *n = calloc(1, sizeof *n);
    n->size = positive(option(argc, argv, "--size"), "--size", 64);
    n->batch = positive(option(argc, argv, "--batch"), "--batch", 32);
    int threads = positive(option(argc, argv, "--threads"), "--threads", affinity_cores());
    double seconds = 4.0;
    if (option(argc, argv, "--seconds")) {
        char *end;
        seconds = strtod(option(argc, argv, "--seconds"), &end);
        if (*end || !(seconds >= 0) || seconds > 3600) {
            fprintf(stderr, "h2t-engines: --seconds must be a number from 0 to 3600, got '%s'\n", option(argc, argv, "--seconds"));
            return 2;
        }
    }
    const char *wait_name = option(argc, argv, "--wait");
    if (!wait_name) wait_name = "spin";
    if (strcmp(wait_name, "spin") && strcmp(wait_name, "passive")) { fprintf(stderr, "h2t-engines: --wait must be spin or passive, got '%s'\n", wait_name); return 2; }
    int passive = strcmp(wait_name, "passive") == 0;
    // oneDNN's OpenMP runtime reads its wait policy when it loads: run again with it set.
    const char *policy = getenv("OMP_WAIT_POLICY");
    if (passive && strcmp(engine, "onednn") == 0 && (!policy || strcasecmp(policy, "passive") != 0)) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "h2t-engines: cannot re-run itself with OMP_WAIT_POLICY=passive: %s\n", strerror(errno));
        return 1;
    }
    if (!passive && strcmp(engine, "onednn") == 0 && policy && strcasecmp(policy, "passive") == 0) wait_name = "passive (OMP_WAIT_POLICY)";
    const char *clock_name = option(argc, argv, "--clock");
    if (!clock_name) clock_name = "wall";
    if (strcmp(clock_name, "wall") && strcmp(clock_name, "cpu")) { fprintf(stderr, "h2t-engines: --clock must be wall or cpu, got '%s'\n", clock_name); return 2; }
    int cpu = strcmp(clock_name, "cpu") == 0;
    int json = 0;
    for (int i = 1; i < argc; i++) json |= strcmp(argv[i], "--json") == 0;
    if (n->size < 32) { fprintf(stderr, "h2t-engines: --size must be at least 32 (five stride-2 stages)\n"); return 2; }
    make_weights(n);

    int is_onednn = strcmp(engine, "onednn") == 0;
    onednn_t *od = NULL;
    xnnpack_t *xp = NULL;
    char version[64], isa[64], impls[512] = "";
    int reorders = 0;
    if (is_onednn) {
        omp_set_num_threads(threads);
        od = calloc(1, sizeof *od);
        onednn_build(od, n, mode);
        const dnnl_version_t *v = dnnl_version();
        snprintf(version, sizeof version, "onednn %d.%d.%d", v->major, v->minor, v->patch);
        snprintf(isa, sizeof isa, "%s", onednn_isa());
        snprintf(impls, sizeof impls, "%s", od->impls);
        reorders = od->reorders;
    } else {
        xp = calloc(1, sizeof *xp);
        xnnpack_build(xp, n, mode, threads, passive);
        snprintf(version, sizeof version, "xnnpack 0.0~git20220216");
        snprintf(isa, sizeof isa, "own dispatch (cpuinfo)");
    }
    size_t tap_bytes = 0;
    for (int i = 1; i < n->nt; i++) if (n->t[i].is_tap) tap_bytes += n->t[i].bytes;

    double *times = malloc(sizeof(double) * 100000);
    int runs = 0;
    if (is_onednn) onednn_pass(od); else xnnpack_pass(xp); // warm-up
    double start = now_on(0);
    while ((now_on(0) - start < seconds || runs < 3) && runs < 100000) {
        double t = now_on(cpu);
        if (is_onednn) onednn_pass(od); else xnnpack_pass(xp);
        times[runs++] = now_on(cpu) - t;
    }
    qsort(times, runs, sizeof *times, cmp_double);
    double median = runs % 2 ? times[runs / 2] : (times[runs / 2 - 1] + times[runs / 2]) / 2;

    const float *logits = is_onednn ? NULL : xp->buf[n->nt - 1];
    if (is_onednn) {
        void *h;
        DNNL(dnnl_memory_get_data_handle(od->mem[n->nt - 1], &h));
        logits = h; // (N, 1000) in oneDNN's `nc`: plain row-major
    }
    const char *dump_path = option(argc, argv, "--dump");
    if (dump_path) dump(dump_path, n, logits);

    if (json)
        printf("{\"engine\":\"%s\",\"mode\":\"%s\",\"network\":\"mobilenet_v2\",\"size\":%d,\"batch\":%d,\"threads\":%d,"
               "\"taps\":%d,\"tap_mb\":%.1f,\"reorders\":%d,\"isa\":\"%s\",\"impls\":\"%s\",\"runs\":%d,"
               "\"wait\":\"%s\",\"clock\":\"%s\",\"median_seconds\":%.6f,\"images_per_second\":%.2f}\n",
               version, mode_name, n->size, n->batch, threads, count_taps(n), tap_bytes / 1e6, reorders, isa, impls, runs,
               wait_name, clock_name, median, n->batch / median);
    else
        printf("%s %s mobilenet_v2 %dx%d batch %d threads %d: %.1f img/s (median of %d; %d taps, %.1f MB of taps per pass, "
               "%d reorders per pass; ISA %s; %s)\n",
               version, mode_name, n->size, n->size, n->batch, threads, n->batch / median, runs, count_taps(n), tap_bytes / 1e6,
               reorders, isa, impls);
    return 0;
}
