mkdir -p xdir
echo x > xattr-file
echo y > xdir/inner
python3 -c '
import os
os.setxattr("xattr-file", "user.parity", b"file-value")
os.setxattr("xdir", "user.parity", b"dir-value")
os.setxattr("xdir/inner", "user.other", b"inner-value")
'
