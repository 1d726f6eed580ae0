# git keeps no directory modes: make them here.
mkdir -p d775/sub d700/nested
echo f > d775/f
echo g > d700/g
echo n > d700/nested/n
chmod 0775 d775
chmod 0750 d775/sub
chmod 0700 d700 d700/nested
chmod 0600 d700/g
