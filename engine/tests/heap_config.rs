//! `configure_heap` turns transparent huge pages off unless the operator
//! asked mimalloc for them. One test in its own binary: it sets the
//! environment, which no other thread may read meanwhile.

fn thp_enabled() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("THP_enabled line");
    line.split_whitespace().nth(1) == Some("1")
}

#[test]
fn huge_pages_are_off_unless_the_environment_asks_for_them() {
    let env = engine::HUGE_PAGES_ENV.to_str().unwrap();
    // The only test of this binary: no other thread reads the environment.
    std::env::remove_var(env);
    engine::configure_heap();
    assert!(!thp_enabled(), "huge pages still on without {env}");

    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) }, 0);
    std::env::set_var(env, "1");
    engine::configure_heap();
    assert!(thp_enabled(), "huge pages turned off although {env} is set");
}
