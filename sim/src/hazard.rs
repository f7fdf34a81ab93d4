//! Buffer hazards of a simulated run: two instructions in flight at the same time touching
//! overlapping bytes of one buffer, at least one of them writing. A compiled program has none;
//! a hazard means its dependency tokens let a write overtake a read (or another write).

use crate::engine::SimReport;
use serde::Serialize;
use tessera_spec::analytical::{matrix_operand_bytes, result_extent, sfu_operand_extents};
use tessera_spec::isa::{Dma, Instruction, Program};

/// Two instructions whose buffer accesses overlapped in time and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hazard {
    /// The earlier-starting instruction (program index).
    pub first: usize,
    /// The other instruction.
    pub second: usize,
    /// The buffer.
    pub buffer: u8,
}

/// `(buffer, first byte, bytes, writes)`: one buffer range an instruction touches.
type Access = (u8, u64, u64, bool);

/// The buffer ranges a DMA touches, one per chunk of its loop nest (contiguous chunks joined),
/// so that interleaved transfers do not count as overlapping.
fn dma_accesses(d: &Dma, writes: bool) -> Vec<Access> {
    let counts = d.loops.map(|l| l.count.max(1) as u64);
    let mut out: Vec<Access> = Vec::new();
    for i2 in 0..counts[2] {
        for i1 in 0..counts[1] {
            for i0 in 0..counts[0] {
                let at = d.buf.addr as u64
                    + [i0, i1, i2]
                        .iter()
                        .zip(&d.loops)
                        .map(|(i, l)| i * l.buf_stride as u64)
                        .sum::<u64>();
                match out.last_mut() {
                    Some(last) if last.1 + last.2 == at => last.2 += d.bytes as u64,
                    _ => out.push((d.buf.buffer, at, d.bytes as u64, writes)),
                }
            }
        }
    }
    out
}

/// Every buffer range an instruction touches.
fn accesses(ins: &Instruction) -> Vec<Access> {
    match ins {
        Instruction::Load(d) => d.lanes().flat_map(|l| dma_accesses(&l, true)).collect(),
        Instruction::Store(d) => d.lanes().flat_map(|l| dma_accesses(&l, false)).collect(),
        Instruction::Matmul(m) | Instruction::Matvec(m) => {
            let o = matrix_operand_bytes(m);
            let mut v = vec![
                (m.a.buffer, m.a.addr as u64, o.a, false),
                (m.b.buffer, m.b.addr as u64, o.b, false),
                (m.c.buffer, m.c.addr as u64, result_extent(m), true),
            ];
            if o.meta > 0 {
                v.push((m.meta.buffer, m.meta.addr as u64, o.meta, false));
            }
            if let Some(b) = m.bias {
                v.push((b.buffer, b.addr as u64, o.bias, false));
            }
            v
        }
        Instruction::Sfu(s) => {
            let (src, aux, dst) = sfu_operand_extents(s);
            let mut v = vec![
                (s.src.buffer, s.src.addr as u64, src, false),
                (s.dst.buffer, s.dst.addr as u64, dst, true),
            ];
            if aux > 0 {
                v.push((s.aux.buffer, s.aux.addr as u64, aux, false));
            }
            v
        }
        Instruction::Sys(_) => Vec::new(),
    }
}

/// Every hazard of `report`'s run of `program`, in order of the later instruction's start.
pub fn buffer_hazards(program: &Program, report: &SimReport) -> Vec<Hazard> {
    let mut order: Vec<usize> = (0..report.timeline.len()).collect();
    order.sort_by_key(|&i| (report.timeline[i].start, report.timeline[i].index));
    // (end cycle, program index, accesses) of the instructions in flight.
    let mut active: Vec<(u64, usize, Vec<Access>)> = Vec::new();
    let mut out = Vec::new();
    for i in order {
        let e = report.timeline[i];
        let acc = accesses(&program.instructions[e.index]);
        if acc.is_empty() || e.end <= e.start {
            continue;
        }
        active.retain(|(end, _, _)| *end > e.start);
        for (_, other, theirs) in &active {
            let clash = acc.iter().find(|(b, a0, n, w)| {
                theirs.iter().any(|(b2, a2, n2, w2)| {
                    b == b2 && (*w || *w2) && *n > 0 && *n2 > 0 && *a0 < a2 + n2 && *a2 < a0 + n
                })
            });
            if let Some((b, ..)) = clash {
                out.push(Hazard {
                    first: *other,
                    second: e.index,
                    buffer: *b,
                });
            }
        }
        active.push((e.end, e.index, acc));
    }
    out
}
