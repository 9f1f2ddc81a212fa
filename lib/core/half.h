/* half.h - conversions between fp32 and the 16-bit floats that files and
 * GPUs use: bfloat16 and IEEE half (f16).  Narrowing rounds to nearest,
 * ties to even, as PyTorch's .to(torch.bfloat16) and .half() do; NaN stays
 * NaN, and values past the range become infinities. */
#ifndef TITAN_CORE_HALF_H
#define TITAN_CORE_HALF_H
#include "core/base.h"

static inline uint32_t half_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static inline float half_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u = half_f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)     /* NaN: keep it quiet */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
	return half_bits_f32((uint32_t)h << 16);
}

static inline uint16_t f32_to_f16(float f)
{
	uint32_t u = half_f32_bits(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;

	if (a > 0x7f800000u)                     /* NaN */
		return (uint16_t)(sign | 0x7e00u);
	if (a >= 0x477ff000u)                    /* rounds past 65504: inf */
		return (uint16_t)(sign | 0x7c00u);
	if (a < 0x38800000u) {                   /* below 2^-14: subnormal or 0 */
		if (a < 0x33000000u)             /* below half the smallest: 0 */
			return (uint16_t)sign;
		uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
		uint32_t shift = 126 - e;        /* 14 + (113 - e) - 1 */
		uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(sign | r);
	}
	a += 0xfffu + ((a >> 13) & 1);           /* round the 13 dropped bits */
	return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

static inline float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;

	if (e == 0x1f)
		return half_bits_f32(sign | 0x7f800000u | (m << 13));
	if (e == 0) {
		if (!m)
			return half_bits_f32(sign);
		/* subnormal: m * 2^-24 */
		float v = (float)m * (1.0f / 16777216.0f);
		return sign ? -v : v;
	}
	return half_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

#endif
