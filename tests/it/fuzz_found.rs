//! Regression tests for what the fuzz targets in fuzz/ found (see fuzz/README.md). Each names
//! the target and the input that found it.

use crate::common::*;

/// manifest_restore, input `include: ["\n"]`: the error quoted the path raw, so a newline in it
/// split the one-line error. Text from names and arguments is now escaped in every message.
#[test]
fn a_newline_in_an_include_path_keeps_the_error_on_one_line() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    // A real file whose name holds a newline: backed up, listed on one line, restored exactly.
    write(src.join("two\nlines.txt"), "b");
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "-q"], 0);
    let r = vault(&[
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&t.path().join("r1")),
        "--include",
        "no\nsuch",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--include no\\nsuch: no such path"),
        "{}",
        r.stderr
    );

    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo)], 0);
    assert!(
        ls.stdout.lines().any(|l| l.ends_with("two\\nlines.txt")),
        "{}",
        ls.stdout
    );
    assert!(!ls
        .stdout
        .lines()
        .any(|l| l == "lines.txt" || l.ends_with(" lines.txt")));
    let target = t.path().join("r2");
    vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ],
        0,
    );
    assert_same_tree(&src, &target);

    // A scan target with a newline in it: exit 2, one line.
    let r = vault(&["scan", "127.0.0.1\nx y"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

/// time_parse, input `"99\0\x0c\x01\x0c\x11\0\u{5c8}"`: `--at` with a multi-byte character
/// across byte 10 panicked (exit 101) instead of being a usage error.
#[test]
fn a_non_ascii_at_time_is_a_usage_error_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "-q"], 0);
    let r = vault(&[
        "restore",
        "--at",
        "2026-11-2\u{e9}",
        "--repo",
        p(&repo),
        "--target",
        p(&t.path().join("r")),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("bad time"), "{}", r.stderr);
}
