/* The ledger's ed25519 signature rule (consensus/ed25519.py states it), checked one signature at
 * a time or in randomised batches, with the interpreter lock released for the arithmetic.
 *
 * Theory of operation
 * -------------------
 * A signature (R, S) by key A on message M is valid when S < L, A and R are canonical encodings
 * of curve points that are not of small order, and [8]([S]B - R - [k]A) is the identity, where
 * k = SHA-512(R || A || M) mod L. The equation is the cofactored one, so a batch check is as
 * strict as checking each signature alone: for random 128-bit z_i,
 *
 *     [8]([sum z_i S_i] B - sum [z_i] R_i - sum [z_i k_i] A_i) = identity
 *
 * holds for every batch of valid signatures, and for a batch holding an invalid one only with
 * probability at most 2^-127 (the z_i are drawn by the caller, fresh for each call, and unknown to
 * whoever built the signatures). A failed batch is settled by checking each of its signatures
 * alone (z = 1, no randomness), so every verdict is that of the single check.
 *
 * The arithmetic: field elements mod p = 2^255 - 19 in five 51-bit limbs, points in extended
 * twisted Edwards coordinates (X : Y : Z : T) with complete addition formulas. A sum of
 * multiples runs over one chain of doublings with every scalar's width-5 non-adjacent digits
 * interleaved (the base point's width-7, from a table made when the module loads); a batch of
 * more than 160 points besides the base point is summed by the bucket method (Pippenger)
 * instead, cheaper there. Keys that occur more than once in a batch are decoded once, their
 * scalars added, and valid keys' decoded points are kept across calls (keyed by their exact
 * bytes: "Decoded keys, kept across calls" below); scalars are reduced mod L by Barrett
 * reduction; SHA-512 is written here.
 * Nothing here reads a clock, a file or the operating system's random source: the randomness
 * arrives as an argument. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;

#define SIGNATURE_BYTES 64
#define PUBLIC_KEY_BYTES 32
#define RANDOM_BYTES_PER_ITEM 16

/* ---------------------------------------------------------------------------------------- */
/* SHA-512 (FIPS 180-4).                                                                    */

static const uint64_t SHA512_K[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL,
    0xe9b5dba58189dbbcULL, 0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL,
    0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL, 0xd807aa98a3030242ULL,
    0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL,
    0xc19bf174cf692694ULL, 0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL,
    0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL, 0x2de92c6f592b0275ULL,
    0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL,
    0xbf597fc7beef0ee4ULL, 0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL,
    0x06ca6351e003826fULL, 0x142929670a0e6e70ULL, 0x27b70a8546d22ffcULL,
    0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL,
    0x92722c851482353bULL, 0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL,
    0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL, 0xd192e819d6ef5218ULL,
    0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL,
    0x34b0bcb5e19b48a8ULL, 0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL,
    0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL, 0x748f82ee5defb2fcULL,
    0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL,
    0xc67178f2e372532bULL, 0xca273eceea26619cULL, 0xd186b8c721c0c207ULL,
    0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL, 0x06f067aa72176fbaULL,
    0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL,
    0x431d67c49c100d4cULL, 0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL,
    0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL,
};

static const uint64_t SHA512_H0[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

typedef struct {
    uint64_t state[8];
    unsigned char buffer[128];
    size_t buffered;
    uint64_t total; /* bytes hashed so far (messages here are far below 2^61 bytes) */
} sha512_t;

static uint64_t rotr64(uint64_t x, unsigned n) { return (x >> n) | (x << (64 - n)); }

static uint64_t load64_be(const unsigned char *in) {
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) {
        x = (x << 8) | in[i];
    }
    return x;
}

static void sha512_block(uint64_t state[8], const unsigned char *block) {
    uint64_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = load64_be(block + 8 * i);
    }
    for (int i = 16; i < 80; i++) {
        uint64_t s0 = rotr64(w[i - 15], 1) ^ rotr64(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = rotr64(w[i - 2], 19) ^ rotr64(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint64_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint64_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 80; i++) {
        uint64_t sum1 = rotr64(e, 14) ^ rotr64(e, 18) ^ rotr64(e, 41);
        uint64_t choose = (e & f) ^ (~e & g);
        uint64_t t1 = h + sum1 + choose + SHA512_K[i] + w[i];
        uint64_t sum0 = rotr64(a, 28) ^ rotr64(a, 34) ^ rotr64(a, 39);
        uint64_t majority = (a & b) ^ (a & c) ^ (b & c);
        uint64_t t2 = sum0 + majority;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void sha512_init(sha512_t *ctx) {
    memcpy(ctx->state, SHA512_H0, sizeof ctx->state);
    ctx->buffered = 0;
    ctx->total = 0;
}

static void sha512_update(sha512_t *ctx, const unsigned char *data, size_t length) {
    ctx->total += length;
    if (ctx->buffered > 0) {
        size_t take = 128 - ctx->buffered;
        if (take > length) {
            take = length;
        }
        memcpy(ctx->buffer + ctx->buffered, data, take);
        ctx->buffered += take;
        data += take;
        length -= take;
        if (ctx->buffered < 128) {
            return;
        }
        sha512_block(ctx->state, ctx->buffer);
        ctx->buffered = 0;
    }
    while (length >= 128) {
        sha512_block(ctx->state, data);
        data += 128;
        length -= 128;
    }
    memcpy(ctx->buffer, data, length);
    ctx->buffered = length;
}

static void sha512_final(sha512_t *ctx, unsigned char out[64]) {
    uint64_t bits = ctx->total * 8;
    ctx->buffer[ctx->buffered++] = 0x80;
    if (ctx->buffered > 112) {
        memset(ctx->buffer + ctx->buffered, 0, 128 - ctx->buffered);
        sha512_block(ctx->state, ctx->buffer);
        ctx->buffered = 0;
    }
    memset(ctx->buffer + ctx->buffered, 0, 128 - ctx->buffered);
    /* The length is a 128-bit big-endian count of bits; its high half is zero here. */
    for (int i = 0; i < 8; i++) {
        ctx->buffer[127 - i] = (unsigned char)(bits >> (8 * i));
    }
    sha512_block(ctx->state, ctx->buffer);
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 8; j++) {
            out[8 * i + j] = (unsigned char)(ctx->state[i] >> (56 - 8 * j));
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Scalars mod L = 2^252 + 27742317777372353535851937790883648493, as 64-bit limbs, low first. */

static const uint64_t ORDER[4] = {
    0x5812631a5cf5d3edULL, 0x14def9dea2f79cd6ULL, 0x0000000000000000ULL, 0x1000000000000000ULL,
};
/* floor(2^512 / L), for Barrett reduction of 512-bit numbers. */
static const uint64_t BARRETT_MU[5] = {
    0xed9ce5a30a2c131bULL, 0x2106215d086329a7ULL, 0xffffffffffffffebULL, 0xffffffffffffffffULL,
    0x000000000000000fULL,
};

/* out[0 .. na + nb) = a * b. */
static void mp_mul(uint64_t *out, const uint64_t *a, int na, const uint64_t *b, int nb) {
    memset(out, 0, sizeof(uint64_t) * (size_t)(na + nb));
    for (int i = 0; i < na; i++) {
        uint64_t carry = 0;
        for (int j = 0; j < nb; j++) {
            u128 t = (u128)a[i] * b[j] + out[i + j] + carry;
            out[i + j] = (uint64_t)t;
            carry = (uint64_t)(t >> 64);
        }
        out[i + nb] = carry;
    }
}

/* a += b over n limbs (the caller guarantees no overflow out of the top limb). */
static void mp_add_in(uint64_t *a, const uint64_t *b, int n) {
    uint64_t carry = 0;
    for (int i = 0; i < n; i++) {
        u128 t = (u128)a[i] + b[i] + carry;
        a[i] = (uint64_t)t;
        carry = (uint64_t)(t >> 64);
    }
}

/* Whether the 4-limb a >= L. */
static int scalar_at_least_order(const uint64_t a[4]) {
    for (int i = 3; i >= 0; i--) {
        if (a[i] != ORDER[i]) {
            return a[i] > ORDER[i];
        }
    }
    return 1;
}

/* out = x mod L for a 512-bit x (8 limbs). */
static void scalar_reduce512(uint64_t out[4], const uint64_t x[8]) {
    uint64_t q1[5], product[10], q[5], ql[9], r[8];
    /* q1 = x >> 252 */
    for (int i = 0; i < 5; i++) {
        uint64_t low = x[3 + i] >> 60;
        uint64_t high = (4 + i < 8) ? x[4 + i] << 4 : 0;
        q1[i] = low | high;
    }
    mp_mul(product, q1, 5, BARRETT_MU, 5);
    /* q = product >> 260: q never exceeds x / L (both divisions round down) and falls short
     * of it by less than 3, which the subtractions below make up. */
    for (int i = 0; i < 5; i++) {
        uint64_t low = product[4 + i] >> 4;
        uint64_t high = product[5 + i] << 60;
        q[i] = low | high;
    }
    mp_mul(ql, q, 5, ORDER, 4);
    uint64_t borrow = 0;
    for (int i = 0; i < 8; i++) {
        u128 t = (u128)x[i] - ql[i] - borrow;
        r[i] = (uint64_t)t;
        borrow = (uint64_t)(t >> 64) & 1;
    }
    /* r = x - q L < 4 L < 2^255: its limbs above the fourth are zero. */
    while (r[4] != 0 || r[5] != 0 || r[6] != 0 || r[7] != 0 || scalar_at_least_order(r)) {
        borrow = 0;
        for (int i = 0; i < 8; i++) {
            uint64_t subtrahend = i < 4 ? ORDER[i] : 0;
            u128 t = (u128)r[i] - subtrahend - borrow;
            r[i] = (uint64_t)t;
            borrow = (uint64_t)(t >> 64) & 1;
        }
    }
    memcpy(out, r, sizeof(uint64_t) * 4);
}

static void load_limbs(uint64_t *out, const unsigned char *in, int limbs) {
    for (int i = 0; i < limbs; i++) {
        uint64_t x = 0;
        for (int j = 7; j >= 0; j--) {
            x = (x << 8) | in[8 * i + j];
        }
        out[i] = x;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The field mod p = 2^255 - 19: five 51-bit limbs, low first. Outputs of fe_mul, fe_sq and
 * fe_sub have limbs below 2^52; fe_add's below 2^53; every input may have limbs below 2^54. */

typedef struct {
    uint64_t v[5];
} fe;

#define MASK51 ((uint64_t)0x7ffffffffffffULL)

/* d = -121665/121666, 2d, sqrt(-1), and the base point (x even, y = 4/5) with T = xy. */
static const fe FE_D = {{
    0x34dca135978a3ULL, 0x1a8283b156ebdULL, 0x5e7a26001c029ULL,
    0x739c663a03cbbULL, 0x52036cee2b6ffULL,
}};
static const fe FE_D2 = {{
    0x69b9426b2f159ULL, 0x35050762add7aULL, 0x3cf44c0038052ULL,
    0x6738cc7407977ULL, 0x2406d9dc56dffULL,
}};
static const fe FE_SQRTM1 = {{
    0x61b274a0ea0b0ULL, 0xd5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
    0x78595a6804c9eULL, 0x2b8324804fc1dULL,
}};
static const fe BASE_X = {{
    0x62d608f25d51aULL, 0x412a4b4f6592aULL, 0x75b7171a4b31dULL,
    0x1ff60527118feULL, 0x216936d3cd6e5ULL,
}};
static const fe BASE_Y = {{
    0x6666666666658ULL, 0x4ccccccccccccULL, 0x1999999999999ULL,
    0x3333333333333ULL, 0x6666666666666ULL,
}};
static const fe BASE_T = {{
    0x68ab3a5b7dda3ULL, 0xeea2a5eadbbULL, 0x2af8df483c27eULL,
    0x332b375274732ULL, 0x67875f0fd78b7ULL,
}};

static void fe_copy(fe *h, const fe *f) { *h = *f; }

static void fe_zero(fe *h) { memset(h, 0, sizeof *h); }

static void fe_one(fe *h) {
    fe_zero(h);
    h->v[0] = 1;
}

static void fe_add(fe *h, const fe *f, const fe *g) {
    for (int i = 0; i < 5; i++) {
        h->v[i] = f->v[i] + g->v[i];
    }
}

/* Carries a value with limbs below 2^63 into limbs below 2^52. */
static void fe_carry(fe *h) {
    uint64_t c;
    c = h->v[0] >> 51;
    h->v[0] &= MASK51;
    h->v[1] += c;
    c = h->v[1] >> 51;
    h->v[1] &= MASK51;
    h->v[2] += c;
    c = h->v[2] >> 51;
    h->v[2] &= MASK51;
    h->v[3] += c;
    c = h->v[3] >> 51;
    h->v[3] &= MASK51;
    h->v[4] += c;
    c = h->v[4] >> 51;
    h->v[4] &= MASK51;
    h->v[0] += 19 * c;
}

/* h = f - g, for g with limbs below 2^54: adds 8p first so no limb goes negative. */
static void fe_sub(fe *h, const fe *f, const fe *g) {
    h->v[0] = f->v[0] + 0x3fffffffffff68ULL - g->v[0];
    h->v[1] = f->v[1] + 0x3ffffffffffff8ULL - g->v[1];
    h->v[2] = f->v[2] + 0x3ffffffffffff8ULL - g->v[2];
    h->v[3] = f->v[3] + 0x3ffffffffffff8ULL - g->v[3];
    h->v[4] = f->v[4] + 0x3ffffffffffff8ULL - g->v[4];
    fe_carry(h);
}

static void fe_neg(fe *h, const fe *f) {
    fe zero;
    fe_zero(&zero);
    fe_sub(h, &zero, f);
}

static void fe_reduce_product(fe *h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4) {
    r1 += (uint64_t)(r0 >> 51);
    r2 += (uint64_t)(r1 >> 51);
    r3 += (uint64_t)(r2 >> 51);
    r4 += (uint64_t)(r3 >> 51);
    uint64_t h0 = (uint64_t)r0 & MASK51;
    uint64_t h1 = (uint64_t)r1 & MASK51;
    uint64_t h2 = (uint64_t)r2 & MASK51;
    uint64_t h3 = (uint64_t)r3 & MASK51;
    uint64_t h4 = (uint64_t)r4 & MASK51;
    u128 t = (u128)h0 + (u128)(uint64_t)(r4 >> 51) * 19;
    h->v[0] = (uint64_t)t & MASK51;
    h->v[1] = h1 + (uint64_t)(t >> 51);
    h->v[2] = h2;
    h->v[3] = h3;
    h->v[4] = h4;
}

static void fe_mul(fe *h, const fe *f, const fe *g) {
    uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    uint64_t g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
    uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
    u128 r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 + (u128)f3 * g2_19 +
              (u128)f4 * g1_19;
    u128 r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 + (u128)f3 * g3_19 +
              (u128)f4 * g2_19;
    u128 r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 +
              (u128)f4 * g3_19;
    u128 r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 + (u128)f4 * g4_19;
    u128 r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 + (u128)f4 * g0;
    fe_reduce_product(h, r0, r1, r2, r3, r4);
}

static void fe_sq(fe *h, const fe *f) {
    uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    uint64_t f0_2 = 2 * f0, f1_2 = 2 * f1;
    uint64_t f1_38 = 38 * f1, f2_38 = 38 * f2, f3_38 = 38 * f3;
    uint64_t f3_19 = 19 * f3, f4_19 = 19 * f4;
    u128 r0 = (u128)f0 * f0 + (u128)f1_38 * f4 + (u128)f2_38 * f3;
    u128 r1 = (u128)f0_2 * f1 + (u128)f2_38 * f4 + (u128)f3_19 * f3;
    u128 r2 = (u128)f0_2 * f2 + (u128)f1 * f1 + (u128)f3_38 * f4;
    u128 r3 = (u128)f0_2 * f3 + (u128)f1_2 * f2 + (u128)f4_19 * f4;
    u128 r4 = (u128)f0_2 * f4 + (u128)f1_2 * f3 + (u128)f2 * f2;
    fe_reduce_product(h, r0, r1, r2, r3, r4);
}

/* The canonical 32-byte little-endian encoding (the value reduced below p). */
static void fe_tobytes(unsigned char out[32], const fe *f) {
    fe h = *f;
    fe_carry(&h);
    fe_carry(&h);
    /* Now h < 2^255 + 2^13 with limbs below 2^51 except possibly a tiny h0: carry once more
     * through h0 only, then subtract p if h >= p. */
    uint64_t q = (h.v[0] + 19) >> 51;
    q = (h.v[1] + q) >> 51;
    q = (h.v[2] + q) >> 51;
    q = (h.v[3] + q) >> 51;
    q = (h.v[4] + q) >> 51;
    h.v[0] += 19 * q;
    uint64_t c = h.v[0] >> 51;
    h.v[0] &= MASK51;
    h.v[1] += c;
    c = h.v[1] >> 51;
    h.v[1] &= MASK51;
    h.v[2] += c;
    c = h.v[2] >> 51;
    h.v[2] &= MASK51;
    h.v[3] += c;
    c = h.v[3] >> 51;
    h.v[3] &= MASK51;
    h.v[4] += c;
    h.v[4] &= MASK51;
    uint64_t words[4] = {
        h.v[0] | (h.v[1] << 51),
        (h.v[1] >> 13) | (h.v[2] << 38),
        (h.v[2] >> 26) | (h.v[3] << 25),
        (h.v[3] >> 39) | (h.v[4] << 12),
    };
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 8; j++) {
            out[8 * i + j] = (unsigned char)(words[i] >> (8 * j));
        }
    }
}

/* Loads the low 255 bits of 32 little-endian bytes; 0 when they are not below p. */
static int fe_frombytes_canonical(fe *h, const unsigned char in[32]) {
    uint64_t w[4];
    load_limbs(w, in, 4);
    h->v[0] = w[0] & MASK51;
    h->v[1] = ((w[0] >> 51) | (w[1] << 13)) & MASK51;
    h->v[2] = ((w[1] >> 38) | (w[2] << 26)) & MASK51;
    h->v[3] = ((w[2] >> 25) | (w[3] << 39)) & MASK51;
    h->v[4] = (w[3] >> 12) & MASK51;
    int at_least_p = h->v[4] == MASK51 && h->v[3] == MASK51 && h->v[2] == MASK51 &&
                     h->v[1] == MASK51 && h->v[0] >= MASK51 - 18;
    return !at_least_p;
}

static int fe_iszero(const fe *f) {
    unsigned char s[32];
    fe_tobytes(s, f);
    unsigned char any = 0;
    for (int i = 0; i < 32; i++) {
        any |= s[i];
    }
    return any == 0;
}

static int fe_equal(const fe *f, const fe *g) {
    fe difference;
    fe_sub(&difference, f, g);
    return fe_iszero(&difference);
}

static int fe_isodd(const fe *f) {
    unsigned char s[32];
    fe_tobytes(s, f);
    return s[0] & 1;
}

static void fe_sq_times(fe *h, const fe *f, int times) {
    fe_sq(h, f);
    for (int i = 1; i < times; i++) {
        fe_sq(h, h);
    }
}

/* h = z^((p - 5) / 8) = z^(2^252 - 3). */
static void fe_pow22523(fe *h, const fe *z) {
    fe t0, t1, t2;
    fe_sq(&t0, z);                 /* 2 */
    fe_sq_times(&t1, &t0, 2);      /* 8 */
    fe_mul(&t1, z, &t1);           /* 9 */
    fe_mul(&t0, &t0, &t1);         /* 11 */
    fe_sq(&t0, &t0);               /* 22 */
    fe_mul(&t0, &t1, &t0);         /* 2^5 - 1 */
    fe_sq_times(&t1, &t0, 5);      /* 2^10 - 2^5 */
    fe_mul(&t0, &t1, &t0);         /* 2^10 - 1 */
    fe_sq_times(&t1, &t0, 10);     /* 2^20 - 2^10 */
    fe_mul(&t1, &t1, &t0);         /* 2^20 - 1 */
    fe_sq_times(&t2, &t1, 20);     /* 2^40 - 2^20 */
    fe_mul(&t1, &t2, &t1);         /* 2^40 - 1 */
    fe_sq_times(&t1, &t1, 10);     /* 2^50 - 2^10 */
    fe_mul(&t0, &t1, &t0);         /* 2^50 - 1 */
    fe_sq_times(&t1, &t0, 50);     /* 2^100 - 2^50 */
    fe_mul(&t1, &t1, &t0);         /* 2^100 - 1 */
    fe_sq_times(&t2, &t1, 100);    /* 2^200 - 2^100 */
    fe_mul(&t1, &t2, &t1);         /* 2^200 - 1 */
    fe_sq_times(&t1, &t1, 50);     /* 2^250 - 2^50 */
    fe_mul(&t0, &t1, &t0);         /* 2^250 - 1 */
    fe_sq_times(&t0, &t0, 2);      /* 2^252 - 4 */
    fe_mul(h, &t0, z);             /* 2^252 - 3 */
}

/* ---------------------------------------------------------------------------------------- */
/* Points of -x^2 + y^2 = 1 + d x^2 y^2 in extended coordinates: x = X/Z, y = Y/Z, xy = T/Z.
 * The addition formulas are complete on this curve (a = -1 is a square, d is not), so they
 * need no special cases for the identity or for adding a point to itself. */

typedef struct {
    fe X, Y, Z, T;
} point;

/* A point prepared for being added: (Y + X, Y - X, 2Z, 2dT). */
typedef struct {
    fe YplusX, YminusX, Z2, T2d;
} cached;

static void point_identity(point *p) {
    fe_zero(&p->X);
    fe_one(&p->Y);
    fe_one(&p->Z);
    fe_zero(&p->T);
}

static void point_to_cached(cached *c, const point *p) {
    fe_add(&c->YplusX, &p->Y, &p->X);
    fe_sub(&c->YminusX, &p->Y, &p->X);
    fe_add(&c->Z2, &p->Z, &p->Z);
    fe_mul(&c->T2d, &p->T, &FE_D2);
}

static void point_neg(point *r, const point *p) {
    fe_neg(&r->X, &p->X);
    fe_copy(&r->Y, &p->Y);
    fe_copy(&r->Z, &p->Z);
    fe_neg(&r->T, &p->T);
}

/* r = p + q. */
static void point_add(point *r, const point *p, const cached *q) {
    fe a, b, c, d, e, f, g, h, t;
    fe_sub(&t, &p->Y, &p->X);
    fe_mul(&a, &t, &q->YminusX);
    fe_add(&t, &p->Y, &p->X);
    fe_mul(&b, &t, &q->YplusX);
    fe_mul(&c, &p->T, &q->T2d);
    fe_mul(&d, &p->Z, &q->Z2);
    fe_sub(&e, &b, &a);
    fe_sub(&f, &d, &c);
    fe_add(&g, &d, &c);
    fe_add(&h, &b, &a);
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->T, &e, &h);
    fe_mul(&r->Z, &f, &g);
}

/* r = p - q: p + (-q), where -q = (-X, Y, Z, -T) swaps Y + X with Y - X and negates 2dT. */
static void point_sub(point *r, const point *p, const cached *q) {
    cached negated;
    negated.YplusX = q->YminusX;
    negated.YminusX = q->YplusX;
    negated.Z2 = q->Z2;
    fe_neg(&negated.T2d, &q->T2d);
    point_add(r, p, &negated);
}

/* r = 2p; T of the result only when with_t (a doubling followed by another needs none). */
static void point_double(point *r, const point *p, int with_t) {
    fe a, b, c, e, f, g, h, t;
    fe_sq(&a, &p->X);
    fe_sq(&b, &p->Y);
    fe_sq(&c, &p->Z);
    fe_add(&c, &c, &c);
    fe_add(&h, &a, &b);         /* -H of the textbook formula */
    fe_add(&t, &p->X, &p->Y);
    fe_sq(&t, &t);
    fe_sub(&e, &t, &h);         /* E = (X + Y)^2 - A - B */
    fe_sub(&g, &b, &a);         /* G = B - A */
    fe_sub(&f, &g, &c);         /* F = G - C */
    fe_neg(&h, &h);             /* H = -A - B */
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->Z, &f, &g);
    if (with_t) {
        fe_mul(&r->T, &e, &h);
    }
}

/* Whether p is the identity (X = 0 and Y = Z; T is not read). */
static int point_is_identity(const point *p) { return fe_iszero(&p->X) && fe_equal(&p->Y, &p->Z); }

/* Whether [8]p is the identity: p is one of the eight points of small order. */
static int point_has_small_order(const point *p) {
    point q;
    point_double(&q, p, 0);
    point_double(&q, &q, 0);
    point_double(&q, &q, 0);
    return point_is_identity(&q);
}

/* Decodes a canonical encoding of a curve point; 0 when the bytes are not one. */
static int point_decode(point *p, const unsigned char in[32]) {
    fe u, v, v3, vxx, check;
    int sign = in[31] >> 7;
    if (!fe_frombytes_canonical(&p->Y, in)) {
        return 0;
    }
    fe_one(&p->Z);
    fe_sq(&u, &p->Y);
    fe_mul(&v, &u, &FE_D);
    fe_sub(&u, &u, &p->Z); /* u = y^2 - 1 */
    fe_add(&v, &v, &p->Z); /* v = d y^2 + 1 */
    fe_sq(&v3, &v);
    fe_mul(&v3, &v3, &v); /* v^3 */
    fe_sq(&p->X, &v3);
    fe_mul(&p->X, &p->X, &v);
    fe_mul(&p->X, &p->X, &u); /* u v^7 */
    fe_pow22523(&p->X, &p->X);
    fe_mul(&p->X, &p->X, &v3);
    fe_mul(&p->X, &p->X, &u); /* x = u v^3 (u v^7)^((p - 5) / 8) */
    fe_sq(&vxx, &p->X);
    fe_mul(&vxx, &vxx, &v);
    if (!fe_equal(&vxx, &u)) {
        fe_neg(&check, &u);
        if (!fe_equal(&vxx, &check)) {
            return 0; /* no square root: not a point */
        }
        fe_mul(&p->X, &p->X, &FE_SQRTM1);
    }
    if (fe_iszero(&p->X) && sign) {
        return 0; /* x = 0 has one encoding, with the sign bit clear */
    }
    if (fe_isodd(&p->X) != sign) {
        fe_neg(&p->X, &p->X);
    }
    fe_mul(&p->T, &p->X, &p->Y);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Sums of scalar multiples. Scalars are below L < 2^253, as four 64-bit limbs. */

#define SCALAR_BITS 253

typedef uint64_t scalar_t[4];

static void base_point(point *p) {
    p->X = BASE_X;
    p->Y = BASE_Y;
    fe_one(&p->Z);
    p->T = BASE_T;
}

/* The `width` bits of s from bit `at` (width <= 16). */
static unsigned scalar_digit(const uint64_t s[4], unsigned at, unsigned width) {
    unsigned limb = at / 64, offset = at % 64;
    if (limb >= 4) {
        return 0;
    }
    uint64_t bits = s[limb] >> offset;
    if (offset + width > 64 && limb + 1 < 4) {
        bits |= s[limb + 1] << (64 - offset);
    }
    return (unsigned)(bits & (((uint64_t)1 << width) - 1));
}

/* Width-w non-adjacent form: digits naf[i], each 0 or odd with |naf[i]| < 2^(w-1), at most one
 * nonzero among any w in a row, sum naf[i] 2^i = s. Returns one past the highest nonzero. */
#define NAF_DIGITS 258
static int scalar_wnaf(signed char naf[NAF_DIGITS], const uint64_t s[4], unsigned width) {
    uint64_t k[5] = {s[0], s[1], s[2], s[3], 0};
    const int64_t window = (int64_t)1 << width, half = window >> 1;
    int top = 0;
    memset(naf, 0, NAF_DIGITS);
    for (int i = 0; i < NAF_DIGITS && (k[0] | k[1] | k[2] | k[3] | k[4]) != 0; i++) {
        if (k[0] & 1) {
            int64_t digit = (int64_t)(k[0] & (uint64_t)(window - 1));
            if (digit >= half) {
                digit -= window;
            }
            naf[i] = (signed char)digit;
            top = i + 1;
            if (digit > 0) {
                k[0] -= (uint64_t)digit; /* digit is k's low bits: no borrow */
            } else {
                uint64_t carry = (uint64_t)(-digit);
                for (int l = 0; l < 5 && carry != 0; l++) {
                    k[l] += carry;
                    carry = k[l] < carry;
                }
            }
        }
        for (int l = 0; l < 4; l++) {
            k[l] = (k[l] >> 1) | (k[l + 1] << 63);
        }
        k[4] >>= 1;
    }
    return top;
}

/* Odd multiples P, 3P, 5P, ... of p, `entries` of them, ready to be added. */
static void odd_multiples(cached *table, const point *p, int entries) {
    point twice, multiple = *p;
    cached twice_cached;
    point_to_cached(&table[0], p);
    point_double(&twice, p, 1);
    point_to_cached(&twice_cached, &twice);
    for (int j = 1; j < entries; j++) {
        point_add(&multiple, &multiple, &twice_cached);
        point_to_cached(&table[j], &multiple);
    }
}

/* Each point's digits are 5-bit wNAF (odd multiples up to 15 in its table); the base point's
 * 7-bit, from a table of 32 made once when the module loads. */
#define NAF_WIDTH 5
#define NAF_TABLE 8
#define BASE_NAF_WIDTH 7
#define BASE_TABLE 32
static cached base_table[BASE_TABLE];

static void add_digit(point *r, const cached *table, int digit) {
    if (digit > 0) {
        point_add(r, r, &table[digit >> 1]);
    } else {
        point_sub(r, r, &table[(-digit) >> 1]);
    }
}

/* result = [base_scalar]B (none when base_scalar is NULL) + sum of scalars[i] points[i]: the
 * digits of all scalars interleaved over one chain of doublings (Straus). tables and digits
 * hold count entries each. */
static void sum_interleaved(point *result, const uint64_t *base_scalar, const point *points,
                            const scalar_t *scalars, size_t count, cached (*tables)[NAF_TABLE],
                            signed char (*digits)[NAF_DIGITS]) {
    signed char base_digits[NAF_DIGITS];
    int top = 0;
    if (base_scalar != NULL) {
        top = scalar_wnaf(base_digits, base_scalar, BASE_NAF_WIDTH);
    }
    for (size_t j = 0; j < count; j++) {
        int used = scalar_wnaf(digits[j], scalars[j], NAF_WIDTH);
        if (used > top) {
            top = used;
        }
        odd_multiples(tables[j], &points[j], NAF_TABLE);
    }
    int started = 0;
    point_identity(result);
    for (int i = top - 1; i >= 0; i--) {
        int any = base_scalar != NULL && base_digits[i] != 0;
        for (size_t j = 0; j < count && !any; j++) {
            any = digits[j][i] != 0;
        }
        if (started) {
            /* T is needed by the additions that follow, and by the caller after the last. */
            point_double(result, result, any || i == 0);
        }
        if (!any) {
            continue;
        }
        if (base_scalar != NULL && base_digits[i] != 0) {
            add_digit(result, base_table, base_digits[i]);
        }
        for (size_t j = 0; j < count; j++) {
            if (digits[j][i] != 0) {
                add_digit(result, tables[j], digits[j][i]);
            }
        }
        started = 1;
    }
}

/* Workspace for sum_buckets, sized by the caller (which holds the interpreter lock). */
typedef struct {
    point *buckets;
    unsigned char *used;
} buckets_t;

#define BUCKET_WIDTH_MAX 8

static unsigned bucket_width(size_t count) {
    /* Batches of fewer points than INTERLEAVED_POINTS_MAX never come here. */
    if (count < 384) {
        return 5;
    }
    if (count < 768) {
        return 6;
    }
    if (count < 2048) {
        return 7;
    }
    return BUCKET_WIDTH_MAX;
}

/* result = sum of scalars[i] * points[i] by the bucket method: for each window of `width`
 * bits, from the top, the points are added into the bucket their digit names, and the
 * buckets summed with weights 1 .. 2^width - 1 by running sums. */
static void sum_buckets(point *result, const point *points, const cached *prepared,
                        const scalar_t *scalars, size_t count, buckets_t *work) {
    unsigned width = bucket_width(count);
    unsigned buckets = (1u << width) - 1;
    int started = 0;
    point_identity(result);
    for (int window = (int)((SCALAR_BITS + width - 1) / width) - 1; window >= 0; window--) {
        if (started) {
            for (unsigned j = 0; j < width; j++) {
                point_double(result, result, j + 1 == width);
            }
        }
        memset(work->used, 0, buckets);
        for (size_t i = 0; i < count; i++) {
            unsigned digit = scalar_digit(scalars[i], width * (unsigned)window, width);
            if (digit == 0) {
                continue;
            }
            if (work->used[digit - 1]) {
                point_add(&work->buckets[digit - 1], &work->buckets[digit - 1], &prepared[i]);
            } else {
                work->buckets[digit - 1] = points[i];
                work->used[digit - 1] = 1;
            }
        }
        point running, total;
        cached addend;
        int have_running = 0, have_total = 0;
        for (int j = (int)buckets - 1; j >= 0; j--) {
            if (work->used[j]) {
                if (have_running) {
                    point_to_cached(&addend, &work->buckets[j]);
                    point_add(&running, &running, &addend);
                } else {
                    running = work->buckets[j];
                    have_running = 1;
                }
            }
            if (have_running) {
                if (have_total) {
                    point_to_cached(&addend, &running);
                    point_add(&total, &total, &addend);
                } else {
                    total = running;
                    have_total = 1;
                }
            }
        }
        if (have_total) {
            if (started) {
                point_to_cached(&addend, &total);
                point_add(result, result, &addend);
            } else {
                *result = total;
                started = 1;
            }
        }
    }
}

/* Whether [8]p is the identity (the cofactored equation's last step). */
static int cofactored_identity(const point *p) { return point_has_small_order(p); }

/* ---------------------------------------------------------------------------------------- */
/* Signatures. */

typedef struct {
    const unsigned char *signature; /* R || S */
    const unsigned char *message;
    size_t message_bytes;
    const unsigned char *public_key;
    int well_formed; /* the lengths are right */
} item_t;

typedef struct {
    point minus_r;   /* -R */
    scalar_t s;      /* S */
    scalar_t k;      /* SHA-512(R || A || M) mod L */
    size_t key;      /* index of the item's key in keys_t */
    int candidate;   /* passed every check but the equation */
} prepared_t;

typedef struct {
    point minus_a; /* -A */
    int valid;     /* canonical, on the curve, not of small order */
} signer_key_t;

/* k = SHA-512(R || A || M) mod L. */
static void challenge(scalar_t k, const item_t *item) {
    sha512_t hash;
    unsigned char digest[64];
    uint64_t wide[8];
    sha512_init(&hash);
    sha512_update(&hash, item->signature, 32);
    sha512_update(&hash, item->public_key, PUBLIC_KEY_BYTES);
    sha512_update(&hash, item->message, item->message_bytes);
    sha512_final(&hash, digest);
    load_limbs(wide, digest, 8);
    scalar_reduce512(k, wide);
}

/* Decodes R and S and checks them: 0 when the signature fails before the equation. */
static int prepare_signature(prepared_t *prepared, const item_t *item) {
    point r;
    load_limbs(prepared->s, item->signature + 32, 4);
    if (scalar_at_least_order(prepared->s)) {
        return 0;
    }
    if (!point_decode(&r, item->signature) || point_has_small_order(&r)) {
        return 0;
    }
    point_neg(&prepared->minus_r, &r);
    return 1;
}

static int prepare_key(signer_key_t *key, const unsigned char public_key[32]) {
    point a;
    if (!point_decode(&a, public_key) || point_has_small_order(&a)) {
        return 0;
    }
    point_neg(&key->minus_a, &a);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Decoded keys, kept across calls.
 *
 * Decoding a key (a field square root and the small-order check) is about a fifth of what a
 * batched signature costs, and a ledger's senders sign again and again, so the decoded -A of
 * each valid key is kept in a table of KEY_CACHE_SLOTS entries, one entry per slot, a slot
 * chosen from the key's bytes. An entry holds the key's exact 32 bytes and the point those
 * bytes decode to: a pure function of the bytes, so a hit gives what decoding would, whatever
 * message or signature comes with the key. Only keys that pass every check are kept (a key
 * that fails is decoded, and refused, each time). A slot's new key replaces its old one, so
 * keys chosen to share a slot cost what an uncached key costs. The table is read and written
 * only under key_cache_lock (the interpreter lock is released around the arithmetic, and
 * several threads may check signatures at once); decoding happens outside it. */

#define KEY_CACHE_SLOTS 4096

typedef struct {
    unsigned char public_key[PUBLIC_KEY_BYTES];
    point minus_a;
    int filled;
} key_cache_entry_t;

static key_cache_entry_t key_cache[KEY_CACHE_SLOTS];
static PyThread_type_lock key_cache_lock;
static uint64_t key_cache_hits, key_cache_misses;

static size_t key_cache_slot(const unsigned char public_key[32]) {
    uint64_t bits;
    memcpy(&bits, public_key, sizeof bits);
    return (size_t)((bits * UINT64_C(0x9E3779B97F4A7C15)) >> 52) % KEY_CACHE_SLOTS;
}

/* prepare_key through the table: 1 with key->minus_a set when the key is valid. */
static int prepare_key_cached(signer_key_t *key, const unsigned char public_key[32]) {
    key_cache_entry_t *entry = &key_cache[key_cache_slot(public_key)];
    int hit = 0;
    PyThread_acquire_lock(key_cache_lock, WAIT_LOCK);
    if (entry->filled && memcmp(entry->public_key, public_key, PUBLIC_KEY_BYTES) == 0) {
        key->minus_a = entry->minus_a;
        hit = 1;
        key_cache_hits++;
    } else {
        key_cache_misses++;
    }
    PyThread_release_lock(key_cache_lock);
    if (hit) {
        return 1;
    }
    if (!prepare_key(key, public_key)) {
        return 0;
    }
    PyThread_acquire_lock(key_cache_lock, WAIT_LOCK);
    memcpy(entry->public_key, public_key, PUBLIC_KEY_BYTES);
    entry->minus_a = key->minus_a;
    entry->filled = 1;
    PyThread_release_lock(key_cache_lock);
    return 1;
}

/* The equation for one signature, z = 1: [8]([S]B - [k]A - R) = identity. */
static int equation_single(const prepared_t *prepared, const signer_key_t *key) {
    point sum;
    cached table[1][NAF_TABLE], minus_r;
    signed char digits[1][NAF_DIGITS];
    sum_interleaved(&sum, prepared->s, &key->minus_a, (const scalar_t *)&prepared->k, 1, table,
                    digits);
    point_to_cached(&minus_r, &prepared->minus_r);
    point_add(&sum, &sum, &minus_r);
    return cofactored_identity(&sum);
}

/* A batch equation for two signatures already costs less than two single checks (the
 * doublings are shared). Up to INTERLEAVED_POINTS_MAX points besides the base point, the sum is
 * interleaved; above, the buckets cost less. */
#define BATCH_MIN 2
#define INTERLEAVED_POINTS_MAX 160

typedef struct {
    const unsigned char *public_key;
    size_t item;
} key_order_t;

static int compare_keys(const void *left, const void *right) {
    const key_order_t *a = left, *b = right;
    int order = memcmp(a->public_key, b->public_key, PUBLIC_KEY_BYTES);
    if (order != 0) {
        return order;
    }
    return (a->item > b->item) - (a->item < b->item);
}

/* Everything a batch needs, allocated while the interpreter lock is held. */
typedef struct {
    size_t count;
    item_t *items;
    prepared_t *prepared;
    key_order_t *order;
    signer_key_t *keys;
    uint64_t (*key_sums)[8];
    unsigned char *key_used;
    point *points;
    cached *prepared_points;
    scalar_t *scalars;
    buckets_t buckets;
    cached (*tables)[NAF_TABLE];
    signed char (*digits)[NAF_DIGITS];
} batch_t;

static void batch_free(batch_t *batch) {
    PyMem_RawFree(batch->items);
    PyMem_RawFree(batch->prepared);
    PyMem_RawFree(batch->order);
    PyMem_RawFree(batch->keys);
    PyMem_RawFree(batch->key_sums);
    PyMem_RawFree(batch->key_used);
    PyMem_RawFree(batch->points);
    PyMem_RawFree(batch->prepared_points);
    PyMem_RawFree(batch->scalars);
    PyMem_RawFree(batch->buckets.buckets);
    PyMem_RawFree(batch->buckets.used);
    PyMem_RawFree(batch->tables);
    PyMem_RawFree(batch->digits);
    memset(batch, 0, sizeof *batch);
}

/* An array of count elements of size bytes, not cleared: every element is written before it is
 * read. NULL when it cannot be allocated. */
static void *raw_array(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    return PyMem_RawMalloc(count * size);
}

static int batch_alloc(batch_t *batch, size_t count) {
    size_t slots = count > 0 ? count : 1;
    size_t points = 1 + 2 * slots;
    size_t buckets = ((size_t)1 << BUCKET_WIDTH_MAX) - 1;
    memset(batch, 0, sizeof *batch);
    batch->count = count;
    batch->items = raw_array(slots, sizeof(item_t));
    batch->prepared = raw_array(slots, sizeof(prepared_t));
    batch->order = raw_array(slots, sizeof(key_order_t));
    batch->keys = raw_array(slots, sizeof(signer_key_t));
    batch->key_sums = raw_array(slots, sizeof(uint64_t[8]));
    batch->key_used = raw_array(slots, 1);
    batch->points = raw_array(points, sizeof(point));
    batch->prepared_points = raw_array(points, sizeof(cached));
    batch->scalars = raw_array(points, sizeof(scalar_t));
    batch->buckets.buckets = raw_array(buckets, sizeof(point));
    batch->buckets.used = raw_array(buckets, 1);
    size_t interleaved = points < INTERLEAVED_POINTS_MAX ? points : INTERLEAVED_POINTS_MAX;
    batch->tables = raw_array(interleaved, sizeof(cached[NAF_TABLE]));
    batch->digits = raw_array(interleaved, sizeof(signed char[NAF_DIGITS]));
    if (!batch->tables || !batch->digits || !batch->items || !batch->prepared || !batch->order ||
        !batch->keys || !batch->key_sums || !batch->key_used || !batch->points ||
        !batch->prepared_points || !batch->scalars || !batch->buckets.buckets ||
        !batch->buckets.used) {
        batch_free(batch);
        return 0;
    }
    return 1;
}

/* sum (8 limbs) += a (2 limbs) * b (4 limbs). */
static void add_product(uint64_t sum[8], const uint64_t a[2], const uint64_t b[4]) {
    uint64_t product[8] = {0};
    mp_mul(product, a, 2, b, 4);
    mp_add_in(sum, product, 8);
}

/* The batch equation over the candidates, with z_i from randomness (16 bytes per item). */
static int equation_batch(batch_t *batch, const unsigned char *randomness, size_t keys) {
    uint64_t base_sum[8] = {0};
    size_t points = 1;
    memset(batch->key_used, 0, keys);
    memset(batch->key_sums, 0, keys * sizeof(uint64_t[8]));
    for (size_t i = 0; i < batch->count; i++) {
        const prepared_t *prepared = &batch->prepared[i];
        if (!prepared->candidate) {
            continue;
        }
        uint64_t z[2];
        load_limbs(z, randomness + RANDOM_BYTES_PER_ITEM * i, 2);
        z[1] |= (uint64_t)1 << 63; /* never zero: 2^127 <= z < 2^128 < L */
        add_product(base_sum, z, prepared->s);
        add_product(batch->key_sums[prepared->key], z, prepared->k);
        batch->key_used[prepared->key] = 1;
        batch->points[points] = prepared->minus_r;
        batch->scalars[points][0] = z[0];
        batch->scalars[points][1] = z[1];
        batch->scalars[points][2] = 0;
        batch->scalars[points][3] = 0;
        points++;
    }
    for (size_t key = 0; key < keys; key++) {
        if (batch->key_used[key]) {
            batch->points[points] = batch->keys[key].minus_a;
            scalar_reduce512(batch->scalars[points], batch->key_sums[key]);
            points++;
        }
    }
    base_point(&batch->points[0]);
    scalar_reduce512(batch->scalars[0], base_sum);
    point sum;
    if (points - 1 <= INTERLEAVED_POINTS_MAX) {
        sum_interleaved(&sum, batch->scalars[0], batch->points + 1,
                        (const scalar_t *)batch->scalars + 1, points - 1, batch->tables,
                        batch->digits);
        return cofactored_identity(&sum);
    }
    for (size_t i = 0; i < points; i++) {
        point_to_cached(&batch->prepared_points[i], &batch->points[i]);
    }
    sum_buckets(&sum, batch->points, batch->prepared_points, (const scalar_t *)batch->scalars,
                points, &batch->buckets);
    return cofactored_identity(&sum);
}

/* Runs every check but the equation on every item (verdicts[i] = 0 for now); the number of
 * items left to the equation. */
static size_t batch_prepare(batch_t *batch, char *verdicts, size_t *keys_out) {
    size_t ordered = 0, keys = 0, candidates = 0;
    for (size_t i = 0; i < batch->count; i++) {
        verdicts[i] = 0;
        prepared_t *prepared = &batch->prepared[i];
        prepared->candidate =
            batch->items[i].well_formed && prepare_signature(prepared, &batch->items[i]);
        if (prepared->candidate) {
            batch->order[ordered].public_key = batch->items[i].public_key;
            batch->order[ordered].item = i;
            ordered++;
        }
    }
    /* Each distinct key is decoded once; its signatures share its point and its scalar. */
    qsort(batch->order, ordered, sizeof(key_order_t), compare_keys);
    for (size_t j = 0; j < ordered; j++) {
        if (j == 0 || memcmp(batch->order[j].public_key, batch->order[j - 1].public_key,
                             PUBLIC_KEY_BYTES) != 0) {
            batch->keys[keys].valid =
                prepare_key_cached(&batch->keys[keys], batch->order[j].public_key);
            keys++;
        }
        batch->prepared[batch->order[j].item].key = keys - 1;
    }
    for (size_t i = 0; i < batch->count; i++) {
        prepared_t *prepared = &batch->prepared[i];
        if (!prepared->candidate) {
            continue;
        }
        if (!batch->keys[prepared->key].valid) {
            prepared->candidate = 0;
            continue;
        }
        challenge(prepared->k, &batch->items[i]);
        candidates++;
    }
    *keys_out = keys;
    return candidates;
}

/* Fills verdicts[i] (1 valid, 0 not) for every item; randomness NULL checks each alone. */
static void batch_settle(batch_t *batch, const unsigned char *randomness, char *verdicts) {
    size_t keys;
    size_t candidates = batch_prepare(batch, verdicts, &keys);
    if (randomness != NULL && candidates >= BATCH_MIN && equation_batch(batch, randomness, keys)) {
        for (size_t i = 0; i < batch->count; i++) {
            verdicts[i] = (char)batch->prepared[i].candidate;
        }
        return;
    }
    for (size_t i = 0; i < batch->count; i++) {
        const prepared_t *prepared = &batch->prepared[i];
        if (prepared->candidate) {
            verdicts[i] = (char)equation_single(prepared, &batch->keys[prepared->key]);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The module. */

/* Fills batch->items[index] from items[index]; -1 with a TypeError naming the item if it is
 * not a (signature, message, public key) tuple of bytes. */
static int read_item(PyObject *items, Py_ssize_t index, item_t *item) {
    PyObject *entry = PyTuple_GET_ITEM(items, index);
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "verify_batch: item %zd is not a (signature, message, public key) tuple",
                     index);
        return -1;
    }
    PyObject *signature = PyTuple_GET_ITEM(entry, 0);
    PyObject *message = PyTuple_GET_ITEM(entry, 1);
    PyObject *public_key = PyTuple_GET_ITEM(entry, 2);
    if (!PyBytes_Check(signature) || !PyBytes_Check(message) || !PyBytes_Check(public_key)) {
        PyErr_Format(PyExc_TypeError, "verify_batch: item %zd holds something not bytes", index);
        return -1;
    }
    item->signature = (const unsigned char *)PyBytes_AS_STRING(signature);
    item->message = (const unsigned char *)PyBytes_AS_STRING(message);
    item->message_bytes = (size_t)PyBytes_GET_SIZE(message);
    item->public_key = (const unsigned char *)PyBytes_AS_STRING(public_key);
    /* A signature or key of the wrong length never verifies (and is never read). */
    item->well_formed = PyBytes_GET_SIZE(signature) == SIGNATURE_BYTES &&
                        PyBytes_GET_SIZE(public_key) == PUBLIC_KEY_BYTES;
    return 0;
}

/* Allocates batch for the tuple items and reads every item into it; -1 with the exception set.
 * Every pointer is into a bytes object the argument tuple (immutable, held by the caller for
 * the call) holds, so each stays valid while the lock is released. */
static int batch_read(batch_t *batch, PyObject *items) {
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    if (!batch_alloc(batch, (size_t)count)) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        if (read_item(items, index, &batch->items[index]) != 0) {
            batch_free(batch);
            return -1;
        }
    }
    return 0;
}

/* Parses (items, randomness) by format; -1 with the exception set, a ValueError naming the
 * function when randomness is not 16 bytes per item. */
static int parse_randomised(PyObject *args, const char *format, const char *name,
                            PyObject **items, const unsigned char **randomness) {
    const char *bytes;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, format, &PyTuple_Type, items, &bytes, &length)) {
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(*items);
    if (length != RANDOM_BYTES_PER_ITEM * count) {
        PyErr_Format(PyExc_ValueError, "%s: randomness is %zd bytes; %zd items need %zd (16 each)",
                     name, length, count, RANDOM_BYTES_PER_ITEM * count);
        return -1;
    }
    *randomness = (const unsigned char *)bytes;
    return 0;
}

/* Checks the items with the lock released; randomness NULL checks each alone. */
static PyObject *settle_items(PyObject *items, const unsigned char *randomness) {
    batch_t batch;
    if (batch_read(&batch, items) != 0) {
        return NULL;
    }
    PyObject *verdicts = PyBytes_FromStringAndSize(NULL, PyTuple_GET_SIZE(items));
    if (verdicts == NULL) {
        batch_free(&batch);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(verdicts);
    Py_BEGIN_ALLOW_THREADS
    batch_settle(&batch, randomness, out);
    Py_END_ALLOW_THREADS
    batch_free(&batch);
    return verdicts;
}

static PyObject *verify_batch(PyObject *module, PyObject *args) {
    PyObject *items;
    const unsigned char *randomness;
    (void)module;
    if (parse_randomised(args, "O!y#:verify_batch", "verify_batch", &items, &randomness) != 0) {
        return NULL;
    }
    return settle_items(items, randomness);
}

/* Whether every item passes the checks before the equation and the batch equation holds for
 * them all (however few): what verify_batch relies on, for tests. */
static PyObject *equation_holds(PyObject *module, PyObject *args) {
    PyObject *items;
    const unsigned char *randomness;
    batch_t batch;
    (void)module;
    if (parse_randomised(args, "O!y#:equation_holds", "equation_holds", &items, &randomness) !=
            0 ||
        batch_read(&batch, items) != 0) {
        return NULL;
    }
    size_t count = batch.count;
    char *scratch = PyMem_Malloc(count > 0 ? count : 1);
    if (scratch == NULL) {
        batch_free(&batch);
        return PyErr_NoMemory();
    }
    int holds;
    Py_BEGIN_ALLOW_THREADS
    size_t keys;
    size_t candidates = batch_prepare(&batch, scratch, &keys);
    holds = candidates == count && equation_batch(&batch, randomness, keys);
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    batch_free(&batch);
    return PyBool_FromLong(holds);
}

static PyObject *verify_each(PyObject *module, PyObject *args) {
    PyObject *items;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!:verify_each", &PyTuple_Type, &items)) {
        return NULL;
    }
    return settle_items(items, NULL);
}

static PyObject *verify(PyObject *module, PyObject *args) {
    Py_buffer signature, message, public_key;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*:verify", &signature, &message, &public_key)) {
        return NULL;
    }
    int valid = 0;
    if (signature.len == SIGNATURE_BYTES && public_key.len == PUBLIC_KEY_BYTES) {
        item_t item = {signature.buf, message.buf, (size_t)message.len, public_key.buf, 1};
        prepared_t prepared;
        signer_key_t key;
        Py_BEGIN_ALLOW_THREADS
        if (prepare_signature(&prepared, &item) && prepare_key_cached(&key, item.public_key)) {
            challenge(prepared.k, &item);
            valid = equation_single(&prepared, &key);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&signature);
    PyBuffer_Release(&message);
    PyBuffer_Release(&public_key);
    return PyBool_FromLong(valid);
}

/* The table of decoded keys: its size, how many slots hold a key, and the lookups that found
 * their key and that did not since the module loaded or was last cleared. */
static PyObject *key_cache_info(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    size_t filled = 0;
    uint64_t hits, misses;
    PyThread_acquire_lock(key_cache_lock, WAIT_LOCK);
    for (size_t slot = 0; slot < KEY_CACHE_SLOTS; slot++) {
        filled += (size_t)key_cache[slot].filled;
    }
    hits = key_cache_hits;
    misses = key_cache_misses;
    PyThread_release_lock(key_cache_lock);
    return Py_BuildValue("{s:n,s:n,s:K,s:K}", "slots", (Py_ssize_t)KEY_CACHE_SLOTS, "filled",
                         (Py_ssize_t)filled, "hits", (unsigned long long)hits, "misses",
                         (unsigned long long)misses);
}

static PyObject *key_cache_clear(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyThread_acquire_lock(key_cache_lock, WAIT_LOCK);
    memset(key_cache, 0, sizeof key_cache);
    key_cache_hits = 0;
    key_cache_misses = 0;
    PyThread_release_lock(key_cache_lock);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"key_cache_info", key_cache_info, METH_NOARGS,
     "key_cache_info() -> dict: the decoded-key table's slots, filled slots, hits and misses."},
    {"key_cache_clear", key_cache_clear, METH_NOARGS,
     "key_cache_clear() -> None: empties the decoded-key table and zeroes its counts."},
    {"verify", verify, METH_VARARGS,
     "verify(signature, message, public_key) -> bool: whether the signature is valid under "
     "the ledger's rule (consensus/ed25519.py)."},
    {"verify_batch", verify_batch, METH_VARARGS,
     "verify_batch(items, randomness) -> bytes: for each (signature, message, public_key) of "
     "the tuple items, 1 if valid else 0, from one randomised batch equation (16 bytes of "
     "randomness per item) settled by single checks when it fails."},
    {"equation_holds", equation_holds, METH_VARARGS,
     "equation_holds(items, randomness) -> bool: whether every item passes the checks before "
     "the equation and the batch equation holds for them all (for tests)."},
    {"verify_each", verify_each, METH_VARARGS,
     "verify_each(items) -> bytes: verify_batch's verdicts, each signature checked alone."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_ed25519", "The ledger's ed25519 rule, one at a time or in batches.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__ed25519(void) {
    point base;
    base_point(&base);
    odd_multiples(base_table, &base, BASE_TABLE);
    if (key_cache_lock == NULL) {
        key_cache_lock = PyThread_allocate_lock();
        if (key_cache_lock == NULL) {
            return PyErr_NoMemory();
        }
    }
    return PyModule_Create(&module_definition);
}
