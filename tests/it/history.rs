//! File history: `vault log` (one path's changes), `vault find` (a glob or a content across
//! snapshots, unchanged runs collapsed) and `vault cat` (one file of one snapshot, streamed
//! and checked), on repositories made with `vault backup --time`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// 2026-01-01 10:00 UTC plus `d` days, as `--time` takes it.
fn day(d: u32) -> String {
    let secs = 1_767_261_600 + i64::from(d) * 86_400;
    let c = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(c.stdout).unwrap().trim().to_string()
}

/// A backup recorded at day `d`, with the default policy (a full on Mondays); its id.
fn backup_at(src: &Path, repo: &Path, d: u32) -> String {
    let t = day(d);
    let args = ["backup", p(src), "--repo", p(repo), "--json", "--time", &t];
    let j = vault_ok(&args, 0).json();
    j["snapshot"].as_str().unwrap().to_string()
}

/// `vault cat` of one snapshot's file, as bytes; insists on exit 0.
fn cat(repo: &Path, snap: &str, path: &str) -> Vec<u8> {
    let o = Command::new(vault_bin())
        .args(["cat", snap, path, "--repo", p(repo)])
        .env_remove("VAULT_REPO")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "vault cat {snap} {path}: {err}");
    o.stdout
}

#[test]
fn log_lists_the_five_edits_and_the_add_and_find_and_cat_agree() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("etc/other.txt"), "other 0");
    let edits = [7u32, 19, 23, 40, 58];
    let conf = src.join("etc/nginx/nginx.conf");
    let mut versions: BTreeMap<u32, String> = BTreeMap::new();
    let mut ids = Vec::new();
    for d in 0..60u32 {
        if d == 3 || edits.contains(&d) {
            let text = format!("worker_processes {d};\n");
            write(&conf, &text);
            set_mtime(&conf, 1_700_000_000 + i64::from(d), 0);
            versions.insert(d, text);
        }
        // Something else changes every day, so that every snapshot records a change.
        write(src.join("etc/other.txt"), format!("other {d}"));
        if d == 30 {
            fs::copy(&conf, src.join("copy-of-nginx.conf")).unwrap();
        }
        ids.push(backup_at(&src, &repo, d));
    }

    // log: the add (day 3) and the five edits, newest first, nothing for the other days.
    let j = vault_ok(
        &["log", "etc/nginx/nginx.conf", "--repo", p(&repo), "--json"],
        0,
    )
    .json();
    let v = j["versions"].as_array().unwrap();
    let got: Vec<(String, String)> = v
        .iter()
        .map(|x| {
            (
                x["snapshot"].as_str().unwrap().into(),
                x["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = edits
        .iter()
        .rev()
        .map(|&d| (ids[d as usize].clone(), "modified".to_string()))
        .collect();
    want.push((ids[3].clone(), "added".into()));
    assert_eq!(got, want, "{j}");
    for x in &v[..5] {
        assert_eq!(strs(&x["what"]), ["content", "mtime"], "{x}");
    }
    assert_eq!(j["path"], "etc/nginx/nginx.conf");
    // The absolute path names the source too; the human form has one line a change.
    let abs = conf.to_str().unwrap();
    let h = vault_ok(&["log", abs, "--repo", p(&repo)], 0);
    assert_eq!(h.stdout.lines().count(), 6, "{}", h.stdout);
    assert!(h
        .stdout
        .lines()
        .next()
        .unwrap()
        .contains("modified: content, mtime"));

    // cat: every version, from the snapshot that recorded it and from a later one.
    for (i, (&d, text)) in versions.iter().enumerate() {
        assert_eq!(
            cat(&repo, &ids[d as usize], "etc/nginx/nginx.conf"),
            text.as_bytes()
        );
        let later = versions.keys().nth(i + 1).map_or(59, |&n| n - 1);
        assert_eq!(cat(&repo, &ids[later as usize], abs), text.as_bytes());
    }

    // find: six runs (one per version), covering the 57 snapshots that hold the file.
    let j = vault_ok(&["find", "**/nginx.conf", "--repo", p(&repo), "--json"], 0).json();
    let m = j["matches"].as_array().unwrap();
    assert_eq!(m.len(), 6, "{j}");
    let total: usize = m
        .iter()
        .map(|x| x["snapshots"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 57);
    assert_eq!(m[0]["first"], day(3));
    assert_eq!(m[0]["last"], day(6));
    assert_eq!(strs(&m[0]["snapshots"]), ids[3..7].to_vec());
    assert_eq!(m[5]["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(j["snapshots_searched"], 60);
    let h = vault_ok(&["find", "nginx.conf", "--repo", p(&repo)], 0);
    assert!(h.stdout.contains("same in 4 snapshots"), "{}", h.stdout);
    assert!(h.stdout.contains("same in 17 snapshots"), "{}", h.stdout);

    // --since/--until cut the runs; a content digest finds the copy under its other name.
    let j = vault_ok(
        &[
            "find",
            "nginx.conf",
            "--since",
            &day(20),
            "--until",
            &day(29),
            "--repo",
            p(&repo),
            "--json",
        ],
        0,
    )
    .json();
    let runs: Vec<usize> = j["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["snapshots"].as_array().unwrap().len())
        .collect();
    assert_eq!(runs, [3, 7]);
    // Alternates holding a '/' and a class: globset's syntax, no match lost to the prefilter.
    for pat in [
        "etc/{nginx/nginx.conf,other.txt}",
        "**/[n]ginx.conf",
        "/**/etc/*/nginx.con?",
    ] {
        let j = vault_ok(&["find", pat, "--repo", p(&repo), "--json"], 0).json();
        let hits = j["matches"].as_array().unwrap();
        assert!(
            hits.iter().any(|x| x["path"] == "etc/nginx/nginx.conf"),
            "{pat}: {j}"
        );
    }
    let digest = m[3]["digest"].as_str().unwrap().to_string();
    let j = vault_ok(
        &[
            "find",
            "--content",
            &digest[..12],
            "--repo",
            p(&repo),
            "--json",
        ],
        0,
    )
    .json();
    let paths: Vec<&str> = j["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["copy-of-nginx.conf", "etc/nginx/nginx.conf"], "{j}");
}

#[test]
fn log_and_find_report_deletions_modes_and_refuse_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    let f = src.join("a/file.txt");
    write(&f, "v1");
    let s0 = backup_at(&src, &repo, 0);
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let s1 = backup_at(&src, &repo, 1);
    fs::remove_file(&f).unwrap();
    let s2 = backup_at(&src, &repo, 2);
    write(&f, "v1");
    let s3 = backup_at(&src, &repo, 3);
    let j = vault_ok(&["log", "a/file.txt", "--repo", p(&repo), "--json"], 0).json();
    let got: Vec<(String, String, Vec<String>)> = j["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let s = x["snapshot"].as_str().unwrap().to_string();
            (
                s,
                x["change"].as_str().unwrap().to_string(),
                strs(&x["what"]),
            )
        })
        .collect();
    let want = [
        (s3, "added".to_string(), vec![]),
        (s2.clone(), "deleted".to_string(), vec![]),
        (s1, "modified".to_string(), vec!["mode".to_string()]),
        (s0, "added".to_string(), vec![]),
    ];
    assert_eq!(got, want);
    assert!(j["versions"][1]["size"].is_null());

    // An absolute path outside the source is refused, not read as a relative one.
    let r = vault_ok(&["log", "/a/file.txt", "--repo", p(&repo)], 2);
    assert!(r.stderr.contains("not inside the source"), "{}", r.stderr);
    vault_ok(&["cat", "latest", "/a/file.txt", "--repo", p(&repo)], 2);
    let abs = f.to_str().unwrap();
    assert_eq!(cat(&repo, "latest", abs), b"v1");

    // Bad input: one line, exit 2.
    let r = vault_ok(&["log", "a/nothing", "--repo", p(&repo)], 2);
    assert!(
        r.stderr.contains("a/nothing: no snapshot of"),
        "{}",
        r.stderr
    );
    for args in [
        vec!["find", "a[", "--repo", p(&repo)],
        vec!["find", "--content", "xyz", "--repo", p(&repo)],
        vec!["log", "../etc/passwd", "--repo", p(&repo)],
        vec!["cat", &s2, "a/file.txt", "--repo", p(&repo)],
        vec!["cat", "latest", "a", "--repo", p(&repo)],
        vec!["cat", "latest", "a/file.txt", "--repo", p(&repo), "--json"],
    ] {
        let r = vault_ok(&args, 2);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // Neither a pattern nor --content: clap's usage error, exit 2.
    vault_ok(&["find", "--repo", p(&repo)], 2);
    // No match is an empty list, exit 0.
    let j = vault_ok(&["find", "*.none", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(j["matches"].as_array().unwrap().len(), 0);
}

/// Runs `vault ARGS` with stdout into `out`, from a small Python launcher so that the peak
/// RSS measured is vault's own (a child started straight from this big test process would be
/// charged this process's peak, which the kernel carries over to the child until its exec).
/// Returns the exit code and vault's peak RSS in KiB.
fn run_measured(args: &[&str], out: &Path) -> (i32, i64) {
    let script = r#"
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    code = subprocess.run(sys.argv[2:], stdout=out).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"#;
    let o = Command::new("python3")
        .args(["-c", script, p(out), vault_bin()])
        .args(args)
        .env_remove("VAULT_REPO")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse::<i64>().unwrap());
    (it.next().unwrap() as i32, it.next().unwrap())
}

#[test]
fn cat_streams_a_100_mb_file_of_an_incremental_in_little_memory_and_names_a_damaged_archive() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("small.txt"), "small");
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "--full", "-q"], 0);
    let big = src.join("big.bin");
    noise_file(&big, 100 << 20);
    // A sparse file too: 8 MiB with data at its start and at 5 MiB.
    let sparse = src.join("sparse.img");
    let fh = fs::File::create(&sparse).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&fh, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&fh, b"middle", 5 << 20).unwrap();
    fh.set_len(8 << 20).unwrap();
    let j = backup_json(&src, &repo, &["--incremental"], 0);
    let snap = j["snapshot"].as_str().unwrap().to_string();
    let archive = repo.join(j["archive"].as_str().unwrap());
    let then = fs::read(&big).unwrap();
    // --until with the time as `snapshots` prints it (whole seconds) includes that snapshot.
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let printed = list[1]["time"].as_str().unwrap().to_string();
    let j = vault_ok(
        &[
            "find",
            "big.bin",
            "--until",
            &printed,
            "--repo",
            p(&repo),
            "--json",
        ],
        0,
    );
    assert_eq!(strs(&j.json()["matches"][0]["snapshots"]), [snap.as_str()]);
    // The file changes afterwards: cat must give the version of that snapshot.
    noise_file(&big, 1 << 20);
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "-q"], 0);

    let out = t.path().join("out.bin");
    let (code, rss_kib) = run_measured(&["cat", &snap, "big.bin", "--repo", p(&repo)], &out);
    assert_eq!(code, 0);
    println!("vault cat of 100 MiB: peak RSS {} KiB", rss_kib);
    assert!(rss_kib <= 50 * 1024, "peak RSS {rss_kib} KiB");
    assert!(
        fs::read(&out).unwrap() == then,
        "cat differs from the source"
    );
    assert_eq!(cat(&repo, &snap, "sparse.img"), fs::read(&sparse).unwrap());

    // A reader that stops early: exit 0, nothing on stderr.
    let mut c = Command::new(vault_bin())
        .args(["cat", &snap, "big.bin", "--repo", p(&repo)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 4096];
    c.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(&head[..], &then[..4096]);

    // Damage in the middle of the archive, then no archive at all: exit 1, naming it.
    let name = archive.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    fs::write(&archive, &bytes).unwrap();
    let r = vault(&["cat", &snap, "big.bin", "--repo", p(&repo)]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&name) && r.stderr.contains("damaged"),
        "{}",
        r.stderr
    );
    let j = vault_ok(&["cat", &snap, "big.bin", "--repo", p(&repo), "-q"], 1);
    assert!(j.stderr.contains(&name));
    fs::remove_file(&archive).unwrap();
    let r = vault_ok(&["cat", &snap, "sparse.img", "--repo", p(&repo)], 1);
    assert!(
        r.stderr.contains(&name) && r.stderr.contains("missing"),
        "{}",
        r.stderr
    );
}
