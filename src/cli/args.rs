//! The clap definitions: the first stage of the two-stage CLI. Nothing here reaches the
//! library; `cli::run` turns these into the library's option structs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vault::ops::sweep::PortList;
use vault::{Compression, FullDay, HashAlgo};

/// vault: content-addressed full and incremental tar backups.
///
/// Backups are plain .tar.gz (or .tar.zst) archives that GNU tar can read, plus an SQLite
/// manifest (vault.db) that records every file's digest, so unchanged files are never read
/// twice and deletions, renames and metadata changes are remembered.
#[derive(Debug, Parser)]
#[command(
    name = "vault",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Print one JSON document on stdout at the end; human text and progress go to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors (and the JSON document with --json).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Compute workers of the one pool: walk, read, hash, compress, restore (default: the cores).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// The repository folder.
    #[arg(long, global = true, value_name = "DIR", env = "VAULT_REPO")]
    pub repo: Option<PathBuf>,
    /// Settings file (TOML); default ./vault.toml when present. Flags on the command line win.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (vault backup also creates one in a missing or empty folder).
    Init,
    /// Back up a folder: a full or an incremental snapshot.
    ///
    /// Without --full or --incremental the policy decides: a full when the source has no full
    /// yet, when today is the full day (--full-on, Monday by default) and no full ran today,
    /// or when the chain already holds --max-chain incrementals; an incremental otherwise.
    /// Only files whose size, mtime, ctime, inode or device changed are read (all of them with
    /// --rehash). Exit 3 when some files could not be read (the report names them).
    Backup(BackupArgs),
    /// List snapshots, oldest first.
    Snapshots {
        /// Only the snapshots of this source folder.
        #[arg(long, value_name = "SRC")]
        source: Option<PathBuf>,
    },
    /// List the paths of a snapshot.
    Ls {
        /// A snapshot id, a unique id prefix, or `latest`.
        snap: String,
        /// The source `latest` refers to, when the repository holds several.
        #[arg(long, value_name = "SRC")]
        source: Option<PathBuf>,
    },
    /// Find a path (a glob, or a content digest) in every snapshot; unchanged runs are one line.
    ///
    /// Lists every snapshot in which a matching path exists, with its size, mtime and digest; a
    /// run of snapshots in which it stayed the same is one line. PATTERN is a glob (`*`, `?`, `[abc]`, `**` across folders; quote it from the shell).
    /// Without a `/` it matches a path's last component (`nginx.conf`, `*.conf`); with a leading
    /// `/`, the whole path, source folder included (`/etc/nginx/*.conf`); otherwise the path
    /// inside the source (`etc/**/*.conf`). Read from the manifest alone: no archive is opened.
    Find(FindArgs),
    /// The history of one path, newest first: added, modified (and what), deleted.
    ///
    /// One line per change: added; modified, and what (content, mode, owner, mtime, xattrs,
    /// type); deleted. Snapshots in which nothing visible changed are left out. PATH is inside the source (`etc/fstab`), or absolute under a source folder
    /// (`/etc/fstab`), which then also picks the source. `vault cat SNAP PATH` prints any
    /// version; `vault restore SNAP --include PATH` restores it.
    Log {
        /// The path.
        path: PathBuf,
        /// The source, when the repository holds several and PATH does not say.
        #[arg(long, value_name = "SRC")]
        source: Option<PathBuf>,
    },
    /// Write one file of a snapshot to standard output, streamed and digest-checked.
    ///
    /// For pipes such as `vault cat latest etc/fstab | diff - /etc/fstab`. The content streams from its archive (any size, little memory) and is checked against
    /// the manifest's digest at the end: a damaged archive is exit 1, naming it, and what was
    /// written before must be thrown away. PATH as for `vault log`.
    Cat {
        /// A snapshot id, a unique id prefix, or `latest`.
        snap: String,
        /// The file.
        path: PathBuf,
        /// The source `latest` refers to, when the repository holds several.
        #[arg(long, value_name = "SRC")]
        source: Option<PathBuf>,
    },
    /// Restore a snapshot into a folder: exactly the tree as it was, checked digest by digest.
    ///
    /// A non-empty target is refused unless --force is given. Nothing is ever written outside
    /// the target, and symlinks are never followed. A path that cannot be restored (damaged
    /// content, a folder that cannot be written) is named and the rest is restored: exit 3.
    Restore(RestoreArgs),
    /// Verify the manifest and that every archive is present and intact.
    ///
    /// Exit 1, listing the affected snapshots, on any problem. Leftover *.partial files of an
    /// interrupted backup are removed and reported, not counted as damage.
    Check {
        /// Also decompress every archive and check every stored file's digest.
        #[arg(long)]
        read_data: bool,
        /// Check a pushed copy instead (sftp://… or rclone:…): read every archive in place,
        /// decrypting an encrypted one with --age-identity, and check its size and BLAKE3
        /// against the copy's manifest. Nothing is written but a temporary manifest in $TMPDIR.
        #[arg(long, value_name = "DEST")]
        remote: Option<String>,
        /// With --remote: the age identity (or SSH private key) of an encrypted copy.
        #[arg(long, value_name = "FILE", requires = "remote")]
        age_identity: Option<PathBuf>,
        #[command(flatten)]
        ssh: SshFlags,
    },
    /// Delete old snapshots, whole chains at a time: keep the newest N chains, or what calendar
    /// rules keep.
    ///
    /// --keep-fulls N keeps the newest N chains (a full and its incrementals) per source. The
    /// --keep-last, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly and
    /// --keep-within rules work as restic's, per source:
    /// a snapshot any rule keeps is kept, and a chain is deleted only when none of its snapshots
    /// is (--dry-run shows each snapshot's rules, or "removed").
    Forget(ForgetArgs),
    /// Sweep hosts: which are up (ICMP echo, and/or TCP connect probes).
    ///
    /// TARGET: an address (127.0.0.1, ::1), a CIDR block (127.0.0.0/24; network and broadcast
    /// addresses left out), a range (127.0.0.1-20 or 127.0.0.1-127.0.1.4) or a host name. One
    /// socket sends every ICMP probe, paced by --rate, and replies are matched as they come, so a
    /// sweep of unanswering hosts takes about one timeout, not one per host. Exit 0 when every
    /// host is up, 3 when some are down.
    Scan(ScanArgs),
    /// Run a command on many hosts over SSH, in parallel: `vault ssh HOST... -- COMMAND`.
    ///
    /// Prints, per host in the order given, `[host] OUT:` and `[host] ERROR:` blocks and the exit
    /// status. Host keys are checked against --known-hosts: an unknown host is refused unless
    /// --accept-new; a changed key is always refused. Authentication: the SSH agent, then -i
    /// keys, then a password from --password-env, --password-file or --ask-password (never from
    /// the command line). Exit 3 when any host failed or exited non-zero.
    Ssh(SshArgs),
    /// Send a UTF-8 mail: the body from stdin, or --body.
    ///
    /// Exit 1, naming the server or the address, when the server cannot be reached or refuses
    /// a recipient.
    Mail {
        /// Recipient: an address or `Name <address>` (repeatable).
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        #[arg(long, value_name = "TEXT", default_value = "")]
        subject: String,
        /// The body (default: read stdin).
        #[arg(long, value_name = "TEXT")]
        body: Option<String>,
        #[command(flatten)]
        mail: MailFlags,
    },
    /// Copy the repository to sftp://[user@]host[:port]/path or rclone:REMOTE:PATH.
    ///
    /// Sends only the archives the destination lacks, each under a temporary name, checked,
    /// then renamed; the manifest goes last. An interrupted push, run again, sends only what
    /// is missing. Uses the same SSH flags as `vault ssh`.
    Push {
        /// sftp://[user@]host[:port]/path or rclone:REMOTE:PATH
        dest: String,
        /// Read every archive back and check its BLAKE3: each one sent, before it is renamed
        /// into place, and each one already there (a damaged one is sent again).
        #[arg(long)]
        verify: bool,
        /// Replace the remote manifest even when it holds snapshots this repository lacks
        /// (an older copy pushed over a newer one) or belongs to another repository.
        #[arg(long)]
        force: bool,
        /// Encrypt every file sent to this age recipient (`age1…`, or an SSH ed25519/RSA
        /// public key line); repeat for several. Archives go as NAME.age, the manifest as
        /// vault.db.age. Only public keys are needed: this host cannot read the copy back.
        #[arg(long, value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
        /// Recipients from a file, one a line (`#` comments), as `age -R` reads it.
        #[arg(long, value_name = "FILE")]
        recipients_file: Vec<PathBuf>,
        #[command(flatten)]
        ssh: SshFlags,
    },
    /// Fetch a repository from sftp://… or rclone:… into --repo (empty, or an earlier pull).
    ///
    /// An encrypted copy (pushed with --encrypt-to) needs --age-identity; a key that cannot
    /// open it fails before anything is written.
    Pull {
        /// sftp://[user@]host[:port]/path or rclone:REMOTE:PATH
        src: String,
        /// The age identity file (or SSH private key; --passphrase-env unlocks an encrypted
        /// one) that decrypts an encrypted copy.
        #[arg(long, value_name = "FILE")]
        age_identity: Option<PathBuf>,
        #[command(flatten)]
        ssh: SshFlags,
    },
    /// Write a new age identity file (mode 0600) for encrypted pushes and print its recipient.
    ///
    /// Keep the identity file offline (it decrypts every copy); give the printed `age1…`
    /// recipient to `vault push --encrypt-to` on the backup host.
    Keygen {
        /// Where to write the identity; an existing file is never overwritten.
        output: PathBuf,
    },
    /// Watch a folder and back it up after changes settle, until SIGINT/SIGTERM.
    ///
    /// Runs the normal backup (same flags and policy as `vault backup`) but re-examines only
    /// the folders that change events touched; a full rescan runs at start, on an event queue
    /// overflow, and every --rescan-interval. Nothing is recorded while nothing changes. The
    /// first SIGINT/SIGTERM lets a running backup finish, a second abandons it cleanly; exit 0.
    Watch(WatchArgs),
    /// Run the config file's jobs, sweeps and alerts in one process, until SIGINT/SIGTERM.
    ///
    /// `[job.NAME]` with `every = "DUR"` (at start-up, then DUR after each start) or
    /// `at = "mon..fri 01:30"` (or a cron pattern); `[fleet]` with `every`, `at` or
    /// `on_up = true` (a host a sweep sees come up is backed up when its last backup is older
    /// than `max_age`); `[sweep.NAME]` with `every`, alerting on host transitions. Jobs run one
    /// at a time on one pool while sweeps go on; `max_age` alerts once when a job is overdue.
    /// SIGHUP reloads the config (a bad one is kept out, one line says why). The first
    /// SIGINT/SIGTERM lets a running job finish and stops (exit 0); a second abandons it
    /// cleanly. See docs/daemon.md.
    Daemon(DaemonArgs),
    /// Print a shell completion script: `vault completions bash > /etc/bash_completion.d/vault`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (vault.1 and vault-COMMAND.1) into DIR.
    Man {
        /// The folder, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Show what changed between two snapshots (added, modified, deleted paths).
    Diff {
        /// The older snapshot (id, prefix or `latest`).
        snap_a: String,
        /// The newer snapshot (id, prefix or `latest`).
        snap_b: String,
        /// The source `latest` refers to, when the repository holds several.
        #[arg(long, value_name = "SRC")]
        source: Option<PathBuf>,
    },
}

/// SMTP flags, shared by `mail` and every `--alert-to`.
#[derive(Debug, Args)]
pub struct MailFlags {
    /// The SMTP server.
    #[arg(long, value_name = "URL", default_value = "smtp://127.0.0.1:25")]
    pub smtp: String,
    /// Upgrade the connection with STARTTLS (refuse a server that cannot).
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    /// Use TLS from the start (SMTPS, usually port 465).
    #[arg(long)]
    pub tls: bool,
    /// Authenticate as USER (password from --password-env or --password-file).
    #[arg(long, value_name = "USER")]
    pub smtp_user: Option<String>,
    /// Read the SMTP password from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Read the SMTP password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Also trust this CA certificate (PEM), e.g. a self-signed server's.
    #[arg(long, value_name = "FILE")]
    pub smtp_ca: Option<PathBuf>,
    /// The sender: an address or `Name <address>`.
    #[arg(long, value_name = "ADDR", default_value = "vault <vault@localhost>")]
    pub from: String,
    /// Give up on a server that does not answer within this time (each SMTP step).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = vault::time::parse_duration)]
    pub smtp_timeout: Duration,
}

/// SSH connection flags, shared by `ssh`, `push` and `pull`.
#[derive(Debug, Args)]
pub struct SshFlags {
    /// Private key file to try (repeatable).
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    pub identity: Vec<PathBuf>,
    /// Read the key passphrase from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Read the password from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Prompt for the password on the terminal.
    #[arg(long)]
    pub ask_password: bool,
    /// Do not use the SSH agent.
    #[arg(long)]
    pub no_agent: bool,
    /// The known_hosts file (default ~/.ssh/known_hosts; hashed entries are understood).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the keys of hosts not yet in known_hosts. A changed key is still refused.
    #[arg(long)]
    pub accept_new: bool,
    /// Limit for connect, handshake, authentication and the command, per host.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = vault::time::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Targets: [user@]host[:port].
    #[arg(required_unless_present = "hosts_file")]
    pub targets: Vec<String>,
    /// The command to run (after --).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Read more targets from FILE, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// How many hosts at a time (the pool's network lane).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    #[command(flatten)]
    pub ssh: SshFlags,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Addresses, CIDR blocks, ranges or host names.
    pub targets: Vec<String>,
    /// Read more targets from FILE, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Probe these TCP ports (e.g. 22,80,8000-8010): open, closed (refused) or filtered (no answer).
    /// Without --icmp, no ICMP is sent then.
    #[arg(long, value_name = "PORTS")]
    pub tcp: Option<PortList>,
    /// Send ICMP echo as well as the --tcp probes.
    #[arg(long)]
    pub icmp: bool,
    /// How long to wait for an answer (grows 1.5x with each retry).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = vault::time::parse_duration)]
    pub timeout: Duration,
    /// Probes to resend to a host that did not answer.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: u32,
    /// Probes per second.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub rate: u32,
    /// Repeat the sweep every DUR until interrupted, reporting each state change once.
    #[arg(long, value_name = "DUR", value_parser = vault::time::parse_duration)]
    pub every: Option<Duration>,
    /// Remember host states in DIR/scan.db and report up->down and down->up (--repo works too).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Allow sweeping more than 65,536 addresses.
    #[arg(long)]
    pub yes: bool,
    /// Workers for name lookups and TCP probes (the pool's network lane; default: the cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// Mail each state change (up->down, down->up) to ADDR (repeatable; needs --state or --repo).
    #[arg(long, value_name = "ADDR")]
    pub alert_to: Vec<String>,
    #[command(flatten)]
    pub mail: MailFlags,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// The glob to match (see above); may be left out with --content.
    #[arg(required_unless_present = "content")]
    pub pattern: Option<String>,
    /// Only paths whose content has this digest (hex, as `vault ls --json` shows it), or a
    /// digest's first 8 or more digits (an even number).
    #[arg(long, value_name = "DIGEST")]
    pub content: Option<String>,
    /// Only this source folder's snapshots.
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,
    /// Only snapshots taken at or after TIME (RFC 3339 or `YYYY-MM-DD[ HH:MM[:SS]]` local time).
    #[arg(long, value_name = "TIME", value_parser = vault::time::parse_time)]
    pub since: Option<i64>,
    /// Only snapshots taken at or before TIME (whole seconds cover that whole second).
    #[arg(long, value_name = "TIME", value_parser = vault::time::parse_time)]
    pub until: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A snapshot id, a unique id prefix, or `latest` (or use --at).
    #[arg(required_unless_present = "at", conflicts_with = "at")]
    pub snap: Option<String>,
    /// Instead of SNAP: the newest snapshot taken at or before TIME (RFC 3339 or
    /// `YYYY-MM-DD[ HH:MM[:SS]]` local time).
    #[arg(long, value_name = "TIME", value_parser = vault::time::parse_time)]
    pub at: Option<i64>,
    /// The folder to restore into; it ends up holding the source tree as it was. Or
    /// ssh://[user@]host[:port]/path: a missing or empty folder on a host with GNU tar.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// The source `latest`/--at refers to, when the repository holds several.
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,
    /// Restore only this path (relative to the source) and what is below it. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub include: Vec<PathBuf>,
    /// Restore into a non-empty target, overwriting what the snapshot has.
    #[arg(long)]
    pub force: bool,
    /// With --force: also remove from the target what the snapshot does not have.
    #[arg(long, requires = "force")]
    pub delete: bool,
    /// List what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Clear setuid/setgid bits even when running as root. (Root restores exact modes by
    /// default, as GNU tar -p does; a non-root restore always clears them.)
    #[arg(long)]
    pub no_setid: bool,
    /// Accepted for old scripts: exact modes are now the default for root.
    #[arg(long, hide = true, conflicts_with = "no_setid")]
    pub preserve_setid: bool,
    /// For an ssh:// target: how to connect (as `vault ssh`).
    #[command(
        flatten,
        next_help_heading = "Restore to a host (--target ssh://[user@]host[:port]/path)"
    )]
    pub ssh: SshFlags,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// How many chains (fulls) to keep per source.
    #[arg(long, value_name = "N", conflicts_with_all = ["keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within"])]
    pub keep_fulls: Option<u64>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u64>,
    /// Keep the newest snapshot of each of the N newest days that have one (local time).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u64>,
    /// The same for ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u64>,
    /// The same for months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u64>,
    /// The same for years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u64>,
    /// Keep every snapshot at most DUR older than the source's newest one.
    #[arg(long, value_name = "DUR", value_parser = vault::time::parse_duration)]
    pub keep_within: Option<Duration>,
    /// Only this source (a folder, or a source key as `vault snapshots` shows it).
    #[arg(long, value_name = "SRC")]
    pub source: Option<PathBuf>,
    /// List what would be removed (with the rule that keeps each snapshot); remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to DUR for a running backup to release the repository (default: fail at once).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = vault::time::parse_duration)]
    pub lock_wait: Duration,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Print the jobs and when each runs next, then exit.
    #[arg(long)]
    pub print_schedule: bool,
    /// Serve the status page, /api/status and /metrics on ADDR (`127.0.0.1:8080`, or a port
    /// alone for 127.0.0.1). Only loopback addresses unless --listen-public.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow --listen on an address other hosts can reach (the page is read-only and has no
    /// login: put it behind a proxy that authenticates).
    #[arg(long, requires = "listen")]
    pub listen_public: bool,
    /// Hosts a fleet job connects to, lists and fetches at once (the network lane's size).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
}

/// `--listen`: `ADDR:PORT`, or a port alone for 127.0.0.1.
fn listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("bad address '{s}': expected e.g. 127.0.0.1:8080 or 8080"))
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub backup: BackupArgs,
    /// How long changes must settle before a backup runs.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = vault::time::parse_duration)]
    pub debounce: Duration,
    /// A full rescan at least this often, to catch what events missed.
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = vault::time::parse_duration)]
    pub rescan_interval: Duration,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The folder to back up: a local path, or ssh://[user@]host[:port]/path on a host that
    /// has OpenSSH and GNU find and tar (or take it from --job, or use --stdin, or --host).
    #[arg(required_unless_present_any = ["job", "stdin", "host", "hosts_file", "sweep", "fleet"])]
    pub src: Option<PathBuf>,
    /// Back up --path on this host over SSH ([user@]host[:port]; repeatable): a fleet run.
    #[arg(long, value_name = "TARGET", conflicts_with_all = ["src", "stdin"])]
    pub host: Vec<String>,
    /// Read more --host targets from FILE, one per line (# starts a comment).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["src", "stdin"])]
    pub hosts_file: Option<PathBuf>,
    /// Back up the hosts and folders of the config file's [fleet] (a fleet run).
    #[arg(long, conflicts_with_all = ["src", "stdin", "job"])]
    pub fleet: bool,
    /// Sweep [user@]CIDR[:port] (e.g. root@127.0.0.0/28:22) and back up every address whose
    /// SSH port answers (repeatable). A fleet run, as --host.
    #[arg(long, value_name = "TARGET", conflicts_with_all = ["src", "stdin"])]
    pub sweep: Vec<String>,
    /// With --host/--hosts-file: first probe each host's SSH port and back up only the hosts
    /// that answer (the others are listed as down, not failed).
    #[arg(long)]
    pub up_from_scan: bool,
    /// With --host/--hosts-file: the absolute folder to back up on every host (repeatable).
    #[arg(long, value_name = "PATH")]
    pub path: Vec<String>,
    /// With --host/--hosts-file: how many hosts to connect, list and fetch at a time.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Run the job NAME of the config file ([job.NAME]: source, repo, excludes, …).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Force a full snapshot.
    #[arg(long, conflicts_with = "incremental")]
    pub full: bool,
    /// Force an incremental snapshot (needs a full of this source).
    #[arg(long)]
    pub incremental: bool,
    /// The weekday of the policy's full: mon (default) … sun, or never.
    #[arg(long, value_name = "DAY", default_value = "mon")]
    pub full_on: FullDay,
    /// Start a new full after N incrementals.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_chain: u64,
    /// Archive codec: gzip (.tar.gz), zstd (.tar.zst) or none (.tar).
    #[arg(long, value_name = "CODEC", default_value = "gzip")]
    pub compression: Compression,
    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Content digest for a new chain: blake3 (default) or md5; fixed per chain.
    #[arg(long, value_name = "ALGO")]
    pub hash: Option<HashAlgo>,
    /// Read and hash every file instead of trusting unchanged stat data.
    #[arg(long)]
    pub rehash: bool,
    /// Leave out paths matching GLOB (relative to SRC; `*` also matches `/`; a leading `/`
    /// is the root of SRC, so `/cache` is SRC/cache only). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Leave out paths matching the patterns in FILE: gitignore syntax, one a line, `!`
    /// re-includes, a leading `/` anchors at SRC, a trailing `/` matches folders only.
    /// Repeatable.
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out the contents of folders that hold a valid CACHEDIR.TAG (the folder and the
    /// tag file are kept).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out the contents of folders that hold a file named NAME (the folder and NAME are
    /// kept). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Stay on SRC's file system: folders where another one is mounted are recorded empty.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up standard input as one file (`pg_dump db | vault backup --stdin …`), in a
    /// source of its own named by --source-name; it is staged in the repository first.
    #[arg(long, conflicts_with_all = ["src", "job"])]
    pub stdin: bool,
    /// With --stdin: the file's name in the snapshot.
    #[arg(long, value_name = "NAME", requires = "stdin", default_value = "stdin")]
    pub stdin_name: String,
    /// With --stdin: the source's name (`restore --source NAME`); snapshots show it as
    /// stdin:NAME.
    #[arg(long, value_name = "NAME", requires = "stdin", default_value = "stdin")]
    pub source_name: String,
    /// Print what would be read and recorded; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to DUR for another backup to release the repository (default: fail at once,
    /// naming the process that holds it).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = vault::time::parse_duration)]
    pub lock_wait: Duration,
    /// Record the snapshot at TIME instead of now (RFC 3339 or `YYYY-MM-DD[ HH:MM[:SS]]` local
    /// time), for imports of old archives; refused if older than the source's newest snapshot.
    /// The full-day policy looks at TIME's weekday.
    #[arg(long, value_name = "TIME", value_parser = vault::time::parse_time)]
    pub time: Option<i64>,
    /// From the job's `keep` with `forget_after = true`: forget by these rules after the backup.
    #[arg(skip)]
    pub forget_after: Option<vault::engine::retention::KeepRules>,
    /// Mail a summary to ADDR when the backup ends, whatever the outcome (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub alert_to: Vec<String>,
    #[command(flatten)]
    pub mail: MailFlags,
    #[command(flatten)]
    pub ssh: SourceSshFlags,
}

/// SSH flags of a remote source (`ssh://…`): those of `vault ssh`, with the password flags
/// named apart from the SMTP ones.
#[derive(Debug, Args)]
#[command(next_help_heading = "Remote source (SRC is ssh://[user@]host[:port]/path)")]
pub struct SourceSshFlags {
    /// Private key file to try (repeatable).
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    pub identity: Vec<PathBuf>,
    /// Read the key passphrase from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Read the SSH password from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub ssh_password_env: Option<String>,
    /// Read the SSH password from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub ssh_password_file: Option<PathBuf>,
    /// Do not use the SSH agent.
    #[arg(long)]
    pub no_agent: bool,
    /// The known_hosts file (default ~/.ssh/known_hosts; hashed entries are understood).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the keys of hosts not yet in known_hosts. A changed key is still refused.
    #[arg(long)]
    pub accept_new: bool,
    /// Give up on a host that sends nothing for DUR (connecting, listing, fetching).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = vault::time::parse_duration)]
    pub ssh_timeout: Duration,
}

impl SourceSshFlags {
    /// The same settings as `vault ssh`'s flags.
    pub fn as_ssh_flags(&self) -> SshFlags {
        SshFlags {
            identity: self.identity.clone(),
            passphrase_env: self.passphrase_env.clone(),
            password_env: self.ssh_password_env.clone(),
            password_file: self.ssh_password_file.clone(),
            ask_password: false,
            no_agent: self.no_agent,
            known_hosts: self.known_hosts.clone(),
            accept_new: self.accept_new,
            timeout: self.ssh_timeout,
        }
    }
}
