#!/bin/bash
# Builds, in $1 (removed first), a tree with everything a system backup must keep. As root.
# Used by tests/it/system.rs; each entry names what it is there for.
set -euo pipefail
T=$1
rm -rf "$T"
mkdir -p "$T"
cd "$T"
echo one > xa                                       # two user xattrs, one binary
setfattr -n user.text -v hello xa
setfattr -n user.bin -v 0x00ff0a0102 xa
echo acl > acl                                      # an access ACL
setfacl -m u:4321:rw acl
mkdir dacl                                          # a folder with access + default ACLs
setfacl -m g:777:rx dacl
setfacl -d -m u:4321:rwx dacl
echo in > dacl/inner
cp /usr/bin/true cap                                # a file capability
echo unique-cap >> cap
setcap cap_net_raw+ep cap
echo suid > suid && chmod 4755 suid                 # setuid, setgid
echo sgid > sgid && chmod 2755 sgid
mkdir sgdir && chmod 2775 sgdir && echo x > sgdir/f # a setgid folder
echo ghost > ghost && chown 54321:65432 ghost       # owner unknown to the machine
truncate -s 1G sp1                                  # sparse: 1 GiB and 9 GiB, a few data bytes
printf 'abcd' | dd of=sp1 bs=1 seek=500000000 conv=notrunc status=none
truncate -s 9G sp9
printf 'wxyz' | dd of=sp9 bs=1 seek=4096 conv=notrunc status=none
echo hl > hl1 && ln hl1 hl2                         # a hard-link group
mkfifo fifo                                         # a FIFO, a char and a block device
mknod cdev c 1 7
mknod bdev b 7 200
touch "$(printf 'bad\377name')"                     # a name that is not UTF-8
ln -s "$(printf 't%.0s' $(seq 300))" longlink       # a 300-byte symlink target
mkdir ro && echo inro > ro/f && chmod 555 ro        # a read-only folder with a file inside
echo old > old && touch -d '1970-01-02 00:00:00.123456789' old
echo fut > fut && touch -d '2100-01-01 12:00:00.987654321' fut
