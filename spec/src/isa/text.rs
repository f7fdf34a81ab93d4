//! The text form: one instruction per line, `mnemonic field=value ...`, fields named as in
//! [`layout`](super::layout). Fields left out are 0. `#` starts a comment.
//!
//! ```text
//! load   wait=- release=mm buffer=0 channel=3 dram_addr_lo=0x1000 bytes=4096 n0=16 dram_stride0=4096 buf_stride0=4096
//! matmul wait=ld release=st a_buffer=1 b_buffer=0 m=16 n=64 k=256 weight=int4 act_int8=1 group=128
//! sys    op=halt
//! ```

use super::{header, layout, FieldKind, Instruction, Opcode, Program, Sync, Unit, UnitMask};
use std::fmt::Write as _;

/// A line the assembler cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AsmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn parse_int(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_mask(s: &str) -> Option<u64> {
    if s == "-" {
        return Some(0);
    }
    s.split(',')
        .map(|name| {
            Unit::ALL
                .into_iter()
                .find(|u| u.name() == name)
                .map(|u| u.bit() as u64)
        })
        .try_fold(0, |m, b| b.map(|b| m | b))
}

fn unit_names() -> String {
    Unit::ALL.map(|u| u.name()).join(", ")
}

/// Parses one value of a field of `kind` that is `bits` wide.
fn parse_value(kind: FieldKind, bits: u32, name: &str, v: &str) -> Result<u64, String> {
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let parsed = match kind {
        FieldKind::Int => parse_int(v).ok_or(format!("`{name}`: `{v}` is not a number"))?,
        FieldKind::Mask => parse_mask(v).ok_or(format!(
            "`{name}`: `{v}` is not a unit list; use `-` or comma-separated units of: {}",
            unit_names()
        ))?,
        FieldKind::Enum(names) => names.iter().position(|n| *n == v).ok_or(format!(
            "`{name}`: `{v}` is not one of: {}",
            names.join(", ")
        ))? as u64,
        FieldKind::Flag => match v {
            "0" | "false" => 0,
            "1" | "true" => 1,
            _ => return Err(format!("`{name}`: `{v}` is not 0 or 1")),
        },
    };
    if parsed > max {
        return Err(format!(
            "`{name}` = {parsed} does not fit in {bits} bits (max {max})"
        ));
    }
    Ok(parsed)
}

fn assemble_line(line: &str) -> Result<Option<Instruction>, String> {
    let code = line.split('#').next().unwrap_or("").trim();
    let mut tokens = code.split_whitespace();
    let Some(mnemonic) = tokens.next() else {
        return Ok(None);
    };
    let op = Opcode::ALL
        .into_iter()
        .find(|o| o.mnemonic() == mnemonic)
        .ok_or_else(|| {
            format!(
                "unknown instruction `{mnemonic}`; known: {}",
                Opcode::ALL.map(|o| o.mnemonic()).join(", ")
            )
        })?;
    let fields = layout(op);
    let mut values = vec![0u64; fields.len()];
    let mut sync = [0u64; 2];
    let mut seen = std::collections::BTreeSet::new();
    for tok in tokens {
        let (key, value) = tok
            .split_once('=')
            .ok_or_else(|| format!("`{tok}` is not field=value"))?;
        if !seen.insert(key) {
            return Err(format!("field `{key}` is given twice"));
        }
        if let Some(i) = header()[1..].iter().position(|f| f.name == key) {
            let f = header()[1 + i];
            sync[i] = parse_value(f.kind, f.bits, key, value)?;
        } else if let Some(i) = fields.iter().position(|f| f.name == key) {
            values[i] = parse_value(fields[i].kind, fields[i].bits, key, value)?;
        } else {
            return Err(format!(
                "`{mnemonic}` has no field `{key}`; its fields: wait, release, {}",
                fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let sync = Sync {
        wait: UnitMask(sync[0] as u8),
        release: UnitMask(sync[1] as u8),
    };
    Instruction::from_fields(op, sync, &values)
        .map(Some)
        .ok_or_else(|| "a field value is out of its range".to_string())
}

/// Assembles the text form into a program.
pub fn assemble(text: &str) -> Result<Program, AsmError> {
    let mut instructions = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match assemble_line(line) {
            Ok(Some(ins)) => instructions.push(ins),
            Ok(None) => {}
            Err(message) => {
                return Err(AsmError {
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok(Program { instructions })
}

fn show_value(kind: FieldKind, v: u64) -> String {
    match kind {
        FieldKind::Int if v >= 4096 => format!("{v:#x}"),
        FieldKind::Int | FieldKind::Flag => v.to_string(),
        FieldKind::Mask => {
            let names: Vec<&str> = UnitMask(v as u8).units().map(|u| u.name()).collect();
            if names.is_empty() {
                "-".into()
            } else {
                names.join(",")
            }
        }
        FieldKind::Enum(names) => names.get(v as usize).copied().unwrap_or("?").to_string(),
    }
}

/// The text form of a program: one line per instruction, the tokens first and then every field
/// that is not 0 (enumerations always). Assembling it gives the same program back.
pub fn disassemble(p: &Program) -> String {
    let mut s = String::new();
    for ins in &p.instructions {
        let op = ins.opcode();
        let sync = ins.sync();
        let _ = write!(
            s,
            "{:<7} wait={} release={}",
            op.mnemonic(),
            show_value(FieldKind::Mask, sync.wait.0 as u64),
            show_value(FieldKind::Mask, sync.release.0 as u64)
        );
        for (f, v) in layout(op).iter().zip(ins.fields()) {
            if v != 0 || matches!(f.kind, FieldKind::Enum(_)) {
                let _ = write!(s, " {}={}", f.name, show_value(f.kind, v));
            }
        }
        s.push('\n');
    }
    s
}
