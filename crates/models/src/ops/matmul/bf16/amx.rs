//! The `bf16` micro-kernel on AMX (Advanced Matrix Extensions: Sapphire Rapids and later Xeons).
//!
//! `tdpbf16ps` multiplies a 16 x 32 `bf16` tile by a 32 x 16 one into a 16 x 16 `f32` tile held
//! in the CPU's tile registers: 8 192 multiply-adds per instruction, where AVX-512 BF16's
//! `vdpbf16ps` does 32. Its operands are exactly what the packer of [`super`] writes: a tile
//! row of `A` is one lane's 16 `k` pairs (a panel packed by lane), a tile row of `B` is one pair
//! of 16 lanes (a panel packed by pair), so the kernel loads its tiles straight from the panels
//! with their strides, and only the panels' widths ([`MR`], [`NR`]) and the padding of `k` to
//! whole tiles ([`PAIRS`]) differ from the AVX-512 kernel's.
//!
//! Rust has no stable AMX intrinsics (`x86_amx_intrinsics` is unstable), so the instructions are
//! written as inline assembly. Linux lets a process use the tile registers only after it asks
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, because they enlarge every saved thread state by 8 KiB);
//! [`available`] asks once and reports whether it may. `ZOO_AMX=0` in the environment turns
//! AMX off (the AVX-512 BF16 kernel runs instead), for comparisons.

use std::arch::asm;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Rows of a micro-tile: two 16-row tiles of `A`.
pub(super) const MR: usize = 32;
/// Columns of a micro-tile: two 16-column tiles of `B`.
pub(super) const NR: usize = 32;
/// `k` pairs per tile (64 bytes a tile row): a block's pairs are padded to a multiple.
pub(super) const PAIRS: usize = 16;

/// Tile configuration (palette 1): all eight tiles 16 rows of 64 bytes. tmm0-3 are the four
/// `f32` quarters of the 32 x 32 micro-tile, tmm4-5 the two `A` tiles, tmm6-7 the two `B` tiles.
static CONFIG: [u8; 64] = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (little-endian u16)
        c[48 + t] = 16; // rows
        t += 1;
    }
    c
};

/// Whether this process may run the AMX kernel: the CPU has AMX-TILE and AMX-BF16, the kernel
/// granted the tile state, and `ZOO_AMX` is not `0`. Checked once.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("ZOO_AMX").is_none_or(|v| v != "0") && cpu_has_amx() && permitted()
    })
}

fn cpu_has_amx() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // Leaf 7 sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE (Intel SDM vol. 2, CPUID).
    let max_leaf = __cpuid_count(0, 0).eax;
    max_leaf >= 7 && {
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 22) != 0 && edx & (1 << 24) != 0
    }
}

/// Asks Linux for the tile data state (`XFEATURE_XTILEDATA`) for the whole process; `false` on
/// a kernel that refuses or predates it.
#[cfg(target_os = "linux")]
fn permitted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes the process's permissions; an
    // unsupported request returns an error code instead.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn permitted() -> bool {
    false
}

/// The tile registers, configured on this thread; released when dropped. Not `Send`: the
/// configuration belongs to the thread that loaded it.
pub(super) struct Tiles {
    _thread: PhantomData<*const ()>,
}

impl Tiles {
    /// Configures the tiles on the calling thread, or `None` where [`available`] is false.
    pub(super) fn configure() -> Option<Self> {
        if !available() {
            return None;
        }
        // SAFETY: the CPU has AMX and the process may use it (`available`); CONFIG is a valid
        // palette-1 configuration of 64 bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.as_ptr(), options(nostack, readonly)) };
        Some(Self {
            _thread: PhantomData,
        })
    }

    /// The `MR x NR` tile of `pairs` packed `k` pairs into the row-major `out` (row stride
    /// `out_rs`, at least `NR`): `a` holds `MR` lanes of `pairs` pairs each (packed by lane),
    /// `b` `NR` lanes per pair (packed by pair). Writing a whole tile straight into `C` spares
    /// a copy through a scratch tile. (Adding to `C` in the tile registers, loading it first,
    /// sums in another order than the AVX-512 kernel's tile-then-add: enough, over a few
    /// unstable SGD steps, to fail the e2e test that bf16 training follows f32's losses.)
    pub(super) fn product(
        &self,
        pairs: usize,
        a: &[u32],
        b: &[u32],
        out: &mut [f32],
        out_rs: usize,
    ) {
        assert!(
            pairs.is_multiple_of(PAIRS)
                && a.len() >= pairs * MR
                && b.len() >= pairs * NR
                && out_rs >= NR
                && out.len() >= (MR - 1) * out_rs + NR
        );
        // Bytes between tile rows: one lane's run of pairs in `a`, one pair's lanes in `b`, one
        // row of `out`.
        let (a_rs, b_rs, out_bs) = (4 * pairs, 4 * NR, 4 * out_rs);
        let o = out.as_mut_ptr();
        // SAFETY: `self` proves the tiles are configured on this thread. Every tile load reads
        // 16 rows of 64 bytes inside `a` or `b` and every store writes 16 rows of 64 bytes inside
        // `out`, which the assertion above guarantees: the `A` tiles start at pair `t * PAIRS`
        // of lanes 0 and 16 (each lane `pairs` long), the `B` tiles at pair row `t * PAIRS`
        // (each `NR` long), columns 0 and 16, and the quarters of `out` at rows 0 and 16,
        // columns 0 and 16 (rows `out_rs` apart).
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for t in 0..pairs / PAIRS {
                let a0 = a.as_ptr().add(t * PAIRS);
                let b0 = b.as_ptr().add(t * PAIRS * NR);
                asm!(
                    "tileloadd tmm4, [{a0} + {a_rs}*1]",
                    "tileloadd tmm5, [{a1} + {a_rs}*1]",
                    "tileloadd tmm6, [{b0} + {b_rs}*1]",
                    "tileloadd tmm7, [{b1} + {b_rs}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(16 * pairs),
                    b0 = in(reg) b0,
                    b1 = in(reg) b0.add(16),
                    a_rs = in(reg) a_rs,
                    b_rs = in(reg) b_rs,
                    options(nostack, readonly)
                );
            }
            asm!(
                "tilestored [{c00} + {rs}*1], tmm0",
                "tilestored [{c01} + {rs}*1], tmm1",
                "tilestored [{c10} + {rs}*1], tmm2",
                "tilestored [{c11} + {rs}*1], tmm3",
                c00 = in(reg) o,
                c01 = in(reg) o.add(16),
                c10 = in(reg) o.add(16 * out_rs),
                c11 = in(reg) o.add(16 * out_rs + 16),
                rs = in(reg) out_bs,
                options(nostack)
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure` on this thread (`Tiles` is not Send).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
