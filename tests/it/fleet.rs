//! Remote sources and fleet backups over SSH: real OpenSSH servers, each on its own 127.0.0.x
//! address and in a mount namespace of its own, where a different tree is bind-mounted on the
//! same path, so that `--path` means a different tree on every host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::Sshd;

/// Hosts that all trust one client key, each serving `trees[i]` at `mnt`.
struct Fleet {
    t: tempfile::TempDir,
    hosts: Vec<Sshd>,
    addrs: Vec<String>,
    trees: Vec<PathBuf>,
    mnt: PathBuf,
}

impl Fleet {
    /// `n` hosts on 127.0.0.`first`.., each with a tree of `files` files.
    fn start(n: usize, first: u8, files: usize) -> Fleet {
        Fleet::start_as(n, first, files, &[])
    }

    /// As [`Fleet::start`]; the hosts lack the tools `hidden` (`false` stands in for them).
    fn start_as(n: usize, first: u8, files: usize, hidden: &'static [&'static str]) -> Fleet {
        let t = tempfile::tempdir().unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(t.path().join("id"))
            .status()
            .unwrap();
        assert!(st.success());
        let mnt = t.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let (mut hosts, mut addrs, mut trees) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let tree = t.path().join(format!("host{i}"));
            make_tree(&tree, i, files);
            let addr = format!("127.0.0.{}", first as usize + i);
            let key = t.path().join("id.pub");
            hosts.push(match hidden {
                [] => Sshd::start_host(&addr, &key, Some((&tree, &mnt))),
                _ => Sshd::start_host_without(&addr, &key, (&tree, &mnt), hidden),
            });
            addrs.push(addr);
            trees.push(tree);
        }
        let f = Fleet {
            t,
            hosts,
            addrs,
            trees,
            mnt,
        };
        let known: String = (0..n).map(|i| f.hosts[i].known_line(&f.addrs[i])).collect();
        fs::write(f.path("kh"), known).unwrap();
        let list: String = (0..n).map(|i| f.target(i) + "\n").collect();
        fs::write(f.path("hosts"), format!("# the fleet\n{list}")).unwrap();
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    fn target(&self, i: usize) -> String {
        format!("root@{}:{}", self.addrs[i], self.hosts[i].port)
    }

    /// The source key of host `i`'s tree.
    fn source(&self, i: usize) -> String {
        format!(
            "{}:{}:{}",
            self.addrs[i],
            self.hosts[i].port,
            self.mnt.display()
        )
    }

    /// The SSH flags every run here takes: the client key, the hosts' keys, no agent.
    fn ssh_flags(&self) -> Vec<String> {
        let (id, kh) = (self.path("id"), self.path("kh"));
        ["-i", p(&id), "--known-hosts", p(&kh), "--no-agent"]
            .map(String::from)
            .to_vec()
    }

    /// `backup ssh://HOST/MNT --repo REPO` of host `i`, with the SSH flags.
    fn one(&self, i: usize, repo: &Path) -> Vec<String> {
        let url = format!("ssh://{}{}", self.target(i), self.mnt.display());
        let mut a = ["backup", &url, "--repo", p(repo)]
            .map(String::from)
            .to_vec();
        a.extend(self.ssh_flags());
        a
    }

    /// `vault backup --hosts-file … --path MNT` into `repo`, plus `extra`.
    fn backup(&self, repo: &Path, extra: &[&str]) -> Run {
        let hosts = self.path("hosts");
        let mut a = ["backup", "--hosts-file", p(&hosts), "--path", p(&self.mnt)]
            .map(String::from)
            .to_vec();
        a.extend(["--repo", p(repo), "--full-on", "never", "--json"].map(String::from));
        a.extend(self.ssh_flags());
        a.extend(extra.iter().map(|s| s.to_string()));
        vault(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// `files` files in 20 folders, contents that differ per host.
fn make_tree(dir: &Path, host: usize, files: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        let body = format!("host {host} file {i}\n").repeat(i % 7 + 1);
        write(dir.join(format!("d{:02}/f{i:04}.txt", i % 20)), body);
    }
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Every kind of change; gives the bytes of the files a backup must read after it.
fn change(tree: &Path) -> u64 {
    let edited = tree.join("d00/f0000.txt");
    fs::write(&edited, "edited\n").unwrap();
    write(tree.join("added/new.txt"), "a new file\n");
    fs::remove_file(tree.join("d01/f0001.txt")).unwrap();
    fs::rename(tree.join("d02/f0002.txt"), tree.join("d02/renamed.txt")).unwrap();
    let chmodded = tree.join("d03/f0003.txt");
    fs::set_permissions(&chmodded, fs::Permissions::from_mode(0o600)).unwrap();
    let touched = tree.join("d04/f0004.txt");
    set_mtime(&touched, 1_600_000_000, 5);
    [
        &edited,
        &tree.join("added/new.txt"),
        &tree.join("d02/renamed.txt"),
        &chmodded,
        &touched,
    ]
    .iter()
    .map(|p| size(p))
    .sum()
}

fn restore(repo: &Path, snap: &str, target: &Path) {
    vault_ok(
        &[
            "restore",
            snap,
            "--repo",
            p(repo),
            "--target",
            p(target),
            "-q",
        ],
        0,
    );
}

#[test]
fn four_hosts_full_then_incremental_fetch_only_changes_and_restore_exactly() {
    if !require_root("sshd in mount namespaces") {
        return;
    }
    let f = Fleet::start(4, 11, 2000);
    let repo = f.path("repo");
    let r = f.backup(&repo, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = r.json()["hosts"].as_array().unwrap().clone();
    assert_eq!(first.len(), 4);
    for (i, h) in first.iter().enumerate() {
        assert_eq!(h["source"], f.source(i), "{h}");
        assert_eq!(h["kind"], "full", "{h}");
        assert_eq!(h["stats"]["files"], 2020, "{h}");
        assert_eq!(h["stats"]["remote"]["fetched_files"], 2000, "{h}");
        copy_tree(&f.trees[i], &f.path(&format!("then{i}")));
    }
    let want: Vec<u64> = f.trees.iter().map(|t| change(t)).collect();
    let r = f.backup(&repo, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let second = r.json()["hosts"].as_array().unwrap().clone();
    for (i, h) in second.iter().enumerate() {
        let s = &h["stats"];
        assert_eq!(h["kind"], "incremental", "{h}");
        // New: a folder, its file and the renamed file; changed: three files and the two
        // folders that lost one.
        assert_eq!(
            (s["new"].as_u64(), s["changed"].as_u64()),
            (Some(3), Some(5)),
            "{h}"
        );
        assert_eq!(s["deleted"], 2, "{h}");
        assert_eq!(s["remote"]["fetched_files"], 5, "{h}");
        assert_eq!(s["remote"]["fetched_bytes"], want[i], "{h}");
        // Only the changed files come over the wire (plus tar's headers and padding).
        let got = s["remote"]["received_bytes"].as_u64().unwrap();
        assert!(got < 5 * 1024 + 10_240 + want[i], "{got} {h}");
    }
    for i in 0..4 {
        let (then, now) = (
            f.path(&format!("out-then{i}")),
            f.path(&format!("out-now{i}")),
        );
        restore(&repo, first[i]["snapshot"].as_str().unwrap(), &then);
        assert_same_tree(&f.path(&format!("then{i}")), &then);
        restore(&repo, second[i]["snapshot"].as_str().unwrap(), &now);
        assert_same_tree(&f.trees[i], &now);
    }
    // The hosts' trees differ, and each source is listed under its host.
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 8);
    let restored = fs::read_to_string(f.path("out-now3/d05/f0005.txt")).unwrap();
    assert!(restored.starts_with("host 3 file 5"), "{restored}");
}

#[test]
fn a_host_that_is_down_is_reported_and_alerted_and_the_others_are_recorded() {
    if !require_root("sshd in mount namespaces") || !crate::mail::postfix_ready() {
        return;
    }
    crate::mail::fresh_mailbox("vaultfleet");
    let mut f = Fleet::start(4, 21, 50);
    f.hosts[3].kill_all();
    let repo = f.path("repo");
    let r = f.backup(&repo, &["--alert-to", "vaultfleet@localhost"]);
    assert_eq!(r.code, 3, "{r:?}");
    let hosts = r.json()["hosts"].as_array().unwrap().clone();
    for h in &hosts[..3] {
        assert!(h["snapshot"].is_string() && h["error"].is_null(), "{h}");
    }
    assert!(hosts[3]["snapshot"].is_null(), "{}", hosts[3]);
    let err = hosts[3]["error"].as_str().unwrap();
    assert!(err.contains("cannot connect"), "{err}");
    let mails = crate::mail::mailbox("vaultfleet", 1);
    assert_eq!(mails.len(), 1, "{mails:?}");
    let subject = mails[0]["subject"].as_str().unwrap();
    assert!(
        subject.contains(&f.source(3)) && subject.contains("FAILED"),
        "{subject}"
    );
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 3);

    // --up-from-scan: the host that does not answer is left out, not failed.
    let r = f.backup(&repo, &["--up-from-scan"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["hosts"].as_array().unwrap().len(), 3, "{j}");
    assert_eq!(j["down"], serde_json::json!([f.target(3)]), "{j}");
    // The same from [fleet] of a config file.
    let cfg = f.path("vault.toml");
    let hosts: Vec<String> = (0..4).map(|i| format!("\"{}\"", f.target(i))).collect();
    let toml = format!(
        "[fleet]\nhosts = [{}]\npaths = [\"{}\"]\nup_from_scan = true\nidentity = [\"{}\"]\n\
         known_hosts = \"{}\"\nrepo = \"{}\"\n",
        hosts.join(", "),
        f.mnt.display(),
        f.path("id").display(),
        f.path("kh").display(),
        repo.display()
    );
    fs::write(&cfg, toml).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    let r = vault(&[
        "backup",
        "--fleet",
        "--config",
        p(&cfg),
        "--no-agent",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["hosts"].as_array().unwrap().len(), 3);
    // --sweep: the addresses of a block whose SSH port answers (only host 0 listens on its
    // port there).
    let block = format!("root@127.0.0.16/28:{}", f.hosts[0].port);
    let (id, kh) = (f.path("id"), f.path("kh"));
    let a = [
        "backup",
        "--sweep",
        &block,
        "--path",
        p(&f.mnt),
        "--repo",
        p(&repo),
        "-i",
        p(&id),
        "--known-hosts",
        p(&kh),
        "--no-agent",
        "--json",
    ];
    let j = vault_ok(&a, 0).json();
    let sources: Vec<&str> = j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, [f.source(0)]);
}

/// Entries of the repository folder whose names start with `prefix`.
fn named(repo: &Path, prefix: &str) -> usize {
    fs::read_dir(repo)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .count()
}

#[test]
fn a_host_killed_mid_transfer_leaves_nothing_and_the_next_run_succeeds() {
    if !require_root("sshd in mount namespaces") {
        return;
    }
    let mut f = Fleet::start(1, 31, 200);
    // A large file (sparse here, 600 MB over the wire) keeps the transfer going.
    let big = fs::File::create(f.trees[0].join("zz-large.bin")).unwrap();
    big.set_len(600 << 20).unwrap();
    let repo = f.path("repo");
    vault_ok(&["init", "--repo", p(&repo)], 0);
    let mut args = f.one(0, &repo);
    args.push("-q".into());
    let child = Command::new(vault_bin())
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // The small files are staged (in the staging folder's pack) once the fetch has begun.
    let staged = |e: &fs::DirEntry| {
        let pack = fs::metadata(e.path().join("pack"));
        e.file_name().to_string_lossy().starts_with(".fetch-") && pack.is_ok_and(|m| m.len() > 0)
    };
    while !fs::read_dir(&repo).unwrap().flatten().any(|e| staged(&e)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the fetch never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    f.hosts[0].kill_all();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("the fetch broke off"), "{stderr}");
    assert_eq!(named(&repo, ".fetch-"), 0);
    assert_eq!(partials(&repo), 0);
    assert_eq!(fs::read_dir(repo.join("archives")).unwrap().count(), 0);
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    f.hosts[0].restart();
    vault_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    assert_latest_restores(&repo, &f.trees[0], &f.path("out"));
}

#[test]
fn unknown_and_changed_host_keys_are_refused_before_anything_is_written() {
    if !require_root("sshd in mount namespaces") {
        return;
    }
    let f = Fleet::start(1, 41, 5);
    let url = format!("ssh://{}{}", f.target(0), f.mnt.display());
    let (id, repo) = (f.path("id"), f.path("repo"));
    let try_with = |known_hosts: &Path, extra: &[&str]| {
        let mut a = vec![
            "backup",
            &url,
            "--repo",
            p(&repo),
            "-i",
            p(&id),
            "--no-agent",
        ];
        a.extend_from_slice(&["--known-hosts", p(known_hosts)]);
        a.extend_from_slice(extra);
        let r = vault(&a);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(!repo.exists());
        r.stderr
    };
    let empty = f.path("empty-kh");
    fs::write(&empty, "").unwrap();
    let err = try_with(&empty, &[]);
    assert!(err.contains("unknown host key"), "{err}");
    // Another key on record for this host: refused, --accept-new or not.
    let other = fs::read_to_string(f.hosts[0].path("otherkey.pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    let wrong = f.path("wrong-kh");
    let (addr, port) = (&f.addrs[0], f.hosts[0].port);
    fs::write(
        &wrong,
        format!("[{addr}]:{port} {} {}\n", other[0], other[1]),
    )
    .unwrap();
    for extra in [&[][..], &["--accept-new"][..]] {
        let err = try_with(&wrong, extra);
        assert!(err.contains("HOST KEY CHANGED"), "{err}");
    }
}

#[test]
fn restore_to_an_ssh_target_writes_the_tree_on_the_host_and_refuses_a_full_folder() {
    use std::os::unix::fs::{chown, MetadataExt};
    if !require_root("sshd in mount namespaces") {
        return;
    }
    let f = Fleet::start(1, 51, 0);
    let tree = &f.trees[0];
    rich_tree(tree);
    fs::hard_link(tree.join("top.txt"), tree.join("nested/hard.txt")).unwrap();
    let fifo = std::ffi::CString::new(p(&tree.join("pipe"))).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    chown(tree.join("exec.sh"), Some(1234), Some(2345)).unwrap();
    let suid = tree.join("suid");
    write(&suid, "x");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4750)).unwrap();
    let (id, kh, repo) = (f.path("id"), f.path("kh"), f.path("repo"));
    let ssh = ["-i", p(&id), "--known-hosts", p(&kh), "--no-agent"];
    let a = f.one(0, &repo);
    vault_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    // The host writes the tree into a folder of its own file system.
    let back = f.path("restored-on-host");
    let to = format!("ssh://{}{}", f.target(0), back.display());
    let mut a = vec![
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        &to,
        "--json",
    ];
    a.extend_from_slice(&ssh);
    let r = vault_ok(&a, 0);
    assert_eq!(r.json()["target"], to.as_str());
    assert_same_tree(tree, &back);
    let (m, orig) = (
        fs::metadata(back.join("exec.sh")).unwrap(),
        fs::metadata(tree.join("exec.sh")).unwrap(),
    );
    assert_eq!((m.uid(), m.gid()), (1234, 2345));
    assert_eq!(m.mtime_nsec(), orig.mtime_nsec());
    assert_eq!(
        fs::metadata(back.join("suid")).unwrap().mode() & 0o7777,
        0o4750
    );
    let (a1, a2) = (
        fs::metadata(back.join("top.txt")).unwrap(),
        fs::metadata(back.join("nested/hard.txt")).unwrap(),
    );
    assert_eq!(a1.ino(), a2.ino());
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(back.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    // A folder that holds something is never written into.
    let mut a = vec!["restore", "latest", "--repo", p(&repo), "--target", &to];
    a.extend_from_slice(&ssh);
    let r = vault_ok(&a, 1);
    assert!(r.stderr.contains("not an empty folder"), "{}", r.stderr);
}

#[test]
fn a_host_without_gnu_find_and_tar_is_backed_up_over_sftp() {
    if !require_root("sshd in mount namespaces") {
        return;
    }
    let f = Fleet::start_as(1, 61, 0, &["find", "tar"]);
    let tree = &f.trees[0];
    rich_tree(tree);
    let repo = f.path("repo");
    let mut a = f.one(0, &repo);
    a.extend(["--full-on", "never", "--json"].map(String::from));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let j = vault_ok(&a, 0).json();
    let files = shape(tree).values().filter(|v| v.0 == 'f').count() as u64;
    assert_eq!(j["stats"]["remote"]["fetched_files"], files, "{j}");
    assert_latest_restores(&repo, tree, &f.path("out"));
    // Size or mtime tell what changed: one file read again, nothing else.
    fs::write(tree.join("top.txt"), "changed, and longer than before\n").unwrap();
    set_mtime(&tree.join("top.txt"), 1_700_000_100, 0);
    let j = vault_ok(&a, 0).json();
    assert_eq!(j["stats"]["remote"]["fetched_files"], 1, "{j}");
    assert_eq!(j["stats"]["changed"], 1, "{j}");
    assert_latest_restores(&repo, tree, &f.path("out2"));
}

#[test]
fn a_host_whose_tar_cannot_run_records_nothing() {
    if !require_root("sshd in mount namespaces") {
        return;
    }
    // find works, tar does not (as a tar too old for the flags vault gives it would).
    let f = Fleet::start_as(1, 71, 20, &["tar"]);
    let repo = f.path("repo");
    let a = f.one(0, &repo);
    let r = vault(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("end-of-archive"), "{}", r.stderr);
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    assert_eq!(fs::read_dir(repo.join("archives")).unwrap().count(), 0);
}
