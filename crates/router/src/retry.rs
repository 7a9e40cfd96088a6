//! Reaching the leader through a switchover or failover: new server connections for the
//! leader (a client's new write connection, a pool's new server connection) are tried again,
//! with a short backoff, until the leader the DCS names accepts them or `handover_wait` has
//! passed. A leader that refuses TCP connections (PostgreSQL not up yet, or gone with its
//! node before its lease expired), answers 57P03 ("the database system is starting up" /
//! "shutting down"), ends the login with 57P01/57P02, or is not writable yet is waited for;
//! none of that reaches a client while the wait lasts. What the client must hear (a wrong
//! password, an unknown database, too many connections) ends the wait at once.

use std::time::Duration;

use tokio::time::Instant;

/// The first pause after a failed attempt; each next one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(20);
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_millis(200);

/// How an attempt to reach the leader failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No TCP connection (refused, unreachable, timed out).
    Unreachable,
    /// The server answered 57P03 / 57P01 / 57P02: it is starting up or shutting down.
    NotAccepting,
    /// Logged in, but the server is in recovery or read-only: not promoted yet.
    NotWritable,
    /// The connection broke during the login, or the member stopped being the leader then.
    Broken,
    /// An answer for the client (authentication, database, limits): no retry.
    Final,
}

impl Failure {
    /// The failure a server's ErrorResponse during the login means.
    pub(crate) fn of_sqlstate(code: &str) -> Failure {
        match code {
            // cannot_connect_now, admin_shutdown, crash_shutdown
            "57P03" | "57P01" | "57P02" => Failure::NotAccepting,
            _ => Failure::Final,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long (or until the leader changes), then try the leader the DCS names then.
    Wait(Duration),
    /// Give up: the client hears the last failure.
    GiveUp,
}

/// The attempts of one connection, bounded by a deadline.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    deadline: Instant,
    delay: Duration,
    /// Failed attempts so far.
    pub failures: u32,
}

impl Retry {
    pub(crate) fn new(now: Instant, bound: Duration) -> Retry {
        Retry {
            deadline: now + bound,
            delay: FIRST_DELAY,
            failures: 0,
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// After an attempt failed with `failure` at `now`.
    pub(crate) fn failed(&mut self, failure: Failure, now: Instant) -> Next {
        self.failures += 1;
        if failure == Failure::Final || now >= self.deadline {
            return Next::GiveUp;
        }
        let wait = self.delay.min(self.deadline - now);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Next::Wait(wait)
    }
}

/// The SQLSTATE of the ErrorResponse among `messages` (backend messages as sent: tag,
/// length, body), "" when there is none.
pub(crate) fn error_code(messages: &[u8]) -> String {
    let mut rest = messages;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < len + 1 {
            break;
        }
        if rest[0] == b'E' {
            return crate::pool::server::error_fields(&rest[5..len + 1]).0;
        }
        rest = &rest[len + 1..];
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_not_accepting_yet_is_tried_again_with_a_growing_pause() {
        let t0 = Instant::now();
        let mut retry = Retry::new(t0, Duration::from_secs(6));
        assert_eq!(
            retry.failed(Failure::Unreachable, t0),
            Next::Wait(Duration::from_millis(20))
        );
        assert_eq!(
            retry.failed(Failure::NotAccepting, t0),
            Next::Wait(Duration::from_millis(40))
        );
        assert_eq!(
            retry.failed(Failure::NotWritable, t0),
            Next::Wait(Duration::from_millis(80))
        );
        assert_eq!(
            retry.failed(Failure::Broken, t0),
            Next::Wait(Duration::from_millis(160))
        );
        for _ in 0..20 {
            assert_eq!(
                retry.failed(Failure::Unreachable, t0),
                Next::Wait(Duration::from_millis(200)),
                "the pause stays at 200 ms"
            );
        }
        assert_eq!(retry.failures, 24);
    }

    #[test]
    fn the_wait_ends_at_the_deadline_and_never_overshoots_it() {
        let t0 = Instant::now();
        let mut retry = Retry::new(t0, Duration::from_secs(6));
        for _ in 0..4 {
            retry.failed(Failure::Unreachable, t0);
        }
        // 150 ms left: the pause is cut to them.
        let near = t0 + Duration::from_millis(5850);
        assert_eq!(
            retry.failed(Failure::Unreachable, near),
            Next::Wait(Duration::from_millis(150))
        );
        assert_eq!(
            retry.failed(Failure::Unreachable, t0 + Duration::from_secs(6)),
            Next::GiveUp
        );
    }

    #[test]
    fn what_the_client_must_hear_ends_the_wait_at_once() {
        let t0 = Instant::now();
        let mut retry = Retry::new(t0, Duration::from_secs(6));
        assert_eq!(retry.failed(Failure::Final, t0), Next::GiveUp);
        assert_eq!(Failure::of_sqlstate("28P01"), Failure::Final);
        assert_eq!(Failure::of_sqlstate("3D000"), Failure::Final);
        assert_eq!(Failure::of_sqlstate("53300"), Failure::Final);
        assert_eq!(Failure::of_sqlstate("57P03"), Failure::NotAccepting);
        assert_eq!(Failure::of_sqlstate("57P01"), Failure::NotAccepting);
        assert_eq!(Failure::of_sqlstate("57P02"), Failure::NotAccepting);
    }

    #[test]
    fn the_error_code_is_found_after_other_messages() {
        let mut bytes = crate::pooled::txn::frontend::message(b'R', &[&0u32.to_be_bytes()]);
        bytes.extend(crate::pooled::txn::error_message(
            "FATAL",
            "57P03",
            "the database system is starting up",
        ));
        assert_eq!(error_code(&bytes), "57P03");
        assert_eq!(error_code(&bytes[..5]), "");
        assert_eq!(error_code(b""), "");
    }
}
