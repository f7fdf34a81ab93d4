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
//!
//! **Modes.** [`DramMode::Reference`] schedules every burst. [`DramMode::Fast`] schedules the same
//! way but, at each row boundary of a DMA [`Stream`] where every older request is served, it
//! advances whole rows in closed form for as long as each row's bursts go on the bus back to back
//! (first burst prepared and every burst arrived by the time the bus frees, no refresh inside):
//! there FR-FCFS provably serves the stream in order, one row per `row bytes / burst` bus slots.
//! Rows whose bursts go on the bus as they arrive (an engine slower than the bus) advance a row at
//! a time from their arrival times, while no later request can overtake them.
//! Property tests check that both modes give the same times and the same final channel state.

use serde::Serialize;
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

/// `(n / d, n % d)`, by shifting and masking when `d` is a power of two, as DRAM geometry and
/// DMA widths usually are: the fast mode divides by them in its inner loops, where a 64-bit
/// division costs tens of cycles.
fn div_rem(n: u64, d: u64) -> (u64, u64) {
    if d.is_power_of_two() {
        (n >> d.trailing_zeros(), n & (d - 1))
    } else {
        (n / d, n % d)
    }
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
        let (row_index, _) = div_rem(addr, self.row_bytes);
        let (row, bank) = div_rem(row_index, self.banks);
        (bank as usize, row)
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// How a channel advances through a [`Stream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DramMode {
    /// Every burst is scheduled one by one.
    Reference,
    /// Runs of whole rows that stream back to back on the data bus are advanced a row at a time
    /// in closed form; everything else is scheduled burst by burst. Gives exactly the
    /// reference's times and final channel state (tested on varied patterns).
    #[default]
    Fast,
}

impl DramMode {
    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DramMode::Reference => "reference",
            DramMode::Fast => "fast",
        }
    }
}

/// The burst requests of one DMA transfer: `chunk_bytes` contiguous bytes at
/// `base + i0·stride0 + i1·stride1 + i2·stride2` for every `i_l < count_l` (innermost first), each
/// chunk split into bursts from its start. The engine issues a burst once it has issued the bytes
/// before it at `bytes_per_cycle` from `start_ps`, on clock edges `period_ps` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stream {
    /// First chunk's address.
    pub base: u64,
    /// Bytes per chunk.
    pub chunk_bytes: u64,
    /// `(count, stride)` per loop level, innermost first; a count of 0 counts as 1.
    pub loops: [(u64, u64); 3],
    /// When the engine starts issuing (ps).
    pub start_ps: f64,
    /// Accelerator clock period (ps).
    pub period_ps: f64,
    /// Bytes the engine issues per cycle.
    pub bytes_per_cycle: u64,
}

/// Position in a [`Stream`]: chunk index, offset in the chunk, bytes issued before, requests
/// before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    chunk: u64,
    offset: u64,
    issued: u64,
    seq: u64,
}

impl Stream {
    fn counts(&self) -> [u64; 3] {
        self.loops.map(|(n, _)| n.max(1))
    }

    /// Bytes the stream moves.
    pub fn bytes(&self) -> u64 {
        self.chunk_bytes * self.counts().iter().product::<u64>()
    }

    fn chunks(&self) -> u64 {
        self.counts().iter().product()
    }

    fn chunk_addr(&self, chunk: u64) -> u64 {
        let [n0, n1, _] = self.counts();
        if chunk < n0 {
            return self.base + chunk * self.loops[0].1;
        }
        let i = [chunk % n0, chunk / n0 % n1, chunk / (n0 * n1)];
        self.base + (0..3).map(|l| i[l] * self.loops[l].1).sum::<u64>()
    }

    /// Issue time of one burst minus the bus time of one (ps): positive when the engine issues
    /// bursts slower than the channel's bus moves them.
    fn issue_slack(&self, t: &ChannelTiming) -> f64 {
        t.burst_bytes as f64 * self.period_ps / self.bytes_per_cycle.max(1) as f64
            - t.t_burst as f64
    }

    /// Whether the engine issues bursts slower than the channel's bus moves them.
    fn issue_bound(&self, t: &ChannelTiming) -> bool {
        self.issue_slack(t) > 0.0
    }

    /// When the burst after `issued` bytes reaches the controller (ps).
    fn issue_ps(&self, issued: u64) -> u64 {
        self.issue_at_cycle(div_rem(issued, self.bytes_per_cycle.max(1)).0)
    }

    /// The time (ps) of the engine's `cycles`-th issue cycle, rounded to the nearest picosecond.
    /// Times are never negative and stay far below `2^63` ps, where converting through `i64` is
    /// exactly the `u64` conversion (and cheaper: x86-64 has no unsigned conversion instruction).
    fn issue_at_cycle(&self, cycles: u64) -> u64 {
        (self.start_ps + cycles as i64 as f64 * self.period_ps + 0.5) as i64 as u64
    }

    /// The request at `c` and the cursor after it; `None` at the end.
    fn request(&self, c: Cursor, burst: u64) -> Option<(Request, Cursor)> {
        if c.chunk >= self.chunks() || self.chunk_bytes == 0 {
            return None;
        }
        let size = burst.min(self.chunk_bytes - c.offset);
        let req = Request {
            tag: c.seq,
            arrival: self.issue_ps(c.issued),
            addr: self.chunk_addr(c.chunk) + c.offset,
        };
        let mut next = Cursor {
            offset: c.offset + size,
            issued: c.issued + size,
            seq: c.seq + 1,
            ..c
        };
        if next.offset == self.chunk_bytes {
            next.chunk += 1;
            next.offset = 0;
        }
        Some((req, next))
    }

    /// How many bytes of full bursts follow `c` contiguously in memory, counted up to `limit`
    /// (and at least that many if there are): the full bursts left in `c`'s chunk, then whole
    /// chunks while each starts where the one before ends.
    fn contiguous_bytes(&self, c: Cursor, burst: u64, limit: u64) -> u64 {
        let extent = (self.chunk_bytes - c.offset) / burst * burst;
        if extent >= limit
            || c.chunk + 1 >= self.chunks()
            || self.chunk_bytes == 0
            || self.chunk_bytes % burst != 0
        {
            return extent;
        }
        let wanted = (limit - extent).div_ceil(self.chunk_bytes);
        extent + self.following_chunks(c.chunk, wanted) * self.chunk_bytes
    }

    /// How many chunks after `chunk` each start where the one before ends, counted up to
    /// `most`. Found a loop level at a time: every step of a level moves the address by the
    /// same amount, so a level whose step is one chunk is crossed at once.
    fn following_chunks(&self, chunk: u64, most: u64) -> u64 {
        let [n0, n1, n2] = self.counts();
        let [(_, s0), (_, s1), (_, s2)] = self.loops;
        let bytes = self.chunk_bytes;
        // The address step to the next chunk when it advances loop 0, 1 or 2 (the inner loops
        // restarting); only a step of exactly one chunk matters, so it may wrap.
        let step0 = s0;
        let step1 = s1.wrapping_sub((n0 - 1).wrapping_mul(s0));
        let step2 = s2
            .wrapping_sub((n1 - 1).wrapping_mul(s1))
            .wrapping_sub((n0 - 1).wrapping_mul(s0));
        let dense0 = n0 == 1 || step0 == bytes;
        let dense1 = dense0 && (n1 == 1 || step1 == bytes);
        let (mut i0, mut i1, mut i2) = (chunk % n0, chunk / n0 % n1, chunk / (n0 * n1));
        let mut found = 0;
        while found < most {
            if i0 + 1 < n0 {
                if step0 != bytes {
                    break;
                }
                found += n0 - 1 - i0;
                i0 = n0 - 1;
            } else if i1 + 1 < n1 {
                if step1 != bytes {
                    break;
                }
                if dense0 {
                    // With loop 0 dense too, the rest of loop 1 follows on.
                    found += (n1 - 1 - i1) * n0;
                    (i0, i1) = (n0 - 1, n1 - 1);
                } else {
                    found += 1;
                    (i0, i1) = (0, i1 + 1);
                }
            } else if i2 + 1 < n2 {
                if step2 != bytes {
                    break;
                }
                // With loops 0 and 1 dense too, the rest of the stream follows on.
                if dense1 {
                    found += (n2 - 1 - i2) * n0 * n1;
                    break;
                }
                found += 1;
                (i0, i1, i2) = (0, 0, i2 + 1);
            } else {
                break;
            }
        }
        found.min(most)
    }

    /// The cursor `bytes` (whole bursts over contiguous chunks) after `c`.
    fn advance(&self, mut c: Cursor, bytes: u64, burst: u64) -> Cursor {
        c.issued += bytes;
        c.seq += bytes / burst;
        if bytes > 0 {
            let offset = c.offset + bytes;
            c.chunk += offset / self.chunk_bytes;
            c.offset = offset % self.chunk_bytes;
        }
        c
    }
}

/// The outcome of [`DramChannel::serve_stream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// When the last burst left the data bus (ps; 0 for an empty stream).
    pub done_ps: u64,
    /// Bursts advanced in closed form (0 in [`DramMode::Reference`]).
    pub advanced_bursts: u64,
    /// Of those, the rows advanced in whole steady-state stretches (every bank cycling through
    /// its rows back to back) rather than row by row.
    pub jumped_rows: u64,
    /// Refreshes crossed in closed form, whole refresh intervals served at once.
    pub crossed_refreshes: u64,
}

/// Where the requests of one `serve` call come from.
enum Source<'a> {
    /// Given requests, in arrival order (ties by position).
    List(VecDeque<Request>),
    /// A DMA stream at a cursor.
    Stream(&'a Stream, Cursor),
}

/// A materialised request waiting in the controller, with the stream position it came from.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    req: Request,
    at: Option<Cursor>,
}

/// One DRAM channel.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let mut source = Source::List(order.into_iter().map(|(_, r)| r).collect());
        let mut out = Vec::with_capacity(requests.len());
        self.run(&mut source, DramMode::Reference, |c| out.push(c));
        out
    }

    /// Serves every burst of `stream`. Both modes give the same `done_ps` and leave the same
    /// channel state.
    pub fn serve_stream(&mut self, stream: &Stream, mode: DramMode) -> Served {
        let start = Cursor {
            chunk: 0,
            offset: 0,
            issued: 0,
            seq: 0,
        };
        let mut source = Source::Stream(stream, start);
        let mut last = 0;
        let advanced = self.run(&mut source, mode, |c| last = last.max(c.done));
        Served {
            done_ps: last.max(advanced.done_ps),
            advanced_bursts: advanced.advanced_bursts,
            jumped_rows: advanced.jumped_rows,
            crossed_refreshes: advanced.crossed_refreshes,
        }
    }

    /// The scheduling loop shared by every source: FR-FCFS over the arrived requests, one burst at
    /// a time, with whole-row advances in [`DramMode::Fast`]. Returns what the whole-row advances
    /// did (the bus time after the last one, 0 if none).
    fn run(
        &mut self,
        source: &mut Source,
        mode: DramMode,
        mut done: impl FnMut(Completion),
    ) -> Served {
        let burst = self.timing.burst_bytes;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut served = 0u64;
        let mut advanced = Served::default();
        let mut last_try = None;
        let mut refreshes_seen = self.stats.refreshes;
        loop {
            if waiting.is_empty() {
                match pull(source, burst) {
                    Some(w) => waiting.push_back(w),
                    None => break,
                }
            }
            if let (DramMode::Fast, Source::Stream(stream, _), Some(front)) =
                (mode, &*source, waiting.front())
            {
                // A clean boundary (every older request is served and none younger) at the start
                // of a row, of the stream, or right after a refresh.
                let boundary = || {
                    served == 0
                        || self.stats.refreshes != refreshes_seen
                        || div_rem(front.req.addr, self.timing.row_bytes).1 == 0
                };
                if let Some(at) = front
                    .at
                    .filter(|c| c.seq == served && last_try != Some(c.seq) && boundary())
                {
                    last_try = Some(at.seq);
                    refreshes_seen = self.stats.refreshes;
                    let stream: &Stream = stream;
                    // An engine slower than the bus makes rows arrival-bound: advance those first.
                    let advanced_rows = if stream.issue_bound(&self.timing) {
                        self.arrival_rows(stream, at, front.req)
                            .or_else(|| self.advance_rows(stream, at, front.req))
                    } else {
                        self.advance_rows(stream, at, front.req)
                            .or_else(|| self.arrival_rows(stream, at, front.req))
                    };
                    if let Some((next, bursts, (rows, refreshes))) = advanced_rows {
                        served += bursts;
                        advanced.done_ps = self.bus_free;
                        advanced.advanced_bursts += bursts;
                        advanced.jumped_rows += rows;
                        advanced.crossed_refreshes += refreshes;
                        waiting.clear();
                        *source = Source::Stream(stream, next);
                        continue;
                    }
                }
            }
            let Some(first) = waiting.front() else { break };
            // A ready oldest request wins whatever else has arrived: no need to look.
            if self.plan(&first.req).1 + self.timing.t_cl <= self.bus_free {
                if let Some(w) = waiting.pop_front() {
                    done(self.issue(w.req));
                    served += 1;
                }
                continue;
            }
            let now = self.bus_free.max(first.req.arrival);
            while waiting.len() < self.queue_depth
                && peek_arrival(source, burst).is_some_and(|a| a <= now)
            {
                match pull(source, burst) {
                    Some(w) => waiting.push_back(w),
                    None => break,
                }
            }
            let pick = self.pick(waiting.iter().map(|w| &w.req)).unwrap_or(0);
            if let Some(w) = waiting.remove(pick) {
                done(self.issue(w.req));
                served += 1;
            }
        }
        advanced
    }

    /// Advances the stream from the request at `at` (`first`) in closed form, one row segment at
    /// a time (the rest of `first`'s row, then whole rows), while each segment's bursts go on the
    /// data bus back to back: its first burst is the one FR-FCFS picks (ready when the bus frees,
    /// or, for the first segment only, the earliest of the window), every later burst has arrived
    /// by the time the bus frees for it, and no refresh falls inside (a segment is cut short
    /// before one). That is exactly what burst-by-burst scheduling does there.
    ///
    /// After the first segment and one whole row (whose bursts' arrivals are checked exactly),
    /// the stream is in steady state when a bank's precharge, activate and CAS fit in the other
    /// banks' rows (`tRP + tRCD + tCL ≤ (banks − 1) · row time`) and its `tRAS` ends before its
    /// row does (`tRAS ≤ row time + tRCD + tCL`), as long as the engine issues rows no slower than
    /// the bus moves them: once each bank's first row is in time, every later row is a conflict
    /// whose precharge waits for the later of its head's arrival and the end of the bank's
    /// previous row, and whose data follow the previous row's without a bubble. Those rows up to
    /// the next refresh advance at once, the first round checked against the banks' state and the
    /// banks' final states computed from the last round's rows ([`Self::jump_rows`]).
    ///
    /// A cut by a refresh in the middle of a row continues across the refresh intervals that
    /// repeat ([`Self::cross_refreshes`]).
    ///
    /// Returns the cursor after the advanced bursts, their count, and the rows jumped and
    /// refreshes crossed in closed form.
    fn advance_rows(
        &mut self,
        s: &Stream,
        at: Cursor,
        first: Request,
    ) -> Option<(Cursor, u64, (u64, u64))> {
        let t = self.timing;
        let burst = t.burst_bytes;
        if t.row_bytes % burst != 0 || first.addr % t.row_bytes % burst != 0 {
            return None;
        }
        let per_row = t.row_bytes / burst;
        let row_time = per_row * t.t_burst;
        let fits = self.next_refresh.saturating_sub(self.bus_free) / t.t_burst;
        let mut left = s.contiguous_bytes(at, burst, fits * burst) / burst;
        // The first segment: its head may wait for its bank (a bubble on the bus) if no other
        // request in the window could go first.
        let (outcome, column_at) = self.plan(&first);
        let start = (column_at + t.t_cl).max(self.bus_free);
        if start > self.bus_free && !self.head_goes_first(s, at, first, start) {
            return None;
        }
        // Later rows keep the first rows' arrival margin if the engine issues a row no slower
        // than the bus moves it (+2 ps covers rounding each issue time to the picosecond).
        let issue_per_row = t.row_bytes.div_ceil(s.bytes_per_cycle.max(1)) as f64 * s.period_ps;
        let rows_keep_margin = issue_per_row + 2.0 <= row_time as f64;
        let (mut bank_index, mut row) = t.locate(first.addr);
        let mut seg_len = per_row - first.addr % t.row_bytes / burst;
        let mut head = first;
        // Issue times advance in whole cycles: (cycles, leftover bytes) of the segment's head,
        // stepped without dividing in the loop.
        let bpc = s.bytes_per_cycle.max(1);
        let mut head_cycles = div_rem(at.issued, bpc);
        let step = |(q, r): (u64, u64), bytes: (u64, u64)| {
            let r = r + bytes.1;
            if r >= bpc {
                (q + bytes.0 + 1, r - bpc)
            } else {
                (q + bytes.0, r)
            }
        };
        let burst_step = div_rem(burst, bpc);
        let issue_per_burst = burst as f64 * s.period_ps / bpc as f64;
        let row_step = div_rem(t.row_bytes, bpc);
        let mut start = start;
        let mut outcome = outcome;
        let mut column_at = column_at;
        let mut checked = 0;
        let mut advanced = 0;
        let mut jumped = 0;
        let mut refreshes = 0;
        // Whether the timing allows steady state.
        let steady_timing = rows_keep_margin
            && t.t_rp + t.t_rcd + t.t_cl <= (t.banks.saturating_sub(1)) * row_time
            && t.t_ras <= row_time + t.t_rcd + t.t_cl;
        loop {
            if steady_timing && checked >= 2 && seg_len == per_row {
                let rows = (self.next_refresh.saturating_sub(start) / row_time)
                    .min(left / per_row)
                    .saturating_sub(1);
                let rows = if rows > 0 {
                    self.jump_rows(s, (bank_index, row), start, head_cycles, rows)
                } else {
                    0
                };
                if rows > 0 {
                    advanced += rows * per_row;
                    left -= rows * per_row;
                    jumped += rows;
                    let next = bank_index as u64 + rows;
                    bank_index = (next % t.banks) as usize;
                    row += next / t.banks;
                    let total = head_cycles.1 + rows * t.row_bytes;
                    let (q, r) = div_rem(total, bpc);
                    head_cycles = (head_cycles.0 + q, r);
                    head = Request {
                        tag: 0,
                        arrival: s.issue_at_cycle(head_cycles.0),
                        addr: head.addr - head.addr % t.row_bytes + rows * t.row_bytes,
                    };
                    (outcome, column_at) = self.plan_at(bank_index, row, head.arrival);
                    if column_at + t.t_cl > self.bus_free {
                        break;
                    }
                    start = self.bus_free;
                }
            }
            let room = self.next_refresh.saturating_sub(start);
            let want = seg_len.min(left);
            let n = if want * t.t_burst <= room {
                want
            } else {
                room / t.t_burst
            };
            if n == 0 {
                break;
            }
            // Exact arrival check on the first segment and the first whole row; later rows
            // follow from `rows_keep_margin`.
            if checked < 2 || !rows_keep_margin {
                // When the engine issues a burst no slower than the bus moves one, burst `m`
                // arrives no later than the head's real-valued issue time plus `m` bus slots
                // (+0.5 ps rounding, +1 ps for floating-point error): if that bound is in time,
                // every burst is, and the check burst by burst is not needed.
                // A head on a whole cycle (the usual case) needs no division; times convert
                // through `i64` exactly ([`Stream::issue_at_cycle`]).
                let cycles = head_cycles.0 as i64 as f64;
                let cycles = if head_cycles.1 == 0 {
                    cycles
                } else {
                    cycles + head_cycles.1 as f64 / bpc as f64
                };
                let head_issue = s.start_ps + cycles * s.period_ps;
                let bounded = issue_per_burst <= t.t_burst as f64
                    && head_issue + 1.5 + t.t_cl as f64 <= start as i64 as f64;
                if !bounded {
                    let mut c = head_cycles;
                    for m in 1..n {
                        c = step(c, burst_step);
                        if s.issue_at_cycle(c.0) + t.t_cl > start + m * t.t_burst {
                            return self.finish_advance(s, at, advanced, (jumped, refreshes));
                        }
                    }
                }
                checked += 1;
            }
            self.record_segment(
                (bank_index, row),
                (outcome, column_at),
                n,
                start + n * t.t_burst,
            );
            advanced += n;
            left -= n;
            if n < seg_len || left == 0 {
                // Cut mid-row by a refresh: the refresh intervals that follow may repeat.
                if steady_timing && n < seg_len && self.bus_free + t.t_burst > self.next_refresh {
                    let next = s.advance(at, advanced * burst, burst);
                    if let Some((bursts, intervals)) = self.cross_refreshes(s, next) {
                        advanced += bursts;
                        refreshes += intervals;
                    }
                }
                break;
            }
            // The next whole row, which must start without a bubble.
            bank_index += 1;
            if bank_index as u64 == t.banks {
                bank_index = 0;
                row += 1;
            }
            let seg_bytes = n * burst;
            head_cycles = if seg_bytes == t.row_bytes {
                step(head_cycles, row_step)
            } else {
                step(head_cycles, div_rem(seg_bytes, bpc))
            };
            head = Request {
                tag: 0,
                arrival: s.issue_at_cycle(head_cycles.0),
                addr: head.addr - head.addr % t.row_bytes + t.row_bytes,
            };
            (outcome, column_at) = self.plan_at(bank_index, row, head.arrival);
            if column_at + t.t_cl > self.bus_free {
                break;
            }
            start = self.bus_free;
            seg_len = per_row;
        }
        self.finish_advance(s, at, advanced, (jumped, refreshes))
    }

    /// Advances the stream from the request at `at` (`first`; every older request is served) in
    /// closed form, one row segment at a time (the rest of `first`'s row, then whole rows), where
    /// bursts go on the bus as they arrive rather than back to back (an engine slower than the
    /// bus, or bubbles while a row opens): the segment's head has its data at the later of its
    /// column command plus `tCL` and the bus's free time, and each later burst of the segment
    /// (a row hit) at the later of the previous burst's end and its own arrival plus `tCL`.
    ///
    /// That is what FR-FCFS does when no later request can go first ([`Self::overtakes_none`]).
    /// A segment whose
    /// last burst would meet a refresh, or that does not start on a burst boundary, stops the
    /// advance. Returns the cursor after the advanced bursts and their count.
    fn arrival_rows(
        &mut self,
        s: &Stream,
        at: Cursor,
        first: Request,
    ) -> Option<(Cursor, u64, (u64, u64))> {
        let t = self.timing;
        let burst = t.burst_bytes;
        if t.row_bytes % burst != 0 {
            return None;
        }
        let total = s.bytes();
        // When the engine issues a burst slower than the bus moves one, burst `m₂`'s arrival
        // minus its bus slots exceeds burst `m₁`'s once `m₂ − m₁ ≥ (period + 1) / (issue time
        // per burst − burst time)` (issue times are whole cycles, rounded to the picosecond).
        let slack = s.issue_slack(&t);
        let window = if slack > 0.0 {
            ((s.period_ps + 2.0) / slack).ceil() as u64 + 1
        } else {
            u64::MAX
        };
        let (mut addr, mut issued) = (first.addr, at.issued);
        // Full bursts left in the contiguous extent at `addr` (found a stretch at a time).
        let stretch = 64 * t.row_bytes;
        let mut contiguous = s.contiguous_bytes(at, burst, stretch) / burst;
        let mut advanced = 0;
        while addr % burst == 0 {
            if contiguous == 0 {
                let c = s.advance(at, advanced * burst, burst);
                contiguous = s.contiguous_bytes(c, burst, stretch) / burst;
                addr = s.chunk_addr(c.chunk) + c.offset;
                if contiguous == 0 || addr % burst != 0 {
                    break;
                }
            }
            let n = ((t.row_bytes - addr % t.row_bytes) / burst).min(contiguous);
            let (bank_index, row) = t.locate(addr);
            let (outcome, column_at) = self.plan_at(bank_index, row, s.issue_ps(issued));
            let after = issued + n * burst;
            if !self.overtakes_none(
                s,
                (after, addr + n * burst),
                contiguous - n,
                bank_index,
                column_at,
            ) {
                break;
            }
            // The last burst's data: the later of the head's plus `n − 1` bus slots and, for each
            // later burst `m`, its arrival plus `tCL` plus the slots after it. Only the last
            // `window` bursts can give the maximum.
            let last = n - 1;
            let mut data = (column_at + t.t_cl).max(self.bus_free) + last * t.t_burst;
            // No burst's term exceeds the last burst's arrival plus `tCL` by more than a cycle
            // (plus rounding) when the engine is the slower: a head that bounds that needs no
            // scan.
            let last_arrived = s.issue_ps(issued + last * burst) + t.t_cl;
            if window == u64::MAX || data < last_arrived + s.period_ps.ceil() as u64 + 1 {
                for m in last.saturating_sub(window).max(1)..n {
                    let arrived = s.issue_ps(issued + m * burst) + t.t_cl;
                    data = data.max(arrived + (last - m) * t.t_burst);
                }
            }
            let end = data + t.t_burst;
            if end > self.next_refresh {
                break;
            }
            self.record_segment((bank_index, row), (outcome, column_at), n, end);
            advanced += n;
            contiguous -= n;
            if after >= total {
                break;
            }
            addr += n * burst;
            issued = after;
        }
        self.finish_advance(s, at, advanced, (0, 0))
    }

    /// Whether no request after a segment can put its data on the bus before the segment's
    /// bursts, whose head has its column command at `column_at` in bank `bank`: the requests
    /// after it start at `(issued, addr)`, contiguous for `contiguous` full bursts. One arriving
    /// no earlier than `column_at` cannot (it needs at least `tCL` after its arrival; the
    /// segment's bursts that arrived before it hit the open row). One arriving earlier heads a
    /// later row: it cannot if its bank is the head's (it waits for the head's row) or its own
    /// column command comes no earlier than `column_at` (a tie goes to the oldest); the rest of
    /// its row arrives later and waits for the same bank.
    fn overtakes_none(
        &self,
        s: &Stream,
        (issued, addr): (u64, u64),
        contiguous: u64,
        bank: usize,
        column_at: u64,
    ) -> bool {
        let t = self.timing;
        let (mut issued, mut addr, mut left) = (issued, addr, contiguous * t.burst_bytes);
        while issued < s.bytes() {
            let arrival = s.issue_ps(issued);
            if arrival >= column_at {
                return true;
            }
            if left == 0 || addr % t.row_bytes != 0 {
                return false;
            }
            let (b, row) = t.locate(addr);
            if b != bank && self.plan_at(b, row, arrival).1 < column_at {
                return false;
            }
            let step = t.row_bytes.min(left);
            (issued, addr, left) = (issued + step, addr + step, left - step);
        }
        true
    }

    /// Records a segment of `n` bursts to `row` of bank `bank_index` served in closed form: its
    /// head's row outcome and column command, the others row hits, the last ending at `end`.
    fn record_segment(
        &mut self,
        (bank_index, row): (usize, u64),
        (outcome, column_at): (RowOutcome, u64),
        n: u64,
        end: u64,
    ) {
        let t = self.timing;
        let bank = &mut self.banks[bank_index];
        if outcome != RowOutcome::Hit {
            bank.activated_at = column_at - t.t_rcd;
            bank.open_row = Some(row);
        }
        bank.last_data_end = end;
        self.bus_free = end;
        let st = &mut self.stats;
        st.bursts += n;
        st.busy_ps += n * t.t_burst;
        st.hits += n - 1;
        match outcome {
            RowOutcome::Hit => st.hits += 1,
            RowOutcome::Miss => st.misses += 1,
            RowOutcome::Conflict => st.conflicts += 1,
        }
    }

    fn finish_advance(
        &self,
        s: &Stream,
        at: Cursor,
        bursts: u64,
        jumped: (u64, u64),
    ) -> Option<(Cursor, u64, (u64, u64))> {
        let burst = self.timing.burst_bytes;
        (bursts > 0).then(|| (s.advance(at, bursts * burst, burst), bursts, jumped))
    }

    /// Serves, in closed form, the refresh intervals that follow a cut mid-row by a refresh, when
    /// they repeat: the next request `next` (in the open row, its arrival in time) is the one
    /// FR-FCFS issues; the refresh closes every bank, so it opens its row again right after the
    /// refresh (`tRFC`), and the interval's bursts follow back to back until the next refresh
    /// cuts them (`X = ⌊(tREFI − tRFC − tRCD − tCL) / burst time⌋` per interval). With the
    /// steady-state timing of [`Self::advance_rows`], `tRAS + tRP` within the other banks' rows,
    /// an engine no slower than the bus and the request's arrival `tRP` before the refresh ends,
    /// no later request's arrival binds either, so every interval is the same but for where its
    /// rows start: its first round of rows after the refresh are misses, later rows conflicts
    /// (a refresh on a row boundary finds the next row's bank ready too, as in steady state).
    /// Stops before the end of the contiguous data; the state after the last refresh and its
    /// first burst is canonical ([`Self::refresh_until`] clears the closed banks' timestamps),
    /// so it is set directly. Returns the bursts served and the refreshes crossed.
    fn cross_refreshes(&mut self, s: &Stream, next: Cursor) -> Option<(u64, u64)> {
        let t = self.timing;
        let burst = t.burst_bytes;
        let per_row = t.row_bytes / burst;
        let row_time = per_row * t.t_burst;
        let bpc = s.bytes_per_cycle.max(1);
        let (request, _) = s.request(next, burst)?;
        let offset = request.addr % t.row_bytes / burst;
        let post = t.t_rfc + t.t_rcd + t.t_cl;
        let per_interval = t.t_refi.checked_sub(post)? / t.t_burst;
        let issue_per_burst = burst as f64 * s.period_ps / bpc as f64;
        let head_issue = s.start_ps + next.issued as f64 / bpc as f64 * s.period_ps;
        let refresh_end = self.next_refresh + t.t_rfc;
        let (outcome, column_at) = self.plan(&request);
        if offset == 0
            || per_interval == 0
            || outcome != RowOutcome::Hit
            || column_at + t.t_cl > self.bus_free
            || issue_per_burst > t.t_burst as f64
            || t.t_ras + t.t_rp > (t.banks - 1) * row_time + t.t_burst
            || head_issue + 1.5 + t.t_rp as f64 > refresh_end as f64
        {
            return None;
        }
        let available = s.contiguous_bytes(next, burst, u64::MAX) / burst;
        if available == 0 {
            return None;
        }
        // Intervals served whole before the last refresh, and their row outcomes.
        let (mut whole, mut o) = (0u64, offset);
        let (mut hits, mut misses, mut conflicts) = (0, 0, 0);
        while (whole + 1) * per_interval < available {
            let new_rows = (o + per_interval - 1) / per_row;
            let first_round = new_rows.min(t.banks - 1);
            misses += 1 + first_round;
            conflicts += new_rows - first_round;
            hits += per_interval - 1 - new_rows;
            o = (o + per_interval) % per_row;
            whole += 1;
        }
        let intervals = whole + 1;
        let bursts = whole * per_interval + 1;
        let refresh = self.next_refresh + whole * t.t_refi;
        let end = refresh + t.t_rfc;
        let data = end + t.t_rcd + t.t_cl;
        for b in &mut self.banks {
            *b = Bank {
                open_row: None,
                ready_at: end,
                activated_at: 0,
                last_data_end: 0,
            };
        }
        let (bank, row) = t.locate(request.addr + whole * per_interval * burst);
        let b = &mut self.banks[bank];
        b.open_row = Some(row);
        b.activated_at = end;
        b.last_data_end = data + t.t_burst;
        self.bus_free = data + t.t_burst;
        self.next_refresh = refresh + t.t_refi;
        let st = &mut self.stats;
        st.refreshes += intervals;
        st.bursts += bursts;
        st.busy_ps += bursts * t.t_burst;
        st.hits += hits;
        st.misses += misses + 1;
        st.conflicts += conflicts;
        Some((bursts, intervals))
    }

    /// Serves up to `rows` whole rows back to back from the row at `(bank, row)`, whose data
    /// start at `start` (the bus is free then) and whose head is issued at engine cycle
    /// `head_cycles`: as many as go on the bus without a bubble. Returns how many (0: nothing
    /// changed).
    ///
    /// Row `j` has its data at `start + j · row time`. The first round of rows (one per bank)
    /// finds its banks as they are: each is checked exactly ([`Self::plan_at`]: a miss on a
    /// closed bank, a conflict on an open one, its column command in time; a row hit stops).
    /// Every later row is a conflict with the bank's previous row of the jump, which ended
    /// `banks − 1` rows before its start; with the steady-state timing of
    /// [`Self::advance_rows`] its bank is activated at the later of its head's arrival and that
    /// end, plus `tRP`, and is in time when the head's arrival is (the arrival margin only grows
    /// from row to row, so checking the first such row covers them all).
    fn jump_rows(
        &mut self,
        s: &Stream,
        (bank, row): (usize, u64),
        start: u64,
        head_cycles: (u64, u64),
        rows: u64,
    ) -> u64 {
        let t = self.timing;
        let per_row = t.row_bytes / t.burst_bytes;
        let row_time = per_row * t.t_burst;
        let bpc = s.bytes_per_cycle.max(1);
        let arrival = |j: u64| {
            let issued = head_cycles.1 + j * t.row_bytes;
            s.issue_at_cycle(head_cycles.0 + div_rem(issued, bpc).0)
        };
        let place = |j: u64| {
            let index = bank as u64 + j;
            let (rows, bank) = div_rem(index, t.banks);
            (bank as usize, row + rows)
        };
        // The first round, against the banks' present state, up to the first row not in time.
        // Quick case: no row hit, every bank free for a new row `tRP + tRCD + tCL` before its
        // row's data and the first head arriving that early before the first row's data (the
        // arrival margin only grows): then every first-round row is in time, a miss if its bank
        // is closed.
        let round = rows.min(t.banks);
        let open_latency = t.t_rp + t.t_rcd + t.t_cl;
        // The first round's banks in order: `bank`, `bank + 1`, … wrapping to the next row.
        let first_round = || {
            (0..round as usize).map(move |j| {
                let b = bank + j;
                if b < t.banks as usize {
                    (b, row, j as u64)
                } else {
                    (b - t.banks as usize, row + 1, j as u64)
                }
            })
        };
        let idle = |(b, r, j): (usize, u64, u64)| {
            let k = self.banks[b];
            k.open_row != Some(r)
                && (k.activated_at + t.t_ras)
                    .max(k.last_data_end)
                    .max(k.ready_at)
                    + open_latency
                    <= start + j * row_time
        };
        let (in_time, misses) = if arrival(0) + open_latency <= start && first_round().all(idle) {
            let closed = first_round().filter(|&(b, _, _)| self.banks[b].open_row.is_none());
            (round, closed.count() as u64)
        } else {
            let (mut in_time, mut misses) = (0, 0);
            while in_time < round {
                let (b, r) = place(in_time);
                let (outcome, column_at) = self.plan_at(b, r, arrival(in_time));
                if outcome == RowOutcome::Hit || column_at + t.t_cl > start + in_time * row_time {
                    break;
                }
                misses += u64::from(outcome == RowOutcome::Miss);
                in_time += 1;
            }
            (in_time, misses)
        };
        let rows = if in_time < round
            || (rows > t.banks
                && arrival(t.banks) + t.t_rp + t.t_rcd + t.t_cl > start + t.banks * row_time)
        {
            in_time
        } else {
            rows
        };
        if rows == 0 {
            return 0;
        }
        // The banks' final state: each one's last row (one row per bank, so a first-round row's
        // bank is still as the check found it).
        // Stepped without dividing: the row's place and its head's issue (cycles, leftover bytes).
        let first = rows.saturating_sub(t.banks);
        let (mut b, mut r) = place(first);
        let issued = head_cycles.1 + first * t.row_bytes;
        let (q, mut rest) = div_rem(issued, bpc);
        let mut cycles = head_cycles.0 + q;
        let row_step = div_rem(t.row_bytes, bpc);
        for j in first..rows {
            let data = start + j * row_time;
            let arrival = s.issue_at_cycle(cycles);
            let activated_at = if j < t.banks {
                self.plan_at(b, r, arrival).1 - t.t_rcd
            } else {
                arrival.max(data - (t.banks - 1) * row_time) + t.t_rp
            };
            let k = &mut self.banks[b];
            k.activated_at = activated_at;
            k.open_row = Some(r);
            k.last_data_end = data + row_time;
            b += 1;
            if b as u64 == t.banks {
                (b, r) = (0, r + 1);
            }
            cycles += row_step.0;
            rest += row_step.1;
            if rest >= bpc {
                (cycles, rest) = (cycles + 1, rest - bpc);
            }
        }
        self.bus_free = start + rows * row_time;
        let st = &mut self.stats;
        st.bursts += rows * per_row;
        st.busy_ps += rows * row_time;
        st.hits += rows * (per_row - 1);
        st.misses += misses;
        st.conflicts += rows - misses;
        rows
    }

    /// Whether FR-FCFS picks `first` (the oldest request, whose data could start at `start`)
    /// over every other request of the window: those of the stream after it that have arrived
    /// by the time the scheduler decides, up to the queue depth.
    fn head_goes_first(&self, s: &Stream, at: Cursor, first: Request, start: u64) -> bool {
        let t = self.timing;
        let now = self.bus_free.max(first.arrival);
        let head_row = t.locate(first.addr);
        let window = self.queue_depth as u64 * t.burst_bytes;
        if s.contiguous_bytes(at, t.burst_bytes, window) >= window {
            // A contiguous window: only the first request of each later row can go first (the
            // others of its row arrive later and wait for the same bank).
            let mut offset = t.row_bytes - first.addr % t.row_bytes;
            while offset < window {
                let r = Request {
                    tag: 0,
                    arrival: s.issue_ps(at.issued + offset),
                    addr: first.addr + offset,
                };
                if r.arrival > now {
                    break;
                }
                if (self.plan(&r).1 + t.t_cl).max(self.bus_free) < start {
                    return false;
                }
                offset += t.row_bytes;
            }
            return true;
        }
        let mut c = at;
        for _ in 0..self.queue_depth {
            let Some((r, next)) = s.request(c, t.burst_bytes) else {
                break;
            };
            c = next;
            if r.arrival > now {
                break;
            }
            // Requests to the head's row wait for the same bank and arrived no earlier.
            if t.locate(r.addr) != head_row && (self.plan(&r).1 + t.t_cl).max(self.bus_free) < start
            {
                return false;
            }
        }
        true
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
        let (bank_index, row) = self.timing.locate(req.addr);
        self.plan_at(bank_index, row, req.arrival)
    }

    /// [`DramChannel::plan`] for a request to `row` of bank `bank_index` arriving at `arrival`.
    fn plan_at(&self, bank_index: usize, row: u64, arrival: u64) -> (RowOutcome, u64) {
        let t = self.timing;
        let bank = self.banks[bank_index];
        match bank.open_row {
            Some(open) if open == row => (
                RowOutcome::Hit,
                arrival.max(bank.ready_at).max(bank.activated_at + t.t_rcd),
            ),
            Some(_) => {
                let precharge = arrival
                    .max(bank.activated_at + t.t_ras)
                    .max(bank.last_data_end)
                    .max(bank.ready_at);
                (RowOutcome::Conflict, precharge + t.t_rp + t.t_rcd)
            }
            None => (RowOutcome::Miss, arrival.max(bank.ready_at) + t.t_rcd),
        }
    }

    /// Performs every refresh due by `t` at once: each closes every bank and holds the banks and
    /// the bus until it ends, so after several only the last one's end matters.
    fn refresh_until(&mut self, t: u64) {
        if self.next_refresh > t {
            return;
        }
        let due = (t - self.next_refresh) / self.timing.t_refi + 1;
        let last = self.next_refresh + (due - 1) * self.timing.t_refi;
        let end = last + self.timing.t_rfc;
        // A closed bank's last activation and data no longer constrain it; clearing them makes
        // the state after a refresh canonical.
        for b in &mut self.banks {
            b.open_row = None;
            b.ready_at = b.ready_at.max(end);
            b.activated_at = 0;
            b.last_data_end = 0;
        }
        self.bus_free = self.bus_free.max(end);
        self.next_refresh = last + self.timing.t_refi;
        self.stats.refreshes += due;
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

/// The next request of `source` without taking it.
fn peek_arrival(source: &Source, burst: u64) -> Option<u64> {
    match source {
        Source::List(list) => list.front().map(|r| r.arrival),
        Source::Stream(s, c) => s.request(*c, burst).map(|(r, _)| r.arrival),
    }
}

/// Takes the next request of `source`.
fn pull(source: &mut Source, burst: u64) -> Option<Waiting> {
    match source {
        Source::List(list) => list.pop_front().map(|req| Waiting { req, at: None }),
        Source::Stream(s, c) => {
            let (req, next) = s.request(*c, burst)?;
            let at = Some(*c);
            *c = next;
            Some(Waiting { req, at })
        }
    }
}
