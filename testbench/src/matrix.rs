//! Matrix instructions on the generated engine: seeded operands, the golden result, the bank
//! images the engine reads, and a script of host commands that both the rust-hdl driver and the
//! Verilog testbench execute.

use tessera_hdl::golden::sign_extend;
use tessera_hdl::params::BLOCK;
use tessera_sim::golden::Rng;

/// One matrix instruction to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixCase {
    /// Activation rows.
    pub m: usize,
    /// Output columns.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Kept weights per 16-wide block (16: dense).
    pub nm: u32,
    /// Quantisation group in elements (a multiple of 16; 0: one group per row).
    pub group: usize,
    /// Weight bits (8, 4 or 2).
    pub weight_bits: u32,
    /// Whether the weights run on the shift-and-add datapath.
    pub shift_add: bool,
    /// Whether the weights carry a zero point per group (asymmetric quantisation).
    pub asymmetric: bool,
    /// Whether the precision packs two MACs per DSP (its dense instructions run two columns per
    /// lane; `analytical::MatrixTiling::pack`).
    pub pack: bool,
}

impl MatrixCase {
    fn blocks(&self) -> usize {
        self.k.div_ceil(BLOCK)
    }
    fn group_blocks(&self) -> usize {
        if self.group == 0 {
            self.blocks()
        } else {
            self.group / BLOCK
        }
    }
    fn groups(&self) -> usize {
        self.blocks().div_ceil(self.group_blocks())
    }
}

/// Operands of one case: activations zero-padded to whole blocks, each column's kept weights
/// per block as `(weight, position)`, and each column's group scales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixData {
    /// `m` rows of `16 × blocks` activations.
    pub act: Vec<Vec<i8>>,
    /// `[column][block][t]` kept weights with their positions (distinct, ascending).
    pub kept: Vec<Vec<Vec<(i8, u8)>>>,
    /// `[column][group]` scales.
    pub scales: Vec<Vec<i16>>,
    /// `[column][group]` zero points (all zero when symmetric).
    pub zeros: Vec<Vec<i8>>,
}

/// Seeded operands for `case`.
pub fn matrix_data(case: &MatrixCase, seed: u64) -> MatrixData {
    let mut rng = Rng::new(seed);
    let blocks = case.blocks();
    let (wlo, whi) = (
        -(1i32 << (case.weight_bits - 1)),
        (1i32 << (case.weight_bits - 1)) - 1,
    );
    let act = (0..case.m)
        .map(|_| {
            (0..blocks * BLOCK)
                .map(|i| {
                    if i < case.k {
                        rng.int(-128, 127) as i8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    let kept = (0..case.n)
        .map(|_| {
            (0..blocks)
                .map(|_| {
                    let mut pos: Vec<u8> = (0..BLOCK as u8).collect();
                    for i in (1..pos.len()).rev() {
                        pos.swap(i, rng.int(0, i as i32) as usize);
                    }
                    let mut pos = pos[..case.nm as usize].to_vec();
                    pos.sort_unstable();
                    pos.into_iter()
                        .map(|p| (rng.int(wlo, whi) as i8, p))
                        .collect()
                })
                .collect()
        })
        .collect();
    let scales = (0..case.n)
        .map(|_| {
            (0..case.groups())
                .map(|_| rng.int(-32767, 32767) as i16)
                .collect()
        })
        .collect();
    let zeros = (0..case.n)
        .map(|_| {
            (0..case.groups())
                .map(|_| {
                    if case.asymmetric {
                        rng.int(-8, 7) as i8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    MatrixData {
        act,
        kept,
        scales,
        zeros,
    }
}

/// The golden result: `m × n` values (48-bit two's complement, sign-extended), each the sum over
/// groups of the group's scale times its 32-bit integer partial sum less the zero point times the
/// sum of the activations its kept weights meet.
pub fn matrix_golden(case: &MatrixCase, d: &MatrixData) -> Vec<Vec<i64>> {
    let gb = case.group_blocks();
    (0..case.m)
        .map(|r| {
            (0..case.n)
                .map(|c| {
                    let mut acc = 0u64;
                    for (grp, scale) in d.scales[c].iter().enumerate() {
                        let (mut sum, mut act_sum) = (0i64, 0i64);
                        for b in grp * gb..((grp + 1) * gb).min(case.blocks()) {
                            for &(w, p) in &d.kept[c][b] {
                                let a = d.act[r][b * BLOCK + p as usize] as i64;
                                sum += a * w as i64;
                                act_sum += a;
                            }
                        }
                        let corrected = sum - d.zeros[c][grp] as i64 * act_sum;
                        let scaled =
                            sign_extend(corrected as u64 & 0xffff_ffff, 32) * *scale as i64;
                        acc = acc.wrapping_add(scaled as u64) & ((1 << 48) - 1);
                    }
                    sign_extend(acc, 48)
                })
                .collect()
        })
        .collect()
}

/// A host command of the engine testbench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write an activation word (16 lanes).
    WriteAct(u64, Vec<u64>),
    /// Write a weight word (`lanes` lanes of `index << 8 | weight`, then on a packing engine
    /// `lanes` column-B weights).
    WriteWeight(u64, Vec<u64>),
    /// Write a scale word (`segments` lanes of `zero point << 16 | scale`).
    WriteScale(u64, Vec<u64>),
    /// Run an instruction and record its cycles: `m, n, k, log2 N, group, shift-and-add, pack`.
    Run([u64; 7]),
    /// Read result word `address` of PE `pe` and record it.
    Read(u64, u64),
}

/// What a script recorded: each instruction's cycles and each read's lanes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Cycles from acceptance to the last result write, per `Run`.
    pub cycles: Vec<u64>,
    /// Lanes per `Read` (48-bit, sign-extended).
    pub reads: Vec<Vec<i64>>,
}

/// The engine's geometry as the script needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// PEs.
    pub pes: usize,
    /// PEs per PE row.
    pub cols: usize,
    /// Lanes per PE.
    pub lanes: usize,
    /// Segments per PE.
    pub segments: usize,
    /// Columns per lane on a packed instruction (1 or 2).
    pub pack: usize,
    /// Both datapaths: an instruction chooses one (`instr_shift_add`).
    pub mixed: bool,
}

impl Geometry {
    /// The geometry of `engine`.
    pub fn of(engine: &tessera_hdl::MatrixEngine) -> Geometry {
        Geometry {
            pes: engine.pes(),
            cols: engine.cols(),
            lanes: engine.lanes(),
            segments: engine.segments(),
            pack: engine.pack(),
            mixed: engine.mixed(),
        }
    }
}

/// Where each lane of each result read lands: `(row, column)`, or `None` past `n`.
pub type ReadMap = Vec<Vec<Option<(usize, usize)>>>;

/// Appends the commands that load `case`'s operands, run it and read every result back; returns
/// the `(row, column)` of each read lane (None for lanes past `n`) in read order.
pub fn script_case(
    g: Geometry,
    case: &MatrixCase,
    d: &MatrixData,
    script: &mut Vec<Command>,
) -> ReadMap {
    let nm = case.nm as usize;
    let lanes_per_col = nm.min(g.lanes);
    // Dense instructions of a packing precision run columns 2g (lanes) and 2g + 1 (the
    // column-B lanes) at the same positions; the chain itself is never cut then.
    let pack = if case.pack && nm == BLOCK { g.pack } else { 1 };
    let segments = pack * (g.lanes / nm).max(1);
    let steps_per_block = nm.div_ceil(g.lanes);
    let blocks = case.blocks();
    let col_groups = case.n.div_ceil(segments);
    for (r, row) in d.act.iter().enumerate() {
        for b in 0..blocks {
            let lanes = row[b * BLOCK..(b + 1) * BLOCK]
                .iter()
                .map(|&a| a as u8 as u64)
                .collect();
            script.push(Command::WriteAct((r * blocks + b) as u64, lanes));
        }
    }
    for b in 0..blocks {
        for sub in 0..steps_per_block {
            let step = b * steps_per_block + sub;
            for cg in 0..col_groups {
                let lane = |c: usize, j: usize| {
                    let t = sub * lanes_per_col + j % lanes_per_col;
                    d.kept.get(c).and_then(|col| col[b].get(t)).copied()
                };
                let mut lanes: Vec<u64> = (0..g.lanes)
                    .map(|j| {
                        let c = segments * cg + j / lanes_per_col;
                        match lane(c, j) {
                            Some((w, p)) if j / lanes_per_col < segments / pack => {
                                (p as u64) << 8 | w as u8 as u64
                            }
                            _ => 0,
                        }
                    })
                    .collect();
                if g.pack == 2 {
                    lanes.extend((0..g.lanes).map(|j| match lane(segments * cg + 1, j) {
                        Some((w, _)) if pack == 2 => w as u8 as u64,
                        _ => 0,
                    }));
                }
                script.push(Command::WriteWeight((step * col_groups + cg) as u64, lanes));
            }
        }
    }
    for grp in 0..case.groups() {
        for cg in 0..col_groups {
            let lanes = (0..g.segments)
                .map(|s| {
                    let c = segments * cg + s;
                    if s < segments && c < case.n {
                        (d.zeros[c][grp] as u8 as u64) << 16 | d.scales[c][grp] as u16 as u64
                    } else {
                        0
                    }
                })
                .collect();
            script.push(Command::WriteScale((grp * col_groups + cg) as u64, lanes));
        }
    }
    script.push(Command::Run([
        case.m as u64,
        case.n as u64,
        case.k as u64,
        case.nm.ilog2() as u64,
        case.group as u64,
        case.shift_add as u64,
        case.pack as u64,
    ]));
    // Slot `s` (output row `s / chunks`, column groups from `cols × (s % chunks)`) ran on PE
    // row `s % rows` in pass `s / rows`.
    let chunks = col_groups.div_ceil(g.cols);
    let rows = g.pes / g.cols;
    let mut map = Vec::new();
    for slot in 0..case.m * chunks {
        let (pass, pe_row) = (slot / rows, slot % rows);
        let row = slot / chunks;
        for c in 0..g.cols {
            let cg = g.cols * (slot % chunks) + c;
            if cg >= col_groups {
                break;
            }
            script.push(Command::Read((pe_row * g.cols + c) as u64, pass as u64));
            map.push(
                (0..g.segments)
                    .map(|s| {
                        let c = segments * cg + s;
                        (s < segments && c < case.n).then_some((row, c))
                    })
                    .collect(),
            );
        }
    }
    map
}

/// Places the read lanes of one case into an `m × n` result using the map from [`script_case`].
pub fn assemble(
    case: &MatrixCase,
    reads: &[Vec<i64>],
    map: &[Vec<Option<(usize, usize)>>],
) -> Vec<Vec<i64>> {
    let mut out = vec![vec![0; case.n]; case.m];
    for (lanes, places) in reads.iter().zip(map) {
        for (v, place) in lanes.iter().zip(places) {
            if let Some((r, c)) = place {
                out[*r][*c] = *v;
            }
        }
    }
    out
}
