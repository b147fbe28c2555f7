//! A complete system backup (issue 15): extended attributes, ACLs, file capabilities, sparse
//! files, FIFOs and devices, exact modes, and the selection options. Trees are built by
//! tests/tools/system-tree.sh and compared by tests/tools/treecmp.py (type, mode, owner,
//! mtime ns, content, link target, every xattr, rdev, hard-link groups, allocated blocks).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(name)
}

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that treecmp.py finds no difference between `a` and `b`.
fn assert_no_differences(a: &Path, b: &Path, what: &str) {
    let o = Command::new("python3")
        .arg(tool("treecmp.py"))
        .args([a, b])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what}: differences between {} and {}:\n{out}",
        a.display(),
        b.display()
    );
    assert!(out.contains("differences: 0"), "{what}: {out}");
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().blocks() * 512
}

fn only_archive(repo: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

#[test]
fn system_tree_round_trips_through_vault_gnu_tar_and_bsdtar() {
    if !require_root("system_tree_round_trips_through_vault_gnu_tar_and_bsdtar") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (src, repo) = (d.path().join("src"), d.path().join("repo"));
    sh(Command::new(tool("system-tree.sh")).arg(&src));
    let b = vault_ok(
        &["backup", p(&src), "--repo", p(&repo), "--full", "--json"],
        0,
    )
    .json();
    // The 10 GiB of sparse files are 8 data bytes: nothing else is read or stored.
    assert!(b["stats"]["bytes_read"].as_u64().unwrap() < 1 << 20, "{b}");
    let archive = only_archive(&repo);
    assert!(std::fs::metadata(&archive).unwrap().len() < 1 << 20);

    let out = d.path().join("out");
    let r = vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&out),
            "--json",
        ],
        0,
    );
    assert_eq!(r.json()["specials"], 3, "{}", r.stdout);
    assert_no_differences(&src, &out, "vault restore");
    assert!(allocated(&out.join("sp9")) < 1 << 20);

    let gnu = d.path().join("gnu");
    std::fs::create_dir(&gnu).unwrap();
    sh(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--acls", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&gnu));
    assert_no_differences(&src, &gnu.join("src"), "GNU tar -xpf");

    let bsd = d.path().join("bsd");
    std::fs::create_dir(&bsd).unwrap();
    sh(Command::new("bsdtar")
        .arg("-xpf")
        .arg(&archive)
        .arg("-C")
        .arg(&bsd));
    assert_no_differences(&src, &bsd.join("src"), "bsdtar -xpf");

    vault_ok(&["check", "--repo", p(&repo), "--read-data"], 0);
    // Exact modes are the default for root; --no-setid strips setuid/setgid.
    let stripped = d.path().join("stripped");
    vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&stripped),
            "--no-setid",
        ],
        0,
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&stripped.join("suid")), 0o755);
    assert_eq!(mode(&stripped.join("sgdir")), 0o775);
    assert_eq!(mode(&out.join("suid")), 0o4755);
}

fn getfattr(p: &Path) -> String {
    sh(Command::new("getfattr")
        .args(["-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(p))
    .lines()
    .filter(|l| !l.starts_with('#'))
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn system_attribute_only_changes_store_no_content_and_each_snapshot_restores_its_state() {
    if !require_root("system_attribute_only_changes_store_no_content") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (src, repo) = (d.path().join("src"), d.path().join("repo"));
    write(src.join("xa"), "x");
    write(src.join("acl"), "a");
    std::fs::copy("/usr/bin/true", src.join("cap")).unwrap();
    sh(Command::new("setfattr")
        .args(["-n", "user.v", "-v", "one"])
        .arg(src.join("xa")));
    sh(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("cap")));
    let first = vault_ok(
        &["backup", p(&src), "--repo", p(&repo), "--full", "--json"],
        0,
    )
    .json();
    let names = ["xa", "acl", "cap"];
    let before: Vec<String> = names.iter().map(|n| getfattr(&src.join(n))).collect();

    sh(Command::new("setfattr")
        .args(["-n", "user.v", "-v", "two"])
        .arg(src.join("xa")));
    sh(Command::new("setfacl")
        .args(["-m", "u:4321:r"])
        .arg(src.join("acl")));
    sh(Command::new("setcap")
        .arg("cap_net_admin+ep")
        .arg(src.join("cap")));
    let second = vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--incremental",
            "--json",
        ],
        0,
    )
    .json();
    assert_eq!(second["stats"]["changed"], 3, "{second}");
    assert_eq!(second["stats"]["bytes_stored"], 0, "{second}");
    assert!(second["archive"].is_null(), "no content stored: {second}");
    let after: Vec<String> = names.iter().map(|n| getfattr(&src.join(n))).collect();
    assert_ne!(before, after);

    let diff = vault_ok(
        &[
            "diff",
            "--repo",
            p(&repo),
            first["snapshot"].as_str().unwrap(),
            second["snapshot"].as_str().unwrap(),
            "--json",
        ],
        0,
    )
    .json();
    assert!(diff.to_string().contains("xattrs"), "{diff}");

    for (snap, want) in [(&first, &before), (&second, &after)] {
        let t = d.path().join(snap["snapshot"].as_str().unwrap());
        let id = snap["snapshot"].as_str().unwrap();
        vault_ok(&["restore", id, "--repo", p(&repo), "--target", p(&t)], 0);
        let got: Vec<String> = names.iter().map(|n| getfattr(&t.join(n))).collect();
        let strip = |v: &[String], root: &Path| -> Vec<String> {
            v.iter()
                .map(|s| s.replace(&root.display().to_string(), "ROOT"))
                .collect()
        };
        assert_eq!(strip(&got, &t), strip(want, &src), "snapshot {id}");
    }
}

fn ls_paths(repo: &Path) -> Vec<String> {
    let v = vault_ok(&["ls", "latest", "--repo", p(repo), "--json"], 0).json();
    let entries = v
        .as_array()
        .cloned()
        .unwrap_or_else(|| v["entries"].as_array().unwrap().clone());
    let mut out: Vec<String> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn system_selection_options_leave_out_exactly_what_they_name() {
    if !require_root("system_selection_options (mounts a tmpfs)") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (src, repo) = (d.path().join("src"), d.path().join("repo"));
    write(src.join("a/x.log"), "x");
    write(src.join("a/keep.log"), "k");
    write(src.join("a/c.txt"), "c");
    write(src.join("build/out.o"), "o");
    write(src.join("deep/build/kept"), "b");
    write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(src.join("cache/blob"), "junk");
    write(src.join("fake/CACHEDIR.TAG"), "not a signature");
    write(src.join("fake/kept"), "f");
    write(src.join("tagged/.nobackup"), "");
    write(src.join("tagged/t"), "t");
    std::fs::create_dir(src.join("mnt")).unwrap();
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(src.join("mnt")));
    write(src.join("mnt/inside"), "m");
    let pats = d.path().join("patterns");
    write(
        &pats,
        "# logs, but not keep.log\n*.log\n!keep.log\n/build/\n",
    );
    let r = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--one-file-system",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-file",
        p(&pats),
    ]);
    sh(Command::new("umount").arg(src.join("mnt")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        ls_paths(&repo),
        [
            "a",
            "a/c.txt",
            "a/keep.log",
            "cache",
            "cache/CACHEDIR.TAG",
            "deep",
            "deep/build",
            "deep/build/kept",
            "fake",
            "fake/CACHEDIR.TAG",
            "fake/kept",
            "mnt",
            "tagged",
            "tagged/.nobackup",
        ]
    );
    let bad = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--exclude-file",
        "/nonexistent/p",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("/nonexistent/p"), "{}", bad.stderr);
}

fn pipe_backup(repo: &Path, data: &[u8], extra: &[&str]) -> serde_json::Value {
    use std::io::Write;
    let mut args = vec![
        "backup",
        "--stdin",
        "--stdin-name",
        "db.sql",
        "--source-name",
        "pg",
        "--repo",
        p(repo),
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut c = Command::new(vault_bin())
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let o = c.wait_with_output().unwrap();
    let r: Run = o.into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

#[test]
fn system_stdin_dumps_make_a_full_and_an_incremental_and_restore_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let dump = |day: u32| -> Vec<u8> {
        let mut v = format!("-- dump of day {day}\n").into_bytes();
        for i in 0..50_000u32 {
            v.extend_from_slice(format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").as_bytes());
        }
        v
    };
    let first = pipe_backup(&repo, &dump(1), &[]);
    assert_eq!(first["kind"], "full");
    assert_eq!(first["source"], "stdin:pg");
    // The next day: the default policy makes an incremental (the full day is not today).
    let not_today = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .find(|d| {
            let out = Command::new("date").arg("+%a").output().unwrap();
            !String::from_utf8_lossy(&out.stdout)
                .to_lowercase()
                .starts_with(d)
        })
        .unwrap();
    let second = pipe_backup(&repo, &dump(2), &["--full-on", not_today]);
    assert_eq!(second["kind"], "incremental", "{second}");
    assert_eq!(second["stats"]["changed"], 1);
    // The same dump again stores nothing.
    let third = pipe_backup(&repo, &dump(2), &["--full-on", not_today]);
    assert!(third["archive"].is_null(), "{third}");

    for (snap, day) in [(&first, 1), (&third, 2)] {
        let t = d.path().join(format!("out{day}"));
        let id = snap["snapshot"].as_str().unwrap();
        vault_ok(&["restore", id, "--repo", p(&repo), "--target", p(&t)], 0);
        assert_eq!(std::fs::read(t.join("db.sql")).unwrap(), dump(day));
    }
    let by_name = d.path().join("by-name");
    vault_ok(
        &[
            "restore",
            "latest",
            "--source",
            "pg",
            "--repo",
            p(&repo),
            "--target",
            p(&by_name),
        ],
        0,
    );
    assert_eq!(std::fs::read(by_name.join("db.sql")).unwrap(), dump(2));
    // Nothing is left staged in the repository.
    let staged: Vec<_> = std::fs::read_dir(&repo)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".stdin")
        })
        .collect();
    assert!(staged.is_empty());
    let bad = vault(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "a/b",
        "--repo",
        p(&repo),
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

#[test]
fn system_a_non_root_restore_names_each_refused_attribute_and_device_and_restores_the_rest() {
    if !require_root("system_a_non_root_restore (runs vault as nobody)") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (src, repo) = (d.path().join("src"), d.path().join("repo"));
    write(src.join("f"), "content");
    sh(Command::new("setfattr")
        .args(["-n", "user.ok", "-v", "yes"])
        .arg(src.join("f")));
    sh(Command::new("setfattr")
        .args(["-n", "trusted.root-only", "-v", "x"])
        .arg(src.join("f")));
    write(src.join("suid"), "s");
    sh(Command::new("chmod").arg("4755").arg(src.join("suid")));
    sh(Command::new("mknod")
        .arg(src.join("cdev"))
        .args(["c", "1", "7"]));
    vault_ok(&["backup", p(&src), "--repo", p(&repo)], 0);
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for dir in [d.path(), &repo, &out] {
        sh(Command::new("chown").args(["-R", "65534:65534"]).arg(dir));
    }
    let r: Run = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            vault_bin(),
        ])
        .args([
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&out),
            "--json",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let errors: Vec<(String, String)> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().into(),
                e["error"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "cdev");
    assert!(errors[0].1.contains("char-device"), "{errors:?}");
    assert_eq!(errors[1].0, "f");
    assert!(errors[1].1.contains("trusted.root-only"), "{errors:?}");
    // The rest is there: the file with its content and user attribute, setuid cleared.
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"content");
    assert!(getfattr(&out.join("f")).contains("user.ok"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("suid"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
}
