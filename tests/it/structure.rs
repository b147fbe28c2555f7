//! The structure promises of issue 14: the thread budget of the one pool, per-item restore
//! failures, and the CLI contract in docs/cli.md kept in step with `vault help`.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::Sshd;

/// Runs the child to its end, counting its threads (/proc/PID/task) all the while; returns the
/// most seen and the run's outcome.
fn watch_threads(mut child: Child) -> (usize, Run) {
    let task = format!("/proc/{}/task", child.id());
    let mut most = 0;
    loop {
        if let Ok(d) = fs::read_dir(&task) {
            most = most.max(d.count());
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    (most, child.wait_with_output().unwrap().into())
}

fn spawn(args: &[&str]) -> Child {
    Command::new(vault_bin())
        .args(args)
        .env_remove("VAULT_REPO")
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Some thousands of small files and a few large ones (so that compression has blocks).
fn thread_tree(src: &Path) {
    let mut rng = Lcg(14);
    for d in 0..40 {
        for f in 0..100 {
            let n = (rng.next() % 3000) as usize;
            write(
                src.join(format!("d{d}/f{f}")),
                vec![b'a' + (f % 26) as u8; n],
            );
        }
    }
    for k in 0..4 {
        noise_file(&src.join(format!("big{k}")), 6 << 20);
    }
}

/// docs/architecture.md: `--jobs N` = N compute workers + the main thread + the signal thread.
#[test]
fn structure_a_backup_and_a_restore_with_jobs_2_stay_within_4_threads() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo, target) = (t.path().join("s"), t.path().join("r"), t.path().join("t"));
    thread_tree(&src);
    let (most, r) = watch_threads(spawn(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--full",
        "--jobs",
        "2",
        "--json",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json()["stats"]["files"],
        4044,
        "4004 files and 40 folders"
    );
    assert!(
        (3..=4).contains(&most),
        "backup ran {most} threads; the budget is 4"
    );

    let (most, r) = watch_threads(spawn(&[
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&target),
        "--jobs",
        "2",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        (3..=4).contains(&most),
        "restore ran {most} threads; the budget is 4"
    );
    assert_same_tree(&src, &target);

    let (most, r) = watch_threads(spawn(&[
        "check",
        "--repo",
        p(&repo),
        "--read-data",
        "--jobs",
        "2",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(most <= 4, "check ran {most} threads; the budget is 4");
}

/// A sweep: 8 network workers + main + signal; the compute lane is never started.
#[test]
fn structure_a_scan_with_parallel_8_stays_within_10_threads() {
    let (most, r) = watch_threads(spawn(&[
        "scan",
        "127.0.0.0/26",
        "--tcp",
        "9,7-8",
        "--timeout",
        "300ms",
        "--parallel",
        "8",
        "--jobs",
        "2",
        "--json",
    ]));
    assert!(r.code == 0 || r.code == 3, "{r:?}");
    assert_eq!(r.json()["hosts"].as_array().unwrap().len(), 62);
    assert!(
        (8..=10).contains(&most),
        "scan ran {most} threads; the budget is 10"
    );
}

/// SSH: 8 network workers + main + signal + the ticker that bounds each connection.
#[test]
fn structure_ssh_with_parallel_8_stays_within_11_threads() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let kh = s.path("kh");
    s.known_hosts(&kh);
    let id = s.path("id");
    let targets: Vec<String> = (0..12)
        .map(|k| s.target("root", if k % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" }))
        .collect();
    let mut args: Vec<&str> = vec!["ssh"];
    args.extend(targets.iter().map(String::as_str));
    args.extend_from_slice(&[
        "-i",
        p(&id),
        "--known-hosts",
        p(&kh),
        "--parallel",
        "8",
        "--jobs",
        "2",
        "--json",
        "--",
        "sleep 0.5; echo up",
    ]);
    let started = Instant::now();
    let (most, r) = watch_threads(spawn(&args));
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["hosts"].as_array().unwrap().len(), 12);
    assert!(
        j["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["stdout"] == "up\n"),
        "{j}"
    );
    assert!(
        (9..=11).contains(&most),
        "ssh ran {most} threads; the budget is 11"
    );
    // 12 hosts, 8 at a time, 0.5 s each: two rounds, not twelve.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A folder of the target that cannot be written (immutable): its paths are named, exit 3,
/// and every other path is restored exactly.
#[test]
fn structure_restore_names_what_it_could_not_write_and_restores_the_rest() {
    if !require_root("chattr +i") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, repo, target) = (t.path().join("s"), t.path().join("r"), t.path().join("t"));
    for d in ["a", "stuck", "z"] {
        write(src.join(d).join("one"), format!("{d} one"));
        write(src.join(d).join("sub/two"), format!("{d} two"));
        fs::create_dir_all(src.join(d).join("empty")).unwrap();
        std::os::unix::fs::symlink("one", src.join(d).join("link")).unwrap();
    }
    write(src.join("top"), "top");
    backup_json(&src, &repo, &[], 0);
    // The target holds an older, different copy; `stuck` is immutable.
    for d in ["a", "stuck", "z"] {
        write(target.join(d).join("one"), "old");
    }
    let stuck = target.join("stuck");
    let locked = Command::new("chattr").arg("+i").arg(&stuck).status();
    assert!(locked.is_ok_and(|s| s.success()), "chattr +i failed");
    let r = vault(&[
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&target),
        "--force",
        "--json",
    ]);
    let _ = Command::new("chattr").arg("-i").arg(&stuck).status();
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let failed: Vec<String> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "stuck",
        "stuck/one",
        "stuck/sub",
        "stuck/sub/two",
        "stuck/link",
    ] {
        assert!(
            failed.contains(&want.to_string()),
            "{want} not named: {failed:?}"
        );
        assert!(
            r.stderr.contains(want),
            "{want} not in stderr: {}",
            r.stderr
        );
    }
    assert!(failed.iter().all(|f| f.starts_with("stuck")), "{failed:?}");
    assert_eq!(j["failed"].as_u64().unwrap() as usize, failed.len());
    // Counts are of what was restored: 5 of 7 files, 2 of 3 symlinks, 6 of 9 folders.
    assert_eq!(
        (j["files"].as_u64(), j["symlinks"].as_u64()),
        (Some(5), Some(2)),
        "{j}"
    );
    assert_eq!(j["dirs"].as_u64(), Some(6), "{j}");
    for d in ["a", "z"] {
        assert_same_tree(&src.join(d), &target.join(d));
    }
    assert_eq!(fs::read(target.join("top")).unwrap(), b"top");
    assert_eq!(fs::read(stuck.join("one")).unwrap(), b"old");
}

/// The subcommands `vault help` lists.
fn subcommands() -> Vec<String> {
    let help = vault_ok(&["help"], 0).stdout;
    let start = help.find("Commands:").expect("a Commands: section");
    help[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The long flags one help text defines (its option lines, not its prose).
fn flags(help: &str) -> Vec<String> {
    let mut out: Vec<String> = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(|l| l.split_whitespace().take(3))
        .flat_map(|w| w.split([',', '[', '<', '=']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| !w.contains('.'))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The text of `## heading` up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.find(&format!("\n## {heading}\n"))? + 1;
    let rest = &doc[start + 3..];
    Some(&doc[start..start + 3 + rest.find("\n## ").unwrap_or(rest.len())])
}

#[test]
fn structure_docs_cli_md_has_every_subcommand_and_flag_of_vault_help() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let shared: String = ["Global flags", "Shared flag groups"]
        .iter()
        .map(|h| section(&doc, h).unwrap_or_else(|| panic!("docs/cli.md lacks ## {h}")))
        .collect();
    for f in flags(&vault_ok(&["--help"], 0).stdout) {
        assert!(
            shared.contains(&format!("`{f}")),
            "global flag {f} missing from docs/cli.md"
        );
    }
    let commands = subcommands();
    assert!(commands.len() >= 15, "{commands:?}");
    let mut missing = Vec::new();
    for c in &commands {
        let Some(text) = section(&doc, &format!("vault {c}")) else {
            missing.push(format!("## vault {c}"));
            continue;
        };
        for f in flags(&vault_ok(&["help", c], 0).stdout) {
            if !text.contains(&format!("`{f}")) && !shared.contains(&format!("`{f}")) {
                missing.push(format!("vault {c} {f}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/cli.md lacks: {missing:?}");
}
