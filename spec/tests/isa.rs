//! ISA: binary and text round trips (property tests), layouts, and errors for bad programs.

use proptest::prelude::*;
use tessera_spec::accel::SfuOp;
use tessera_spec::isa::{
    assemble, decode_program, disassemble, encode_program, header, layout, layout_doc, ActCode,
    BufRef, DecodeError, Dma, FieldKind, Instruction, Loop, MatrixOp, Opcode, OutCode, Program,
    SfuInstr, SparseCode, Sync, SysInstr, SysOp, Unit, UnitMask, WeightCode,
};

/// Any instruction: a class, token masks, and every field drawn within its width (enumerations
/// within their names).
fn any_instruction() -> impl Strategy<Value = Instruction> {
    (
        0..Opcode::ALL.len(),
        0u8..64,
        0u8..64,
        prop::collection::vec(any::<u64>(), 32),
    )
        .prop_map(|(o, wait, release, raw)| {
            let op = Opcode::ALL[o];
            let values: Vec<u64> = layout(op)
                .iter()
                .zip(raw)
                .map(|(f, r)| match f.kind {
                    FieldKind::Enum(names) => r % names.len() as u64,
                    _ => r & ((1u64 << f.bits) - 1),
                })
                .collect();
            let sync = Sync {
                wait: UnitMask(wait),
                release: UnitMask(release),
            };
            Instruction::from_fields(op, sync, &values).expect("in-range fields")
        })
}

proptest! {
    #[test]
    fn binary_round_trip(instructions in prop::collection::vec(any_instruction(), 0..40)) {
        let p = Program { instructions };
        let bytes = encode_program(&p).unwrap();
        prop_assert_eq!(bytes.len() as u64, 12 + p.storage_bytes());
        prop_assert_eq!(decode_program(&bytes).unwrap(), p);
    }

    #[test]
    fn text_round_trip(instructions in prop::collection::vec(any_instruction(), 0..40)) {
        let p = Program { instructions };
        let text = disassemble(&p);
        prop_assert_eq!(assemble(&text).unwrap(), p);
    }

    #[test]
    fn fields_round_trip(ins in any_instruction()) {
        let back = Instruction::from_fields(ins.opcode(), ins.sync(), &ins.fields());
        prop_assert_eq!(back, Some(ins));
    }
}

#[test]
fn layouts_fit_words_and_their_sizes() {
    for op in Opcode::ALL {
        assert!(header().iter().chain(layout(op)).all(|f| f.bits <= 32));
    }
    let words = |op| {
        let p = Program {
            instructions: vec![Instruction::from_fields(
                op,
                Sync::default(),
                &vec![0; layout(op).len()],
            )
            .unwrap()],
        };
        p.storage_bytes() / 4
    };
    // Full 32-bit addresses and strides, three DMA loop levels and a lane stride: wider than
    // FlightLLM's 7 / 4 / 3-word load / matrix / misc instructions.
    assert_eq!(words(Opcode::Load), 13);
    assert_eq!(words(Opcode::Matmul), 11);
    assert_eq!(words(Opcode::Sfu), 8);
    assert_eq!(words(Opcode::Sys), 1);
    let doc = layout_doc();
    assert!(
        doc.contains("### `load` (opcode 1, unit `ld`, 13 words)"),
        "{doc}"
    );
    assert!(doc.contains("| 0 | 0..3 | `opcode` |"));
}

#[test]
fn sfu_names_follow_the_spec_enum() {
    let FieldKind::Enum(names) = layout(Opcode::Sfu)[0].kind else {
        panic!("op is an enumeration")
    };
    let spec: Vec<&str> = SfuOp::ALL.iter().map(|o| o.name()).collect();
    assert_eq!(names, spec.as_slice());
}

#[test]
fn typed_program_text_form() {
    let p = Program {
        instructions: vec![
            Instruction::Load(Dma {
                sync: Sync {
                    wait: UnitMask::NONE,
                    release: UnitMask::of(&[Unit::Matrix]),
                },
                buf: BufRef { buffer: 0, addr: 0 },
                channel: 3,
                dram_addr: 0x12_3456_7890,
                bytes: 4096,
                loops: [
                    Loop {
                        count: 16,
                        dram_stride: 4096,
                        buf_stride: 4096,
                    },
                    Loop::default(),
                    Loop::default(),
                ],
                lanes: 4,
                lane_stride: 0x1_0000,
            }),
            Instruction::Matmul(MatrixOp {
                sync: Sync {
                    wait: UnitMask::of(&[Unit::Load]),
                    release: UnitMask::of(&[Unit::Sfu]),
                },
                a: BufRef { buffer: 1, addr: 0 },
                b: BufRef { buffer: 0, addr: 0 },
                c: BufRef {
                    buffer: 2,
                    addr: 64,
                },
                m: 16,
                n: 64,
                k: 256,
                weight: WeightCode::Int4,
                act_int8: true,
                sparse: SparseCode::Nm,
                nm_n: 8,
                meta: BufRef { buffer: 3, addr: 0 },
                group: 128,
                accumulate: true,
                a_scaled: true,
                out: OutCode::Fp16,
                b_rows: false,
                c_stride: 96,
                batch: 0,
                c_batch: 0,
                bias: Some(BufRef {
                    buffer: 1,
                    addr: 0x2000,
                }),
                act: ActCode::Gelu,
                zero_points: false,
            }),
            Instruction::Sfu(SfuInstr {
                sync: Sync {
                    wait: UnitMask::of(&[Unit::Matrix]),
                    release: UnitMask::NONE,
                },
                op: SfuOp::Softmax,
                src: BufRef {
                    buffer: 2,
                    addr: 64,
                },
                aux: BufRef::default(),
                dst: BufRef {
                    buffer: 2,
                    addr: 64,
                },
                rows: 16,
                cols: 64,
                src_stride: 0,
                dst_stride: 0,
                aux_stride: 0,
                causal: 3,
                causal_period: 0,
            }),
            Instruction::Sys(SysInstr {
                sync: Sync::default(),
                op: SysOp::Halt,
            }),
        ],
    };
    let text = disassemble(&p);
    let expected = "\
load    wait=- release=mm channel=3 dram_addr_lo=0x34567890 dram_addr_hi=18 bytes=0x1000 n0=16 lanes=4 dram_stride0=0x1000 buf_stride0=0x1000 lane_stride=0x10000
matmul  wait=ld release=sfu a_buffer=1 c_buffer=2 meta_buffer=3 c_addr=64 m=16 n=64 k=256 weight=int4 act_int8=1 sparse=nm nm_n=8 accumulate=1 a_scaled=1 out=fp16 bias=1 group=128 c_stride=96 act=gelu bias_buffer=1 bias_addr=0x2000
sfu     wait=mm release=- op=softmax src_buffer=2 dst_buffer=2 src_addr=64 dst_addr=64 rows=16 cols=64 causal=3
sys     wait=- release=- op=halt
";
    assert_eq!(text, expected);
    assert_eq!(assemble(&text).unwrap(), p);
    assert_eq!(WeightCode::from_bits(4), Some(WeightCode::Int4));
}

#[test]
fn assembler_errors_name_line_and_field() {
    let e = assemble("sys op=halt\nfrob x=1").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("unknown instruction `frob`"), "{e}");
    let e = assemble("matmul m=70000").unwrap_err();
    assert!(
        e.message
            .contains("`m` = 70000 does not fit in 16 bits (max 65535)"),
        "{e}"
    );
    let e = assemble("matmul weight=int5").unwrap_err();
    assert!(e.message.contains("fp16, int8, int4, int3, int2"), "{e}");
    let e = assemble("load wait=mm,xx").unwrap_err();
    assert!(e.message.contains("ld, st, mm, mv, sfu, sys"), "{e}");
    let e = assemble("load bogus=1").unwrap_err();
    assert!(e.message.contains("has no field `bogus`"), "{e}");
    let e = assemble("load n0=1 n0=2").unwrap_err();
    assert!(e.message.contains("twice"), "{e}");
    let e = assemble("sys op").unwrap_err();
    assert!(e.message.contains("field=value"), "{e}");
    assert_eq!(
        assemble("# only a comment\n\n").unwrap(),
        Program::default()
    );
}

#[test]
fn encoder_rejects_values_too_wide() {
    let mut d = Dma::default();
    d.buf.buffer = 16;
    let e = encode_program(&Program {
        instructions: vec![Instruction::Load(d)],
    })
    .unwrap_err();
    assert_eq!((e.field, e.bits, e.max), ("buffer", 4, 15));
    let d = Dma {
        dram_addr: 1 << 40,
        ..Dma::default()
    };
    let e = encode_program(&Program {
        instructions: vec![Instruction::Store(d)],
    })
    .unwrap_err();
    assert_eq!(e.field, "dram_addr_hi");
}

#[test]
fn decoder_rejects_bad_files() {
    let p = Program {
        instructions: vec![Instruction::Sys(SysInstr {
            sync: Sync::default(),
            op: SysOp::Halt,
        })],
    };
    let good = encode_program(&p).unwrap();
    assert_eq!(decode_program(b"ELF!").unwrap_err(), DecodeError::BadHeader);
    let mut bad = good.clone();
    bad[12] = (bad[12] & 0xf0) | 0xf; // opcode 15
    assert!(matches!(
        decode_program(&bad),
        Err(DecodeError::UnknownOpcode {
            index: 0,
            offset: 12,
            opcode: 15
        })
    ));
    let mut bad = good.clone();
    bad[14] = 0x0f; // sys op 15 (bits 16..19)
    assert!(matches!(
        decode_program(&bad),
        Err(DecodeError::BadField { index: 0, .. })
    ));
    let mut more = good.clone();
    more[8] = 2; // announces two instructions
    assert!(matches!(
        decode_program(&more),
        Err(DecodeError::Truncated {
            expected: 2,
            found: 1
        })
    ));
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        decode_program(&trailing).unwrap_err(),
        DecodeError::TrailingBytes(4)
    );
}

#[test]
fn layout_documentation_is_current() {
    let doc = include_str!("../../docs/isa.md");
    let generated = layout_doc();
    if std::env::var_os("TESSERA_BLESS").is_some() {
        let intro = doc.find("\n### ").map_or(doc, |i| &doc[..i]);
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/isa.md"),
            format!("{intro}{generated}"),
        )
        .unwrap();
        return;
    }
    assert!(
        doc.ends_with(&generated),
        "docs/isa.md is stale: run TESSERA_BLESS=1 cargo test -p tessera-spec --test isa"
    );
}
