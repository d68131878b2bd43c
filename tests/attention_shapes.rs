//! The CPU attention (per (batch row, head) products through gemm) against the emulated
//! kernels on the shapes the built-in task trains at (B=16, T=16, the tiny model's heads) and
//! around the kernels' tiles.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::backend::AttentionShape;
use gepa_dapo_grn::util::rng::Rng;

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn cpu_attention_matches_the_kernels_on_training_shapes() {
    let (cpu, emu) = (CpuBackend::new(Some(2)), EmuBackend::emulated());
    for &(b, t, nh, c) in
        &[(16usize, 16usize, 4usize, 64usize), (16, 16, 2, 64), (3, 17, 4, 64), (2, 32, 4, 64), (1, 64, 4, 128)]
    {
        let s = AttentionShape { b, t, nh, c };
        let mut rng = Rng::new(7);
        let qkv: Vec<f32> = (0..3 * b * t * c).map(|_| rng.normal() * 1.5).collect();
        let dout: Vec<f32> = (0..b * t * c).map(|_| rng.normal()).collect();
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
        cpu.attention_forward(&mut out, &mut lse, &qkv, s);
        let mut dqkv = vec![0.0; 3 * b * t * c];
        cpu.attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, s);
        let d_qkv = emu.upload(&qkv);
        let (mut d_out, mut d_lse) = (emu.alloc(b * t * c), emu.alloc(b * nh * t));
        emu.attention_forward(&mut d_out, &mut d_lse, &d_qkv, s);
        let mut d_dqkv = emu.alloc(3 * b * t * c);
        emu.attention_backward(&mut d_dqkv, &emu.upload(&dout), &d_qkv, &emu.upload(&out), &emu.upload(&lse), s);
        let e = [
            max_rel(&out, &emu.download(&d_out)),
            max_rel(&lse, &emu.download(&d_lse)),
            max_rel(&dqkv, &emu.download(&d_dqkv)),
        ];
        println!("B={b} T={t} NH={nh} C={c}: out {:.1e} lse {:.1e} dqkv {:.1e}", e[0], e[1], e[2]);
        assert!(e.iter().all(|&x| x < 1e-4), "B={b} T={t} NH={nh} C={c}: {e:?}");
    }
}
