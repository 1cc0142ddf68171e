/* util/crc32c.h - CRC-32C (Castagnoli), the checksum of Ferry's on-disk records.
 *
 * Polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final xor
 * 0xFFFFFFFF, as in iSCSI, ext4 and SSE4.2's crc32 instruction:
 * crc32c("123456789") == 0xE3069283. The hardware instruction is used when the
 * CPU has it (checked once, at first use); otherwise a slicing-by-8 table.
 * Thread-safe; no allocation.
 */
#ifndef FERRY_UTIL_CRC32C_H
#define FERRY_UTIL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes at p. */
uint32_t crc32c(const void *p, size_t n);
/* Continue a CRC: crc32c_extend(crc32c(a, na), b, nb) == crc32c(a ++ b). Start with 0. */
uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n);
/* The software path alone (for tests that compare it with the hardware one). */
uint32_t crc32c_extend_sw(uint32_t crc, const void *p, size_t n);
/* 1 if the hardware path is in use. */
int crc32c_hw_available(void);

#endif
