//! `myriad`: runs one node of a Myriad cluster (`serve`) and talks to a
//! running cluster from the shell (`put`, `get`, `delete`, `cas`, `scan`,
//! `create-group`, `delete-group`, `metrics`),
//! one JSON object per command on stdout so scripts and tests can read it.

// A crate root looks for modules beside itself, not in `myriad/`.
#[path = "myriad/client_cmd.rs"]
mod client_cmd;
#[path = "myriad/serve.rs"]
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes; the client commands use all four, `serve` 0, 1 and 2.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNKNOWN: u8 = 3;

const CLIENT_HELP: &str = "\
Output: one JSON object on stdout, e.g.
  {\"ok\":true,\"group\":1,\"key\":\"k\",\"value\":\"v\",\"node\":2}
  {\"ok\":false,\"group\":1,\"key\":\"k\",\"error\":\"...\"}
  {\"ok\":null,\"outcome\":\"unknown\",\"group\":1,\"key\":\"k\",\"error\":\"...\"}
Values that are not UTF-8 are printed as {\"hex\":\"...\"}.

Exit codes:
  0  ok: the write took effect, or the read was served
  1  failed: the operation certainly did not take effect
     (also a CAS whose comparison failed, and a --cores that the servers do not run)
  2  bad command line (or $MYRIAD_CLUSTER)
  3  unknown: the write may or may not have been applied (leadership was lost
     or the connection broke with it in flight); read the key to find out";

const SERVE_HELP: &str = "\
Prints one line on stdout once every core serves:
  myriad serving: node=1 cores=1 groups=64 clients=127.0.0.1:7100 peers=127.0.0.1:7101 data_dir=...
then runs until SIGINT or SIGTERM and stops cleanly: it first hands the groups it leads
to other nodes (up to stop_drain_ms), then stops (a second signal exits at once).
Logs go to stderr; RUST_LOG sets the filter (default: info).

Exit codes: 0 stopped cleanly, 1 bad configuration or the node failed, 2 bad command line.";

#[derive(Parser)]
#[command(name = "myriad", version, about = "Myriad: a thread-per-core multi-Raft key-value store", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node until SIGINT or SIGTERM.
    #[command(after_help = SERVE_HELP)]
    Serve(serve::ServeArgs),
    /// Prints the configuration of one node of the example three-node
    /// loopback cluster (the files under examples/cluster/).
    ConfigExample(serve::ExampleArgs),
    /// Writes KEY = VALUE in a group.
    #[command(after_help = CLIENT_HELP)]
    Put(client_cmd::PutArgs),
    /// Reads KEY (linearizable; --stale reads one replica as it is).
    #[command(after_help = CLIENT_HELP)]
    Get(client_cmd::GetArgs),
    /// Deletes KEY (succeeds whether or not it existed).
    #[command(after_help = CLIENT_HELP)]
    Delete(client_cmd::DeleteArgs),
    /// Compare-and-swap: sets KEY only if its value is the expected one.
    #[command(after_help = CLIENT_HELP)]
    Cas(client_cmd::CasArgs),
    /// Lists the pairs whose key starts with PREFIX, in key order.
    #[command(after_help = CLIENT_HELP)]
    Scan(client_cmd::ScanArgs),
    /// Creates GROUP on every node (idempotent: after a failure, run it again).
    #[command(after_help = CLIENT_HELP)]
    CreateGroup(client_cmd::GroupAdminArgs),
    /// Deletes GROUP and its data on every node (idempotent).
    #[command(after_help = CLIENT_HELP)]
    DeleteGroup(client_cmd::GroupAdminArgs),
    /// Prints every listed node's counters (summed over its cores).
    #[command(after_help = CLIENT_HELP)]
    Metrics(client_cmd::MetricsArgs),
    /// Hands GROUP's leadership to node --to (a leadership transfer).
    #[command(after_help = CLIENT_HELP)]
    TransferLeader(client_cmd::TransferLeaderArgs),
    /// Drains node --node without stopping it: it hands every leadership
    /// to another node and leads none until `undrain`.
    #[command(after_help = CLIENT_HELP)]
    Drain(client_cmd::DrainArgs),
    /// Ends node --node's drain: it may lead groups again.
    #[command(after_help = CLIENT_HELP)]
    Undrain(client_cmd::NodeArgs),
}

fn main() -> ExitCode {
    engine::configure_heap();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::ConfigExample(args) => {
            print!("{}", serve::example_toml(args.node_id));
            EXIT_OK
        }
        Command::Put(args) => client_cmd::put(args),
        Command::Get(args) => client_cmd::get(args),
        Command::Delete(args) => client_cmd::delete(args),
        Command::Cas(args) => client_cmd::cas(args),
        Command::Scan(args) => client_cmd::scan(args),
        Command::CreateGroup(args) => client_cmd::create_group(args),
        Command::DeleteGroup(args) => client_cmd::delete_group(args),
        Command::Metrics(args) => client_cmd::metrics(args),
        Command::TransferLeader(args) => client_cmd::transfer_leader(args),
        Command::Drain(args) => client_cmd::drain(args),
        Command::Undrain(args) => client_cmd::undrain(args),
    };
    ExitCode::from(code)
}
