//! One off-chip memory channel, burst by burst: banks with row-buffer state, an FR-FCFS request
//! scheduler, a shared data bus, and refresh.
//!
//! **Time base.** Picoseconds (`u64`), so that nanosecond DRAM timings and fractional-cycle burst
//! times are exact enough; callers convert to accelerator cycles.
//!
//! **Address mapping.** Row-interleaved over banks: `column = addr % row_bytes`,
//! `bank = (addr / row_bytes) % banks`, `row = addr / (row_bytes × banks)`. A sequential stream
//! walks a whole row, then the same row of the next bank, so consecutive rows sit in different banks.
//!
//! **Scheduling (FR-FCFS).** Whenever the data bus can take the next burst, the controller looks at
//! its queue (the oldest arrived requests, up to its depth) and serves the one whose data can go
//! on the bus first ("first ready": row hits and already-prepared banks), ties to the oldest.
//! Bank preparation (precharge, activate) for a request starts as soon as the request has arrived
//! and its bank allows, so activations in other banks overlap data transfers; commands to one bank
//! respect `tRAS` (activate → precharge), `tRP` (precharge → activate), `tRCD` (activate →
//! column) and the bank's previous transfer. Data follows the column command after `tCL` and holds
//! the bus for one burst (`burst bytes / channel bandwidth`). The command bus, `tRRD`, `tFAW` and
//! write-to-read turnarounds are not modelled: the spec does not carry them.
//!
//! **Refresh.** Every `tREFI` all banks are precharged and the channel is blocked for `tRFC`; a
//! burst that would overlap a refresh waits for its end.

use std::collections::VecDeque;
use tessera_spec::accel::Memory;

/// Channel timing in picoseconds, derived from a memory spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTiming {
    /// Banks.
    pub banks: u64,
    /// Row size in bytes.
    pub row_bytes: u64,
    /// Bytes per burst.
    pub burst_bytes: u64,
    /// Activate → column command.
    pub t_rcd: u64,
    /// Column command → first data.
    pub t_cl: u64,
    /// Precharge → activate.
    pub t_rp: u64,
    /// Activate → precharge, minimum.
    pub t_ras: u64,
    /// Data-bus time of one burst.
    pub t_burst: u64,
    /// Refresh interval.
    pub t_refi: u64,
    /// Refresh duration.
    pub t_rfc: u64,
}

fn ps(ns: f64) -> u64 {
    (ns * 1000.0).round() as u64
}

impl ChannelTiming {
    /// The timing of one channel of `memory`.
    pub fn of(memory: &Memory) -> Self {
        let t = memory.timing();
        let burst_bytes = memory.burst_bytes();
        let burst_s = burst_bytes as f64 / memory.channel_bandwidth().0;
        ChannelTiming {
            banks: t.banks,
            row_bytes: t.row_bytes,
            burst_bytes,
            t_rcd: ps(t.t_rcd_ns),
            t_cl: ps(t.t_cl_ns),
            t_rp: ps(t.t_rp_ns),
            t_ras: ps(t.t_ras_ns),
            t_burst: (burst_s * 1e12).round().max(1.0) as u64,
            t_refi: ps(t.t_refi_ns),
            t_rfc: ps(t.t_rfc_ns),
        }
    }

    /// `(bank, row)` of a byte address.
    pub fn locate(&self, addr: u64) -> (usize, u64) {
        let row_index = addr / self.row_bytes;
        ((row_index % self.banks) as usize, row_index / self.banks)
    }
}

/// A one-burst request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Caller's tag, returned in the completion.
    pub tag: u64,
    /// When it reaches the controller (ps).
    pub arrival: u64,
    /// Byte address in the channel.
    pub addr: u64,
}

/// Row-buffer outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowOutcome {
    /// The row was open.
    Hit,
    /// The bank had no open row.
    Miss,
    /// Another row was open and had to be closed.
    Conflict,
}

/// A served request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request's tag.
    pub tag: u64,
    /// When its last data beat left the bus (ps).
    pub done: u64,
    /// Row-buffer outcome.
    pub outcome: RowOutcome,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bank {
    open_row: Option<u64>,
    /// When the open row was activated.
    activated_at: u64,
    /// When the bank is free for a new command sequence (after precharge or refresh).
    ready_at: u64,
    /// End of the bank's last data transfer.
    last_data_end: u64,
}

/// Counters of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Bursts served.
    pub bursts: u64,
    /// Row hits.
    pub hits: u64,
    /// Row misses (bank closed).
    pub misses: u64,
    /// Row conflicts.
    pub conflicts: u64,
    /// Refreshes performed.
    pub refreshes: u64,
    /// Picoseconds the data bus carried data.
    pub busy_ps: u64,
}

/// One DRAM channel.
#[derive(Debug, Clone)]
pub struct DramChannel {
    timing: ChannelTiming,
    queue_depth: usize,
    banks: Vec<Bank>,
    bus_free: u64,
    next_refresh: u64,
    stats: ChannelStats,
}

impl DramChannel {
    /// An idle channel with every bank closed whose scheduler looks at the `queue_depth` oldest
    /// requests; the first refresh falls at `tREFI`.
    pub fn new(timing: ChannelTiming, queue_depth: usize) -> Self {
        DramChannel {
            timing,
            queue_depth: queue_depth.max(1),
            banks: vec![Bank::default(); timing.banks as usize],
            bus_free: 0,
            next_refresh: timing.t_refi,
            stats: ChannelStats::default(),
        }
    }

    /// The channel's timing.
    pub fn timing(&self) -> &ChannelTiming {
        &self.timing
    }

    /// Counters so far.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Serves `requests` (any order of arrival) with FR-FCFS over a window of the `queue_depth`
    /// oldest arrived requests and returns their completions in service order. Ties in arrival go
    /// to the earlier request in the slice.
    pub fn serve(&mut self, requests: &[Request]) -> Vec<Completion> {
        let mut order: Vec<(usize, Request)> = requests.iter().copied().enumerate().collect();
        order.sort_by_key(|(i, r)| (r.arrival, *i));
        let mut pending: VecDeque<Request> = order.into_iter().map(|(_, r)| r).collect();
        let mut out = Vec::with_capacity(requests.len());
        while let Some(first) = pending.front() {
            let now = self.bus_free.max(first.arrival);
            let arrived = pending.partition_point(|r| r.arrival <= now);
            let window = arrived.min(self.queue_depth);
            let pick = self.pick(pending.range(..window)).unwrap_or(0);
            if let Some(req) = pending.remove(pick) {
                out.push(self.issue(req));
            }
        }
        out
    }

    /// FR-FCFS choice among `window` (oldest first): the request whose data can go on the bus
    /// first, ties to the oldest. Requests that are ready now (row hits, or banks already
    /// prepared) tie at the bus's free time, so the oldest ready one wins.
    fn pick<'a>(&self, mut window: impl Iterator<Item = &'a Request> + Clone) -> Option<usize> {
        // Nothing can go on the bus before it is free, so an oldest request that is ready by
        // then wins outright: skip the scan (same choice, far cheaper on streams).
        let head = window.clone().next()?;
        if (self.plan(head).1 + self.timing.t_cl) <= self.bus_free {
            return Some(0);
        }
        window
            .by_ref()
            .enumerate()
            .min_by_key(|(i, r)| {
                let (_, column_at) = self.plan(r);
                ((column_at + self.timing.t_cl).max(self.bus_free), *i)
            })
            .map(|(i, _)| i)
    }

    /// Row outcome and earliest column-command time of `req` given its bank's state.
    fn plan(&self, req: &Request) -> (RowOutcome, u64) {
        let t = self.timing;
        let (bank_index, row) = t.locate(req.addr);
        let bank = self.banks[bank_index];
        match bank.open_row {
            Some(open) if open == row => (
                RowOutcome::Hit,
                req.arrival
                    .max(bank.ready_at)
                    .max(bank.activated_at + t.t_rcd),
            ),
            Some(_) => {
                let precharge = req
                    .arrival
                    .max(bank.activated_at + t.t_ras)
                    .max(bank.last_data_end)
                    .max(bank.ready_at);
                (RowOutcome::Conflict, precharge + t.t_rp + t.t_rcd)
            }
            None => (RowOutcome::Miss, req.arrival.max(bank.ready_at) + t.t_rcd),
        }
    }

    /// Performs every refresh due before `t`.
    fn refresh_until(&mut self, t: u64) {
        while self.next_refresh <= t {
            let end = self.next_refresh + self.timing.t_rfc;
            for b in &mut self.banks {
                b.open_row = None;
                b.ready_at = b.ready_at.max(end);
            }
            self.bus_free = self.bus_free.max(end);
            self.next_refresh += self.timing.t_refi;
            self.stats.refreshes += 1;
        }
    }

    fn issue(&mut self, req: Request) -> Completion {
        let t = self.timing;
        let (bank_index, row) = t.locate(req.addr);
        loop {
            let (outcome, column_at) = self.plan(&req);
            let data_start = (column_at + t.t_cl).max(self.bus_free);
            let data_end = data_start + t.t_burst;
            if data_end > self.next_refresh {
                // The refresh comes first; it closes every row, so plan again after it.
                self.refresh_until(data_end);
                continue;
            }
            let b = &mut self.banks[bank_index];
            if outcome != RowOutcome::Hit {
                b.activated_at = column_at - t.t_rcd;
                b.open_row = Some(row);
            }
            b.last_data_end = data_end;
            self.bus_free = data_end;
            self.stats.bursts += 1;
            self.stats.busy_ps += t.t_burst;
            match outcome {
                RowOutcome::Hit => self.stats.hits += 1,
                RowOutcome::Miss => self.stats.misses += 1,
                RowOutcome::Conflict => self.stats.conflicts += 1,
            }
            return Completion {
                tag: req.tag,
                done: data_end,
                outcome,
            };
        }
    }
}
