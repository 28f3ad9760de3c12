//! The client subcommands: one operation on one group through the
//! shard-aware `engine::client::Client` (or, for `metrics`, one question to
//! each node; for `drain` and `undrain`, to one node), reported as one JSON
//! object, with an exit code that separates
//! "certainly not applied" from "outcome unknown".

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Args};
use engine::client::proto::{Consistency, Op, Reply, SCAN_LIMIT_MAX};
use engine::client::{Client, ClientOptions, ClusterMap, Connection, Outcome};
use engine::node::config::CORES_MAX;
use engine::node::drain::DRAIN_WAIT_MS_MAX;
use serde_json::Value;

use crate::{EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE};

/// The environment variable `--cluster` defaults to.
const CLUSTER_ENV: &str = "MYRIAD_CLUSTER";
/// The longest the `--cores` check waits for one node.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(2);

/// Base client address of each node, by node id.
#[derive(Clone, Debug)]
pub struct Bases(BTreeMap<u64, SocketAddr>);

/// Where the cluster is and how to talk to it: shared by every client command.
#[derive(Args)]
pub struct Target {
    /// Every node's base client address: ID=HOST:PORT,... (core k of a node
    /// serves PORT+k). Defaults to $MYRIAD_CLUSTER.
    #[arg(long, value_name = "ID=HOST:PORT,...", value_parser = parse_bases)]
    cluster: Option<Bases>,
    /// Cores per node: must be the servers' count (it decides which port
    /// serves a group).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(CORES_MAX)))]
    cores: u32,
    /// How long one attempt waits for its reply.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    timeout_ms: u64,
    /// How long the command keeps retrying (elections, busy nodes).
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    deadline_ms: u64,
}

/// The group a key lives in.
#[derive(Args)]
pub struct GroupArg {
    /// The Raft group (shard) holding the key.
    #[arg(long, default_value_t = 1, value_name = "G", value_parser = clap::value_parser!(u64).range(1..))]
    group: u64,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    key: String,
    value: String,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    /// Reads the replica as it is, without asking the leader (may be stale).
    #[arg(long)]
    stale: bool,
    /// With --stale: read node ID's replica (default: whichever node answers).
    #[arg(long, value_name = "ID", requires = "stale")]
    node: Option<u64>,
    key: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    key: String,
}

#[derive(Args)]
#[command(group(ArgGroup::new("expect").required(true).args(["expected", "absent"])))]
#[command(group(ArgGroup::new("write").required(true).args(["new", "delete"])))]
pub struct CasArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    key: String,
    /// Swap only if the current value is V.
    #[arg(long, value_name = "V")]
    expected: Option<String>,
    /// Swap only if the key is absent.
    #[arg(long)]
    absent: bool,
    /// The value to write.
    #[arg(long, value_name = "V")]
    new: Option<String>,
    /// Delete the key instead of writing a value.
    #[arg(long)]
    delete: bool,
}

#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    /// Reads the replica as it is, without asking the leader (may be stale).
    #[arg(long)]
    stale: bool,
    /// Most pairs returned.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(SCAN_LIMIT_MAX)))]
    limit: u32,
    /// Only keys starting with this (all keys when omitted).
    #[arg(default_value = "")]
    prefix: String,
}

#[derive(Args)]
pub struct GroupAdminArgs {
    #[command(flatten)]
    target: Target,
    /// The group (no default: deleting one drops its data on every node).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    group: u64,
    /// Also every group after GROUP up to LAST (at most 1,000,000 in all),
    /// pipelined: one JSON report for the range.
    #[arg(long, value_name = "LAST")]
    through: Option<u64>,
}

/// Most groups one `create-group`/`delete-group --through` handles.
const GROUP_RANGE_MAX: u64 = 1_000_000;

#[derive(Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct TransferLeaderArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    group: GroupArg,
    /// The node to lead the group (a voter of it).
    #[arg(long, value_name = "ID")]
    to: u64,
}

/// One node of the cluster list.
#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    target: Target,
    /// The node (its id in the cluster list).
    #[arg(long, value_name = "ID")]
    node: u64,
}

#[derive(Args)]
pub struct DrainArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// How long the node may take to hand its leaderships over and answer
    /// what waits on them; it goes on draining after it either way.
    #[arg(long, default_value_t = 5_000, value_name = "MS", value_parser = clap::value_parser!(u32).range(..=i64::from(DRAIN_WAIT_MS_MAX)))]
    wait_ms: u32,
}

fn parse_bases(text: &str) -> Result<Bases, String> {
    let mut bases = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| format!("{item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("node id {id:?} is not a number"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        let addr = addr.trim().to_socket_addrs().map_err(|e| format!("address {addr:?} of node {id}: {e}"))?.next().ok_or_else(|| format!("address {addr:?} of node {id} resolves to nothing"))?;
        if bases.insert(id, addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if bases.is_empty() {
        return Err("no nodes listed".into());
    }
    Ok(Bases(bases))
}

/// What one command asks, and how its answer is reported.
struct Request {
    group: u64,
    /// The key (or the scan's prefix) and the JSON field naming it.
    subject: Option<(&'static str, String)>,
    op: Op,
}

pub fn put(args: PutArgs) -> u8 {
    let op = Op::Put { key: bytes(&args.key), value: bytes(&args.value) };
    run(&args.target, None, Request { group: args.group.group, subject: Some(("key", args.key)), op })
}

pub fn get(args: GetArgs) -> u8 {
    let consistency = if args.stale { Consistency::Stale } else { Consistency::Linearizable };
    let op = Op::Get { key: bytes(&args.key), consistency };
    run(&args.target, args.node, Request { group: args.group.group, subject: Some(("key", args.key)), op })
}

pub fn delete(args: DeleteArgs) -> u8 {
    let op = Op::Delete { key: bytes(&args.key) };
    run(&args.target, None, Request { group: args.group.group, subject: Some(("key", args.key)), op })
}

pub fn cas(args: CasArgs) -> u8 {
    assert!(args.expected.is_some() != args.absent, "clap requires exactly one of --expected and --absent");
    assert!(args.new.is_some() != args.delete, "clap requires exactly one of --new and --delete");
    let op = Op::Cas { key: bytes(&args.key), expected: args.expected.as_deref().map(bytes), new: args.new.as_deref().map(bytes) };
    run(&args.target, None, Request { group: args.group.group, subject: Some(("key", args.key)), op })
}

pub fn scan(args: ScanArgs) -> u8 {
    let consistency = if args.stale { Consistency::Stale } else { Consistency::Linearizable };
    let op = Op::Scan { prefix: bytes(&args.prefix), limit: args.limit, consistency };
    run(&args.target, None, Request { group: args.group.group, subject: Some(("prefix", args.prefix)), op })
}

pub fn create_group(args: GroupAdminArgs) -> u8 {
    administer_groups(args, Op::CreateGroup)
}

pub fn delete_group(args: GroupAdminArgs) -> u8 {
    administer_groups(args, Op::DeleteGroup)
}

/// One group through `run`, or a range of them pipelined: `{"ok", "first",
/// "last", "groups", "done", "unknown": [ids], "failed": [{"group",
/// "error"}]}`; exit 0 when every group is done, 3 when some outcome is
/// unknown and none failed, 1 when any failed.
fn administer_groups(args: GroupAdminArgs, op: Op) -> u8 {
    let Some(last) = args.through else {
        return run(&args.target, None, Request { group: args.group, subject: None, op });
    };
    let first = args.group;
    if last < first || last - first >= GROUP_RANGE_MAX {
        return usage_error(&format!("--through {last} must be at least {first} and name at most {GROUP_RANGE_MAX} groups"));
    }
    let mut client = match connect(&args.target, None) {
        Ok(c) => c,
        Err(Refusal::Usage(e)) => return usage_error(&e),
        Err(Refusal::Failed(e)) => {
            println!("{}", Report::new(Some(false)).with("first", Value::from(first)).with("last", Value::from(last)).with("error", Value::from(e)).render());
            return EXIT_FAILED;
        }
    };
    let groups: Vec<u64> = (first..=last).collect();
    let outcomes = match op {
        Op::CreateGroup => client.create_groups(&groups),
        _ => client.delete_groups(&groups),
    };
    let (mut done, mut unknown, mut failed) = (0u64, Vec::new(), Vec::new());
    for (&group, outcome) in groups.iter().zip(outcomes) {
        match outcome {
            Outcome::Ok(_) => done += 1,
            Outcome::Unknown(_) => unknown.push(Value::from(group)),
            Outcome::Failed(e) => failed.push(serde_json::json!({ "group": group, "error": e })),
        }
    }
    let (ok, code) = match (unknown.is_empty(), failed.is_empty()) {
        (true, true) => (Some(true), EXIT_OK),
        (false, true) => (None, EXIT_UNKNOWN),
        _ => (Some(false), EXIT_FAILED),
    };
    let report = Report::new(ok).with("first", Value::from(first)).with("last", Value::from(last)).with("groups", Value::from(groups.len())).with("done", Value::from(done));
    println!("{}", report.with("unknown", Value::Array(unknown)).with("failed", Value::Array(failed)).render());
    code
}

/// Why a command could not get a client going.
enum Refusal {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The cluster is not the one described (`--cores`).
    Failed(String),
}

/// A client for `target` (only node `only_node`'s, if given), once its
/// `--cores` agrees with the servers'.
fn connect(target: &Target, only_node: Option<u64>) -> Result<Client, Refusal> {
    let bases = cluster_bases(target).map_err(Refusal::Usage)?;
    let mut map = ClusterMap::from_bases(&bases.0, target.cores);
    if let Some(id) = only_node {
        let Some(addrs) = map.nodes.remove(&id) else {
            return Err(Refusal::Usage(format!("--node {id} is not in the cluster list")));
        };
        map.nodes = [(id, addrs)].into_iter().collect();
    }
    let opts = ClientOptions { request_timeout: Duration::from_millis(target.timeout_ms.max(1)), deadline: Duration::from_millis(target.deadline_ms), ..ClientOptions::default() };
    check_cores(&map, target.cores, opts.request_timeout.min(PREFLIGHT_TIMEOUT)).map_err(Refusal::Failed)?;
    Ok(Client::new(map, opts))
}

/// Asks each listed node for its counters: `{"ok":..., "nodes": {"ID":
/// {counters} or {"error": ...}}}`; fails if any node did not answer.
pub fn metrics(args: MetricsArgs) -> u8 {
    let bases = match cluster_bases(&args.target) {
        Ok(b) => b,
        Err(e) => return usage_error(&e),
    };
    let timeout = Duration::from_millis(args.target.timeout_ms.max(1));
    let mut nodes = serde_json::Map::new();
    let mut all_answered = true;
    for (&id, &addr) in &bases.0 {
        let counters = node_metrics(id, addr, timeout).unwrap_or_else(|e| {
            all_answered = false;
            serde_json::json!({ "error": e })
        });
        nodes.insert(id.to_string(), counters);
    }
    println!("{}", Report::new(Some(all_answered)).with("nodes", Value::Object(nodes)).render());
    if all_answered {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// One node's counters, asked on its first core's port (any core answers
/// for the whole node).
fn node_metrics(id: u64, addr: SocketAddr, timeout: Duration) -> Result<Value, String> {
    match ask_node(id, addr, Op::Metrics, timeout)? {
        Reply::Value(Some(json)) => serde_json::from_slice(&json).map_err(|e| format!("node {id} sent metrics that are not JSON: {e}")),
        other => Err(format!("node {id} answered {other:?}")),
    }
}

/// Sends one node-wide request (its group is not looked at) to the node's
/// first core and returns the reply.
fn ask_node(id: u64, addr: SocketAddr, op: Op, timeout: Duration) -> Result<Reply, String> {
    let mut conn = Connection::connect(addr, timeout).map_err(|e| e.to_string())?;
    if conn.hello.node_id != id {
        return Err(format!("{addr} is node {}'s client port, not node {id}'s: check --cluster", conn.hello.node_id));
    }
    conn.queue(&engine::client::proto::Request { id: 1, group: 0, op });
    conn.flush().map_err(|e| e.to_string())?;
    loop {
        // Skips a `Closing` notice (the node is about to stop).
        let resp = conn.recv().map_err(|e| e.to_string())?;
        if resp.id == 1 {
            return Ok(resp.reply);
        }
    }
}

pub fn transfer_leader(args: TransferLeaderArgs) -> u8 {
    run(&args.target, None, Request { group: args.group.group, subject: None, op: Op::TransferLeader { to: args.to } })
}

/// `{"ok":true,"node":ID}` once the node has handed every leadership over.
pub fn drain(args: DrainArgs) -> u8 {
    // The reply comes when the drain is over: wait that long, and a reply's worth more.
    let wait = Duration::from_millis(u64::from(args.wait_ms));
    node_admin(&args.node, Op::Drain { wait_ms: args.wait_ms }, wait)
}

pub fn undrain(args: NodeArgs) -> u8 {
    node_admin(&args, Op::Undrain, Duration::ZERO)
}

/// Sends a node-wide request that is answered `Done`, and reports it.
fn node_admin(args: &NodeArgs, op: Op, reply_after: Duration) -> u8 {
    let bases = match cluster_bases(&args.target) {
        Ok(b) => b,
        Err(e) => return usage_error(&e),
    };
    let Some(&addr) = bases.0.get(&args.node) else {
        return usage_error(&format!("--node {} is not in the cluster list", args.node));
    };
    let timeout = Duration::from_millis(args.target.timeout_ms.max(1)) + reply_after;
    let error = match ask_node(args.node, addr, op, timeout) {
        Ok(Reply::Done) => None,
        Ok(Reply::Error(e)) | Err(e) => Some(e),
        Ok(other) => Some(format!("node {} answered {other:?}", args.node)),
    };
    let report = Report::new(Some(error.is_none())).with("node", Value::from(args.node));
    match error {
        None => {
            println!("{}", report.render());
            EXIT_OK
        }
        Some(e) => {
            println!("{}", report.with("error", Value::from(e)).render());
            EXIT_FAILED
        }
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn usage_error(message: &str) -> u8 {
    eprintln!("myriad: error: {message}");
    EXIT_USAGE
}

/// Resolves the target, sends `req` (with the client's retries) and prints
/// the report; returns the exit code.
fn run(target: &Target, only_node: Option<u64>, req: Request) -> u8 {
    let (report, code) = match connect(target, only_node) {
        Err(Refusal::Usage(e)) => return usage_error(&e),
        Err(Refusal::Failed(e)) => (failed(&req, e), EXIT_FAILED),
        Ok(mut client) => {
            let outcome = match req.op {
                Op::CreateGroup => client.create_group(req.group),
                Op::DeleteGroup => client.delete_group(req.group),
                Op::TransferLeader { to } => client.transfer_leader(req.group, to),
                _ => client.call(req.group, req.op.clone()),
            };
            report(&req, outcome, client.leader_of(req.group))
        }
    };
    println!("{}", report.render());
    code
}

/// The nodes' base addresses: `--cluster`, else `$MYRIAD_CLUSTER`.
fn cluster_bases(target: &Target) -> Result<Bases, String> {
    match &target.cluster {
        Some(b) => Ok(b.clone()),
        None => match std::env::var(CLUSTER_ENV) {
            Ok(text) => parse_bases(&text).map_err(|e| format!("${CLUSTER_ENV}: {e}")),
            Err(_) => Err(format!("no cluster given: pass --cluster ID=HOST:PORT,... or set ${CLUSTER_ENV}")),
        },
    }
}

/// Refuses a `--cores` the servers do not run before any request is sent:
/// with the wrong count the client would send a group's requests to another
/// core's port (answered `WrongCore`) or past the client ports altogether
/// (a peer port, which hangs up, making a write's outcome unknown).
fn check_cores(map: &ClusterMap, cores: u32, timeout: Duration) -> Result<(), String> {
    for (&id, addrs) in &map.nodes {
        let Ok(conn) = Connection::connect(addrs[0], timeout) else { continue };
        let hello = conn.hello;
        if hello.node_id != id {
            return Err(format!("{} is node {}'s client port, not node {id}'s: check --cluster", addrs[0], hello.node_id));
        }
        if hello.cores != cores {
            let plural = if hello.cores == 1 { "" } else { "s" };
            return Err(format!("node {id} runs {} core{plural}, not {cores}: pass --cores {}", hello.cores, hello.cores));
        }
        return Ok(());
    }
    // Nobody answered: the operation's own retries report why.
    Ok(())
}

/// A JSON object whose fields keep the order they were added in.
struct Report(Vec<(&'static str, Value)>);

impl Report {
    fn new(ok: Option<bool>) -> Report {
        Report(vec![("ok", ok.map_or(Value::Null, Value::Bool))])
    }

    fn with(mut self, name: &'static str, value: Value) -> Report {
        debug_assert!(self.0.iter().all(|(n, _)| *n != name), "field {name} set twice");
        self.0.push((name, value));
        self
    }

    fn render(&self) -> String {
        let fields: Vec<String> = self.0.iter().map(|(name, value)| format!("{}:{value}", Value::from(*name))).collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// A byte string as JSON: text when it is UTF-8, else `{"hex": "..."}`.
fn blob(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

fn opt_blob(b: Option<&Bytes>) -> Value {
    b.map_or(Value::Null, |b| blob(b))
}

fn head(req: &Request, ok: Option<bool>) -> Report {
    let r = Report::new(ok).with("group", Value::from(req.group));
    match &req.subject {
        Some((name, value)) => r.with(name, Value::from(value.as_str())),
        None => r,
    }
}

fn failed(req: &Request, error: String) -> Report {
    head(req, Some(false)).with("error", Value::from(error))
}

/// The report of an outcome and the exit code that goes with it. `node` is
/// the node that answered (the client remembers it as the group's leader).
fn report(req: &Request, outcome: Outcome, node: Option<u64>) -> (Report, u8) {
    let reply = match outcome {
        Outcome::Failed(e) => return (failed(req, e), EXIT_FAILED),
        Outcome::Unknown(e) => {
            let mut r = Report::new(None).with("outcome", Value::from("unknown")).with("group", Value::from(req.group));
            if let Some((name, value)) = &req.subject {
                r = r.with(name, Value::from(value.as_str()));
            }
            return (r.with("error", Value::from(e)), EXIT_UNKNOWN);
        }
        Outcome::Ok(reply) => reply,
    };
    let ok = || head(req, Some(true));
    let (r, code) = match (&req.op, reply) {
        (Op::Put { value, .. }, Reply::Done) => (ok().with("value", blob(value)), EXIT_OK),
        (Op::Delete { .. } | Op::CreateGroup | Op::DeleteGroup, Reply::Done) => (ok(), EXIT_OK),
        (Op::TransferLeader { to }, Reply::Done) => (ok().with("leader", Value::from(*to)), EXIT_OK),
        (Op::Cas { new, .. }, Reply::Done) => (ok().with("value", opt_blob(new.as_ref())), EXIT_OK),
        (Op::Cas { .. }, Reply::CasFailed { current }) => {
            let r = failed(req, "compare failed: the current value is not the expected one".into()).with("cas_failed", Value::Bool(true)).with("current", opt_blob(current.as_ref()));
            (r, EXIT_FAILED)
        }
        (Op::Get { .. }, Reply::Value(v)) => (ok().with("found", Value::Bool(v.is_some())).with("value", opt_blob(v.as_ref())), EXIT_OK),
        (Op::Scan { .. }, Reply::Entries(pairs)) => {
            let entries: Vec<Value> = pairs.iter().map(|(k, v)| serde_json::json!({ "key": blob(k), "value": blob(v) })).collect();
            (ok().with("count", Value::from(entries.len())).with("entries", Value::Array(entries)), EXIT_OK)
        }
        (_, reply) => (failed(req, format!("unexpected reply {reply:?}")), EXIT_FAILED),
    };
    match node {
        Some(n) => (r.with("node", Value::from(n)), code),
        None => (r, code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op) -> Request {
        Request { group: 1, subject: Some(("key", "k".into())), op }
    }

    #[test]
    fn parses_cluster_lists() {
        let b = parse_bases("1=127.0.0.1:7100, 2=127.0.0.1:7200,").unwrap();
        assert_eq!(b.0.len(), 2);
        assert_eq!(b.0[&2], "127.0.0.1:7200".parse::<SocketAddr>().unwrap());
        for bad in ["", "127.0.0.1:7100", "x=127.0.0.1:1", "0=127.0.0.1:1", "1=127.0.0.1:1,1=127.0.0.1:2", "1=nohost"] {
            assert!(parse_bases(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn reports_keep_field_order_and_codes() {
        let put = req(Op::Put { key: bytes("k"), value: bytes("v") });
        let (r, code) = report(&put, Outcome::Ok(Reply::Done), Some(2));
        assert_eq!((r.render().as_str(), code), (r#"{"ok":true,"group":1,"key":"k","value":"v","node":2}"#, EXIT_OK));
        let (r, code) = report(&put, Outcome::Unknown("lost".into()), None);
        assert_eq!((r.render().as_str(), code), (r#"{"ok":null,"outcome":"unknown","group":1,"key":"k","error":"lost"}"#, EXIT_UNKNOWN));
        let (r, code) = report(&put, Outcome::Failed("no".into()), None);
        assert_eq!((r.render().as_str(), code), (r#"{"ok":false,"group":1,"key":"k","error":"no"}"#, EXIT_FAILED));
        let get = req(Op::Get { key: bytes("k"), consistency: Consistency::Stale });
        let (r, _) = report(&get, Outcome::Ok(Reply::Value(Some(Bytes::from_static(&[0xff, 1])))), None);
        assert_eq!(r.render(), r#"{"ok":true,"group":1,"key":"k","found":true,"value":{"hex":"ff01"}}"#);
        let cas = req(Op::Cas { key: bytes("k"), expected: None, new: Some(bytes("n")) });
        let (r, code) = report(&cas, Outcome::Ok(Reply::CasFailed { current: Some(bytes("x")) }), Some(1));
        assert_eq!(code, EXIT_FAILED);
        assert!(r.render().contains(r#""cas_failed":true,"current":"x","node":1}"#), "{}", r.render());
        let (_, code) = report(&get, Outcome::Ok(Reply::Done), None);
        assert_eq!(code, EXIT_FAILED, "a reply of the wrong kind is not a success");
        let create = Request { group: 9, subject: None, op: Op::CreateGroup };
        let (r, code) = report(&create, Outcome::Ok(Reply::Done), None);
        assert_eq!((r.render().as_str(), code), (r#"{"ok":true,"group":9}"#, EXIT_OK));
    }
}
