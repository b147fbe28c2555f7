//! `vault watch`: snapshots after changes, bursts, queue overflow, signals, quiet periods.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The watch tests run one at a time: one of them lowers the machine-wide inotify queue limit
/// for a moment, which would change what a concurrent watch sees.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Watch {
    child: Child,
    /// Outside the watched tree (a file in it would be a change after every snapshot).
    out: tempfile::TempPath,
}

impl Watch {
    fn start(src: &Path, repo: &Path, extra: &[&str]) -> Watch {
        let out = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let child = Command::new(vault_bin())
            .args(["watch", p(src), "--repo", p(repo), "--full-on", "never"])
            .args(extra)
            .env_remove("VAULT_REPO")
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Watch { child, out }
    }
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    fn wait(mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "vault watch did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snapshots(repo: &Path) -> Vec<serde_json::Value> {
    if !repo.join("vault.db").exists() {
        return Vec::new();
    }
    let r = vault(&["snapshots", "--repo", p(repo), "--json"]);
    if r.code != 0 {
        return Vec::new();
    }
    r.json().as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn latest_paths(repo: &Path) -> Vec<String> {
    let ls = vault_ok(&["ls", "latest", "--repo", p(repo), "--json"], 0).json();
    ls.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn edits_creates_deletes_and_deep_new_folders_are_backed_up() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    write(src.join("sub/b.txt"), "b");
    let w = Watch::start(&src, &repo, &["--debounce", "300ms"]);
    wait_for("the first snapshot", 20, || snapshots(&repo).len() == 1);

    write(src.join("a.txt"), "a, edited");
    write(src.join("sub/new.txt"), "new");
    fs::remove_file(src.join("sub/b.txt")).unwrap();
    fs::create_dir_all(src.join("x/y/z")).unwrap();
    write(src.join("x/y/z/deep.txt"), "deep");
    wait_for("a snapshot with the changes", 20, || {
        snapshots(&repo).len() >= 2 && latest_paths(&repo).contains(&"x/y/z/deep.txt".to_string())
    });
    let paths = latest_paths(&repo);
    assert_eq!(
        paths,
        [
            "a.txt",
            "sub",
            "sub/new.txt",
            "x",
            "x/y",
            "x/y/z",
            "x/y/z/deep.txt"
        ]
    );
    assert_latest_restores(&repo, &src, &t.path().join("restored"));
    assert!(w.output().contains("(changed folders)"), "{}", w.output());
}

#[test]
fn a_burst_of_10000_writes_makes_at_most_two_snapshots() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("seed.txt"), "seed");
    let _w = Watch::start(&src, &repo, &["--debounce", "500ms"]);
    wait_for("the first snapshot", 20, || snapshots(&repo).len() == 1);
    for i in 0..10_000 {
        let d = src.join(format!("d{}", i % 50));
        if i < 50 {
            fs::create_dir(&d).unwrap();
        }
        fs::write(d.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    wait_for("the burst's snapshot", 60, || {
        snapshots(&repo)
            .last()
            .is_some_and(|s| s["files"] == 10_051)
    });
    std::thread::sleep(Duration::from_secs(2));
    let n = snapshots(&repo).len();
    assert!(
        (2..=3).contains(&n),
        "{n} snapshots for one burst (at most 2 after the first)"
    );
    assert_latest_restores(&repo, &src, &t.path().join("restored"));
}

#[test]
fn an_event_queue_overflow_leads_to_a_full_rescan() {
    let _serial = serial();
    if !require_root("lowering fs.inotify.max_queued_events") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("seed.txt"), "seed");
    let knob = "/proc/sys/fs/inotify/max_queued_events";
    let old = fs::read_to_string(knob).unwrap();
    fs::write(knob, "8").unwrap();
    let w = Watch::start(&src, &repo, &["--debounce", "500ms"]);
    // The limit is taken when the watch starts; give it back to the machine.
    std::thread::sleep(Duration::from_millis(300));
    fs::write(knob, old.trim()).unwrap();
    wait_for("the first snapshot", 20, || !snapshots(&repo).is_empty());
    for i in 0..3000 {
        fs::write(src.join(format!("f{i}.txt")), "x").unwrap();
    }
    wait_for("a snapshot of the whole tree", 60, || {
        snapshots(&repo).last().is_some_and(|s| s["files"] == 3001)
    });
    let out = w.output();
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("snapshot"))
        .unwrap_or("");
    assert!(last.contains("(full rescan)"), "{out}");
    assert_latest_restores(&repo, &src, &t.path().join("restored"));
}

fn big_tree(src: &Path) {
    let mut noise = vec![0u8; 32 << 20];
    for i in 0..5 {
        std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut noise)
            .unwrap();
        write(src.join(format!("big{i}.bin")), &noise);
    }
}

#[test]
fn sigterm_during_a_backup_finishes_it_and_a_second_abandons_it() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    big_tree(&src);
    for (signals, snaps) in [(1, 1usize), (2, 0usize)] {
        let repo = t.path().join(format!("repo{signals}"));
        let w = Watch::start(&src, &repo, &["--debounce", "200ms"]);
        wait_for("a backup in progress", 20, || partials(&repo) == 1);
        for _ in 0..signals {
            w.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(w.wait(), 0);
        assert_eq!(partials(&repo), 0, "no partial archive may remain");
        assert_eq!(snapshots(&repo).len(), snaps, "{signals} signal(s)");
        vault_ok(&["check", "--repo", p(&repo)], 0);
    }
}

#[test]
fn no_snapshot_appears_while_nothing_changes() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let w = Watch::start(
        &src,
        &repo,
        &["--debounce", "200ms", "--rescan-interval", "500ms"],
    );
    wait_for("the first snapshot", 20, || snapshots(&repo).len() == 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(snapshots(&repo).len(), 1, "{}", w.output());
}

/// Issue 13, finding 3: a repository inside the watched source is neither backed up nor a
/// source of events (it was: 33 snapshots in 10 s with no change, archives growing).
#[test]
fn review_03_watch_never_backs_up_its_own_repository() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("w");
    write(w.join("data/a.txt"), "a");
    let repo = w.join(".repo");
    // Relative paths, as typed (`vault watch w --repo w/.repo`): the repository does not
    // exist yet when the watch starts.
    let out = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let child = Command::new(vault_bin())
        .args([
            "watch",
            "w",
            "--repo",
            "w/.repo",
            "--full-on",
            "never",
            "--debounce",
            "200ms",
        ])
        .current_dir(t.path())
        .env_remove("VAULT_REPO")
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch = Watch { child, out };
    wait_for("the first snapshot", 20, || snapshots(&repo).len() == 1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(snapshots(&repo).len(), 1, "snapshots without a change");
    write(w.join("data/b.txt"), "b");
    wait_for("a snapshot of the change", 20, || {
        latest_paths(&repo).contains(&"data/b.txt".to_string())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(snapshots(&repo).len(), 2, "{}", watch.output());
    assert!(latest_paths(&repo).iter().all(|p| !p.starts_with(".repo")));
    watch.signal(libc::SIGTERM);
    assert_eq!(watch.wait(), 0);
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
}

/// Issue 13, finding 7: the watched folder replaced (moved away and made again, or removed
/// and made again) is watched anew: later changes are still backed up.
#[test]
fn review_07_watch_follows_a_replaced_source_folder() {
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("w1"), t.path().join("repo"));
    write(src.join("a"), "a");
    let watch = Watch::start(&src, &repo, &["--debounce", "200ms"]);
    wait_for("the first snapshot", 20, || snapshots(&repo).len() == 1);
    for (round, replace) in ["mv", "rm"].iter().enumerate() {
        if *replace == "mv" {
            fs::rename(&src, t.path().join("w1.old")).unwrap();
        } else {
            fs::remove_dir_all(&src).unwrap();
        }
        fs::create_dir(&src).unwrap();
        let (c, d) = (format!("c{round}"), format!("d{round}"));
        write(src.join(&c), "c");
        wait_for(&c, 20, || latest_paths(&repo).contains(&c));
        write(src.join(&d), "d");
        wait_for(&d, 20, || latest_paths(&repo).contains(&d));
    }
    watch.signal(libc::SIGTERM);
    assert_eq!(watch.wait(), 0);
    assert_latest_restores(&repo, &src, &t.path().join("restored"));
}
