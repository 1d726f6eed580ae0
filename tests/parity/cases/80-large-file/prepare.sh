python3 -c '
import hashlib
out = open("big.bin", "wb")
block = b""
for i in range(6 * 1024 * 1024 // 32):
    block = hashlib.sha256(block + i.to_bytes(4, "big")).digest()
    out.write(block)
'
