//! `myriad-log`: read-only inspection of a Myriad WAL directory.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    eprintln!("myriad-log: not yet available (issue 3: the WAL)");
    std::process::ExitCode::from(2)
}
