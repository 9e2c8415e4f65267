/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The loader's C side (echo_open._libbpf), beside the libbpf calls cffi binds
 * directly: libbpf's va_list log lines formatted here and handed to Python,
 * and the ring-buffer callback that fills batch buffers (see loader_shim.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader_shim.h"

static void ldr_log(int level, const char *message);

static int ldr_print_to_python(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[1024];
    va_list again;
    int n;

    va_copy(again, ap);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n >= 0 && (size_t)n < sizeof(line)) {
        ldr_log((int)level, line);
    } else if (n >= 0) {
        /* verifier logs arrive as one huge %s: size the buffer from the first try */
        char *big = malloc((size_t)n + 1);
        if (big) {
            vsnprintf(big, (size_t)n + 1, fmt, again);
            ldr_log((int)level, big);
            free(big);
        }
    }
    va_end(again);
    return 0;
}

static int ldr_print_nothing(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level; (void)fmt; (void)ap;
    return 0;
}

void ldr_set_print(bool to_python)
{
    libbpf_set_print(to_python ? ldr_print_to_python : ldr_print_nothing);
}


int ldr_batch_collect(void *ctx, void *data, size_t size)
{
    struct ldr_batch *b = ctx;
    char *head = b->heads + b->count * b->head_size;
    size_t tail = 0;

    if (size >= b->head_size) {
        memcpy(head, data, b->head_size);
        tail = size - b->head_size;
        if (tail > b->tail_capacity - b->tail_used) {
            tail = b->tail_capacity - b->tail_used;
            b->oversized++;
        }
        memcpy(b->tails + b->tail_used, (char *)data + b->head_size, tail);
    } else {
        memcpy(head, data, size);
        memset(head + size, 0, b->head_size - size);
    }
    b->tail_sizes[b->count] = (uint32_t)tail;
    b->tail_used += tail;
    b->count++;
    /* this record is consumed either way; stop before one might not fit */
    if (b->count >= b->max_records || b->tail_capacity - b->tail_used < b->max_tail)
        return -ENOSPC;
    return 0;
}
