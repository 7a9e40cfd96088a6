//! Who can talk to whom: member↔DCS links, member↔member links, a replica's replication
//! connection, and message delays. Faults stack (two overlapping partitions of one member
//! heal independently), hence the counters.

use pgbaton_core::Millis;

/// Normal one-way delay bound of a DCS message (keepalive, its answer).
pub const NORMAL_DELAY_MS: Millis = 30;

#[derive(Debug)]
pub struct Net {
    /// Active partitions between a member and the DCS (both ways).
    dcs_cut: Vec<u32>,
    /// Active isolations of a member from every other member (both ways).
    isolated: Vec<u32>,
    /// Active delay faults per member: (fault index, largest one-way delay).
    delays: Vec<Vec<(usize, Millis)>>,
    /// Active cuts of a member's replication connection (its WAL receiver gets nothing; the
    /// REST API and the DCS still work).
    replication_cut: Vec<u32>,
    /// Active "slow standby" faults: the member flushes received WAL slowly.
    slow: Vec<u32>,
}

impl Net {
    pub fn new(members: usize) -> Self {
        Net {
            dcs_cut: vec![0; members],
            isolated: vec![0; members],
            delays: vec![Vec::new(); members],
            replication_cut: vec![0; members],
            slow: vec![0; members],
        }
    }

    /// The replication connection of member `m` works (besides the member↔member link).
    pub fn replicates(&self, m: usize) -> bool {
        self.replication_cut[m] == 0
    }

    pub fn is_slow(&self, m: usize) -> bool {
        self.slow[m] > 0
    }

    pub fn cut_replication(&mut self, m: usize, cut: bool) {
        bump(&mut self.replication_cut[m], cut);
    }

    pub fn slow_down(&mut self, m: usize, slow: bool) {
        bump(&mut self.slow[m], slow);
    }

    pub fn reaches_dcs(&self, m: usize) -> bool {
        self.dcs_cut[m] == 0
    }

    pub fn linked(&self, a: usize, b: usize) -> bool {
        a == b || (self.isolated[a] == 0 && self.isolated[b] == 0)
    }

    /// Largest one-way delay of a message from or to member `m` right now.
    pub fn max_delay(&self, m: usize) -> Millis {
        self.delays[m]
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(NORMAL_DELAY_MS)
    }

    pub fn cut_dcs(&mut self, m: usize, cut: bool) {
        if cut {
            self.dcs_cut[m] += 1;
        } else {
            self.dcs_cut[m] = self.dcs_cut[m].saturating_sub(1);
        }
    }

    pub fn isolate(&mut self, m: usize, cut: bool) {
        if cut {
            self.isolated[m] += 1;
        } else {
            self.isolated[m] = self.isolated[m].saturating_sub(1);
        }
    }

    pub fn delay(&mut self, m: usize, fault: usize, max_delay_ms: Option<Millis>) {
        match max_delay_ms {
            Some(d) => self.delays[m].push((fault, d)),
            None => self.delays[m].retain(|(f, _)| *f != fault),
        }
    }
}

fn bump(counter: &mut u32, up: bool) {
    if up {
        *counter += 1;
    } else {
        *counter = counter.saturating_sub(1);
    }
}
