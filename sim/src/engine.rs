//! The event-driven engine: instruction fetch, decoupled units synchronised by dependency tokens,
//! DMA over the DRAM channel model, and energy per event.
//!
//! Semantics (the contract the compiler and the RTL controller share):
//! - Instructions are fetched in program order from instruction memory at
//!   `instruction_memory.fetch_bytes_per_cycle`, and queued per unit. A program larger than the
//!   instruction memory streams from the memory holding instructions
//!   ([`tessera_spec::analytical::instruction_fetch`]: at most that memory's streaming bandwidth;
//!   its bytes are charged as that memory's DRAM energy; the stream does not queue on the
//!   memory's channels).
//! - Each unit starts its queue in order. The head starts once it is fetched, the unit has room
//!   (compute units run one instruction at a time; the load and store units share `dma.engines`
//!   engines, one DMA instruction each), and one token is available from every unit in its `wait`
//!   mask (the tokens are then taken). When it finishes it gives one token to every unit in its
//!   `release` mask. Tokens are counted per ordered pair of units.
//! - The matrix–matrix and matrix–vector units share the PE array: one of them computes at a time.
//! - Matrix and special-function latencies are the analytical model's
//!   ([`tessera_spec::analytical::compute_instruction_cycles`]: compute or the operands through
//!   the buffers' compute ports, whichever is longer).
//! - Buffer ports (the port model of [`tessera_spec::analytical::port_bytes_per_cycle`]): a compute
//!   instruction holds one compute port per operand of each buffer it touches while it runs and
//!   starts only when they are free; DMAs use each buffer's DMA port at their time-division share
//!   ([`tessera_spec::analytical::dma_bytes_per_cycle`]); on a single-port buffer compute
//!   instructions and DMAs take turns. Waiting for a port counts as a port-conflict stall.
//! - A DMA instruction issues one burst request per `burst bytes` at `dma.bytes_per_cycle` to its
//!   channel, whose controller queue holds `dma.max_outstanding` requests; it finishes with its
//!   last burst. A channel serves DMA instructions in the order they start. [`SimOptions::dram`]
//!   chooses burst-by-burst scheduling or the exact closed-form row advances
//!   ([`crate::dram::DramMode`]); the report says which.
//! - At one cycle, instruction fetches come before completions, and completions go in unit
//!   order, then program order, so runs are deterministic.

use crate::check::{channel_count, check_program, ProgramError};
use crate::dram::{ChannelStats, ChannelTiming, DramChannel, DramMode, Stream};
use crate::functional::DataState;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::{
    compute_instruction_cycles, compute_ports, dma_bytes_per_cycle, instruction_fetch,
    matrix_instr_work, matrix_operand_bytes, matrix_work_cycles, operand_accesses, ports_held,
    sfu_operand_bytes,
};
use tessera_spec::isa::{words_of, Dma, Instruction, Program, SysOp, Unit};

/// What a unit spent its cycles on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnitStats {
    /// Instructions executed.
    pub instructions: u64,
    /// Cycles with at least one instruction executing.
    pub busy_cycles: u64,
    /// Cycles its next instruction was ready but lacked a token.
    pub stall_token_cycles: u64,
    /// Cycles its next instruction waited for the shared PE array.
    pub stall_resource_cycles: u64,
    /// Cycles its next instruction waited for a buffer port (port conflict).
    pub stall_port_cycles: u64,
}

impl std::ops::AddAssign for UnitStats {
    fn add_assign(&mut self, o: UnitStats) {
        self.instructions += o.instructions;
        self.busy_cycles += o.busy_cycles;
        self.stall_token_cycles += o.stall_token_cycles;
        self.stall_resource_cycles += o.stall_resource_cycles;
        self.stall_port_cycles += o.stall_port_cycles;
    }
}

/// Traffic and row-buffer behaviour of one DRAM channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelReport {
    /// Memory name.
    pub memory: String,
    /// Channel index within the memory.
    pub channel: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Achieved bandwidth over the run, GB/s.
    pub achieved_gbps: f64,
    /// Peak bandwidth of the channel, GB/s.
    pub peak_gbps: f64,
    /// Row hits.
    pub row_hits: u64,
    /// Row misses.
    pub row_misses: u64,
    /// Row conflicts.
    pub row_conflicts: u64,
}

/// Energy by where it was spent, joules.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnergyReport {
    /// Matrix-engine MACs.
    pub mac: f64,
    /// Special-function unit.
    pub vector: f64,
    /// On-chip buffer accesses.
    pub buffer: f64,
    /// Off-chip memory.
    pub dram: f64,
    /// Static power over the run.
    pub r#static: f64,
    /// Everything.
    pub total: f64,
    /// Dynamic energy by the unit whose instructions spent it.
    pub by_unit: BTreeMap<&'static str, f64>,
    /// By place: `matrix_engine`, `vector_unit`, `buffer:<name>`, `dram:<memory>`, `static`.
    pub by_place: BTreeMap<String, f64>,
}

/// Kinds of dynamic energy, indexing [`Ledger::by_kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EnergyKind {
    #[default]
    Mac,
    Vector,
    Buffer,
    Dram,
}

/// Dynamic energy so far, in picojoules. Places are indexed: the matrix engine, the vector
/// unit, then each buffer, then each memory ([`Ledger::names`]).
#[derive(Debug, Clone, Default)]
struct Ledger {
    by_kind: [f64; 4],
    by_unit: [f64; 6],
    names: Vec<String>,
    /// Picojoules per place, and whether anything was charged there.
    by_place: Vec<(f64, bool)>,
}

const MATRIX_ENGINE: usize = 0;
const VECTOR_UNIT: usize = 1;
const FIRST_BUFFER: usize = 2;

impl Ledger {
    fn new(accel: &Accelerator) -> Self {
        let mut names = vec!["matrix_engine".to_string(), "vector_unit".to_string()];
        names.extend(
            accel
                .buffers()
                .iter()
                .map(|b| format!("buffer:{}", b.name())),
        );
        names.extend(
            accel
                .memories()
                .iter()
                .map(|m| format!("dram:{}", m.name())),
        );
        Ledger {
            by_place: vec![(0.0, false); names.len()],
            names,
            ..Ledger::default()
        }
    }

    fn charge(&mut self, kind: EnergyKind, unit: Unit, place: usize, pj: f64) {
        self.by_kind[kind as usize] += pj;
        self.by_unit[unit as usize] += pj;
        let p = &mut self.by_place[place];
        p.0 += pj;
        p.1 = true;
    }
}

/// One executed instruction, for traces and timing checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Executed {
    /// Program index.
    pub index: usize,
    /// Unit.
    pub unit: Unit,
    /// First cycle.
    pub start: u64,
    /// Cycle after the last.
    pub end: u64,
}

/// The result of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Accelerator name.
    pub accelerator: String,
    /// How DRAM was scheduled (`reference` or `fast`; the results are the same).
    pub dram_mode: DramMode,
    /// Whether data was computed too (functional mode).
    pub functional: bool,
    /// Cycles until every unit finished.
    pub cycles: u64,
    /// The same in seconds.
    pub seconds: f64,
    /// Instructions executed.
    pub instructions: u64,
    /// Bytes the program occupies in instruction memory.
    pub instruction_bytes: u64,
    /// Discrete events the engine processed (instruction completions and fetch wake-ups; DRAM
    /// bursts are counted per channel in `channels`).
    pub events: u64,
    /// The memory the program streamed from because it exceeds the on-chip instruction memory
    /// (its bytes are charged there as DRAM energy); absent when it fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions_streamed_from: Option<String>,
    /// Per unit (by short name).
    pub units: BTreeMap<&'static str, UnitStats>,
    /// Off-chip bytes moved.
    pub dram_bytes: u64,
    /// Per DRAM channel that was used.
    pub channels: Vec<ChannelReport>,
    /// Energy.
    pub energy_j: EnergyReport,
    /// Every instruction's execution interval, in program order.
    pub timeline: Vec<Executed>,
}

/// Why a unit's next instruction cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    Token,
    PeArray,
    Port,
}

/// An event. At one cycle, fetches come before completions (`Fetched < Done`), and completions
/// go by unit, then instruction: a unit whose head arrives from instruction memory at the cycle
/// another unit's instruction finishes sees the fetch first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A unit's head instruction has been fetched: wake the units up.
    Fetched,
    /// Unit, instruction.
    Done(usize, usize),
}

/// An event and its cycle packed into one integer that orders as `(cycle, event)`: the cycle in
/// the high 64 bits, then 0 for [`Event::Fetched`], or for [`Event::Done`] a set top bit above
/// the unit (3 bits) and the instruction (60 bits). Fetches at one cycle are alike, so their
/// order among themselves does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending(u128);

impl Pending {
    const DONE: u64 = 1 << 63;
    const INSTRUCTION_BITS: u32 = 60;

    fn new(at: u64, ev: Event) -> Self {
        let event = match ev {
            Event::Fetched => 0,
            Event::Done(u, i) => {
                debug_assert!(u < 8 && (i as u64) < 1 << Self::INSTRUCTION_BITS);
                Self::DONE | (u as u64) << Self::INSTRUCTION_BITS | i as u64
            }
        };
        Pending((at as u128) << 64 | event as u128)
    }

    fn cycle(self) -> u64 {
        (self.0 >> 64) as u64
    }

    fn event(self) -> Event {
        let event = self.0 as u64;
        if event & Self::DONE == 0 {
            Event::Fetched
        } else {
            let unit = (event & !Self::DONE) >> Self::INSTRUCTION_BITS;
            let index = event & ((1 << Self::INSTRUCTION_BITS) - 1);
            Event::Done(unit as usize, index as usize)
        }
    }
}

/// The compute ports an instruction holds while it runs: `(buffer, ports)`, at most one entry per
/// operand ([`ports_held`] computes them once per instruction).
type PortNeeds = Vec<(usize, u64)>;

struct Engine<'a> {
    accel: &'a Accelerator,
    program: &'a Program,
    now: u64,
    /// Events scheduled so far.
    seq: u64,
    /// Pending events by (cycle, event): only completions and the fetches some unit waits for,
    /// so the heap stays as small as the work in flight.
    events: BinaryHeap<Reverse<Pending>>,
    fetched_at: Vec<u64>,
    /// The fetch cycle each unit has a wake-up pending for.
    wake_at: [Option<u64>; 6],
    /// Each unit's head instruction and its port needs, computed once.
    head_ports: [Option<(usize, PortNeeds)>; 6],
    /// The ports each compute unit's running instruction holds.
    held_ports: [PortNeeds; 6],
    queues: [VecDeque<usize>; 6],
    /// Instructions executing per unit.
    in_flight: [usize; 6],
    /// Since when each unit has had an instruction in flight.
    active_since: [Option<u64>; 6],
    blocked_since: [Option<(u64, Stall)>; 6],
    /// Compute ports held per buffer.
    ports_held: Vec<u64>,
    /// DMA instructions running per buffer.
    dma_active: Vec<u64>,
    /// DMA engines in use: one per lane of every load and store in flight.
    dma_engines_busy: u64,
    tokens: [[u64; 6]; 6],
    pe_array_busy: bool,
    channels: Vec<(DramChannel, u64)>,
    channel_names: Vec<(String, u64)>,
    /// Index of each channel's memory.
    channel_memory: Vec<usize>,
    stats: [UnitStats; 6],
    /// Every instruction's interval, by instruction index (filled as they start).
    timeline: Vec<Executed>,
    ledger: Ledger,
    period_ps: f64,
    options: SimOptions,
    /// Memory contents in functional mode.
    data: Option<&'a mut DataState>,
    /// The first instruction the functional model rejected.
    failed: Option<ProgramError>,
    instructions_streamed_from: Option<String>,
    /// Bytes the program occupies in instruction memory.
    instruction_bytes: u64,
}

/// How to simulate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// DRAM scheduling: burst by burst, or with closed-form whole-row advances (same results).
    pub dram: DramMode,
    /// Fetch instructions as a program of this many bytes would (streamed from DRAM when it
    /// exceeds the instruction memory): a part of a larger program ([`SimReport::repeat`])
    /// fetches as the whole does. `None`: the program's own size.
    pub fetch_as_bytes: Option<u64>,
}

/// Runs `program` on `accel` after checking it, with the default options. Errors name the
/// instruction (or, for a deadlock, the blocked units and the tokens they lack).
pub fn simulate(accel: &Accelerator, program: &Program) -> Result<SimReport, ProgramError> {
    simulate_with(accel, program, SimOptions::default())
}

/// [`simulate`] with explicit options.
pub fn simulate_with(
    accel: &Accelerator,
    program: &Program,
    options: SimOptions,
) -> Result<SimReport, ProgramError> {
    check_program(accel, program)?;
    let mut e = Engine::new(accel, program, options, None);
    e.run()?;
    Ok(e.report())
}

/// [`simulate_with`] in functional mode: every instruction also computes on the bytes in `data`
/// (see [`crate::functional`]), which holds the memories' contents before and after the run.
pub fn simulate_functional(
    accel: &Accelerator,
    program: &Program,
    options: SimOptions,
    data: &mut DataState,
) -> Result<SimReport, ProgramError> {
    check_program(accel, program)?;
    let mut e = Engine::new(accel, program, options, Some(data));
    e.run()?;
    Ok(e.report())
}

impl<'a> Engine<'a> {
    fn new(
        accel: &'a Accelerator,
        program: &'a Program,
        options: SimOptions,
        data: Option<&'a mut DataState>,
    ) -> Self {
        let instruction_bytes = program.storage_bytes();
        let fetch = instruction_fetch(accel, options.fetch_as_bytes.unwrap_or(instruction_bytes));
        let fetch_bpc = accel.instruction_memory().fetch_bytes_per_cycle().max(1);
        let mut fetched_at = Vec::with_capacity(program.instructions.len());
        let (mut t, mut streamed) = (0, 0.0f64);
        let mut queues: [VecDeque<usize>; 6] = Default::default();
        for (i, ins) in program.instructions.iter().enumerate() {
            let bytes = 4 * words_of(ins.opcode()) as u64;
            if fetch.streamed_from.is_some() {
                streamed += bytes as f64 / fetch.bytes_per_cycle;
                t = streamed.ceil() as u64;
            } else {
                t += bytes.div_ceil(fetch_bpc);
            }
            fetched_at.push(t);
            queues[ins.opcode().unit() as usize].push_back(i);
        }
        let queue_depth = accel.dma().max_outstanding() as usize;
        let mut channels = Vec::new();
        let mut channel_names = Vec::new();
        let mut channel_memory = Vec::new();
        for (index, m) in accel.memories().iter().enumerate() {
            for c in 0..m.channels() {
                channels.push((DramChannel::new(ChannelTiming::of(m), queue_depth), 0));
                channel_names.push((m.name().to_string(), c));
                channel_memory.push(index);
            }
        }
        debug_assert_eq!(channels.len() as u64, channel_count(accel));
        let mut e = Engine {
            accel,
            program,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            timeline: vec![
                Executed {
                    index: 0,
                    unit: Unit::System,
                    start: 0,
                    end: 0,
                };
                fetched_at.len()
            ],
            fetched_at,
            wake_at: [None; 6],
            head_ports: Default::default(),
            held_ports: Default::default(),
            queues,
            in_flight: [0; 6],
            active_since: [None; 6],
            blocked_since: [None; 6],
            ports_held: vec![0; accel.buffers().len()],
            dma_active: vec![0; accel.buffers().len()],
            dma_engines_busy: 0,
            tokens: [[0; 6]; 6],
            pe_array_busy: false,
            channels,
            channel_names,
            channel_memory,
            stats: [UnitStats::default(); 6],
            ledger: Ledger::new(accel),
            period_ps: 1e12 / accel.clock().0,
            options,
            data,
            failed: None,
            instructions_streamed_from: None,
            instruction_bytes,
        };
        if let Some(memory) = fetch.streamed_from {
            let pj_bit = accel
                .energy()
                .memory_pj_per_bit(accel.memories()[memory].kind())
                .unwrap_or(0.0);
            let place = FIRST_BUFFER + accel.buffers().len() + memory;
            let bytes = instruction_bytes as f64;
            e.ledger
                .charge(EnergyKind::Dram, Unit::System, place, bytes * 8.0 * pj_bit);
        }
        e.instructions_streamed_from = fetch
            .streamed_from
            .map(|m| accel.memories()[m].name().to_string());
        e
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.events.push(Reverse(Pending::new(at, ev)));
        self.seq += 1;
    }

    fn run(&mut self) -> Result<(), ProgramError> {
        self.try_start(u8::MAX);
        while let Some(Reverse(pending)) = self.events.pop() {
            self.now = pending.cycle();
            let woken = match pending.event() {
                Event::Done(u, i) => self.finish(u, i),
                Event::Fetched => u8::MAX,
            };
            self.try_start(woken);
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        if self.queues.iter().any(|q| !q.is_empty()) {
            return Err(self.deadlock());
        }
        Ok(())
    }

    fn deadlock(&self) -> ProgramError {
        let mut waiting = Vec::new();
        for u in Unit::ALL {
            if let Some(&i) = self.queues[u as usize].front() {
                let ins = &self.program.instructions[i];
                let lacking: Vec<String> = ins
                    .sync()
                    .wait
                    .units()
                    .filter(|w| self.tokens[*w as usize][u as usize] == 0)
                    .map(|w| format!("{} → {}", w.name(), u.name()))
                    .collect();
                waiting.push(format!(
                    "{} at instruction {i} ({}) lacks {}",
                    u.name(),
                    ins.opcode().mnemonic(),
                    lacking.join(", ")
                ));
            }
        }
        ProgramError::Deadlock {
            cycle: self.now,
            waiting,
        }
    }

    /// Retires unit `u`'s instruction `i` and returns the units (one bit per unit, as in
    /// [`tessera_spec::isa::UnitMask`]) whose head may start now and could not before: `u`
    /// itself, the units it releases tokens to, the DMA units when a DMA engine frees, the PE
    /// array's units when it frees, the compute units when compute ports free (or a DMA ends on
    /// a single-port buffer), and the DMA units when a single-port buffer's compute ports free.
    fn finish(&mut self, u: usize, i: usize) -> u8 {
        self.in_flight[u] -= 1;
        if self.in_flight[u] == 0 {
            if let Some(since) = self.active_since[u].take() {
                self.stats[u].busy_cycles += self.now - since;
            }
        }
        let ins = self.program.instructions[i];
        let dma_units = Unit::Load.bit() | Unit::Store.bit();
        let compute_units = Unit::Matrix.bit() | Unit::Vector.bit() | Unit::Sfu.bit();
        let single_port = |b: usize| self.accel.buffers()[b].ports() <= 1;
        let mut woken = Unit::ALL[u].bit() | ins.sync().release.0;
        if matches!(ins, Instruction::Matmul(_) | Instruction::Matvec(_)) {
            self.pe_array_busy = false;
            woken |= Unit::Matrix.bit() | Unit::Vector.bit();
        }
        match ins {
            Instruction::Load(d) | Instruction::Store(d) => {
                let b = d.buf.buffer as usize;
                self.dma_active[b] -= 1;
                self.dma_engines_busy -= d.lane_count();
                woken |= dma_units;
                if single_port(b) {
                    woken |= compute_units;
                }
            }
            _ => {
                for &(b, n) in &self.held_ports[u] {
                    self.ports_held[b] -= n;
                    woken |= compute_units;
                    if single_port(b) {
                        woken |= dma_units;
                    }
                }
            }
        }
        for to in ins.sync().release.units() {
            self.tokens[u][to as usize] += 1;
        }
        woken
    }

    /// Starts every unit's head instruction that can start now; repeats until none can. Only
    /// the units in `woken` (one bit per unit) can have become able to start since the last
    /// call; the others are left alone.
    ///
    /// Starting an instruction only takes resources (tokens owed to its own unit, the PE array,
    /// ports, a DMA engine), so a unit that cannot start in one pass cannot in the next at the
    /// same cycle: each pass after the first looks only at the units that started one.
    fn try_start(&mut self, woken: u8) {
        let program = self.program;
        let mut candidates = woken;
        loop {
            let mut started = 0u8;
            for unit in Unit::ALL {
                let u = unit as usize;
                if candidates & 1 << u == 0 || !self.has_room(unit) {
                    continue;
                }
                let Some(&i) = self.queues[u].front() else {
                    continue;
                };
                let fetched = self.fetched_at[i];
                if fetched > self.now {
                    if self.wake_at[u] != Some(fetched) {
                        self.wake_at[u] = Some(fetched);
                        self.push(fetched, Event::Fetched);
                    }
                    continue;
                }
                let ins = &program.instructions[i];
                let tokens_ok = ins
                    .sync()
                    .wait
                    .units()
                    .all(|w| self.tokens[w as usize][u] > 0);
                let needs_pe = matches!(ins, Instruction::Matmul(_) | Instruction::Matvec(_));
                let stall = if !tokens_ok {
                    Some(Stall::Token)
                } else if needs_pe && self.pe_array_busy {
                    Some(Stall::PeArray)
                } else if !self.ports_free(u, i, ins) {
                    Some(Stall::Port)
                } else {
                    None
                };
                if let Some(reason) = stall {
                    self.blocked_since[u].get_or_insert((self.now, reason));
                    continue;
                }
                if let Some((since, reason)) = self.blocked_since[u].take() {
                    let s = &mut self.stats[u];
                    let waited = self.now - since;
                    match reason {
                        Stall::Token => s.stall_token_cycles += waited,
                        Stall::PeArray => s.stall_resource_cycles += waited,
                        Stall::Port => s.stall_port_cycles += waited,
                    }
                }
                match ins {
                    Instruction::Load(d) | Instruction::Store(d) => {
                        self.dma_active[d.buf.buffer as usize] += 1;
                        self.dma_engines_busy += d.lane_count();
                    }
                    _ => {
                        let (_, needs) = self.head_ports[u].take().unwrap_or_default();
                        for &(b, n) in &needs {
                            self.ports_held[b] += n;
                        }
                        self.held_ports[u] = needs;
                    }
                }
                if let Some(data) = self.data.as_deref_mut() {
                    if let Err(reason) = data.execute(ins) {
                        self.failed.get_or_insert(ProgramError::Instruction {
                            index: i,
                            mnemonic: ins.opcode().mnemonic(),
                            reason: format!("functional mode: {reason}"),
                        });
                    }
                }
                for w in ins.sync().wait.units() {
                    self.tokens[w as usize][u] -= 1;
                }
                self.queues[u].pop_front();
                if needs_pe {
                    self.pe_array_busy = true;
                }
                let cycles = self.execute(unit, ins).max(1);
                self.in_flight[u] += 1;
                self.active_since[u].get_or_insert(self.now);
                self.stats[u].instructions += 1;
                self.timeline[i] = Executed {
                    index: i,
                    unit,
                    start: self.now,
                    end: self.now + cycles,
                };
                self.push(self.now + cycles, Event::Done(u, i));
                started |= 1 << u;
            }
            if started == 0 {
                break;
            }
            candidates = started;
        }
    }

    /// Whether `unit` can take another instruction: the load and store units share the DMA
    /// engines (one per lane of the unit's next transfer); every other unit runs one instruction
    /// at a time.
    fn has_room(&self, unit: Unit) -> bool {
        match unit {
            Unit::Load | Unit::Store => {
                let lanes = match self.queues[unit as usize]
                    .front()
                    .map(|&i| &self.program.instructions[i])
                {
                    Some(Instruction::Load(d) | Instruction::Store(d)) => d.lane_count(),
                    _ => 1,
                };
                self.dma_engines_busy + lanes <= self.accel.dma().engines()
            }
            _ => self.in_flight[unit as usize] == 0,
        }
    }

    /// Whether the buffer ports `ins` (unit `u`'s head, instruction `i`) needs are free: a compute
    /// instruction's operands need compute ports ([`ports_held`]); on a single-port buffer,
    /// compute instructions and DMAs exclude each other.
    fn ports_free(&mut self, u: usize, i: usize, ins: &Instruction) -> bool {
        let buffers = self.accel.buffers();
        match ins {
            Instruction::Load(d) | Instruction::Store(d) => {
                let b = d.buf.buffer as usize;
                buffers[b].ports() > 1 || self.ports_held[b] == 0
            }
            Instruction::Sys(_) => true,
            _ => {
                if self.head_ports[u]
                    .as_ref()
                    .is_none_or(|(head, _)| *head != i)
                {
                    let needs = ports_held(self.accel, &operand_accesses(ins))
                        .into_iter()
                        .map(|(b, n)| (b as usize, n))
                        .collect();
                    self.head_ports[u] = Some((i, needs));
                }
                let needs = self.head_ports[u].as_ref().map_or(&[][..], |(_, n)| n);
                needs.iter().all(|&(b, n)| {
                    let single = buffers[b].ports() <= 1;
                    self.ports_held[b] + n <= compute_ports(&buffers[b])
                        && !(single && self.dma_active[b] > 0)
                })
            }
        }
    }

    /// Charges `bytes` of accesses to buffer `buffer` to `unit`.
    fn charge_buffer(&mut self, unit: Unit, buffer: u8, bytes: u64) {
        let Some(b) = self.accel.buffers().get(buffer as usize) else {
            return;
        };
        let words = bytes.div_ceil((b.word_bits() / 8).max(1));
        let pj = self
            .accel
            .energy()
            .buffer_access(b.name())
            .map_or(0.0, |e| e.0);
        let place = FIRST_BUFFER + buffer as usize;
        self.ledger
            .charge(EnergyKind::Buffer, unit, place, words as f64 * pj);
    }

    /// Cycles `ins` takes from now, recording its energy and traffic.
    fn execute(&mut self, unit: Unit, ins: &Instruction) -> u64 {
        match ins {
            Instruction::Matmul(m) | Instruction::Matvec(m) => {
                let work = matrix_instr_work(m);
                // `check_program` verified the precision pair.
                let (eff, _) = matrix_work_cycles(self.accel.matrix(), &work).unwrap_or((0, 0));
                let per_mac = self
                    .accel
                    .energy()
                    .mac(work.weight_bits, work.act)
                    .map_or(0.0, |e| e.0);
                self.ledger
                    .charge(EnergyKind::Mac, unit, MATRIX_ENGINE, eff as f64 * per_mac);
                let o = matrix_operand_bytes(m);
                self.charge_buffer(unit, m.a.buffer, o.a);
                self.charge_buffer(unit, m.b.buffer, o.b);
                self.charge_buffer(unit, m.c.buffer, o.c);
                self.charge_buffer(unit, m.meta.buffer, o.meta);
                // The epilogue's operations, each over every result.
                if let Some(b) = m.bias {
                    self.charge_buffer(unit, b.buffer, o.bias);
                }
                let results = m.m as u64 * m.n as u64 * m.products();
                let epilogue = m.epilogue().count() as u64 * results;
                let pj = epilogue as f64 * self.accel.energy().vector_per_element().0;
                self.ledger
                    .charge(EnergyKind::Vector, unit, MATRIX_ENGINE, pj);
                compute_instruction_cycles(self.accel, ins).unwrap_or(0)
            }
            Instruction::Sfu(s) => {
                let elements = s.rows as u64 * s.cols as u64;
                let pj = elements as f64 * self.accel.energy().vector_per_element().0;
                self.ledger
                    .charge(EnergyKind::Vector, unit, VECTOR_UNIT, pj);
                let (src, aux, dst) = sfu_operand_bytes(s);
                self.charge_buffer(unit, s.src.buffer, src);
                self.charge_buffer(unit, s.aux.buffer, aux);
                self.charge_buffer(unit, s.dst.buffer, dst);
                compute_instruction_cycles(self.accel, ins).unwrap_or(0)
            }
            Instruction::Sys(s) => match s.op {
                SysOp::Nop | SysOp::Halt => 1,
            },
            Instruction::Load(d) | Instruction::Store(d) => {
                // Every lane runs at once on its own engine; the instruction ends with the last.
                let mut cycles = 0;
                for lane in d.lanes() {
                    let bytes = lane.lane_bytes();
                    self.charge_buffer(unit, lane.buf.buffer, bytes);
                    let ch = lane.channel as usize;
                    let memory = self.channel_memory[ch];
                    let pj_bit = self
                        .accel
                        .energy()
                        .memory_pj_per_bit(self.accel.memories()[memory].kind())
                        .unwrap_or(0.0);
                    let place = FIRST_BUFFER + self.accel.buffers().len() + memory;
                    self.ledger
                        .charge(EnergyKind::Dram, unit, place, bytes as f64 * 8.0 * pj_bit);
                    cycles = cycles.max(self.dma(&lane, ch));
                }
                cycles
            }
        }
    }

    /// Issues a DMA's bursts to its channel and returns the cycles until the last completes and
    /// the buffer side has moved every byte at the engine's rate.
    fn dma(&mut self, d: &Dma, ch: usize) -> u64 {
        let rate = dma_bytes_per_cycle(self.accel, &self.accel.buffers()[d.buf.buffer as usize]);
        let stream = Stream {
            base: d.dram_addr,
            chunk_bytes: d.bytes as u64,
            loops: d.loops.map(|l| (l.count as u64, l.dram_stride as u64)),
            start_ps: self.now as f64 * self.period_ps,
            period_ps: self.period_ps,
            bytes_per_cycle: rate,
        };
        let (channel, bytes) = &mut self.channels[ch];
        *bytes += stream.bytes();
        let done = channel.serve_stream(&stream, self.options.dram).done_ps;
        let end_cycle = (done as f64 / self.period_ps).ceil() as u64;
        let buffer_side = stream.bytes().div_ceil(rate);
        end_cycle.saturating_sub(self.now).max(buffer_side).max(1)
    }

    fn report(self) -> SimReport {
        let cycles = self.timeline.iter().map(|e| e.end).max().unwrap_or(0);
        let seconds = cycles as f64 * self.period_ps * 1e-12;
        let [mac, vector, buffer, dram] = self.ledger.by_kind.map(|p| p * 1e-12);
        let stat = self.accel.energy().static_watts() * seconds;
        let by_unit = Unit::ALL
            .iter()
            .map(|u| (u.name(), self.ledger.by_unit[*u as usize] * 1e-12))
            .collect();
        let mut by_place: BTreeMap<String, f64> = self
            .ledger
            .names
            .iter()
            .zip(&self.ledger.by_place)
            .filter(|(_, (_, charged))| *charged)
            .map(|(name, (pj, _))| (name.clone(), pj * 1e-12))
            .collect();
        by_place.insert("static".into(), stat);
        let timeline = self.timeline;
        let channels: Vec<ChannelReport> = self
            .channels
            .iter()
            .zip(&self.channel_names)
            .filter(|((_, bytes), _)| *bytes > 0)
            .map(|((ch, bytes), (memory, index))| {
                let s: ChannelStats = ch.stats();
                let t = ch.timing();
                ChannelReport {
                    memory: memory.clone(),
                    channel: *index,
                    bytes: *bytes,
                    achieved_gbps: if seconds > 0.0 {
                        *bytes as f64 / seconds / 1e9
                    } else {
                        0.0
                    },
                    peak_gbps: t.burst_bytes as f64 / (t.t_burst as f64 * 1e-12) / 1e9,
                    row_hits: s.hits,
                    row_misses: s.misses,
                    row_conflicts: s.conflicts,
                }
            })
            .collect();
        SimReport {
            accelerator: self.accel.name().to_string(),
            dram_mode: self.options.dram,
            functional: self.data.is_some(),
            cycles,
            seconds,
            instructions: self.program.instructions.len() as u64,
            instruction_bytes: self.instruction_bytes,
            events: self.seq,
            instructions_streamed_from: self.instructions_streamed_from,
            units: Unit::ALL
                .iter()
                .map(|u| (u.name(), self.stats[*u as usize]))
                .collect(),
            dram_bytes: channels.iter().map(|c| c.bytes).sum(),
            channels,
            energy_j: EnergyReport {
                mac,
                vector,
                buffer,
                dram,
                r#static: stat,
                total: mac + vector + buffer + dram + stat,
                by_unit,
                by_place,
            },
            timeline,
        }
    }
}

/// How a program's figures repeat ([`SimReport::repeat`]): from a run with its middle part
/// once to one with it `1 + extra` times, extended to `times` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// Repetitions the second run has beyond the first's one.
    pub extra: u64,
    /// Repetitions to extend to.
    pub times: u64,
}

impl Repeat {
    /// `once + (times − 1) · (more − once) / extra`, rounded to nearest, never below zero.
    pub fn count(self, once: u64, more: u64) -> u64 {
        let grown = (self.times as i128 - 1) * (more as i128 - once as i128);
        let extra = self.extra.max(1) as i128;
        let per = grown.signum() * ((2 * grown.abs() + extra) / (2 * extra));
        (once as i128 + per).clamp(0, u64::MAX as i128) as u64
    }

    /// [`Repeat::count`] for real-valued figures.
    fn value(self, once: f64, more: f64) -> f64 {
        let per = (more - once) / self.extra.max(1) as f64;
        (once + (self.times as f64 - 1.0) * per).max(0.0)
    }
}

impl SimReport {
    /// The figures of a program whose middle part (a decoder layer) repeats `r.times` times,
    /// from simulations of the same program, both from an idle accelerator, with that part once
    /// (`one`) and `1 + r.extra` times (`more`): every count, time and energy is
    /// `one + (times − 1) · (more − one) / extra` ([`Repeat`]), the first repetition with the fixed parts
    /// around it plus the later repetitions' mean cost per further time (counts rounded to
    /// nearest). Exact when the later repetitions' costs repeat with a period dividing `extra`;
    /// bandwidths are recomputed from the totals. No instruction ran in such a report, so its
    /// timeline is empty.
    pub fn repeat(one: &SimReport, more: &SimReport, r: Repeat) -> SimReport {
        let count = |a: u64, b: u64| r.count(a, b);
        let value = |a: f64, b: f64| r.value(a, b);
        let cycles = count(one.cycles, more.cycles);
        let seconds = value(one.seconds, more.seconds);
        let units = more
            .units
            .iter()
            .map(|(name, b)| {
                let a = one.units.get(name).copied().unwrap_or_default();
                let stats = UnitStats {
                    instructions: count(a.instructions, b.instructions),
                    busy_cycles: count(a.busy_cycles, b.busy_cycles),
                    stall_token_cycles: count(a.stall_token_cycles, b.stall_token_cycles),
                    stall_resource_cycles: count(a.stall_resource_cycles, b.stall_resource_cycles),
                    stall_port_cycles: count(a.stall_port_cycles, b.stall_port_cycles),
                };
                (*name, stats)
            })
            .collect();
        let channels: Vec<ChannelReport> = more
            .channels
            .iter()
            .map(|b| {
                let a = one
                    .channels
                    .iter()
                    .find(|a| a.memory == b.memory && a.channel == b.channel);
                let of = |f: fn(&ChannelReport) -> u64| count(a.map_or(0, f), f(b));
                let bytes = of(|c| c.bytes);
                ChannelReport {
                    bytes,
                    achieved_gbps: if seconds > 0.0 {
                        bytes as f64 / seconds / 1e9
                    } else {
                        0.0
                    },
                    row_hits: of(|c| c.row_hits),
                    row_misses: of(|c| c.row_misses),
                    row_conflicts: of(|c| c.row_conflicts),
                    ..b.clone()
                }
            })
            .collect();
        let (e1, e2) = (&one.energy_j, &more.energy_j);
        fn by_map<K: Ord + Clone>(
            a: &BTreeMap<K, f64>,
            b: &BTreeMap<K, f64>,
            r: Repeat,
        ) -> BTreeMap<K, f64> {
            b.iter()
                .map(|(k, &v)| (k.clone(), r.value(a.get(k).copied().unwrap_or(0.0), v)))
                .collect()
        }
        let energy_j = EnergyReport {
            mac: value(e1.mac, e2.mac),
            vector: value(e1.vector, e2.vector),
            buffer: value(e1.buffer, e2.buffer),
            dram: value(e1.dram, e2.dram),
            r#static: value(e1.r#static, e2.r#static),
            total: value(e1.total, e2.total),
            by_unit: by_map(&e1.by_unit, &e2.by_unit, r),
            by_place: by_map(&e1.by_place, &e2.by_place, r),
        };
        SimReport {
            accelerator: more.accelerator.clone(),
            dram_mode: more.dram_mode,
            functional: false,
            cycles,
            seconds,
            instructions: count(one.instructions, more.instructions),
            instruction_bytes: count(one.instruction_bytes, more.instruction_bytes),
            events: count(one.events, more.events),
            instructions_streamed_from: more.instructions_streamed_from.clone(),
            units,
            dram_bytes: channels.iter().map(|c| c.bytes).sum(),
            channels,
            energy_j,
            timeline: Vec::new(),
        }
    }

    /// Off-chip bytes moved in each of `bins` equal slices of the run: every load and store
    /// spread evenly over the cycles it was in flight. The slices sum to `dram_bytes`.
    pub fn dram_traffic(&self, program: &Program, bins: usize) -> Vec<f64> {
        let mut out = vec![0.0; bins.max(1)];
        let span = self.cycles.max(1) as f64;
        let width = span / out.len() as f64;
        for e in &self.timeline {
            let (Instruction::Load(d) | Instruction::Store(d)) = &program.instructions[e.index]
            else {
                continue;
            };
            let bytes = d.total_bytes() as f64;
            let (start, end) = (e.start as f64, (e.end.max(e.start + 1)) as f64);
            let rate = bytes / (end - start);
            let first = ((start / width) as usize).min(out.len() - 1);
            let last = (((end / width).ceil() as usize).max(first + 1)).min(out.len());
            for (b, slot) in out.iter_mut().enumerate().take(last).skip(first) {
                let lo = start.max(b as f64 * width);
                let hi = end.min((b + 1) as f64 * width);
                if hi > lo {
                    *slot += rate * (hi - lo);
                }
            }
        }
        out
    }

    /// Chrome trace-event JSON (one track per unit, times in microseconds) that Perfetto opens.
    pub fn chrome_trace(&self, program: &Program, clock_hz: f64) -> serde_json::Value {
        let us = |c: u64| c as f64 / clock_hz * 1e6;
        let mut events: Vec<serde_json::Value> = Unit::ALL
            .iter()
            .map(|u| {
                serde_json::json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": *u as u8,
                    "args": {"name": u.name()}})
            })
            .collect();
        for e in &self.timeline {
            let ins = &program.instructions[e.index];
            events.push(serde_json::json!({
                "name": format!("{} #{}", ins.opcode().mnemonic(), e.index),
                "ph": "X", "pid": 0, "tid": e.unit as u8,
                "ts": us(e.start), "dur": us(e.end - e.start),
                "args": {"start_cycle": e.start, "end_cycle": e.end},
            }));
        }
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ns" })
    }
}

#[cfg(test)]
mod tests {
    use super::Repeat;

    #[test]
    fn repeated_counts_extend_the_mean_later_cost_rounded_to_nearest() {
        let r = Repeat {
            extra: 2,
            times: 12,
        };
        // 100 once, 130 with three: 15 per further repetition, 11 more of them.
        assert_eq!(r.count(100, 130), 265);
        // Odd differences round to nearest, shrinking ones too, and never below zero.
        assert_eq!(r.count(100, 101), 106);
        assert_eq!(r.count(100, 99), 94);
        assert_eq!(r.count(10, 0), 0);
        assert_eq!(r.value(1.0, 2.0), 6.5);
        let once = Repeat { extra: 1, times: 1 };
        assert_eq!(once.count(7, 1000), 7);
    }
}
