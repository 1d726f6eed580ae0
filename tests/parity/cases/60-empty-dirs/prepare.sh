mkdir -p tree/empty-sub tree/full only-empty
chmod 0750 tree/empty-sub
echo f > tree/full/f
