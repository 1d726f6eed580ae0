mkdir -p private sticky sgid-dir
for f in f600 f755 f4755 f2755 f444 private/p sticky/s sgid-dir/g hard1; do echo "$f" > "$f"; done
ln hard1 hard2
# chown first: it clears setuid and setgid bits.
chown -R 1234:5678 .
chmod 0600 f600
chmod 0755 f755
chmod 4755 f4755
chmod 2755 f2755
chmod 0444 f444
chmod 0700 private
chmod 1777 sticky
chmod 2775 sgid-dir
