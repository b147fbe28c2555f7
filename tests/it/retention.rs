//! Calendar retention (`vault forget --keep-daily …`) on 400 snapshots made with
//! `vault backup --time`, one a day, checked against restic's rules computed independently (in
//! Python, with its own calendar) and by restoring every kept snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

const DAYS: i64 = 400;
/// 2025-01-01 10:00 UTC, a Wednesday.
const START: i64 = 1_735_725_600;

fn day_time(d: i64) -> String {
    let o = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", START + d * 86_400),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The days restic's rules keep (daily 7, weekly 4, monthly 12, yearly 2), by Python's calendar.
fn expected(times: &[i64]) -> BTreeMap<i64, Vec<String>> {
    let script = r#"
import json, sys, datetime
times = json.load(sys.stdin)
order = sorted(range(len(times)), key=lambda i: -times[i])
rules = [("daily", 7, lambda t: t.date()), ("weekly", 4, lambda t: t.isocalendar()[:2]),
         ("monthly", 12, lambda t: (t.year, t.month)), ("yearly", 2, lambda t: t.year)]
out = {}
for name, n, key in rules:
    last = None
    for i in order:
        if n == 0:
            break
        b = key(datetime.datetime.fromtimestamp(times[i], datetime.timezone.utc))
        if b != last:
            out.setdefault(i, []).append(name)
            n -= 1
            last = b
print(json.dumps(out))
"#;
    let mut c = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_string(times).unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let v: BTreeMap<String, Vec<String>> = serde_json::from_slice(&o.stdout).unwrap();
    v.into_iter()
        .map(|(k, r)| (k.parse().unwrap(), r))
        .collect()
}

#[test]
fn calendar_retention_keeps_what_restics_rules_keep_and_whole_chains() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    write(src.join("fixed.txt"), "the same every day");
    let env = [("TZ", "UTC")];
    for d in 0..DAYS {
        write(src.join("day.txt"), format!("day {d}"));
        let when = day_time(d);
        let r = vault_env(
            &[
                "backup",
                p(&src),
                "--repo",
                p(&repo),
                "--time",
                &when,
                "--full-on",
                "sun",
                "-q",
            ],
            &env,
        );
        assert_eq!(r.code, 0, "day {d}: {r:?}");
    }
    // An import older than the newest snapshot is refused.
    let r = vault_env(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--time",
            &day_time(3),
        ],
        &env,
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("is older than the newest snapshot"),
        "{}",
        r.stderr
    );
    let list = vault_env(&["snapshots", "--repo", p(&repo), "--json"], &env).json();
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), DAYS as usize);
    assert_eq!(list[0]["time"], day_time(0));
    let fulls = list.iter().filter(|s| s["kind"] == "full").count();
    assert_eq!(fulls, 58, "a full every Sunday, and the first");
    let times: Vec<i64> = (0..DAYS).map(|d| START + d * 86_400).collect();
    let want = expected(&times);
    let rules = [
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
        "--keep-yearly",
        "2",
    ];
    let mut a = vec!["forget", "--repo", p(&repo), "--dry-run", "--json"];
    a.extend(rules);
    let plan = vault_env(&a, &env).json();
    let verdicts = plan["snapshots"].as_array().unwrap();
    assert_eq!(verdicts.len(), DAYS as usize);
    let day_of: BTreeMap<String, i64> = list
        .iter()
        .enumerate()
        .map(|(d, s)| (s["id"].as_str().unwrap().to_string(), d as i64))
        .collect();
    let mut got = BTreeMap::new();
    for v in verdicts {
        let reasons: Vec<String> = v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        if !reasons.is_empty() {
            got.insert(day_of[v["id"].as_str().unwrap()], reasons);
        }
    }
    assert_eq!(got, want, "kept by rule: vault vs restic's rules");
    println!(
        "{} snapshots kept by a rule, {} chains removed, {} bytes freed",
        got.len(),
        plan["removed"].as_array().unwrap().len(),
        plan["bytes_freed"]
    );
    // The real run removes exactly the chains none of whose snapshots is kept.
    let kept_ids: BTreeSet<&str> = verdicts
        .iter()
        .filter(|v| v["kept"] == true)
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    let mut a = vec!["forget", "--repo", p(&repo), "--json"];
    a.extend(rules);
    let done = vault_env(&a, &env).json();
    assert_eq!(done["removed_archives"], plan["removed_archives"]);
    for c in done["removed"].as_array().unwrap() {
        for id in c["snapshots"].as_array().unwrap() {
            assert!(!kept_ids.contains(id.as_str().unwrap()), "{id} was kept");
        }
    }
    let left = vault_env(&["snapshots", "--repo", p(&repo), "--json"], &env).json();
    let left: BTreeSet<String> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, kept_ids.iter().map(|s| s.to_string()).collect());
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
    for d in got.keys() {
        let id = list[*d as usize]["id"].as_str().unwrap();
        let target = t.path().join(format!("r{d}"));
        vault_ok(
            &[
                "restore",
                id,
                "--repo",
                p(&repo),
                "--target",
                p(&target),
                "-q",
            ],
            0,
        );
        assert_eq!(
            fs::read_to_string(target.join("day.txt")).unwrap(),
            format!("day {d}")
        );
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_jobs_forget_after_applies_its_keep_rules_after_each_backup() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let cfg = t.path().join("vault.toml");
    let text = format!(
        "[job.j]\nsource = \"{}\"\nrepo = \"{}\"\nkeep = {{ last = 2 }}\nforget_after = true\n",
        src.display(),
        repo.display()
    );
    fs::write(&cfg, text).unwrap();
    for i in 0..4 {
        write(src.join("a.txt"), format!("a{i}"));
        let r = vault(&["--config", p(&cfg), "backup", "--job", "j", "--full"]);
        assert_eq!(r.code, 0, "{r:?}");
        if i > 1 {
            assert!(
                r.stderr.contains("forget_after: 1 chains removed"),
                "{}",
                r.stderr
            );
        }
    }
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
    fs::write(&cfg, "[job.j]\nsource = \"/tmp\"\nforget_after = true\n").unwrap();
    let r = vault(&["--config", p(&cfg), "backup", "--job", "j"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("forget_after needs `keep"),
        "{}",
        r.stderr
    );
}
