//! Shared by the simulator's test files.

/// A number from the environment (`default` when unset); a value that is not a number
/// stops the test with the variable's name.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={s:?} is not a number: {e}")),
        Err(_) => default,
    }
}
