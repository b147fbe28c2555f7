//! The config file: jobs, precedence of the command line, errors naming file, line and key.

use std::fs;

use crate::common::*;

#[test]
fn jobs_defaults_and_the_command_line_winning() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("keep.txt"), "keep");
    write(src.join("skip.tmp"), "skip");
    let cfg = t.path().join("vault.toml");
    fs::write(
        &cfg,
        format!(
            "[backup]\nfull_on = \"never\"\n\n[job.demo]\nsource = \"{}\"\nrepo = \"{}\"\nexclude = [\"*.tmp\"]\ncompression = \"zstd\"\n",
            src.display(),
            repo.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let r = vault_ok(&["--config", c, "backup", "--job", "demo", "--json"], 0).json();
    assert!(r["archive"].as_str().unwrap().ends_with(".tar.zst"), "{r}");
    let ls = vault_ok(&["--config", c, "ls", "latest", "--json"], 2);
    assert!(
        ls.stderr.contains("--repo"),
        "the job's repo is for backups only: {}",
        ls.stderr
    );
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["keep.txt"]);
    // The command line wins over the job.
    let r = vault_ok(
        &[
            "--config",
            c,
            "backup",
            "--job",
            "demo",
            "--full",
            "--compression",
            "gzip",
            "--json",
        ],
        0,
    )
    .json();
    assert!(r["archive"].as_str().unwrap().ends_with(".tar.gz"), "{r}");
    // [backup] full_on = never applies: the next one is an incremental.
    write(src.join("new.txt"), "n");
    let r = vault_ok(&["--config", c, "backup", "--job", "demo", "--json"], 0).json();
    assert_eq!(r["kind"], "incremental");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("bad.toml");
    let c = cfg.to_str().unwrap().to_string();
    for (text, needle) in [
        (
            "[backup]\nfull_on = \"mon\"\nexlude = [\"x\"]\n",
            ":3: key `exlude`: unknown field",
        ),
        (
            "repo = \"/r\"\n\n[scan]\nretries = \"many\"\n",
            ":4: key `retries`: invalid type",
        ),
        ("[nonsense]\nx = 1\n", ":1"),
    ] {
        fs::write(&cfg, text).unwrap();
        let r = vault(&["--config", &c, "snapshots"]);
        assert_eq!(r.code, 2, "{text}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{c}{needle}")),
            "{text}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
    fs::write(&cfg, "[job.a]\nsource = \"/tmp\"\n").unwrap();
    let r = vault(&["--config", &c, "backup", "--job", "b", "--repo", "/tmp/x"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!("{c}: no [job.b] (jobs: a)")),
        "{}",
        r.stderr
    );
}

#[test]
fn the_annotated_example_sets_every_documented_key() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/vault.toml.example");
    // `vault --config EXAMPLE init` parses the whole file (every key is known and well-typed)
    // before it fails on the example's repository path.
    let t = tempfile::tempdir().unwrap();
    let r = vault(&[
        "--config",
        example.to_str().unwrap(),
        "init",
        "--repo",
        p(&t.path().join("r")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = fs::read_to_string(&example).unwrap();
    for key in [
        "repo",
        "jobs",
        "full_on",
        "max_chain",
        "compression",
        "level",
        "hash",
        "rehash",
        "exclude",
        "alert_to",
        "every",
        "source",
        "to",
        "smtp",
        "starttls",
        "tls",
        "smtp_user",
        "password_env",
        "password_file",
        "smtp_ca",
        "from",
        "targets",
        "hosts_file",
        "tcp",
        "icmp",
        "timeout",
        "retries",
        "rate",
        "every",
        "state",
        "hosts",
        "identity",
        "known_hosts",
        "parallel",
        "passphrase_env",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "{key} is not in the example"
        );
    }
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let r = vault_ok(&["completions", shell], 0);
        assert!(
            r.stdout.contains("backup") && r.stdout.contains("restore"),
            "{shell}"
        );
    }
    let t = tempfile::tempdir().unwrap();
    vault_ok(&["man", p(t.path())], 0);
    for page in [
        "vault.1",
        "vault-backup.1",
        "vault-restore.1",
        "vault-scan.1",
    ] {
        let text = fs::read_to_string(t.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

/// A config file names password variables, key files and servers: one that others can write is
/// refused, whether found in the current folder or given with --config.
#[test]
fn a_config_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("vault.toml");
    write(&cfg, "repo = \"/tmp/nowhere\"\n");
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o666)).unwrap();
    let r = vault(&["--config", p(&cfg), "snapshots"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("refusing config file") && r.stderr.contains("chmod go-w"),
        "{}",
        r.stderr
    );
    let r: Run = std::process::Command::new(vault_bin())
        .arg("snapshots")
        .current_dir(t.path())
        .env_remove("VAULT_REPO")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("refusing config file"), "{}", r.stderr);
}
