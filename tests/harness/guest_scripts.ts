/**
 * Shell scripts the guest runs (through the agent) that more than one test needs.
 *
 * @module
 */

/**
 * Guest script: a background process keeps `/mnt/held.txt` open (fd 7 appending, fd 8
 * reading) across commands, so a migration happens while the guest holds open FUSE handles.
 * Each request on /run/held.in is appended through fd 7, then everything new is read back
 * through fd 8 and handed out on /run/held.out.
 */
export const START_HOLDER = `
mkfifo /run/held.in /run/held.out
( exec 7>>/mnt/held.txt 8</mnt/held.txt
  while true; do
    read -r line </run/held.in
    echo "$line" >&7
    cat <&8 >/run/held.out
  done ) </dev/null >/dev/null 2>&1 &
`;

/** Guest script: append `word` through the held fds and print what they read back. */
export function holderRoundTrip(word: string): string {
  return `echo ${word} >/run/held.in && cat /run/held.out`;
}
