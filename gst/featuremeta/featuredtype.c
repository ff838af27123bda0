/* SPDX-License-Identifier: Apache-2.0
 *
 * GstFeatureDType: element sizes, names and conversions between float32, float16 and bfloat16.
 */

#include "featuremeta.h"

#include <string.h>

/**
 * gst_feature_dtype_size:
 * @dtype: a #GstFeatureDType
 *
 * Returns: the size of one element in bytes, 0 for a value that is not a #GstFeatureDType.
 */
gsize
gst_feature_dtype_size (GstFeatureDType dtype)
{
  switch (dtype) {
    case GST_FEATURE_DTYPE_FLOAT16:
    case GST_FEATURE_DTYPE_BFLOAT16:
      return 2;
    case GST_FEATURE_DTYPE_FLOAT32:
      return 4;
  }
  return 0;
}

/**
 * gst_feature_dtype_to_string:
 * @dtype: a #GstFeatureDType
 *
 * Returns: (nullable): "float16", "float32" or "bfloat16" (the names of safetensors and
 * numpy/torch), NULL for a value that is not a #GstFeatureDType.
 */
const gchar *
gst_feature_dtype_to_string (GstFeatureDType dtype)
{
  switch (dtype) {
    case GST_FEATURE_DTYPE_FLOAT16:
      return "float16";
    case GST_FEATURE_DTYPE_FLOAT32:
      return "float32";
    case GST_FEATURE_DTYPE_BFLOAT16:
      return "bfloat16";
  }
  return NULL;
}

static guint32
float_bits (gfloat f)
{
  guint32 x;

  memcpy (&x, &f, sizeof (x));
  return x;
}

static gfloat
bits_float (guint32 x)
{
  gfloat f;

  memcpy (&f, &x, sizeof (f));
  return f;
}

/**
 * gst_feature_dtype_float32_to_float16:
 * @value: a float32 value
 *
 * Converts a float32 value to an IEEE 754 binary16 (half) bit pattern, rounding to the nearest
 * representable value, ties to even, subnormals included: magnitudes from 65520 up (above 65504,
 * the largest finite half, by half a unit or more) give infinity of the same sign, magnitudes of
 * 2^-25 (half the smallest subnormal) and below give zero of the same sign. Infinities stay
 * infinities; a NaN gives the quiet NaN 0x7e00 with the sign of @value (the payload is not kept).
 *
 * Returns: the float16 bit pattern.
 */
guint16
gst_feature_dtype_float32_to_float16 (gfloat value)
{
  const guint32 x = float_bits (value);
  const guint32 sign = (x >> 16) & 0x8000u;
  const guint32 abs = x & 0x7fffffffu;
  guint32 h, rem;

  if (abs > 0x7f800000u)        /* NaN */
    return (guint16) (sign | 0x7e00u);
  if (abs >= 0x477ff000u)       /* 65520 and above (infinity included) round to infinity */
    return (guint16) (sign | 0x7c00u);
  if (abs < 0x38800000u) {      /* below 2^-14: a half subnormal, or zero */
    const guint32 mant = (abs & 0x7fffffu) | 0x800000u;
    guint shift, half;

    if (abs < 0x33000000u)      /* below 2^-25: zero (2^-25 itself ties to the even 0) */
      return (guint16) sign;
    shift = 126 - (abs >> 23);  /* 14..24 */
    h = mant >> shift;
    rem = mant & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u)))
      ++h;
    return (guint16) (sign | h);
  }
  h = (abs - 0x38000000u) >> 13;        /* rebias the exponent, keep 10 mantissa bits */
  rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    ++h;                        /* a carry into the exponent is the right result */
  return (guint16) (sign | h);
}

/**
 * gst_feature_dtype_float16_to_float32:
 * @bits: an IEEE 754 binary16 (half) bit pattern
 *
 * Converts a float16 to float32. Every float16 value, subnormals included, is exact in float32;
 * infinities stay infinities, NaNs stay NaNs (with their sign and payload).
 *
 * Returns: the float32 value.
 */
gfloat
gst_feature_dtype_float16_to_float32 (guint16 bits)
{
  const guint32 sign = (guint32) (bits & 0x8000u) << 16;
  guint32 exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;

  if (exp == 0) {
    if (mant == 0)
      return bits_float (sign);
    exp = 127 - 15 + 1;         /* subnormal: normalise */
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    return bits_float (sign | (exp << 23) | ((mant & 0x3ffu) << 13));
  }
  if (exp == 31)
    return bits_float (sign | 0x7f800000u | (mant << 13));
  return bits_float (sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

/**
 * gst_feature_dtype_float32_to_bfloat16:
 * @value: a float32 value
 *
 * Converts a float32 value to a bfloat16 bit pattern (the upper 16 bits of a float32), rounding
 * to the nearest, ties to even. Magnitudes that round above the largest finite bfloat16 give
 * infinity; float32 subnormals are rounded like any other value (not flushed to zero); a NaN
 * stays a NaN of the same sign: the upper bits of its payload are kept and the quiet bit is set.
 *
 * Returns: the bfloat16 bit pattern.
 */
guint16
gst_feature_dtype_float32_to_bfloat16 (gfloat value)
{
  guint32 x = float_bits (value);

  if ((x & 0x7fffffffu) > 0x7f800000u)
    return (guint16) ((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (guint16) (x >> 16);
}

/**
 * gst_feature_dtype_bfloat16_to_float32:
 * @bits: a bfloat16 bit pattern
 *
 * Converts a bfloat16 to float32, exactly (the bits become the upper half of the float32).
 *
 * Returns: the float32 value.
 */
gfloat
gst_feature_dtype_bfloat16_to_float32 (guint16 bits)
{
  return bits_float ((guint32) bits << 16);
}

/* Element @i of @src (of @dtype) as float32. */
static inline gfloat
load (GstFeatureDType dtype, const guint8 * src, gsize i)
{
  guint16 b;
  gfloat f;

  switch (dtype) {
    case GST_FEATURE_DTYPE_FLOAT32:
      memcpy (&f, src + i * 4, 4);
      return f;
    case GST_FEATURE_DTYPE_FLOAT16:
      memcpy (&b, src + i * 2, 2);
      return gst_feature_dtype_float16_to_float32 (b);
    case GST_FEATURE_DTYPE_BFLOAT16:
      memcpy (&b, src + i * 2, 2);
      return gst_feature_dtype_bfloat16_to_float32 (b);
  }
  return 0.0f;
}

/**
 * gst_feature_dtype_convert: (skip)
 * @src_dtype: element type of @src
 * @src: (array length=src_size) (element-type guint8): contiguous elements of @src_dtype, in
 *   the host's byte order; no alignment needed
 * @src_size: size of @src in bytes, a multiple of gst_feature_dtype_size (@src_dtype)
 * @dest_dtype: element type to write
 * @dest: (out caller-allocates) (array length=dest_size) (element-type guint8): where the
 *   converted elements go; no alignment needed; must not overlap @src
 * @dest_size: size of @dest in bytes, at least as many elements as @src holds
 *
 * Converts the elements of @src to @dest_dtype: float16 and bfloat16 to float32 exactly, and
 * float32 to float16 or bfloat16 rounded to the nearest, ties to even, as
 * gst_feature_dtype_float32_to_float16() and gst_feature_dtype_float32_to_bfloat16() do. A
 * conversion between float16 and bfloat16 goes through float32, which holds both exactly, so it
 * rounds once. Elements of the same dtype are copied.
 *
 * Not for language bindings, which cannot hand a caller-allocated array in: they convert with
 * their own arrays (numpy's astype) or element by element with the functions above.
 *
 * Returns: TRUE when converted; FALSE, with a critical warning, for a value that is not a
 * #GstFeatureDType, a @src_size that is not a whole number of elements, or a @dest_size too
 * small for them.
 */
gboolean
gst_feature_dtype_convert (GstFeatureDType src_dtype, const guint8 * src, gsize src_size,
    GstFeatureDType dest_dtype, guint8 * dest, gsize dest_size)
{
  const gsize src_es = gst_feature_dtype_size (src_dtype);
  const gsize dest_es = gst_feature_dtype_size (dest_dtype);
  gsize n, i;

  if (src_es == 0 || dest_es == 0) {
    g_critical ("%s: unknown dtype %d -> %d (expected float16 %d, float32 %d or bfloat16 %d)",
        G_STRFUNC, src_dtype, dest_dtype, GST_FEATURE_DTYPE_FLOAT16, GST_FEATURE_DTYPE_FLOAT32,
        GST_FEATURE_DTYPE_BFLOAT16);
    return FALSE;
  }
  if (src_size % src_es != 0) {
    g_critical ("%s: src_size must be a multiple of the %s element size %" G_GSIZE_FORMAT
        ", found %" G_GSIZE_FORMAT " bytes", G_STRFUNC, gst_feature_dtype_to_string (src_dtype),
        src_es, src_size);
    return FALSE;
  }
  n = src_size / src_es;
  if (n > dest_size / dest_es) {
    g_critical ("%s: %" G_GSIZE_FORMAT " elements of %s need %" G_GSIZE_FORMAT " bytes of dest, "
        "found %" G_GSIZE_FORMAT, G_STRFUNC, n, gst_feature_dtype_to_string (dest_dtype),
        n * dest_es, dest_size);
    return FALSE;
  }
  if (n == 0)
    return TRUE;
  g_return_val_if_fail (src != NULL && dest != NULL, FALSE);

  if (src_dtype == dest_dtype) {
    memcpy (dest, src, src_size);
    return TRUE;
  }
  for (i = 0; i < n; i++) {
    const gfloat f = load (src_dtype, src, i);
    guint16 b;

    switch (dest_dtype) {
      case GST_FEATURE_DTYPE_FLOAT32:
        memcpy (dest + i * 4, &f, 4);
        continue;
      case GST_FEATURE_DTYPE_FLOAT16:
        b = gst_feature_dtype_float32_to_float16 (f);
        break;
      case GST_FEATURE_DTYPE_BFLOAT16:
      default:
        b = gst_feature_dtype_float32_to_bfloat16 (f);
        break;
    }
    memcpy (dest + i * 2, &b, 2);
  }
  return TRUE;
}
