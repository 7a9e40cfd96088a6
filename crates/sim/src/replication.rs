//! PostgreSQL time: once per tick due checkpoints and restartpoints complete (pg_control's
//! timeline, see `postgres.rs`), every writable primary takes writes (with client commits
//! in synchronous mode), every running replica receives and flushes WAL from its upstream
//! when it can (see `DataDir::can_follow`; some lag now and then, much under a slow-standby
//! fault, none while its replication connection is cut), and then each primary acknowledges
//! the commits its synchronous standbys have flushed. Replicas that run diverged from the
//! leader are counted (invariant 4, weak form: liveness then requires them to be rewound).

use rand::Rng;

use crate::world::{Event, World};

impl World {
    /// PostgreSQL time passes by one tick.
    pub(crate) fn tick(&mut self) {
        for m in 0..self.members.len() {
            let timeout = self.checkpoint_timeout_ms;
            self.members[m].pg.checkpoint_if_due(self.now, timeout);
            if self.members[m].pg.is_running_primary() {
                let writes = self.rng.random_range(0..=4_096);
                if let Some(d) = self.members[m].pg.data.as_mut() {
                    let from = d.lsn;
                    d.lsn += writes;
                    let to = d.lsn;
                    self.take_commits(m, from, to);
                }
            }
        }
        let leader_data = self
            .dcs
            .leader
            .as_ref()
            .and_then(|k| self.index_of(&k.name))
            .filter(|l| self.members[*l].pg.is_running_primary())
            .and_then(|l| self.members[l].pg.data.clone());
        for m in 0..self.members.len() {
            if !self.members[m].pg.is_running_replica() {
                continue;
            }
            self.stream(m);
            if let (Some(leader), Some(mine)) = (&leader_data, &self.members[m].pg.data) {
                if !self.members[m].pg.streaming && mine.diverged_from(leader) {
                    self.diverged_replica_ms += self.tick_ms;
                }
            }
        }
        self.release_commits();
        self.schedule(self.now + self.tick_ms, Event::Tick);
    }

    /// A running replica receives WAL from its upstream if it can (see `DataDir::can_follow`).
    fn stream(&mut self, m: usize) {
        let upstream = self.members[m]
            .pg
            .upstream
            .as_deref()
            .and_then(|u| self.index_of(u))
            .filter(|u| *u != m);
        let source = upstream
            .filter(|u| {
                self.members[*u].pg.is_running() && self.net.linked(m, *u) && self.net.replicates(m)
            })
            .and_then(|u| self.members[u].pg.data.clone());
        let pg = &mut self.members[m].pg;
        let (Some(source), Some(mine)) = (source, pg.data.as_mut()) else {
            pg.streaming = false;
            return;
        };
        if !mine.can_follow(&source) {
            pg.streaming = false;
            return;
        }
        let gap = source.lsn.saturating_sub(mine.lsn);
        let target = if self.rng.random_bool(0.75) {
            source.lsn
        } else {
            mine.lsn + gap / 2
        };
        // A slow standby (slow disk) flushes an eighth of what it is behind per tick.
        let target = if self.net.is_slow(m) {
            target.min(mine.lsn + gap / 8)
        } else {
            target
        };
        mine.replay_from(&source, target);
        pg.streaming = true;
    }
}
