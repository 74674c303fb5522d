/*
 * sha256.h - SHA-256 (FIPS 180-4), for fingerprints of keys and requests
 * that the tools compute: the same bytes give the same name everywhere.
 */
#ifndef ONCE_SHA256_H
#define ONCE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX (2 * SHA256_BYTES)

struct sha256 {
	uint32_t h[8];
	uint64_t bytes;		/* hashed so far */
	unsigned char block[64];
	size_t used;		/* bytes waiting in block */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
/* The digest as SHA256_HEX lowercase hex digits and a NUL. */
void sha256_hex(struct sha256 *s, char out[SHA256_HEX + 1]);

/*
 * The name a key is given after the SHA-256 of its bytes ("sha256-HEX":
 * once --hash-key names keys so, oncectl show --hash-key finds them).
 */
#define SHA256_NAME_PREFIX "sha256-"
#define SHA256_NAME_LEN (sizeof(SHA256_NAME_PREFIX) - 1 + SHA256_HEX)
void sha256_name(const void *p, size_t len, char out[SHA256_NAME_LEN + 1]);

#endif
