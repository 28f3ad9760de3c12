//! The `myriad` binary end to end: three `myriad serve` processes on
//! loopback driven by the client subcommands (the administrative ones too:
//! groups, leadership transfer, drain), a clean stop on SIGTERM and a
//! restart that catches up, nodes killed with SIGKILL while they compact
//! (every acknowledged write survives), and the errors an operator meets
//! first (bad configurations, taken ports, a wrong `--cores`).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a node may take to print its serving line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one client command may run (its own deadline is shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The client's retry deadline: covers the first elections.
const CLIENT_DEADLINE_MS: &str = "30000";
/// Longest a node may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a replica may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const CORES: u32 = 2;
/// The exit code of an unknown outcome.
const EXIT_UNKNOWN: i32 = 3;
/// Sends of one write before a test gives up on a definite outcome.
const WRITE_ATTEMPTS_MAX: usize = 5;

fn myriad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_myriad"))
}

/// A directory on the real disk (O_DIRECT needs one; tmpfs would silently
/// fall back to buffered I/O).
fn test_dir() -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root).unwrap();
    tempfile::tempdir_in(root).unwrap()
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u32 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32_768)
}

/// Candidates handed out so far, shared by the tests of this process.
static PORTS_TRIED: AtomicU32 = AtomicU32::new(0);

/// `n` loopback base ports, each with `CORES` consecutive ports free now.
/// They lie below the ephemeral range: there, the local port of some
/// outgoing connection (the nodes connect to each other) could take a chosen
/// port before its node binds it.
fn free_bases(n: usize) -> Vec<u16> {
    let low = ephemeral_low();
    let floor = low.saturating_sub(12_000).max(1_024);
    let span = low - floor - CORES;
    // Test processes running at once start at different places.
    let offset = std::process::id().wrapping_mul(7_919) % span;
    let mut bases = Vec::new();
    for _ in 0..span {
        if bases.len() == n {
            break;
        }
        let tried = PORTS_TRIED.fetch_add(CORES, Ordering::Relaxed);
        let base = (floor + (offset + tried) % span) as u16;
        let held: Vec<TcpListener> = (0..CORES as u16).map_while(|k| TcpListener::bind(("127.0.0.1", base + k)).ok()).collect();
        if held.len() == CORES as usize {
            bases.push(base);
        }
    }
    assert_eq!(bases.len(), n, "not enough free ports below {low}");
    bases
}

struct Layout {
    dir: tempfile::TempDir,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
}

impl Layout {
    fn new() -> Layout {
        let ports = free_bases(6);
        Layout { dir: test_dir(), peer_ports: ports[..3].to_vec(), client_ports: ports[3..].to_vec() }
    }

    /// Writes node `id`'s configuration; returns its path.
    fn write_config(&self, id: u64) -> PathBuf {
        let peers: String = (1..=3u64).map(|n| format!("{n} = \"127.0.0.1:{}\"\n", self.peer_ports[n as usize - 1])).collect();
        let text = format!(
            "node_id = {id}\nclient_addr = \"127.0.0.1:{client}\"\ndata_dir = \"{data}\"\ncores = {CORES}\ngroups = 8\ncluster_id = 7\ntick_ms = 50\ncompact_every_entries = 64\n\n[peers]\n{peers}",
            client = self.client_ports[id as usize - 1],
            data = self.dir.path().join(format!("node{id}")).display(),
        );
        let path = self.dir.path().join(format!("node{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn cluster_arg(&self) -> String {
        (1..=3).map(|n| format!("{n}=127.0.0.1:{}", self.client_ports[n - 1])).collect::<Vec<_>>().join(",")
    }
}

/// A running `myriad serve`; killed on drop so a failing test leaks nothing.
struct Node {
    id: u64,
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start(id: u64, config: &Path) -> Node {
        let mut child = myriad().args(["serve", "--config"]).arg(config).env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("myriad starts");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err, lines) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Node { id, child, stdout, stderr }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the serving line; returns the client addresses it lists.
    fn wait_serving(&self) -> Vec<SocketAddr> {
        let line = match self.stdout.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!("node {} did not report serving ({e}); its log:\n{}", self.id, self.logs()),
        };
        assert!(line.starts_with("myriad serving: "), "unexpected first line {line:?}");
        assert!(line.contains(&format!("node={} ", self.id)), "{line}");
        let clients = line.split(' ').find_map(|f| f.strip_prefix("clients=")).unwrap_or_else(|| panic!("no clients= in {line:?}"));
        clients.split(',').map(|a| a.parse().unwrap()).collect()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child, which we have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < timeout, "node {} did not exit within {timeout:?}; its log:\n{}", self.id, self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of node {} ---\n{}", self.id, self.logs());
        }
    }
}

/// What one command printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}; stderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `myriad` with `args` (and `env`), bounded by `COMMAND_TIMEOUT`.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = myriad();
    cmd.args(args).env_remove("MYRIAD_CLUSTER").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("myriad starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("myriad {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Run { code: status.code().unwrap_or(-1), stdout, stderr }
}

fn run(args: &[&str]) -> Run {
    run_with(args, &[])
}

/// A client command against the cluster: `op` with the cluster flags added
/// (and `--group`, unless `group` is 0).
fn client(layout: &Layout, op: &str, group: u64, rest: &[&str]) -> Run {
    let cluster = layout.cluster_arg();
    let group = group.to_string();
    let cores = CORES.to_string();
    let mut args = vec![op, "--cluster", &cluster, "--cores", &cores, "--deadline-ms", CLIENT_DEADLINE_MS];
    if group != "0" {
        args.extend(["--group", &group]);
    }
    args.extend_from_slice(rest);
    run(&args)
}

fn expect_ok(r: &Run, what: &str) -> Value {
    let v = r.json();
    assert_eq!((r.code, &v["ok"]), (0, &Value::Bool(true)), "{what}: {v}; stderr: {}", r.stderr);
    let node = v["node"].as_u64().unwrap_or_else(|| panic!("{what}: no answering node in {v}"));
    assert!((1..=3).contains(&node), "{what}: {v}");
    v
}

/// Runs a write that should succeed. An unknown outcome (a leader change,
/// which a loaded machine causes now and then) is settled as an application
/// would: read `key`; if it holds `after` (nothing else writes it) the write
/// applied, else send it again. Returns the write's report, or the read's.
fn write_ok(layout: &Layout, op: &str, group: u64, rest: &[&str], key: &str, after: Option<&str>) -> Value {
    for _ in 0..WRITE_ATTEMPTS_MAX {
        let r = client(layout, op, group, rest);
        if r.code != EXIT_UNKNOWN {
            return expect_ok(&r, op);
        }
        eprintln!("{op} {rest:?}: {}; reading {key} to settle it", r.stdout.trim());
        let now = expect_ok(&client(layout, "get", group, &[key]), "settling read");
        if now["value"] == after.map_or(Value::Null, Value::from) {
            return now;
        }
    }
    panic!("{op} {rest:?}: no definite outcome in {WRITE_ATTEMPTS_MAX} attempts");
}

/// Runs a write that should be refused; an unknown outcome is retried (the
/// refused write changes nothing, so sending it again is safe).
fn write_refused(layout: &Layout, op: &str, group: u64, rest: &[&str]) -> Value {
    for _ in 0..WRITE_ATTEMPTS_MAX {
        let r = client(layout, op, group, rest);
        if r.code == EXIT_UNKNOWN {
            continue;
        }
        let v = r.json();
        assert_eq!((r.code, &v["ok"]), (1, &Value::Bool(false)), "{op} {rest:?}: {v}");
        return v;
    }
    panic!("{op} {rest:?}: no definite outcome in {WRITE_ATTEMPTS_MAX} attempts");
}

/// Polls a stale read of `key` on node `node` until it shows `value`.
fn wait_replica(layout: &Layout, node: u64, group: u64, key: &str, value: &str) {
    let started = Instant::now();
    let node = node.to_string();
    loop {
        let r = client(layout, "get", group, &["--stale", "--node", &node, key]);
        if r.code == 0 && r.json()["value"] == value {
            return;
        }
        assert!(started.elapsed() < CATCH_UP_TIMEOUT, "node {node} never showed {key}={value}; last answer: {} {}", r.stdout, r.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_node_cluster_through_the_cli() {
    let layout = Layout::new();
    let configs: Vec<PathBuf> = (1..=3).map(|id| layout.write_config(id)).collect();
    let mut nodes: Vec<Node> = (1..=3).map(|id| Node::start(id, &configs[id as usize - 1])).collect();
    for (i, node) in nodes.iter().enumerate() {
        let base = layout.client_ports[i];
        let want: Vec<SocketAddr> = (0..CORES as u16).map(|k| SocketAddr::from(([127, 0, 0, 1], base + k))).collect();
        assert_eq!(node.wait_serving(), want, "node {} serves on its configured ports", node.id);
    }

    // Put then get, in two groups (so both cores of every node take part).
    for group in [3, 4] {
        let v = write_ok(&layout, "put", group, &["k1", "v1"], "k1", Some("v1"));
        assert_eq!((v["group"].as_u64(), v["key"].as_str(), v["value"].as_str()), (Some(group), Some("k1"), Some("v1")), "{v}");
        let v = expect_ok(&client(&layout, "get", group, &["k1"]), "get");
        assert_eq!((v["found"].as_bool(), v["value"].as_str()), (Some(true), Some("v1")), "{v}");
    }
    let v = expect_ok(&client(&layout, "get", 3, &["absent"]), "get of a missing key");
    assert_eq!((v["found"].as_bool(), &v["value"]), (Some(false), &Value::Null), "{v}");

    // Compare-and-swap: success, then a failed comparison reporting the current value.
    let v = write_ok(&layout, "cas", 3, &["k1", "--expected", "v1", "--new", "v2"], "k1", Some("v2"));
    assert_eq!(v["value"], "v2", "{v}");
    let v = write_refused(&layout, "cas", 3, &["k1", "--expected", "v1", "--new", "v3"]);
    assert_eq!((&v["cas_failed"], &v["current"]), (&Value::Bool(true), &Value::from("v2")), "{v}");
    write_ok(&layout, "cas", 3, &["fresh", "--absent", "--new", "a"], "fresh", Some("a"));
    let v = write_refused(&layout, "cas", 3, &["fresh", "--absent", "--delete"]);
    assert_eq!(v["current"], "a", "{v}");
    let v = write_ok(&layout, "cas", 3, &["fresh", "--expected", "a", "--delete"], "fresh", None);
    assert_eq!(v["value"], Value::Null, "{v}");
    let v = expect_ok(&client(&layout, "get", 3, &["k1"]), "get after cas");
    assert_eq!(v["value"], "v2", "{v}");

    // Delete, scan, and the cluster list taken from the environment.
    write_ok(&layout, "delete", 4, &["k1"], "k1", None);
    let v = expect_ok(&client(&layout, "get", 4, &["k1"]), "get after delete");
    assert_eq!(v["found"], false, "{v}");
    for key in ["p/a", "p/b", "q/c"] {
        write_ok(&layout, "put", 4, &[key, "x"], key, Some("x"));
    }
    let v = expect_ok(&client(&layout, "scan", 4, &["p/"]), "scan");
    assert_eq!((v["count"].as_u64(), &v["entries"][1]["key"]), (Some(2), &Value::from("p/b")), "{v}");
    let cores = CORES.to_string();
    let r = run_with(&["get", "--cores", &cores, "--group", "3", "k1"], &[("MYRIAD_CLUSTER", &layout.cluster_arg())]);
    assert_eq!(expect_ok(&r, "get with $MYRIAD_CLUSTER")["value"], "v2");

    // Definite failures: a group that does not exist, a wrong core count.
    let r = client(&layout, "get", 999, &["k1"]);
    let v = r.json();
    assert_eq!((r.code, &v["ok"]), (1, &Value::Bool(false)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("does not exist"), "{v}");
    let r = run(&["put", "--cluster", &layout.cluster_arg(), "--cores", "1", "--group", "3", "k1", "v9"]);
    let v = r.json();
    assert_eq!(r.code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&format!("runs {CORES} cores")), "{v}");
    assert_eq!(expect_ok(&client(&layout, "get", 3, &["k1"]), "get")["value"], "v2", "the refused put wrote nothing");

    // Groups created and deleted at runtime, beyond the configured 1..=8.
    let r = client(&layout, "create-group", 0, &["20"]);
    assert_eq!((r.code, r.stdout.trim()), (0, r#"{"ok":true,"group":20}"#), "{}", r.stderr);
    write_ok(&layout, "put", 20, &["new", "group"], "new", Some("group"));
    assert_eq!(expect_ok(&client(&layout, "get", 20, &["new"]), "get in a created group")["value"], "group");
    let r = client(&layout, "delete-group", 0, &["20"]);
    assert_eq!((r.code, r.stdout.trim()), (0, r#"{"ok":true,"group":20}"#), "{}", r.stderr);
    let r = client(&layout, "get", 20, &["new"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.json()["error"].as_str().unwrap().contains("does not exist"), "{}", r.stdout);
    // A range at once, pipelined; a deleted group's id is refused after.
    let r = client(&layout, "create-group", 0, &["21", "--through", "520"]);
    assert_eq!((r.code, r.stdout.trim()), (0, r#"{"ok":true,"first":21,"last":520,"groups":500,"done":500,"unknown":[],"failed":[]}"#), "{}", r.stderr);
    write_ok(&layout, "put", 520, &["new", "range"], "new", Some("range"));
    let r = client(&layout, "delete-group", 0, &["20", "--through", "520"]);
    assert_eq!((r.code, &r.json()["done"]), (0, &Value::from(501)), "{}", r.stdout);
    let r = client(&layout, "create-group", 0, &["20", "--through", "21"]);
    let v = r.json();
    assert_eq!((r.code, &v["done"], v["failed"].as_array().map(Vec::len)), (1, &Value::from(0), Some(2)), "{v}");
    assert!(v["failed"][0]["error"].as_str().unwrap().contains("not used again"), "{v}");
    let r = client(&layout, "create-group", 0, &["30", "--through", "29"]);
    assert_eq!(r.code, 2, "a backwards range is a usage error: {}", r.stderr);

    // Every replica applies the writes (stale reads of each node).
    for node in 1..=3 {
        wait_replica(&layout, node, 3, "k1", "v2");
    }

    // Every node's counters, summed over its cores (each node served
    // reads above, and every replica wrote its WAL).
    let r = client(&layout, "metrics", 0, &[]);
    let v = r.json();
    assert_eq!((r.code, &v["ok"]), (0, &Value::Bool(true)), "{v}; stderr: {}", r.stderr);
    for node in ["1", "2", "3"] {
        let m = &v["nodes"][node];
        assert!(m["client_requests"].as_u64() > Some(0) && m["wal_syncs"].as_u64() > Some(0), "node {node}: {m}");
        assert!(m["messages_by_traffic"]["append_answers"].as_u64() > Some(0), "node {node} answered appends: {m}");
        assert_eq!(m["groups_deleted"].as_u64(), Some(501), "node {node}: group 20, then 21 to 520: {m}");
    }

    // An operator moves a leadership, then drains a node without stopping
    // it, and ends the drain.
    let leader = write_ok(&layout, "put", 3, &["moved", "1"], "moved", Some("1"))["node"].as_u64().unwrap();
    let to = if leader == 1 { 2 } else { 1 };
    let to_arg = to.to_string();
    let r = client(&layout, "transfer-leader", 3, &["--to", &to_arg]);
    assert_eq!((r.code, r.stdout.trim()), (0, format!(r#"{{"ok":true,"group":3,"leader":{to},"node":{to}}}"#).as_str()), "{}", r.stderr);
    let r = client(&layout, "transfer-leader", 3, &["--to", "9"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.json()["error"].as_str().unwrap().contains("not a voter"), "{}", r.stdout);
    let r = client(&layout, "drain", 0, &["--node", &to_arg, "--wait-ms", "20000"]);
    assert_eq!((r.code, r.stdout.trim()), (0, format!(r#"{{"ok":true,"node":{to}}}"#).as_str()), "{}", r.stderr);
    let m = &client_of_layout_metrics(&layout)["nodes"][&to_arg];
    assert_eq!((m["leaders"].as_u64(), m["cores_draining"].as_u64()), (Some(0), Some(u64::from(CORES))), "node {to} drained: {m}");
    let v = write_ok(&layout, "put", 3, &["moved", "2"], "moved", Some("2"));
    assert_ne!(v["node"].as_u64(), Some(to), "a drained node leads nothing: {v}");
    let r = client(&layout, "undrain", 0, &["--node", &to_arg]);
    assert_eq!((r.code, r.stdout.trim()), (0, format!(r#"{{"ok":true,"node":{to}}}"#).as_str()), "{}", r.stderr);
    let started = Instant::now();
    while client_of_layout_metrics(&layout)["nodes"][&to_arg]["cores_draining"] != 0 {
        assert!(started.elapsed() < CATCH_UP_TIMEOUT, "node {to} still drains after undrain");
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM stops a node cleanly; the other two keep a quorum.
    nodes[2].signal(libc::SIGTERM);
    let status = nodes[2].wait_exit(STOP_TIMEOUT);
    assert!(status.success(), "node 3 stopped with {status}; its log:\n{}", nodes[2].logs());
    assert!(nodes[2].logs().contains("stopped"), "node 3 logs its stop:\n{}", nodes[2].logs());
    let r = client(&layout, "metrics", 0, &[]);
    let v = r.json();
    assert_eq!((r.code, &v["ok"]), (1, &Value::Bool(false)), "a stopped node fails the command: {v}");
    assert!(v["nodes"]["3"]["error"].is_string() && v["nodes"]["1"]["wal_syncs"].is_u64(), "{v}");
    write_ok(&layout, "put", 3, &["k1", "v4"], "k1", Some("v4"));
    write_ok(&layout, "put", 4, &["after", "restart"], "after", Some("restart"));

    // Restarted on the same data, node 3 recovers and catches up.
    nodes[2] = Node::start(3, &configs[2]);
    nodes[2].wait_serving();
    wait_replica(&layout, 3, 3, "k1", "v4");
    wait_replica(&layout, 3, 4, "after", "restart");

    // SIGINT stops the rest cleanly too.
    for node in &nodes {
        node.signal(libc::SIGINT);
    }
    for node in &mut nodes {
        let status = node.wait_exit(STOP_TIMEOUT);
        assert!(status.success(), "node {} stopped with {status}; its log:\n{}", node.id, node.logs());
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster")
}

#[test]
fn configuration_errors_are_reported() {
    let dir = test_dir();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let expect_error = |config: &str, words: &[&str]| {
        let r = run(&["serve", "--config", config]);
        assert_eq!(r.code, 1, "serve --config {config}: {}", r.stderr);
        for w in words {
            assert!(r.stderr.contains(w), "serve --config {config}: the error {:?} should mention {w:?}", r.stderr);
        }
    };
    let missing = dir.path().join("missing.toml").display().to_string();
    expect_error(&missing, &["cannot read", "missing.toml"]);
    expect_error(&write("syntax.toml", "node_id = = 1\n"), &["syntax.toml", "not valid TOML"]);
    let example = std::fs::read_to_string(examples_dir().join("node1.toml")).unwrap();
    expect_error(&write("unknown.toml", &format!("colour = \"blue\"\n{example}")), &["unknown field `colour`"]);
    expect_error(&write("stranger.toml", &example.replace("node_id = 1", "node_id = 9")), &["node 9 is not in the peer list"]);
    expect_error(&write("nocores.toml", &example.replace("cores = 1", "cores = 0")), &["cores must be in"]);

    // Ports: overlapping ranges, and a port another process holds.
    let r = run(&["serve", "--config", &examples_dir().join("node1.toml").display().to_string(), "--cores", "2", "--data-dir", &dir.path().display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("overlap"), "{}", r.stderr);
    let bases = free_bases(2);
    let held = TcpListener::bind(("127.0.0.1", bases[1])).unwrap();
    let taken = example.replace("127.0.0.1:7100", &format!("127.0.0.1:{}", bases[1])).replace("127.0.0.1:7101", &format!("127.0.0.1:{}", bases[0]));
    let r = run(&["serve", "--config", &write("taken.toml", &taken), "--data-dir", &dir.path().display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is taken"), "{}", r.stderr);
    drop(held);

    // Client commands: no cluster is a usage error (exit 2), like a bad flag.
    let r = run(&["get", "k"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("MYRIAD_CLUSTER"), "{}", r.stderr);
    let r = run_with(&["get", "k"], &[("MYRIAD_CLUSTER", "1=nowhere")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(run(&["cas", "--cluster", "1=127.0.0.1:1", "k", "--new", "v"]).code, 2, "cas needs --expected or --absent");
}

#[test]
fn example_configs_match_config_example_and_load() {
    for id in 1..=3 {
        let path = examples_dir().join(format!("node{id}.toml"));
        let file = std::fs::read_to_string(&path).unwrap();
        let r = run(&["config-example", "--node-id", &id.to_string()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stdout, file, "{} differs from `myriad config-example --node-id {id}`", path.display());

        let r = run(&["serve", "--config", &path.display().to_string(), "--print-config"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains(&format!("node_id = {id}\n")), "{}", r.stdout);
        assert!(r.stdout.contains("tick_ms = 100\n"), "{}", r.stdout);
    }
    // The printed configuration loads back as itself; overrides apply.
    let dir = test_dir();
    let node1 = examples_dir().join("node1.toml").display().to_string();
    let r = run(&["serve", "--config", &node1, "--print-config", "--node-id", "2", "--data-dir", "/elsewhere", "--cores", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in ["node_id = 2\n", "data_dir = \"/elsewhere\"\n", "client_addr = \"127.0.0.1:7100\"\n"] {
        assert!(r.stdout.contains(line), "{line:?} missing from {}", r.stdout);
    }
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &r.stdout).unwrap();
    let again = run(&["serve", "--config", &printed.display().to_string(), "--print-config"]);
    assert_eq!((again.code, &again.stdout), (0, &r.stdout), "{}", again.stderr);
}

/// Writes sent by the crash test, spread over the 8 groups: with
/// `compact_every_entries = 64` every replica snapshots each group twice.
const CRASH_TEST_WRITES: u64 = 1200;

#[test]
fn sigkilled_nodes_keep_every_acknowledged_write_across_snapshots() {
    use engine::client::proto::Reply;
    use engine::client::{Client, ClientOptions, ClusterMap, Outcome};

    let layout = Layout::new();
    let configs: Vec<PathBuf> = (1..=3).map(|id| layout.write_config(id)).collect();
    let start = |id: u64| {
        let node = Node::start(id, &configs[id as usize - 1]);
        node.wait_serving();
        node
    };
    let kill = |node: &mut Node| {
        node.signal(libc::SIGKILL);
        node.wait_exit(STOP_TIMEOUT);
    };
    let mut nodes: Vec<Node> = (1..=3).map(start).collect();
    let bases = (1..=3u64).map(|id| (id, SocketAddr::from(([127, 0, 0, 1], layout.client_ports[id as usize - 1])))).collect();
    let map = ClusterMap::from_bases(&bases, CORES);
    let opts = ClientOptions { request_timeout: Duration::from_secs(3), deadline: Duration::from_secs(30), ..ClientOptions::default() };
    let mut client = Client::new(map, opts);

    // Writes while node 1 is killed mid-way (snapshots being saved or not,
    // WAL records in flight) and later restarted.
    let mut acked = Vec::new();
    for i in 0..CRASH_TEST_WRITES {
        if i == CRASH_TEST_WRITES / 4 {
            kill(&mut nodes[0]);
        }
        if i == CRASH_TEST_WRITES / 2 {
            nodes[0] = start(1);
        }
        let (group, key, value) = (1 + i % 8, format!("k{i}"), format!("v{i}"));
        match client.put(group, key.clone(), value.clone()) {
            Outcome::Ok(Reply::Done) => acked.push((group, key, value)),
            Outcome::Ok(other) => panic!("put {key}: {other:?}"),
            // Not acknowledged: nothing to check.
            Outcome::Unknown(_) | Outcome::Failed(_) => {}
        }
    }
    assert!(acked.len() as u64 > CRASH_TEST_WRITES / 2, "only {} of {CRASH_TEST_WRITES} writes were acknowledged", acked.len());
    let r = client_of_layout_metrics(&layout);
    let snapshots: u64 = ["1", "2", "3"].iter().filter_map(|n| r["nodes"][n]["snapshots"].as_u64()).sum();
    assert!(snapshots > 0, "the nodes compacted while writing: {r}");

    // Every node killed at once, then restarted on its data.
    for node in &mut nodes {
        kill(node);
    }
    let nodes: Vec<Node> = (1..=3).map(start).collect();
    for (group, key, value) in &acked {
        match client.get(*group, key.clone()) {
            Outcome::Ok(Reply::Value(Some(v))) if v == value.as_bytes() => {}
            other => panic!("acknowledged {key}={value} in group {group} reads back as {other:?}"),
        }
    }
    drop(nodes);
}

/// `myriad metrics` for the layout's cluster, as JSON.
fn client_of_layout_metrics(layout: &Layout) -> Value {
    let r = client(layout, "metrics", 0, &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    r.json()
}
