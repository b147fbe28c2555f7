//! `vault scan`: real ICMP and TCP probes, only ever to loopback or to addresses inside network
//! namespaces this test creates (`unshare -n`, `ip netns`).

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use crate::common::*;

/// Runs a shell script in a new, private network namespace with loopback up.
fn in_private_netns(script: &str) -> Run {
    let full = format!("set -e; ip link set lo up; {script}");
    Command::new("unshare")
        .args(["-n", "sh", "-c", &full])
        .env("VAULT", vault_bin())
        .output()
        .expect("unshare")
        .into()
}

#[test]
fn loopback_block_is_all_up_over_icmp() {
    if !require_root("raw ICMP sockets") {
        return;
    }
    let r = vault_ok(&["scan", "127.0.0.0/28", "--timeout", "500ms", "--json"], 0);
    let j = r.json();
    assert_eq!(j["up"], 14, "{j}");
    assert_eq!(j["down"], 0);
    assert_eq!(j["icmp_socket"], "raw");
    for h in j["hosts"].as_array().unwrap() {
        assert_eq!(h["up"], true);
        assert!(h["rtt_ms"].as_f64().unwrap() >= 0.0);
    }
    // Human output: a line per host.
    let r = vault_ok(&["scan", "127.0.0.1-3", "::1", "--timeout", "500ms"], 0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[0].starts_with("127.0.0.1 up "), "{}", r.stdout);
    assert!(lines[3].starts_with("::1 up "), "{}", r.stdout);
}

#[test]
fn tcp_ports_open_and_closed() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ports = format!("{open_port},{closed_port}");
    let r = vault_ok(
        &[
            "scan",
            "127.0.0.1",
            "--tcp",
            &ports,
            "--timeout",
            "500ms",
            "--json",
        ],
        0,
    );
    let j = r.json();
    let h = &j["hosts"][0];
    assert_eq!(h["up"], true);
    assert_eq!(h["ports"][open_port.to_string()], "open", "{j}");
    assert_eq!(h["ports"][closed_port.to_string()], "closed", "{j}");
    assert_eq!(
        j["icmp_socket"],
        serde_json::Value::Null,
        "--tcp alone sends no ICMP"
    );
    drop(open);
}

#[test]
fn all_down_in_a_namespace_that_ignores_echo() {
    if !require_root("network namespaces") {
        return;
    }
    let r = in_private_netns(
        "sysctl -qw net.ipv4.icmp_echo_ignore_all=1; \
         \"$VAULT\" scan 127.0.0.0/28 --timeout 300ms --retries 0 --json",
    );
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    assert_eq!(j["up"], 0);
    assert_eq!(j["down"], 14);
    assert!(j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["up"] == false));
}

/// Two namespaces joined by a veth pair; the second ignores echo. Removed on drop.
struct VethPair {
    a: String,
    b: String,
}

impl VethPair {
    fn new() -> VethPair {
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("vault-a-{id}"), format!("vault-b-{id}"));
        let script = format!(
            "set -e; ip netns add {a}; ip netns add {b}; \
             ip link add va{id} netns {a} type veth peer name vb{id} netns {b}; \
             ip -n {a} link set lo up; ip -n {b} link set lo up; \
             ip -n {a} addr add 10.251.7.1/24 dev va{id}; ip -n {b} addr add 10.251.7.2/24 dev vb{id}; \
             ip -n {a} link set va{id} up; ip -n {b} link set vb{id} up; \
             ip netns exec {b} sysctl -qw net.ipv4.icmp_echo_ignore_all=1"
        );
        let st = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(st.success(), "setting up namespaces");
        VethPair { a, b }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

#[test]
fn mixed_up_and_down_across_a_veth_pair() {
    if !require_root("network namespaces") {
        return;
    }
    let pair = VethPair::new();
    let run = |extra: &[&str]| -> Run {
        let mut args = vec![
            "netns",
            "exec",
            &pair.a,
            vault_bin(),
            "scan",
            "10.251.7.1-3",
        ];
        args.extend_from_slice(extra);
        Command::new("ip").args(&args).output().unwrap().into()
    };
    let r = run(&["--timeout", "300ms", "--retries", "0", "--json"]);
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let up: Vec<bool> = j["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["up"].as_bool().unwrap())
        .collect();
    assert_eq!(up, [true, false, false], "{j}");
    // The host that ignores echo still answers TCP (a refused port): up, by TCP.
    let r = run(&[
        "--timeout",
        "300ms",
        "--retries",
        "0",
        "--tcp",
        "9",
        "--icmp",
        "--json",
    ]);
    let j = r.json();
    assert_eq!(j["hosts"][1]["up"], true, "{j}");
    assert_eq!(j["hosts"][1]["ports"]["9"], "closed", "{j}");
    assert_eq!(j["hosts"][2]["ports"]["9"], "filtered", "{j}");
}

#[test]
fn transitions_are_reported_once() {
    if !require_root("network namespaces") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let d = t.path().display();
    let script = format!(
        "S={st}; scan() {{ \"$VAULT\" scan 127.0.0.1 --timeout 300ms --retries 0 --state $S --json > {d}/$1.json || true; }}; \
         scan r1; sysctl -qw net.ipv4.icmp_echo_ignore_all=1; scan r2; scan r3; \
         sysctl -qw net.ipv4.icmp_echo_ignore_all=0; scan r4",
        st = state.display()
    );
    let r = in_private_netns(&script);
    assert_eq!(r.code, 0, "{r:?}");
    let read = |n: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(t.path().join(format!("{n}.json"))).unwrap())
            .unwrap()
    };
    let (r1, r2, r3, r4) = (read("r1"), read("r2"), read("r3"), read("r4"));
    assert_eq!(r1["transitions"].as_array().unwrap().len(), 0);
    assert_eq!(r2["transitions"][0]["from"], "up");
    assert_eq!(r2["transitions"][0]["to"], "down");
    assert_eq!(r2["transitions"].as_array().unwrap().len(), 1);
    assert_eq!(
        r3["transitions"].as_array().unwrap().len(),
        0,
        "a state is reported once"
    );
    assert_eq!(r4["transitions"][0]["to"], "up");
    assert!(state.join("scan.db").is_file());
}

#[test]
fn unprivileged_icmp_uses_a_datagram_socket_or_says_what_to_do() {
    if !require_root("network namespaces and switching users") {
        return;
    }
    let as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups \"$VAULT\" scan 127.0.0.1 --timeout 300ms --json";
    let r = in_private_netns(&format!(
        "sysctl -qw net.ipv4.ping_group_range='1 0'; {as_nobody}"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("--tcp") && r.stderr.contains("ping_group_range"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let r = in_private_netns(&format!(
        "sysctl -qw net.ipv4.ping_group_range='0 2147483647'; {as_nobody}"
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["icmp_socket"], "datagram");
    assert_eq!(j["up"], 1);
}

#[test]
fn bad_input_is_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("hosts");
    fs::write(&empty, "# nothing here\n\n").unwrap();
    for (args, code, needle) in [
        (vec!["scan", "300.1.1.1"], 2, "bad address '300.1.1.1'"),
        (vec!["scan", "10.0.0.0/33"], 2, "prefix must be 0..=32"),
        (
            vec!["scan", "--hosts-file", empty.to_str().unwrap()],
            2,
            "lists no targets",
        ),
        (vec!["scan"], 2, "no targets"),
        (vec!["scan", "10.0.0.0/8"], 2, "--yes"),
        (
            vec!["scan", "127.0.0.1", "--tcp", "http"],
            2,
            "bad port list",
        ),
        (
            vec!["scan", "127.0.0.1", "--timeout", "soon"],
            2,
            "bad duration",
        ),
    ] {
        let r = vault(&args);
        assert_eq!(r.code, code, "{args:?}: {r:?}");
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // An unknown name, resolved where there is no network at all.
    if is_root() {
        let r = in_private_netns("\"$VAULT\" scan no-such-host.invalid --timeout 300ms");
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr
                .contains("cannot resolve host 'no-such-host.invalid'"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
}
