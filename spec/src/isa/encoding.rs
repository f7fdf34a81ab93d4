//! Binary encoding: fields packed in table order into little-endian 32-bit words.
//!
//! A program file is the magic `TSRA`, the format version and the instruction count (one 32-bit
//! little-endian word each), then the instructions' words.

use super::{header, layout, Field, Instruction, Opcode, Sync, UnitMask};
use serde::Serialize;

/// Magic bytes at the start of a program file.
pub const MAGIC: &[u8; 4] = b"TSRA";
/// Program file format version.
pub const VERSION: u32 = 4;

/// Where each field sits: `(word, lowest bit, field)`, header first. A field that does not fit in
/// the rest of the current word starts the next one.
pub fn placements(op: Opcode) -> &'static [(usize, u32, Field)] {
    static TABLE: std::sync::OnceLock<Vec<Vec<(usize, u32, Field)>>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| Opcode::ALL.iter().map(|o| place(*o)).collect());
    // `Opcode::ALL` lists the opcodes in the order of their codes, from 1.
    &table[op as usize - 1]
}

fn place(op: Opcode) -> Vec<(usize, u32, Field)> {
    let mut out = Vec::new();
    let (mut word, mut bit) = (0usize, 0u32);
    for f in header().iter().chain(layout(op)) {
        if bit + f.bits > 32 {
            word += 1;
            bit = 0;
        }
        out.push((word, bit, *f));
        bit += f.bits;
    }
    out
}

/// 32-bit words one instruction of class `op` occupies.
pub fn words_of(op: Opcode) -> usize {
    placements(op).last().map_or(1, |(w, _, _)| w + 1)
}

/// A value too wide for its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {index} ({mnemonic}): field `{field}` = {value} does not fit in {bits} bits (max {max})")]
pub struct EncodeError {
    /// Instruction index in the program.
    pub index: usize,
    /// Its mnemonic.
    pub mnemonic: &'static str,
    /// The field.
    pub field: &'static str,
    /// The value.
    pub value: u64,
    /// The field's width.
    pub bits: u32,
    /// The largest value that fits.
    pub max: u64,
}

/// A program file that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The file does not start with the magic and a known version.
    #[error("not a Tessera program (expected magic TSRA version {VERSION})")]
    BadHeader,
    /// An opcode that names no class.
    #[error("instruction {index} at byte {offset}: unknown opcode {opcode}")]
    UnknownOpcode {
        /// Instruction index.
        index: usize,
        /// Byte offset in the file.
        offset: usize,
        /// The opcode found.
        opcode: u32,
    },
    /// An enumerated field out of range.
    #[error("instruction {index} at byte {offset}: a field holds a value its enumeration lacks")]
    BadField {
        /// Instruction index.
        index: usize,
        /// Byte offset in the file.
        offset: usize,
    },
    /// The file ends inside an instruction or holds fewer than announced.
    #[error("the file ends early: {found} of {expected} instructions")]
    Truncated {
        /// Instructions announced.
        expected: usize,
        /// Instructions found.
        found: usize,
    },
    /// Bytes after the last instruction.
    #[error("{0} unexpected bytes after the last instruction")]
    TrailingBytes(usize),
}

/// An instruction program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Program {
    /// Instructions in issue order.
    pub instructions: Vec<Instruction>,
}

impl Program {
    /// Bytes the instructions occupy in instruction memory (without the file header).
    pub fn storage_bytes(&self) -> u64 {
        self.instructions
            .iter()
            .map(|i| 4 * words_of(i.opcode()) as u64)
            .sum()
    }
}

fn encode_one(index: usize, ins: &Instruction, out: &mut Vec<u32>) -> Result<(), EncodeError> {
    let op = ins.opcode();
    let sync = ins.sync();
    let mut values = vec![op as u64, sync.wait.0 as u64, sync.release.0 as u64];
    values.extend(ins.fields());
    let start = out.len();
    out.resize(start + words_of(op), 0);
    for (&(word, lo, f), v) in placements(op).iter().zip(values) {
        let max = if f.bits == 32 {
            u32::MAX as u64
        } else {
            (1u64 << f.bits) - 1
        };
        if v > max {
            return Err(EncodeError {
                index,
                mnemonic: op.mnemonic(),
                field: f.name,
                value: v,
                bits: f.bits,
                max,
            });
        }
        out[start + word] |= (v as u32) << lo;
    }
    Ok(())
}

/// Decodes one instruction from `words` (which may hold more); returns it and its word count.
fn decode_one(
    index: usize,
    offset: usize,
    words: &[u32],
) -> Result<(Instruction, usize), DecodeError> {
    let opcode = words[0] & 0xf;
    let op = Opcode::from_number(opcode).ok_or(DecodeError::UnknownOpcode {
        index,
        offset,
        opcode,
    })?;
    let n = words_of(op);
    if words.len() < n {
        return Err(DecodeError::Truncated {
            expected: index + 1,
            found: index,
        });
    }
    let values: Vec<u64> = placements(op)
        .iter()
        .map(|&(word, lo, f)| {
            let mask = if f.bits == 32 {
                u32::MAX
            } else {
                (1u32 << f.bits) - 1
            };
            ((words[word] >> lo) & mask) as u64
        })
        .collect();
    let sync = Sync {
        wait: UnitMask(values[1] as u8),
        release: UnitMask(values[2] as u8),
    };
    let ins = Instruction::from_fields(op, sync, &values[3..])
        .ok_or(DecodeError::BadField { index, offset })?;
    Ok((ins, n))
}

/// Encodes a program as a file: header, then every instruction's words.
pub fn encode_program(p: &Program) -> Result<Vec<u8>, EncodeError> {
    let mut words = Vec::new();
    for (i, ins) in p.instructions.iter().enumerate() {
        encode_one(i, ins, &mut words)?;
    }
    let mut bytes = Vec::with_capacity(12 + 4 * words.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(p.instructions.len() as u32).to_le_bytes());
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    Ok(bytes)
}

/// Decodes a program file.
pub fn decode_program(bytes: &[u8]) -> Result<Program, DecodeError> {
    if bytes.len() < 12 || &bytes[..4] != MAGIC || bytes[4..8] != VERSION.to_le_bytes() {
        return Err(DecodeError::BadHeader);
    }
    let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let body = &bytes[12..];
    if body.len() % 4 != 0 {
        return Err(DecodeError::TrailingBytes(body.len() % 4));
    }
    let words: Vec<u32> = body
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // Every instruction takes at least one word: never trust the header for the allocation.
    let mut instructions = Vec::with_capacity(count.min(words.len()));
    let mut at = 0;
    while instructions.len() < count {
        if at >= words.len() {
            return Err(DecodeError::Truncated {
                expected: count,
                found: instructions.len(),
            });
        }
        let (ins, n) =
            decode_one(instructions.len(), 12 + 4 * at, &words[at..]).map_err(|e| match e {
                DecodeError::Truncated { .. } => DecodeError::Truncated {
                    expected: count,
                    found: instructions.len(),
                },
                other => other,
            })?;
        instructions.push(ins);
        at += n;
    }
    if at < words.len() {
        return Err(DecodeError::TrailingBytes(4 * (words.len() - at)));
    }
    Ok(Program { instructions })
}
