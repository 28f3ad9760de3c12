//! `myriad`: the server binary and its client subcommands.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    eprintln!("myriad: the server is not yet available (issue 4: the multi-Raft node)");
    std::process::ExitCode::from(2)
}
