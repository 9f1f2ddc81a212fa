/* attention_flash.h - which bf16 attention calls a device backend runs as
 * fused FlashAttention kernels (kernels/cuda/attention_flash.cu), and the
 * scratch they take, for the backend and for the memory model.
 *
 * The fused kernels keep each tile of scores in registers: a block of 64
 * queries (128 for head dims up to 64) walks the key tiles of 64 keys its
 * ranges meet, S = Q K^T and out += P V on the tensor cores (bf16
 * operands, fp32 sums), the online softmax in between.  Nothing of size Tq x Tk, nor a tile of it, goes
 * through memory; the backward recomputes P from lse.  They need the head
 * dim a multiple of 16 (the MMA's k) and at most 128 (what the registers
 * hold); other calls run attention_tiles.h's schedule.
 *
 * Scratch, one block per call: q, k, v (and the backward's dout) rounded
 * to bf16, [rows, D] as the fp32 tensors are laid out; the smallest and
 * largest key a group of ATTENTION_FLASH_ROWS query rows sees (two
 * int32); and in the backward D_i = rowsum(dout * out), a float per query
 * row and head, and where KV heads are shared, each query head's share of
 * dk and dv (fp32, [B, Tk, H, D] each), summed per group after.  Sections
 * are whole 256-byte units. */
#ifndef TITAN_KERNELS_ATTENTION_FLASH_H
#define TITAN_KERNELS_ATTENTION_FLASH_H
#include <stdbool.h>
#include <stddef.h>

/* Key tile of the fused kernels (P is rounded to bf16 against the running
 * maximum over tiles of this many keys, from key 0), and the query rows
 * of one entry of the key-range table. */
#define ATTENTION_FLASH_KEYS 64
#define ATTENTION_FLASH_ROWS 16

static inline bool attention_flash_fits(int D)
{
	return D >= 16 && D <= 128 && D % 16 == 0;
}

enum attention_flash_section {
	FLASH_Q, FLASH_K, FLASH_V, FLASH_RANGES, FLASH_DOUT, FLASH_DVEC,
	FLASH_DK_HEADS, FLASH_DV_HEADS, FLASH_SECTIONS,
};

static inline size_t attention_flash_round(size_t n)
{
	return (n + 255) / 256 * 256;
}

/* Each section's offset in the block (at[FLASH_SECTIONS] the total). */
static inline void attention_flash_layout(int B, int Tq, int Tk, int H, int KV, int D,
					  bool backward, size_t at[FLASH_SECTIONS + 1])
{
	size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KV * D;
	size_t heads = backward && H != KV ? 4 * (size_t)B * Tk * H * D : 0;
	size_t groups = (size_t)B * (size_t)((Tq + ATTENTION_FLASH_ROWS - 1) / ATTENTION_FLASH_ROWS);
	size_t bytes[FLASH_SECTIONS] = {
		2 * nq, 2 * nk, 2 * nk, 8 * groups,
		backward ? 2 * nq : 0, backward ? 4 * (size_t)B * H * Tq : 0, heads, heads,
	};

	at[0] = 0;
	for (int i = 0; i < FLASH_SECTIONS; i++)
		at[i + 1] = at[i] + attention_flash_round(bytes[i]);
}

static inline size_t attention_flash_scratch(int B, int Tq, int Tk, int H, int KV, int D,
					     bool backward)
{
	size_t at[FLASH_SECTIONS + 1];

	attention_flash_layout(B, Tq, Tk, H, KV, D, backward, at);
	return at[FLASH_SECTIONS];
}

#endif
